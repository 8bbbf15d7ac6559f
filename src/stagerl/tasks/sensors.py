"""Sensors turn an environment's state into fixed-shape numpy observations."""

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

from stagerl.errors import ConfigError, is_number, require


class Sensor(ABC):
    """One named observation with a fixed-shape `Box` space (so it fits shared memory)."""

    uuid: str
    observation_space: spaces.Box

    @abstractmethod
    def get_observation(self, env: Any, task: Any) -> np.ndarray:
        """This sensor's reading of `env` during `task`, shaped as `observation_space`."""


class SensorSuite:
    """The ordered set of sensors of an experiment, keyed by unique `uuid`."""

    # Off in stages that read no expert action (the trainer says which): an expert can cost
    # several times the environment's step, as the BabyAI bot does. (A class default: suites
    # pickled before it existed read it too.)
    expert_enabled = True

    def __init__(self, sensors: Iterable[Sensor]) -> None:
        require(
            isinstance(sensors, Iterable) and not isinstance(sensors, str | Sensor),
            "SENSORS",
            value=sensors,
            expected="a list of sensors, e.g. [RGBSensor()]",
        )
        self.sensors: dict[str, Sensor] = {}
        for index, sensor in enumerate(sensors):
            require(
                isinstance(sensor, Sensor),
                f"SENSORS[{index}]",
                value=sensor,
                expected="a Sensor instance (a class needs its parentheses)",
            )
            if sensor.uuid in self.sensors:
                raise ConfigError(f"SENSORS: two sensors share the uuid {sensor.uuid!r}")
            self.sensors[sensor.uuid] = sensor
        self.observation_space = spaces.Dict(
            {uuid: s.observation_space for uuid, s in self.sensors.items()}
        )

    @property
    def observation_spaces(self) -> spaces.Dict:
        """AllenAct's name for `observation_space`."""
        return self.observation_space

    def get_observations(self, env: Any, task: Any) -> dict[str, np.ndarray]:
        """Every sensor's reading, keyed by uuid; while `expert_enabled` is off, an
        `ExpertActionSensor` reads "no action" without asking the task."""
        return {
            uuid: s.get_observation(env, task)
            if self.expert_enabled or not isinstance(s, ExpertActionSensor)
            else NO_EXPERT_ACTION.copy()
            for uuid, s in self.sensors.items()
        }

    def has(self, sensor_type: type[Sensor]) -> bool:
        """True if some sensor of the suite is a `sensor_type`."""
        return any(isinstance(s, sensor_type) for s in self.sensors.values())


def _action_count(action_space: Any, nactions: int | None) -> int:
    """AllenAct's two ways to give the actions: `action_space` (Discrete or a count) or the
    older `nactions`."""
    if action_space is not None and nactions is not None:
        raise ConfigError("ExpertActionSensor: give action_space or nactions, not both")
    if isinstance(action_space, spaces.Discrete):
        return int(action_space.n)
    count = action_space if action_space is not None else nactions
    field = "action_space" if action_space is not None else "nactions"
    require(
        is_number(count, whole=True) and count > 0,
        f"ExpertActionSensor.{field}",
        value=count,
        expected="a positive number of actions (or a gymnasium Discrete space)",
    )
    return count


NO_EXPERT_ACTION = np.zeros(2, dtype=np.int64)  # [action 0, not valid]


class ExpertActionSensor(Sensor):
    """The expert's action and its validity, as `[action, valid]` (int64), for
    `ExpertActionSensor(nactions)` or `ExpertActionSensor(action_space=Discrete(n))`.

    Adding it to `SENSORS` is what turns expert queries on; without it tasks never ask.
    """

    UUID = "expert_action"

    def __init__(
        self,
        action_space: spaces.Discrete | int | None = None,
        uuid: str = UUID,
        expert_args: dict[str, Any] | None = None,
        nactions: int | None = None,
    ) -> None:
        require(
            not expert_args,
            "ExpertActionSensor.expert_args",
            value=expert_args,
            expected="None: stagerl's tasks take no arguments in query_expert()",
        )
        nactions = _action_count(action_space, nactions)
        self.nactions = nactions
        self.uuid = uuid
        self.observation_space = spaces.Box(
            low=np.array([0, 0]), high=np.array([nactions - 1, 1]), dtype=np.int64
        )

    def get_observation(self, env: Any, task: Any) -> np.ndarray:
        """`[action, valid]` from the task's expert (action 0 where it has none)."""
        action, valid = task.query_expert()
        if valid and not 0 <= action < self.nactions:
            raise ValueError(f"{task!r}: expert action {action} outside [0, {self.nactions})")
        return np.array([action if valid else 0, int(valid)], dtype=np.int64)


def without_expert(sensors: Sequence[Sensor]) -> list[Sensor]:
    """The sensors a policy may read: all but an `ExpertActionSensor`, whose reading is the
    answer the policy learns to give (and which evaluation tasks do not have)."""
    return [sensor for sensor in sensors if not isinstance(sensor, ExpertActionSensor)]
