"""MiniGrid and BabyAI: tasks, sensors, experts, models and an experiment base class.

Names resolve lazily so that worker processes, which unpickle samplers from here, never import
torch (the model lives beside them).
"""

import importlib
from typing import Any

_EXPORTS = {
    "MiniGridTask": "tasks",
    "MiniGridTaskSampler": "tasks",
    "BabyAITask": "tasks",
    "BabyAITaskSampler": "tasks",
    "make_minigrid_env": "tasks",
    "EgocentricMiniGridSensor": "sensors",
    "MiniGridMissionSensor": "sensors",
    "tokenize_mission": "sensors",
    "BabyAIExpert": "experts",
    "ShortestPathExpert": "experts",
    "make_expert": "experts",
    "MiniGridActorCritic": "models",
    "BabyAIRecurrentACModel": "babyai_model",
    "MiniGridExperimentConfig": "experiment",
    "MiniGridOffPolicyExpertCELoss": "offpolicy",
    "create_minigrid_offpolicy_data_iterator": "offpolicy",
    "record_dataset": "recording",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
