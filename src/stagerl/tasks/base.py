"""Task and TaskSampler: what a worker process steps. Torch-free by design (see DESIGN.md §5)."""

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from gymnasium import spaces

from stagerl.tasks.sensors import SensorSuite


@dataclass
class RLStepResult:
    """The outcome of `Task.step`: the next observation, the reward, whether the task ended."""

    observation: dict[str, np.ndarray]
    reward: float
    done: bool
    info: dict[str, Any] = field(default_factory=dict)


class Task(ABC):
    """One episode in an environment, observed through a sensor suite.

    Subclasses implement `_step`, `reached_terminal_state`, `action_space` and `metrics`;
    `step` adds the step counter and the `max_steps` truncation every task shares.
    """

    _env_ended = False  # once `_step` says the environment ended the episode (a class default:
    # tasks pickled before it existed read it too)

    def __init__(self, *, env: Any, sensors: SensorSuite, max_steps: int) -> None:
        self.env = env
        self.sensor_suite = sensors
        self.max_steps = max_steps
        self.num_steps_taken = 0
        self.total_reward = 0.0

    @property
    @abstractmethod
    def action_space(self) -> spaces.Discrete:
        """The actions this task takes, numbered from 0."""

    @abstractmethod
    def _step(self, action: int) -> tuple[float, bool]:
        """Execute `action`; return (reward, episode ended in the environment)."""

    @abstractmethod
    def reached_terminal_state(self) -> bool:
        """True when the episode ended for real (not cut off by a step limit)."""

    def get_observations(self) -> dict[str, np.ndarray]:
        """What every sensor of the suite reads now."""
        return self.sensor_suite.get_observations(self.env, self)

    def step(self, action: int) -> RLStepResult:
        """Take `action`, count the step and return what followed."""
        if self.is_done():
            raise RuntimeError(f"{self!r}: step() called on a finished task")
        reward, ended = self._step(action)
        self._env_ended = self._env_ended or ended
        self.num_steps_taken += 1
        self.total_reward += reward
        return RLStepResult(self.get_observations(), reward, self.is_done())

    def is_done(self) -> bool:
        """True once the environment ended the episode (terminated or cut it off) or it
        reached `max_steps`."""
        return (
            self._env_ended
            or self.reached_terminal_state()
            or self.num_steps_taken >= self.max_steps
        )

    def metrics(self) -> dict[str, float]:
        """Episode metrics, read when the task is done: at least `ep_length` and `reward`."""
        return {"ep_length": float(self.num_steps_taken), "reward": float(self.total_reward)}

    def render(self) -> np.ndarray:
        """An RGB picture `[H, W, 3]` of the current state, for episode videos."""
        raise NotImplementedError(f"{type(self).__name__} cannot render videos")

    def caption(self) -> str:
        """What to write on the episode's video frames (e.g. the instruction)."""
        return ""

    def query_expert(self) -> tuple[int, bool]:
        """The expert's action for the current state and whether it is valid."""
        return 0, False

    def resume_expert(self) -> None:
        """The expert was off for a while (`SensorSuite.expert_enabled`, in stages that read
        no expert action) and is on again: let it forget what it kept of the episode and plan
        from where the episode is now. Nothing to forget by default."""

    def close(self) -> None:
        """Release what the task alone holds (the sampler owns the environment)."""


class TaskSampler(ABC):
    """Hands out tasks one after another; one sampler feeds one task slot of a worker.

    Samplers are built in the trainer, pickled once to a worker and stepped there, so build
    environments lazily (on the first `next_task`) and keep torch out of their imports.
    """

    @property
    @abstractmethod
    def observation_space(self) -> spaces.Dict:
        """The sensor suite's observation space (fixed shapes; it sizes shared memory)."""

    @property
    @abstractmethod
    def action_space(self) -> spaces.Discrete:
        """The action space of every task this sampler hands out."""

    @property
    def length(self) -> float:
        """Tasks left to sample; `float('inf')` for endless training samplers."""
        return float("inf")

    @abstractmethod
    def next_task(self) -> Task | None:
        """The next task, or None when this sampler has none left."""

    @abstractmethod
    def set_seed(self, seed: int) -> None:
        """Seed the sequence of tasks (and the environments behind them)."""

    def reset(self) -> None:
        """Start the sequence of tasks over."""

    def next_scene(self) -> None:
        """Move to the next scene (driven by `advance_scene_rollout_period`)."""

    def close(self) -> None:
        """Release environments."""
