"""A base ExperimentConfig for ObjectNav on MiniWorld: subclass it and write `training_pipeline`."""

from collections.abc import Sequence
from typing import Any

from gymnasium import spaces

from stagerl.errors import require
from stagerl.experiment import ExperimentConfig, MachineParams, SplitSamplerArgs
from stagerl.models.base import ActorCriticModel
from stagerl.plugins.miniworld.models import ObjectNavActorCritic
from stagerl.plugins.miniworld.scenes import scene_ids
from stagerl.plugins.miniworld.sensors import GoalObjectTypeSensor, RGBSensor
from stagerl.plugins.miniworld.tasks import ACTIONS, ObjectNavTaskSampler
from stagerl.tasks.sensors import Sensor, SensorSuite, without_expert


class MiniWorldObjectNavExperimentConfig(SplitSamplerArgs, ExperimentConfig):
    """ObjectNav tasks observed by `SENSORS`: `NUM_TRAIN_SAMPLERS` samplers, sampler i of n
    cycling through training scenes i, i+n, ... of `NUM_TRAIN_SCENES` (one move per
    `advance_scene_rollout_period` rollouts); `NUM_TEST_EPISODES` fixed episodes over
    `NUM_TEST_SCENES` test scenes (validation likewise); `MAX_STEPS` per episode; `MODEL` built
    from the actions and the sensors."""

    SENSORS: Sequence[Sensor] = (RGBSensor(), GoalObjectTypeSensor())
    MAX_STEPS = 100
    NUM_TRAIN_SAMPLERS = 16
    NUM_TRAIN_SCENES = 400
    NUM_TEST_SAMPLERS = 4
    NUM_TEST_SCENES = 50
    NUM_TEST_EPISODES = 100
    MAX_SAMPLER_PROCESSES: int | None = None
    DEVICES: Any = ()
    ADVANCE_SCENE_ROLLOUT_PERIOD: int | None = 1
    MODEL: type[ActorCriticModel] = ObjectNavActorCritic

    @classmethod
    def tag(cls) -> str:
        """The class name, which names the run's folder."""
        return cls.__name__

    @classmethod
    def machine_params(cls, mode: str = "train", **kwargs: Any) -> MachineParams:
        """`NUM_TRAIN_SAMPLERS` task slots for training, `NUM_TEST_SAMPLERS` otherwise."""
        return MachineParams(
            nprocesses=cls.NUM_TRAIN_SAMPLERS if mode == "train" else cls.NUM_TEST_SAMPLERS,
            devices=cls.DEVICES,  # one device ("cuda", 0) or one per trainer process
            max_sampler_processes=cls.MAX_SAMPLER_PROCESSES,
        )

    @classmethod
    def create_model(cls, **kwargs: Any) -> ActorCriticModel:
        """`MODEL(action_space, observation_space, **kwargs)`."""
        observation_space = SensorSuite(without_expert(cls.SENSORS)).observation_space
        return cls.MODEL(spaces.Discrete(len(ACTIONS)), observation_space, **kwargs)

    @classmethod
    def make_sampler_fn(cls, **kwargs: Any) -> ObjectNavTaskSampler:
        """An `ObjectNavTaskSampler` with the arguments the `*_task_sampler_args` give."""
        return ObjectNavTaskSampler(**kwargs)

    @classmethod
    def _sampler_args(
        cls, split: str, process_ind: int, total_processes: int, seeds: list[int] | None
    ) -> dict[str, Any]:
        training = split == "train"
        sensors = list(cls.SENSORS) if training else without_expert(cls.SENSORS)
        if training:
            require(
                total_processes <= cls.NUM_TRAIN_SCENES,
                f"{cls.__name__}.NUM_TRAIN_SCENES",
                value=cls.NUM_TRAIN_SCENES,
                expected=f"at least one scene per training sampler ({total_processes})",
            )
            scenes = scene_ids("train", cls.NUM_TRAIN_SCENES)[process_ind::total_processes]
            episodes = None
        else:
            scenes = scene_ids(split, cls.NUM_TEST_SCENES)
            share, extra = divmod(cls.NUM_TEST_EPISODES, total_processes)
            episodes = share + int(process_ind < extra)
        return dict(
            scenes=scenes,
            sensors=sensors,
            max_steps=cls.MAX_STEPS,
            seed=(seeds or [0] * total_processes)[process_ind],
            deterministic=not training,
            slot=process_ind,
            num_slots=total_processes,
            max_tasks=episodes,
        )


__all__ = ["ACTIONS", "MiniWorldObjectNavExperimentConfig"]
