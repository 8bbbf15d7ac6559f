"""Sensors turn an environment's state into fixed-shape numpy observations."""

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

from stagerl.errors import ConfigError, require


class Sensor(ABC):
    """One named observation with a fixed-shape `Box` space (so it fits shared memory)."""

    uuid: str
    observation_space: spaces.Box

    @abstractmethod
    def get_observation(self, env: Any, task: Any) -> np.ndarray: ...


class SensorSuite:
    """The ordered set of sensors of an experiment, keyed by unique `uuid`."""

    def __init__(self, sensors: Sequence[Sensor]) -> None:
        self.sensors: dict[str, Sensor] = {}
        for sensor in sensors:
            if sensor.uuid in self.sensors:
                raise ConfigError(f"SENSORS: two sensors share the uuid {sensor.uuid!r}")
            self.sensors[sensor.uuid] = sensor
        self.observation_space = spaces.Dict(
            {uuid: s.observation_space for uuid, s in self.sensors.items()}
        )

    def get_observations(self, env: Any, task: Any) -> dict[str, np.ndarray]:
        return {uuid: s.get_observation(env, task) for uuid, s in self.sensors.items()}

    def has(self, sensor_type: type[Sensor]) -> bool:
        return any(isinstance(s, sensor_type) for s in self.sensors.values())


class ExpertActionSensor(Sensor):
    """The expert's action and its validity, as `[action, valid]` (int64).

    Adding it to `SENSORS` is what turns expert queries on; without it tasks never ask.
    """

    UUID = "expert_action"

    def __init__(self, nactions: int, uuid: str = UUID) -> None:
        require(nactions > 0, "ExpertActionSensor.nactions", nactions, "a positive int")
        self.nactions = nactions
        self.uuid = uuid
        self.observation_space = spaces.Box(
            low=np.array([0, 0]), high=np.array([nactions - 1, 1]), dtype=np.int64
        )

    def get_observation(self, env: Any, task: Any) -> np.ndarray:
        action, valid = task.query_expert()
        if valid and not 0 <= action < self.nactions:
            raise ValueError(f"{task!r}: expert action {action} outside [0, {self.nactions})")
        return np.array([action if valid else 0, int(valid)], dtype=np.int64)
