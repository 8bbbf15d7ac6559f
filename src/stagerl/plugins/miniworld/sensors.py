"""ObjectNav sensors: the egocentric RGB frame and the goal object type."""

from typing import Any

import numpy as np
from gymnasium import spaces

from stagerl.errors import require
from stagerl.plugins.miniworld.scenes import TYPE_NAMES
from stagerl.tasks.sensors import Sensor


class RGBSensor(Sensor):
    """The agent's camera, `[height, width, 3]` uint8 (the world renders at this size)."""

    def __init__(self, width: int = 80, height: int = 60, *, uuid: str = "rgb") -> None:
        require(
            width >= 16 and height >= 16,
            "RGBSensor size",
            value=(width, height),
            expected=">= 16 x 16",
        )
        self.uuid = uuid
        self.observation_space = spaces.Box(0, 255, (height, width, 3), dtype=np.uint8)

    def get_observation(self, env: Any, task: Any) -> np.ndarray:
        """The frame the task rendered after its last step."""
        return task.frame


class GoalObjectTypeSensor(Sensor):
    """AllenAct's `goal_object_type_ind`: the target type's index in the sorted type names."""

    def __init__(self, uuid: str = "goal_object_type_ind") -> None:
        self.uuid = uuid
        self.object_types = TYPE_NAMES
        self.observation_space = spaces.Box(0, len(TYPE_NAMES) - 1, (1,), dtype=np.int64)

    def get_observation(self, env: Any, task: Any) -> np.ndarray:
        """The index of the episode's target type."""
        return np.array([self.object_types.index(task.target_type)], dtype=np.int64)
