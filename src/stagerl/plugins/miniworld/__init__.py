"""ObjectNav in 3D on MiniWorld: tasks over procedurally built rooms, sensors, a shortest-path
expert, a visual model and an experiment base class.

Names resolve lazily: worker processes unpickle samplers from here without torch, and only
they open OpenGL (`world.py`, on a sampler's first task).
"""

import importlib
from typing import Any

_EXPORTS = {
    "ObjectNavTask": "tasks",
    "ObjectNavTaskSampler": "tasks",
    "ACTIONS": "tasks",
    "RGBSensor": "sensors",
    "GoalObjectTypeSensor": "sensors",
    "expert_action": "expert",
    "ObjectNavActorCritic": "models",
    "MiniWorldObjectNavExperimentConfig": "experiment",
    "Scene": "scenes",
    "build_scene": "scenes",
    "scene_ids": "scenes",
    "TYPE_NAMES": "scenes",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
