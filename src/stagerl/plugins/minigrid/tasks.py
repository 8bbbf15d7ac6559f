"""MiniGrid and BabyAI tasks: any registered `MiniGrid-*` or `BabyAI-*` gymnasium environment."""

import contextlib
import importlib
import io
import re
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import minigrid  # noqa: F401  (registers the MiniGrid-* and BabyAI-* environments)
import numpy as np
from gymnasium import spaces
from minigrid.core.actions import Actions
from minigrid.minigrid_env import MiniGridEnv

from stagerl.errors import ConfigError, require_positive
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
        env = gym.make(env_id, disable_env_checker=True, **env_kwargs).unwrapped
    except gym.error.Error as error:
        raise ConfigError(f"env id {env_id!r} cannot be made: {error}") from error
    if not isinstance(env, MiniGridEnv):
        env.close()
        raise ConfigError(
            f"env id {env_id!r} is a {type(env).__name__}, not a MiniGrid/BabyAI environment"
        )
    return env


def _check_registered(env_id: str) -> None:
    """A ConfigError now if `gym.make` could not find `env_id`, as gym.make resolves it
    ("module:Env-v0" imports the module; an unversioned id is left to make's choice)."""
    module, _, name = env_id.rpartition(":")
    try:
        if module:
            importlib.import_module(module)
        if re.search(r"-v\d+$", name):
            gym.spec(name)
    except (ImportError, gym.error.Error) as error:
        raise ConfigError(f"env id {env_id!r} cannot be made: {error}") from None


_EXPERTS_CHECKED: set[str] = set()  # env ids whose expert acted at an episode's start


def _check_expert(env_id: str, env: Any) -> None:
    """With an ExpertActionSensor, the tasks need an expert that acts: a ConfigError now, not an
    imitation stage that trains on no labels (checked once per env id, on a training seed)."""
    if env_id in _EXPERTS_CHECKED:
        return
    with contextlib.redirect_stdout(io.StringIO()):
        env.reset(seed=SEED_RANGES["train"][0])
    expert = make_expert(env)
    if expert is None:
        raise ConfigError(
            f"{env_id}: an ExpertActionSensor needs an expert, and this env has none (the BabyAI "
            "bot plays BabyAI levels, a shortest-path expert MiniGrid tasks with a goal square)"
        )
    expert.reset(env)
    if not expert.expert_action()[1]:
        raise ConfigError(
            f"{env_id}: its expert ({type(expert).__name__}) gives no action at an episode's "
            "start (the shortest-path expert walks to a goal square and opens no doors)"
        )
    _EXPERTS_CHECKED.add(env_id)


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
        limit = max_steps or env.unwrapped.max_steps
        if limit > env.unwrapped.max_steps:
            warnings.warn(
                f"max_steps={limit} is above {env_id}'s own step limit "
                f"({env.unwrapped.max_steps}), which ends its episodes first; raise that with "
                "the env's max_steps argument (MiniGridExperimentConfig.ENV_KWARGS)",
                stacklevel=2,
            )
        super().__init__(env=env, sensors=sensors, max_steps=limit)
        self.env_id = env_id
        self.seed = seed
        self.expert = expert_factory(env) if expert_factory else None
        if self.expert is not None and sensors.expert_enabled:
            self.expert.reset(env)  # else `resume_expert` plans when the expert is turned on
        self._terminated = False

    @property
    def action_space(self) -> spaces.Discrete:
        """The environment's actions."""
        return self.env.action_space

    @classmethod
    def class_action_names(cls, **kwargs: Any) -> tuple[str, ...]:
        """MiniGrid's action names in action-index order: left, right, forward, pickup, ..."""
        return tuple(action.name for action in sorted(Actions, key=lambda action: action.value))

    def _step(self, action: int) -> tuple[float, bool]:
        self.last_obs, reward, terminated, truncated, _ = self.env.step(action)
        self._terminated = bool(terminated)
        if self.expert is not None and self.sensor_suite.expert_enabled and not terminated:
            self.expert.record_action(action)
        return float(reward), self._terminated or bool(truncated)  # Task.is_done keeps it

    def reached_terminal_state(self) -> bool:
        """True once the environment terminated the episode."""
        return self._terminated

    def metrics(self) -> dict[str, float]:
        """The base metrics and `success` (terminated with a positive reward)."""
        success = float(self._terminated and self.total_reward > 0)
        return {**super().metrics(), "success": success}

    def render(self) -> np.ndarray:
        """The whole grid, the agent's view highlighted, 32 pixels a cell."""
        return self.env.unwrapped.get_frame(highlight=True, tile_size=32)

    def caption(self) -> str:
        """The mission string."""
        return self.env.unwrapped.mission

    def query_expert(self) -> tuple[int, bool]:
        """The expert's action and whether it gave one; invalid without an expert."""
        if self.expert is None:
            return 0, False
        return self.expert.expert_action()

    def resume_expert(self) -> None:
        """A new plan from where the episode is: the BabyAI bot followed no action while off."""
        if self.expert is not None:
            self.expert.reset(self.env)

    def __repr__(self) -> str:
        return f"MiniGridTask({self.env_id}, seed={self.seed}, step={self.num_steps_taken})"


class _MiniGridSampler(TaskSampler):
    """What MiniGrid samplers share: the sensors, the expert (only when an ExpertActionSensor
    observes the tasks: experts cost a planner per step) and a lazily built environment."""

    def __init__(
        self, sensors: Sequence[Sensor], max_steps: int | None, env_kwargs: dict | None
    ) -> None:
        require_positive("max_steps", max_steps, whole=True, allow_none=True)
        self.sensor_suite = SensorSuite(sensors)
        self.expert_factory = make_expert if self.sensor_suite.has(ExpertActionSensor) else None
        self.max_steps = max_steps
        self.env_kwargs = dict(env_kwargs or {})
        self.env: Any = None

    @property
    def observation_space(self) -> spaces.Dict:
        """The sensor suite's space."""
        return self.sensor_suite.observation_space

    @property
    def action_space(self) -> spaces.Discrete:
        """The environment's actions."""
        return self._environment().action_space

    def _environment(self) -> Any: ...

    def _task(self, env_id: str, seed: int) -> "MiniGridTask":
        return MiniGridTask(
            env=self._environment(),
            sensors=self.sensor_suite,
            max_steps=self.max_steps,
            env_id=env_id,
            seed=seed,
            expert_factory=self.expert_factory,
        )

    def close(self) -> None:
        """Close the environment."""
        if self.env is not None:
            self.env.close()
            self.env = None


class MiniGridTaskSampler(_MiniGridSampler):
    """Endless random episodes for training; a fixed, disjoint seed sequence for valid/test.

    `env_ids` may list several environments: they are the scenes `next_scene()` cycles through,
    slot i starting at the (i mod n)-th, so that the slots spread over them. A valid or test
    sampler moves to the next after each episode: evaluation covers every one, evenly.
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
        super().__init__(sensors, max_steps, env_kwargs)
        self.env_ids = [env_ids] if isinstance(env_ids, str) else list(env_ids)
        if not self.env_ids:
            raise ConfigError("env_ids is empty: name at least one MiniGrid/BabyAI env id")
        for env_id in self.env_ids[1:]:  # the first is made below; a later one at its turn
            _check_registered(env_id)
        self.split, self.slot, self.num_slots = split, slot, num_slots
        self.scene = slot % len(self.env_ids)
        self.num_sampled = 0
        self.env_scene = -1
        self.set_seed(seed)
        for env_id in self.env_ids if self.expert_factory else []:
            if env_id not in _EXPERTS_CHECKED:
                env = make_minigrid_env(env_id, **self.env_kwargs)
                _check_expert(env_id, env)
                env.close()

    def _environment(self) -> Any:
        if self.env is None or self.env_scene != self.scene:
            if self.env is not None:  # its episode is over: tasks start after the last ended
                self.env.close()
            self.env = make_minigrid_env(self.env_ids[self.scene], **self.env_kwargs)
            self.env_scene = self.scene
        return self.env

    def _episode_seed(self) -> int:
        low, high = SEED_RANGES[self.split]
        if self.split == "train":
            return int(self.rng.integers(low, high))
        return low + self.slot + self.num_sampled * self.num_slots

    def next_task(self) -> MiniGridTask:
        """An episode of the current environment id, seeded from the split's range."""
        if self.split != "train":
            self.scene = (self.slot + self.num_sampled) % len(self.env_ids)
        seed = self._episode_seed()
        self.num_sampled += 1
        return self._task(self.env_ids[self.scene], seed)

    def set_seed(self, seed: int) -> None:
        """Seed the training episodes' seeds."""
        self.rng = np.random.default_rng(seed)

    def reset(self) -> None:
        """Start the fixed valid/test sequence over."""
        self.num_sampled = 0

    def next_scene(self) -> None:
        """Move to the next environment id."""
        self.scene = (self.scene + 1) % len(self.env_ids)

    def __repr__(self) -> str:
        return f"MiniGridTaskSampler({'|'.join(self.env_ids)}, {self.split}, slot {self.slot})"


class BabyAITaskSampler(_MiniGridSampler):
    """AllenAct's BabyAI sampler: tasks of one environment (`env_builder`: an env id, or a
    picklable callable returning the environment) with AllenAct's meaning of its arguments.

    - `task_seeds_list` (or `num_unique_seeds`, meaning seeds `0..n-1`): episode seeds to draw
      from, in order with `deterministic_sampling`, else at random; without them, random seeds.
    - `max_tasks`: after that many tasks `next_task()` returns None (`length` counts down);
      None is endless. In training, a sampler that ends starts over.
    - `seed`: seeds the random choices; `reset()` starts the same sequence again.
    """

    def __init__(
        self,
        env_builder: str | Callable[[], Any],
        sensors: Sequence[Sensor],
        seed: int | None = None,
        max_tasks: int | None = None,
        num_unique_seeds: int | None = None,
        task_seeds_list: Sequence[int] | None = None,
        deterministic_sampling: bool = False,
        extra_task_kwargs: dict[str, Any] | None = None,
        max_steps: int | None = None,
        env_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if extra_task_kwargs:
            raise ConfigError(
                f"BabyAITaskSampler.extra_task_kwargs={extra_task_kwargs!r}: stagerl's BabyAI "
                "tasks take no extra arguments"
            )
        if not (isinstance(env_builder, str) or callable(env_builder)):
            raise ConfigError(
                f"BabyAITaskSampler.env_builder={env_builder!r} is invalid: expected an env id "
                "or a callable returning an environment"
            )
        super().__init__(sensors, max_steps, env_kwargs)
        self.env_builder = env_builder
        self.env_id = env_builder if isinstance(env_builder, str) else repr(env_builder)
        self.env_ids = [env_builder] if isinstance(env_builder, str) else None
        self.max_tasks = max_tasks
        self.task_seeds_list = _seed_list(num_unique_seeds, task_seeds_list)
        self.deterministic_sampling = deterministic_sampling
        self.num_tasks_generated = 0
        self.set_seed(0 if seed is None else seed)
        if self.expert_factory:
            _check_expert(self.env_id, self._environment())

    def _environment(self) -> Any:
        if self.env is None:
            if isinstance(self.env_builder, str):
                self.env = make_minigrid_env(self.env_builder, **self.env_kwargs)
            else:
                self.env = self.env_builder(**self.env_kwargs)
        return self.env

    @property
    def length(self) -> float:
        """Tasks left: endless without `max_tasks`."""
        if self.max_tasks is None:
            return float("inf")
        return self.max_tasks - self.num_tasks_generated

    def _episode_seed(self) -> int:
        seeds = self.task_seeds_list
        if seeds is None:
            return int(self.rng.integers(0, 2**31 - 1))
        if self.deterministic_sampling:
            return seeds[self.num_tasks_generated % len(seeds)]
        return int(self.rng.choice(seeds))

    def next_task(self) -> MiniGridTask | None:
        """An episode seeded from `task_seeds_list` (or at random), None when none are left."""
        if self.length <= 0:
            return None
        seed = self._episode_seed()
        self.num_tasks_generated += 1
        return self._task(self.env_id, seed)

    def set_seed(self, seed: int) -> None:
        """Seed the episode draws."""
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def reset(self) -> None:
        """Start the sequence of tasks over."""
        self.num_tasks_generated = 0
        self.rng = np.random.default_rng(self.seed)

    def __repr__(self) -> str:
        return f"BabyAITaskSampler({self.env_id}, {self.num_tasks_generated} tasks given)"


def _seed_list(count: int | None, seeds: Sequence[int] | None) -> list[int] | None:
    """AllenAct's two ways to fix the episode seeds, checked against each other."""
    if count is not None and (not isinstance(count, int) or count <= 0):
        raise ConfigError(f"BabyAITaskSampler.num_unique_seeds={count!r}: expected a positive int")
    if seeds is None:
        return None if count is None else list(range(count))
    if count is not None and count != len(seeds):
        raise ConfigError(
            f"BabyAITaskSampler: num_unique_seeds={count} but task_seeds_list has {len(seeds)}"
        )
    if not seeds:
        raise ConfigError("BabyAITaskSampler.task_seeds_list is empty")
    return [int(seed) for seed in seeds]


BabyAITask = MiniGridTask  # AllenAct's name for the same task
