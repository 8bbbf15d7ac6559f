"""Everything a run needs, built and checked before any worker process starts."""

import contextlib
import ctypes
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from stagerl.engine.offpolicy import build_iterator, iterator_seed
from stagerl.errors import CheckpointError, ConfigError
from stagerl.experiment import ExperimentConfig, LoadedExperiment, MachineParams
from stagerl.losses.imitation import Imitation
from stagerl.models.base import ActorCriticModel
from stagerl.pipeline import TrainingPipeline
from stagerl.tasks.base import TaskSampler
from stagerl.tasks.sensors import ExpertActionSensor
from stagerl.tasks.vector import VectorSampler


def configure_trainer_process() -> None:
    """Act with one torch thread (the workers need the other cores) and keep one glibc malloc
    arena: the update's second thread would otherwise get its own, measured at +47 MiB peak for
    no speed gain. Elsewhere than glibc the arena limit is skipped."""
    torch.set_num_threads(1)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(-8, 1)  # -8: M_ARENA_MAX


def sampler_seeds(seed: int, count: int) -> list[int]:
    """Distinct, reproducible seeds for each task sampler of a run."""
    return np.random.SeedSequence(seed).generate_state(count).tolist()


def build_samplers(
    experiment: LoadedExperiment, mode: str, seed: int
) -> tuple[MachineParams, list[TaskSampler]]:
    config = experiment.config
    machine = config.machine_params(mode)
    if not isinstance(machine, MachineParams):
        raise ConfigError(f"{config.__name__}.machine_params({mode!r}) must return MachineParams")
    args_fn = getattr(config, f"{mode}_task_sampler_args")
    total = machine.num_tasks
    seeds = sampler_seeds(seed, total)
    samplers = [
        config.make_sampler_fn(
            **args_fn(process_ind=i, total_processes=total, devices=[machine.device], seeds=seeds)
        )
        for i in range(total)
    ]
    return machine, samplers


def build_model(config: type[ExperimentConfig], action_space: spaces.Discrete) -> ActorCriticModel:
    model = config.create_model()
    if not isinstance(model, ActorCriticModel):
        raise ConfigError(
            f"{config.__name__}.create_model() returned {type(model).__name__}, "
            "expected an ActorCriticModel"
        )
    if model.action_space.n != action_space.n:
        raise ConfigError(
            f"{config.__name__}.create_model(): the model has {model.action_space.n} actions but "
            f"the tasks have {action_space.n}; build the model with the tasks' action space"
        )
    return model


@dataclass
class TrainingSetup:
    config: type[ExperimentConfig]
    experiment: LoadedExperiment
    pipeline: TrainingPipeline
    machine: MachineParams
    samplers: list[TaskSampler]
    model: ActorCriticModel
    optimizer: torch.optim.Optimizer
    lr_scheduler: Any
    expert_uuid: str | None
    validation: tuple[MachineParams, list[TaskSampler]] | None  # its machine and samplers
    offpolicy_iterators: dict[int, Any]  # stage index -> its dataset iterator

    @property
    def num_tasks(self) -> int:
        return len(self.samplers)

    @property
    def observation_space(self) -> spaces.Dict:
        return self.samplers[0].observation_space

    def start_sampler(self) -> VectorSampler:
        return VectorSampler(
            self.samplers,
            num_workers=self.machine.num_workers,
            timeout=self.machine.worker_timeout,
            experiment=(self.experiment.module_name, str(self.experiment.path)),
        )


def _expert_uuid(pipeline: TrainingPipeline, samplers: list[TaskSampler]) -> str | None:
    """The ExpertActionSensor's uuid; an error if a stage needs an expert and there is none."""
    suite = getattr(samplers[0], "sensor_suite", None)
    uuids = [
        u for u, s in (suite.sensors.items() if suite else []) if isinstance(s, ExpertActionSensor)
    ]
    for index, stage in enumerate(pipeline.pipeline_stages):
        needs = stage.teacher_forcing is not None or any(
            isinstance(pipeline.named_losses[name], Imitation) for name in stage.loss_names
        )
        if needs and not uuids:
            raise ConfigError(
                f"pipeline_stages[{index}] uses teacher_forcing or an Imitation loss, but SENSORS "
                "has no ExpertActionSensor; add ExpertActionSensor(nactions=...) to SENSORS"
            )
    return uuids[0] if uuids else None


def _validation_samplers(
    experiment: LoadedExperiment, pipeline: TrainingPipeline, seed: int
) -> tuple[MachineParams, list[TaskSampler]] | None:
    if pipeline.validation is None:
        return None
    try:
        return build_samplers(experiment, "valid", seed)
    except NotImplementedError as error:
        raise ConfigError(
            f"TrainingPipeline.validation is set, but {error}: define valid_task_sampler_args "
            "or leave validation=None"
        ) from None


def _offpolicy_iterators(
    pipeline: TrainingPipeline, samplers: list[TaskSampler], seed: int, first_stage: int
) -> dict[int, Any]:
    """Iterators for the remaining stages' off-policy components: built (and their datasets
    checked) now, so that a bad dataset stops the run before any worker starts."""
    iterators = {}
    for index, stage in enumerate(pipeline.pipeline_stages):
        if stage.offpolicy_component is None or index < first_stage:
            continue
        iterators[index] = build_iterator(
            stage.offpolicy_component,
            f"pipeline_stages[{index}].offpolicy_component",
            rank=0,
            world_size=1,
            seed=iterator_seed(seed, index, rank=0),
            observation_space=samplers[0].observation_space,
            env_ids=getattr(samplers[0], "env_ids", None),
        )
    return iterators


def _check_resumable(
    resume: dict[str, Any], config: type[ExperimentConfig], machine: MachineParams
) -> None:
    if resume["experiment"] != config.__name__ or resume["tag"] != config.tag():
        raise CheckpointError(
            f"checkpoint is from experiment {resume['experiment']} ({resume['tag']}), "
            f"not {config.__name__} ({config.tag()})"
        )
    if resume["num_tasks"] != machine.num_tasks or len(resume["samplers"]) != machine.num_workers:
        raise CheckpointError(
            f"checkpoint has {resume['num_tasks']} tasks in {len(resume['samplers'])} workers, "
            f"machine_params('train') now gives {machine.num_tasks} in {machine.num_workers}; "
            "resume with the machine_params the run started with"
        )


def build_training_setup(
    experiment: LoadedExperiment, *, seed: int, resume: dict[str, Any] | None = None
) -> TrainingSetup:
    config = experiment.config
    pipeline = config.training_pipeline()
    if not isinstance(pipeline, TrainingPipeline):
        raise ConfigError(f"{config.__name__}.training_pipeline() must return a TrainingPipeline")
    configure_trainer_process()
    machine, samplers = build_samplers(experiment, "train", seed)
    pipeline.check_task_count(len(samplers))
    expert_uuid = _expert_uuid(pipeline, samplers)
    validation = _validation_samplers(experiment, pipeline, seed)
    first_stage = resume["state"]["stage_index"] if resume else 0
    offpolicy = _offpolicy_iterators(pipeline, samplers, seed, first_stage)
    model = build_model(config, samplers[0].action_space)
    optimizer = pipeline.optimizer_builder(model.parameters())
    scheduler = pipeline.lr_scheduler_builder(optimizer) if pipeline.lr_scheduler_builder else None
    if resume:
        _check_resumable(resume, config, machine)
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        if scheduler is not None and resume["lr_scheduler"] is not None:
            scheduler.load_state_dict(resume["lr_scheduler"])
    return TrainingSetup(
        config=config,
        experiment=experiment,
        pipeline=pipeline,
        machine=machine,
        samplers=samplers,
        model=model,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        expert_uuid=expert_uuid,
        validation=validation,
        offpolicy_iterators=offpolicy,
    )
