"""stagerl: staged training pipelines (RL, imitation, off-policy) for embodied agents.

Every name of the seed's experiment API is importable from here. Names resolve lazily, so that
sampler worker processes, which import `stagerl.tasks`, never pay for importing torch.
"""

import importlib
from typing import Any

_EXPORTS = {
    "ExperimentConfig": "experiment",
    "MachineParams": "experiment",
    "TrainingPipeline": "pipeline",
    "PipelineStage": "stage",
    "DatasetAggregation": "components",
    "Validation": "components",
    "OffPolicyPipelineComponent": "components",
    "TrainingSettings": "stage",
    "ExperienceStorage": "engine.storage",
    "EarlyStoppingCriterion": "components",
    "NeverEarlyStoppingCriterion": "components",
    "Builder": "builder",
    "LinearDecay": "schedules",
    "MultiLinearDecay": "schedules",
    "ConstantSchedule": "schedules",
    "PPO": "losses.ppo",
    "PPOConfig": "losses.ppo",
    "A2C": "losses.a2c",
    "A2CConfig": "losses.a2c",
    "Imitation": "losses.imitation",
    "OffPolicyLoss": "losses.offpolicy",
    "ExpertCELoss": "losses.offpolicy",
    "Loss": "losses.base",
    "ActorCriticModel": "models.base",
    "ActorCriticOutput": "models.base",
    "MLPActorCritic": "models.mlp",
    "Task": "tasks.base",
    "TaskSampler": "tasks.base",
    "RLStepResult": "tasks.base",
    "Sensor": "tasks.sensors",
    "SensorSuite": "tasks.sensors",
    "ExpertActionSensor": "tasks.sensors",
    "ConfigError": "errors",
    "WorkerError": "errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return __all__
