"""A base ExperimentConfig for MiniGrid/BabyAI: subclass it and write `training_pipeline`."""

from collections.abc import Sequence
from typing import Any

from stagerl.errors import ConfigError, require_positive
from stagerl.experiment import ExperimentConfig, MachineParams, SplitSamplerArgs
from stagerl.models.base import ActorCriticModel
from stagerl.plugins.minigrid.babyai_model import BabyAIRecurrentACModel
from stagerl.plugins.minigrid.models import MiniGridActorCritic
from stagerl.plugins.minigrid.sensors import (
    MISSION_UUID,
    EgocentricMiniGridSensor,
    MiniGridMissionSensor,
)
from stagerl.plugins.minigrid.tasks import MiniGridTaskSampler, make_minigrid_env
from stagerl.tasks.sensors import Sensor, SensorSuite, without_expert


class MiniGridExperimentConfig(SplitSamplerArgs, ExperimentConfig):
    """Tasks from `ENV_ID` observed by `SENSORS`, `NUM_TRAIN_SAMPLERS` of them at once (packed
    into at most `MAX_SAMPLER_PROCESSES` processes, default one per core) on `DEVICES`, and a
    `MODEL` built from the tasks' action space and the sensors' observation space.

    The default model is the BabyAI baseline, with LSTM memory and reading the mission when a
    mission sensor is there: over 8 seeds it solved GoToObj on every seed, where
    `MiniGridActorCritic` solved 2 of 5 (benchmarks/LEARNING.md).
    """

    ENV_ID: str | Sequence[str] = "BabyAI-GoToObj-v0"
    SENSORS: Sequence[Sensor] = (
        EgocentricMiniGridSensor(view_channels=3),
        MiniGridMissionSensor(instr_len=16),
    )
    # Episodes end at MAX_STEPS or the environment's own limit, whichever comes first (None:
    # the environment's); ENV_KWARGS go to gym.make, e.g. {"max_steps": 500} to raise that.
    MAX_STEPS: int | None = None
    ENV_KWARGS: dict[str, Any] = {}
    NUM_TRAIN_SAMPLERS = 16
    NUM_TEST_SAMPLERS = 16
    MAX_SAMPLER_PROCESSES: int | None = None
    DEVICES: Any = ()  # the CPU; "cuda" (or ["cuda"]) for a GPU
    ADVANCE_SCENE_ROLLOUT_PERIOD: int | None = None
    MODEL: type[ActorCriticModel] = BabyAIRecurrentACModel

    @classmethod
    def tag(cls) -> str:
        """The class name, which names the run's folder."""
        return cls.__name__

    @classmethod
    def machine_params(cls, mode: str = "train", **kwargs: Any) -> MachineParams:
        """The task slots and devices of a mode (`train`, `valid` or `test`)."""
        return MachineParams(
            nprocesses=cls.NUM_TRAIN_SAMPLERS if mode == "train" else cls.NUM_TEST_SAMPLERS,
            devices=cls.DEVICES,  # one device ("cuda", 0) or one per trainer process
            max_sampler_processes=cls.MAX_SAMPLER_PROCESSES,
        )

    @classmethod
    def create_model(cls, **kwargs: Any) -> ActorCriticModel:
        """`MODEL(action_space, observation_space, **kwargs)`; the BabyAI model gets memory and
        reads the mission when SENSORS has one, MiniGridActorCritic reads the mission sensor's
        uuid, unless `kwargs` say otherwise."""
        env_id = cls.ENV_ID if isinstance(cls.ENV_ID, str) else cls.ENV_ID[0]
        observation_space = SensorSuite(without_expert(cls.SENSORS)).observation_space
        missions = [s.uuid for s in cls.SENSORS if isinstance(s, MiniGridMissionSensor)]
        if issubclass(cls.MODEL, BabyAIRecurrentACModel):
            mission = MISSION_UUID in observation_space.spaces
            if missions and not mission:  # else it would train blind to the mission
                raise ConfigError(
                    f"{cls.__name__}.SENSORS: BabyAIRecurrentACModel reads the mission from "
                    f"uuid 'minigrid_mission' (AllenAct's), but the MiniGridMissionSensor's is "
                    f"{missions[0]!r}: leave its uuid as it is"
                )
            kwargs = {"use_memory": True, "use_instr": mission, **kwargs}
        elif (
            issubclass(cls.MODEL, MiniGridActorCritic) and missions and missions[0] != MISSION_UUID
        ):
            # a renamed sensor's uuid only: a subclass may not take the argument
            kwargs = {"mission_uuid": missions[0], **kwargs}
        actions = make_minigrid_env(env_id, **cls.ENV_KWARGS).action_space
        return cls.MODEL(actions, observation_space, **kwargs)

    @classmethod
    def make_sampler_fn(cls, **kwargs: Any) -> MiniGridTaskSampler:
        """The task sampler the `*_task_sampler_args` describe."""
        return MiniGridTaskSampler(**kwargs)

    @classmethod
    def _sampler_args(
        cls, split: str, process_ind: int, total_processes: int, seeds: list[int] | None
    ) -> dict[str, Any]:
        """Validation and test tasks leave out the expert: nothing reads it there, and the
        BabyAI bot's planning would cost more than the episodes."""
        sensors = list(cls.SENSORS) if split == "train" else without_expert(cls.SENSORS)
        require_positive(f"{cls.__name__}.MAX_STEPS", cls.MAX_STEPS, whole=True, allow_none=True)
        return dict(
            env_ids=cls.ENV_ID,
            sensors=sensors,
            split=split,
            seed=(seeds or [0] * total_processes)[process_ind],
            slot=process_ind,
            num_slots=total_processes,
            max_steps=cls.MAX_STEPS,
            env_kwargs=cls.ENV_KWARGS,
        )
