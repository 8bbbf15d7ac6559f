"""Everything a run needs, built and checked before any worker process starts."""

import contextlib
import ctypes
import inspect
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from stagerl.engine.distributed import Ranks
from stagerl.engine.model_setup import build_model, check_outputs
from stagerl.engine.offpolicy import build_iterator, iterator_seed
from stagerl.engine.resume import restore_training
from stagerl.errors import ConfigError, require, user_call
from stagerl.experiment import LoadedExperiment, MachineParams, worker_experiment
from stagerl.models.base import ActorCriticModel
from stagerl.pipeline import TrainingPipeline
from stagerl.tasks.balance import first_trainer_slots
from stagerl.tasks.base import TaskSampler
from stagerl.tasks.sensors import ExpertActionSensor
from stagerl.tasks.vector import VectorSampler
from stagerl.tasks.worker import SPIN_SECONDS


def configure_trainer_process() -> None:
    """Act with one torch thread (the workers need the other cores) and keep one glibc malloc
    arena: the update's second thread would otherwise get its own, measured at +47 MiB peak for
    no speed gain. Elsewhere than glibc the arena limit is skipped."""
    torch.set_num_threads(1)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(-8, 1)  # -8: M_ARENA_MAX


def sampler_seeds(seed: int, count: int, *, mode: str = "train") -> list[int]:
    """Distinct, reproducible seeds for each task sampler of a run; validation and test
    samplers get streams of their own, so that a sampler seeded only by them never replays
    training episodes."""
    entropy = seed if mode == "train" else [seed, ("valid", "test").index(mode) + 1]
    return np.random.SeedSequence(entropy).generate_state(count).tolist()


def trainer_device(machine: MachineParams) -> torch.device:
    """The device MachineParams asks for; an error naming the field if torch cannot use it."""
    name = machine.device
    field = "MachineParams.gpu_ids" if machine.gpu_ids is not None else "MachineParams.devices"
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ConfigError(f"{field}: {name!r} is not a device torch knows ({error})") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(
                f"{field} asks for {name!r}, but torch {torch.__version__} sees no CUDA device "
                "on this machine; leave devices empty to train on the CPU"
            )
        if (device.index or 0) >= count:
            raise ConfigError(f"{field} asks for {name!r}; this machine has {count} CUDA devices")
    elif device.type != "cpu":
        raise ConfigError(f"{field}: {name!r} is not supported; use 'cpu' or 'cuda[:i]'")
    return device


def sampler_machine(
    experiment: LoadedExperiment, mode: str, *, max_sampler_processes: int | None = None
) -> MachineParams:
    """`machine_params(mode)`; `max_sampler_processes` (the CLI's `-m`) overrides the
    config's; an error if it gives no sampler."""
    machine = experiment.machine_params(mode)
    if max_sampler_processes is not None:
        machine = machine.changed(max_sampler_processes=max_sampler_processes)
    if machine.nprocesses == 0:
        raise ConfigError(f"{experiment.name}.machine_params({mode!r}) gives nprocesses=0")
    return machine


def make_samplers(
    experiment: LoadedExperiment,
    mode: str,
    *,
    machine: MachineParams,
    seed: int,
    first: int = 0,
    total: int | None = None,
) -> list[TaskSampler]:
    """`machine.nprocesses` samplers, each from its `<mode>_task_sampler_args`, at global
    indices `first`, `first + 1`, ... of a run of `total` (default: these alone); a rank's
    share gets the samplers a single process would build at the same indices and seeds. A
    sampler whose arguments give no seed is seeded with its index's seed of the run."""
    total = machine.nprocesses if total is None else total
    seeds = sampler_seeds(seed, total, mode=mode)
    samplers = []
    for index in range(first, first + machine.nprocesses):
        args = experiment.call(
            f"{mode}_task_sampler_args",
            process_ind=index,
            total_processes=total,
            devices=list(machine.task_sampler_devices),
            seeds=seeds,
        )
        if not isinstance(args, dict):
            raise ConfigError(
                f"{experiment.name}.{mode}_task_sampler_args() returned {type(args).__name__}, "
                "expected a dict of make_sampler_fn's keyword arguments"
            )
        sampler = experiment.call("make_sampler_fn", **args)
        if not isinstance(sampler, TaskSampler):
            raise ConfigError(
                f"{experiment.name}.make_sampler_fn() returned {type(sampler).__name__}, "
                "expected a TaskSampler"
            )
        if args.get("seed") is None:  # AllenAct seeds these apart at random; here by the run's
            sampler.set_seed(seeds[index])  # seed (one seed for all would repeat one sequence)
        samplers.append(sampler)
    return samplers


def build_samplers(
    experiment: LoadedExperiment,
    mode: str,
    *,
    seed: int,
    max_sampler_processes: int | None = None,
) -> tuple[MachineParams, list[TaskSampler]]:
    """`machine_params(mode)` (`sampler_machine`) and all its samplers (`make_samplers`)."""
    machine = sampler_machine(experiment, mode, max_sampler_processes=max_sampler_processes)
    return machine, make_samplers(experiment, mode, machine=machine, seed=seed)


def start_sampler(
    experiment: LoadedExperiment,
    machine: MachineParams,
    *,
    samplers: list[TaskSampler],
    max_tasks: list[int | None] | None = None,
    groups: int = 1,
) -> VectorSampler:
    """The worker processes stepping `samplers` in `groups` groups, packed as
    `sampler_packing` says. With a core beyond the workers', the trainer and the workers wait
    for each other polling (`SPIN_SECONDS`), and double-buffered, the trainer steps a few slots
    itself, as many as even the loads (stagerl.tasks.balance)."""
    num_workers, groups = sampler_packing(machine, num_samplers=len(samplers), groups=groups)
    core_each = machine.cores() > num_workers  # a polling process takes no other's core
    spare_core = groups > 1 and core_each
    return VectorSampler(
        samplers,
        num_workers=num_workers,
        timeout=machine.worker_timeout,
        max_tasks=max_tasks,
        experiment=worker_experiment(experiment),
        groups=groups,
        trainer_slots=first_trainer_slots(len(samplers), num_workers) if spare_core else 0,
        spin=SPIN_SECONDS if core_each else 0.0,
    )


def sampler_packing(machine: MachineParams, *, num_samplers: int, groups: int) -> tuple[int, int]:
    """`(sampler processes, groups)` for `num_samplers` samplers asked to run in `groups`
    groups: never more groups than samplers, and a core left to the trainer when double
    buffering (`MachineParams.sampler_processes`)."""
    groups = min(groups, num_samplers)
    return min(machine.sampler_processes(spare_core=groups > 1), num_samplers), groups


@dataclass
class TrainingSetup:
    """Everything a run is built from, checked before any worker starts."""

    experiment: LoadedExperiment
    pipeline: TrainingPipeline
    machine: MachineParams
    device: torch.device
    samplers: list[TaskSampler]
    model: ActorCriticModel
    optimizer: torch.optim.Optimizer
    lr_scheduler: Any
    expert_uuids: list[str]  # of the tasks' ExpertActionSensors
    teachers: dict[int, str]  # teacher-forcing stage index -> the expert sensor it executes
    validation: tuple[MachineParams, list[TaskSampler]] | None  # its machine and samplers
    offpolicy_iterators: dict[int, Any]  # stage index -> its dataset iterator
    ranks: Ranks
    total_tasks: int  # over all ranks
    first_task: int  # the global index of this rank's first task

    @property
    def num_tasks(self) -> int:
        """This rank's tasks."""
        return len(self.samplers)

    @property
    def frames_per_rollout(self) -> int:
        """The steps one rollout takes, of every rank's tasks (what the stages count)."""
        return self.pipeline.num_steps * self.total_tasks

    @property
    def observation_space(self) -> spaces.Dict:
        """The training samplers' observation space."""
        return self.samplers[0].observation_space

    @property
    def model_reads_expert(self) -> bool:
        """The model takes an ExpertActionSensor's reading as an input (a model built from
        every sensor, which `_check_observations` allows): every stage keeps experts on."""
        inputs = getattr(self.model.observation_space, "spaces", {})
        return any(uuid in inputs for uuid in self.expert_uuids)

    def start_sampler(self) -> VectorSampler:
        """The training samplers' workers: two groups taking turns unless the machine params
        ask for synchronous sampling."""
        return start_sampler(
            self.experiment, self.machine, samplers=self.samplers, groups=self.training_groups
        )

    @property
    def training_groups(self) -> int:
        """Sampler groups asked for in training: two when double-buffered, else one."""
        return 2 if self.machine.double_buffered else 1


def _expert_uuids(pipeline: TrainingPipeline, samplers: list[TaskSampler]) -> list[str]:
    """The ExpertActionSensors' uuids, with every Imitation loss bound to an expert sensor the
    tasks have; an error naming the stage if one needs an expert and there is none."""
    suite = getattr(samplers[0], "sensor_suite", None)
    experts = {
        u: s
        for u, s in (suite.sensors.items() if suite else [])
        if isinstance(s, ExpertActionSensor)
    }
    actions = getattr(samplers[0].action_space, "n", None)
    for uuid, sensor in experts.items():
        field = f"ExpertActionSensor(uuid={uuid!r}).nactions"
        expected = f"{actions}, the tasks' number of actions"
        require(sensor.nactions == actions, field, value=sensor.nactions, expected=expected)
    uuids = list(experts)
    for index, stage in enumerate(pipeline.pipeline_stages):
        needs = stage.teacher_forcing is not None or pipeline.imitation_losses(stage)
        if needs and not uuids:
            raise ConfigError(
                f"pipeline_stages[{index}] uses teacher_forcing or an Imitation loss, but SENSORS "
                "has no ExpertActionSensor; add ExpertActionSensor(nactions=...) to SENSORS"
            )
    for name, loss in pipeline.named_imitation_losses().items():
        loss.bind(uuids, f"TrainingPipeline.named_losses[{name!r}]")
    return uuids


def _teachers(pipeline: TrainingPipeline, expert_uuids: list[str]) -> dict[int, str]:
    """The expert sensor each teacher-forcing stage executes: the one its Imitation losses read
    (they are bound by now), else the tasks' only one; an error naming the stage otherwise."""
    teachers = {}
    for index, stage in enumerate(pipeline.pipeline_stages):
        if stage.teacher_forcing is None:
            continue
        read = {pipeline.named_losses[n].expert_uuid for n in pipeline.imitation_losses(stage)}
        where = f"pipeline_stages[{index}].teacher_forcing"
        if len(read) > 1:
            raise ConfigError(
                f"{where}: the stage's Imitation losses read different ExpertActionSensors "
                f"{sorted(read)}; teacher forcing can execute only one's actions"
            )
        if not read and len(expert_uuids) > 1:
            raise ConfigError(
                f"{where}: the tasks have several ExpertActionSensors {expert_uuids} and the "
                "stage has no Imitation loss saying which one to execute; add one"
            )
        teachers[index] = read.pop() if read else expert_uuids[0]
    return teachers


def _validation_samplers(
    experiment: LoadedExperiment,
    pipeline: TrainingPipeline,
    seed: int,
    max_sampler_processes: int | None,
    *,
    model: ActorCriticModel,
    device: torch.device,
) -> tuple[MachineParams, list[TaskSampler]] | None:
    """The validation samplers, when the pipeline validates, checked to fit the model."""
    if pipeline.validation is None:
        return None
    try:
        machine, samplers = build_samplers(
            experiment, "valid", seed=seed, max_sampler_processes=max_sampler_processes
        )
    except ConfigError as error:
        raise ConfigError(f"TrainingPipeline.validation is set, but {error}") from None
    # the model must act on what validation tasks observe (no expert readings)
    where = f"{experiment.name}.create_model() (validation tasks)"
    check_outputs(where, model, samplers[0].observation_space, device)
    return machine, samplers


def offpolicy_iterators(
    pipeline: TrainingPipeline,
    samplers: list[TaskSampler],
    *,
    seed: int,
    first_stage: int,
    ranks: Ranks,
    tasks_per_rank: list[int],
) -> dict[int, Any]:
    """Iterators for the remaining stages' off-policy components: built (and their datasets
    checked) now, so that a bad dataset stops the run before any worker starts."""
    iterators = {}
    for index, stage in enumerate(pipeline.pipeline_stages):
        if stage.offpolicy_component is None or index < first_stage:
            continue
        context = {
            "rank": ranks.rank,
            "world_size": ranks.world_size,
            "seed": iterator_seed(seed, index, rank=ranks.rank),
            "observation_space": samplers[0].observation_space,
            "env_ids": getattr(samplers[0], "env_ids", None),
        }
        iterators[index] = build_iterator(
            stage.offpolicy_component,
            f"pipeline_stages[{index}].offpolicy_component",
            context=context,
            tasks_per_rank=tasks_per_rank,
            shared_seed=iterator_seed(seed, index, rank=0),
        )
    return iterators


def _optimization(pipeline: TrainingPipeline, model: ActorCriticModel) -> tuple[Any, Any]:
    """The pipeline's optimizer of the model's parameters and its LR scheduler (or None), each
    checked to be one."""
    field = "TrainingPipeline.optimizer_builder"
    optimizer = user_call(field, pipeline.optimizer_builder, model.parameters())
    require(
        isinstance(optimizer, torch.optim.Optimizer),
        field,
        value=optimizer,
        expected="an optimizer",
    )
    if pipeline.lr_scheduler_builder is None:
        return optimizer, None
    field = "TrainingPipeline.lr_scheduler_builder"
    scheduler = user_call(field, pipeline.lr_scheduler_builder, optimizer)
    is_scheduler = all(hasattr(scheduler, name) for name in ("step", "state_dict"))
    require(
        is_scheduler, field, value=scheduler, expected="a Builder(LambdaLR, ...) of an LR scheduler"
    )
    # The schedule is evaluated at the step count (`step(total_steps)`, as in AllenAct): a
    # scheduler whose step takes no count, or takes a metric (ReduceLROnPlateau), cannot be.
    plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    takes_step = not plateau and bool(inspect.signature(scheduler.step).parameters)
    expected = "an LR scheduler whose step(epoch) sets the rate at a step count (not one of "
    require(
        takes_step,
        field,
        value=scheduler,
        expected=expected + "SequentialLR, ChainedScheduler, ...)",
    )
    return optimizer, scheduler


def build_pipeline(experiment: LoadedExperiment) -> TrainingPipeline:
    """The experiment's TrainingPipeline, checked to be one."""
    pipeline = experiment.call("training_pipeline")
    if not isinstance(pipeline, TrainingPipeline):
        raise ConfigError(f"{experiment.name}.training_pipeline() must return a TrainingPipeline")
    pipeline.check()  # again: settings may have changed since it was built
    return pipeline


def build_training_setup(
    experiment: LoadedExperiment,
    *,
    seed: int,
    resume: dict[str, Any] | None = None,
    max_sampler_processes: int | None = None,
    ranks: Ranks | None = None,
) -> TrainingSetup:
    """Build and check the pipeline, samplers, model, optimizer and datasets of a (resumed)
    run, or of this rank's share of it; only rank 0 validates."""
    ranks = ranks or Ranks()
    pipeline = build_pipeline(experiment)
    configure_trainer_process()
    everyone = sampler_machine(experiment, "train", max_sampler_processes=max_sampler_processes)
    total_tasks = everyone.nprocesses
    machine, first_task = everyone.for_rank(ranks.rank, ranks.world_size)
    samplers = make_samplers(
        experiment, "train", machine=machine, seed=seed, first=first_task, total=total_tasks
    )
    device = trainer_device(machine)
    space = samplers[0].observation_space
    model = build_model(
        experiment, samplers[0].action_space, device=device, observation_space=space
    )
    recurrent = math.prod(model.memory_shape) > 0
    pipeline.check_rank_task_counts(everyone.task_counts(ranks.world_size), recurrent=recurrent)
    expert_uuids = _expert_uuids(pipeline, samplers)
    validation = None
    if ranks.is_main:
        validation = _validation_samplers(
            experiment, pipeline, seed, max_sampler_processes, model=model, device=device
        )
    offpolicy = offpolicy_iterators(
        pipeline, samplers, seed=seed, ranks=ranks,
        first_stage=resume["state"]["stage_index"] if resume else 0,
        tasks_per_rank=list(everyone.task_counts(ranks.world_size)),
    )  # fmt: skip
    optimizer, scheduler = _optimization(pipeline, model)
    if resume:
        restore_training(
            resume, experiment, total_tasks=total_tasks, model=model, optimizer=optimizer,
            scheduler=scheduler,
        )  # fmt: skip
    return TrainingSetup(
        experiment=experiment,
        pipeline=pipeline,
        machine=machine,
        device=device,
        samplers=samplers,
        model=model,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        expert_uuids=expert_uuids,
        teachers=_teachers(pipeline, expert_uuids),
        validation=validation,
        offpolicy_iterators=offpolicy,
        ranks=ranks,
        total_tasks=total_tasks,
        first_task=first_task,
    )
