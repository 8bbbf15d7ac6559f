"""MiniGrid and BabyAI tasks: any registered `MiniGrid-*` or `BabyAI-*` gymnasium environment."""

import contextlib
import io
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import minigrid  # noqa: F401  (registers the MiniGrid-* and BabyAI-* environments)
import numpy as np
from gymnasium import spaces

from stagerl.errors import ConfigError
from stagerl.plugins.minigrid.experts import make_expert
from stagerl.tasks.base import Task, TaskSampler
from stagerl.tasks.sensors import ExpertActionSensor, Sensor, SensorSuite

# Episode seeds per split never overlap: test < valid < train.
SEED_RANGES = {
    "test": (0, 1_000_000),
    "valid": (1_000_000, 2_000_000),
    "train": (2_000_000, 2**31 - 1),
}


def make_minigrid_env(env_id: str, **env_kwargs: Any) -> Any:
    """The bare environment (no checker/order wrappers): the task enforces the protocol."""
    try:
        return gym.make(env_id, disable_env_checker=True, **env_kwargs).unwrapped
    except gym.error.Error as error:
        raise ConfigError(f"env id {env_id!r} cannot be made: {error}") from error


class MiniGridTask(Task):
    """One episode; the raw observation of the last step is kept for the sensors to read."""

    def __init__(
        self,
        *,
        env: Any,
        sensors: SensorSuite,
        max_steps: int | None,
        env_id: str,
        seed: int,
        expert_factory: Callable[[Any], Any] | None = None,
    ) -> None:
        with contextlib.redirect_stdout(io.StringIO()):  # BabyAI prints each rejected layout
            self.last_obs, _ = env.reset(seed=seed)
        # BabyAI levels set their step limit only when reset.
        super().__init__(env=env, sensors=sensors, max_steps=max_steps or env.max_steps)
        self.env_id = env_id
        self.seed = seed
        self.expert = expert_factory(env) if expert_factory else None
        if self.expert is not None:
            self.expert.reset(env)
        self._terminated = False
        self._env_truncated = False

    @property
    def action_space(self) -> spaces.Discrete:
        return self.env.action_space

    def _step(self, action: int) -> tuple[float, bool]:
        self.last_obs, reward, terminated, truncated, _ = self.env.step(action)
        self._terminated, self._env_truncated = bool(terminated), bool(truncated)
        if self.expert is not None and not terminated:
            self.expert.record_action(action)
        return float(reward), self._terminated or self._env_truncated

    def reached_terminal_state(self) -> bool:
        return self._terminated

    def is_done(self) -> bool:
        return self._terminated or self._env_truncated or self.num_steps_taken >= self.max_steps

    def metrics(self) -> dict[str, float]:
        success = float(self._terminated and self.total_reward > 0)
        return {**super().metrics(), "success": success}

    def query_expert(self) -> tuple[int, bool]:
        if self.expert is None:
            return 0, False
        return self.expert.expert_action()

    def __repr__(self) -> str:
        return f"MiniGridTask({self.env_id}, seed={self.seed}, step={self.num_steps_taken})"


class MiniGridTaskSampler(TaskSampler):
    """Endless random episodes for training; a fixed, disjoint seed sequence for valid/test.

    `env_ids` may list several environments: they are the scenes `next_scene()` cycles through.
    """

    def __init__(
        self,
        *,
        env_ids: str | Sequence[str],
        sensors: Sequence[Sensor],
        split: str = "train",
        seed: int = 0,
        slot: int = 0,
        num_slots: int = 1,
        max_steps: int | None = None,
        env_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if split not in SEED_RANGES:
            raise ConfigError(f"split={split!r} is invalid: expected one of {list(SEED_RANGES)}")
        self.env_ids = [env_ids] if isinstance(env_ids, str) else list(env_ids)
        if not self.env_ids:
            raise ConfigError("env_ids is empty: name at least one MiniGrid/BabyAI env id")
        self.sensor_suite = SensorSuite(sensors)
        # Experts cost a planner per step: only tasks observed by an ExpertActionSensor get one.
        self.expert_factory = make_expert if self.sensor_suite.has(ExpertActionSensor) else None
        self.split, self.slot, self.num_slots = split, slot, num_slots
        self.max_steps = max_steps
        self.env_kwargs = dict(env_kwargs or {})
        self.scene = 0
        self.num_sampled = 0
        self.env: Any = None
        self.env_scene = -1
        self.set_seed(seed)

    @property
    def observation_space(self) -> spaces.Dict:
        return self.sensor_suite.observation_space

    @property
    def action_space(self) -> spaces.Discrete:
        return self._environment().action_space

    def _environment(self) -> Any:
        if self.env is None or self.env_scene != self.scene:
            self.env = make_minigrid_env(self.env_ids[self.scene], **self.env_kwargs)
            self.env_scene = self.scene
        return self.env

    def _episode_seed(self) -> int:
        low, high = SEED_RANGES[self.split]
        if self.split == "train":
            return int(self.rng.integers(low, high))
        return low + self.slot + self.num_sampled * self.num_slots

    def next_task(self) -> MiniGridTask:
        env = self._environment()
        seed = self._episode_seed()
        self.num_sampled += 1
        return MiniGridTask(
            env=env,
            sensors=self.sensor_suite,
            max_steps=self.max_steps,
            env_id=self.env_ids[self.scene],
            seed=seed,
            expert_factory=self.expert_factory,
        )

    def set_seed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def reset(self) -> None:
        self.num_sampled = 0

    def next_scene(self) -> None:
        self.scene = (self.scene + 1) % len(self.env_ids)

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None

    def __repr__(self) -> str:
        return f"MiniGridTaskSampler({'|'.join(self.env_ids)}, {self.split}, slot {self.slot})"
