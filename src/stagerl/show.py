"""`stagerl show`: an experiment's training plan, built and checked as `stagerl train` builds
it (a misspelt setting fails here the same way), without starting any worker."""

import copy
import math
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from stagerl.engine.distributed import Ranks
from stagerl.engine.learner import step_lr_scheduler
from stagerl.engine.setup import TrainingSetup, build_training_setup, sampler_packing
from stagerl.engine.storage import RolloutStorage
from stagerl.experiment import LoadedExperiment
from stagerl.losses.ppo import PPO
from stagerl.pipeline import PipelineStage

MIB = 2**20


def _values(
    schedule: Any, points: list[int], low: float = -math.inf, high: float = math.inf
) -> str:
    """A schedule's values at these points, clipped to [low, high] as training clips them."""
    return " / ".join(f"{min(max(schedule(point), low), high):.3g}" for point in points)


def _learning_rates(setup: TrainingSetup, points: list[int]) -> str:
    """The LR at these total steps, from copies of the optimizer and scheduler."""
    optimizer, scheduler = copy.deepcopy((setup.optimizer, setup.lr_scheduler))
    rates = []
    for point in points:
        step_lr_scheduler(scheduler, point)
        rates.append(f"{optimizer.param_groups[0]['lr']:.3g}")
    return " / ".join(rates)


def _clip(setup: TrainingSetup, stage: PipelineStage, points: list[int]) -> str:
    losses = setup.pipeline.named_losses
    ppo = [losses[name] for name in stage.loss_names if isinstance(losses[name], PPO)]
    if not ppo:
        return "-"
    return _values(lambda steps: ppo[0].clip_param * ppo[0].clip_decay(steps), points, low=0)


def _schedules(
    setup: TrainingSetup, stage: PipelineStage, start: int, rollouts: int, per_rollout: int
) -> list[str]:
    """Teacher forcing, PPO clip and LR in the stage's first, middle and last of `rollouts`
    rollouts, as training evaluates them: teacher forcing at the rollout's first step (of the
    stage's steps), the clip at its update (the stage's steps after the rollout), the LR at its
    update too (the total steps before the rollout: the scheduler steps after each update)."""
    begins = [r * per_rollout for r in (0, rollouts // 2, rollouts - 1)]
    teacher = stage.teacher_forcing
    return [
        _values(teacher, begins, low=0, high=1) if teacher is not None else "-",
        _clip(setup, stage, [steps + per_rollout for steps in begins]),
        _learning_rates(setup, [start + steps for steps in begins]),
    ]


def _stage_table(setup: TrainingSetup) -> Table:
    pipeline = setup.pipeline
    table = Table(title="stages (schedules in the stage's first / middle / last rollout)")
    for column in ("stage", "losses (weight)", "steps", "rollouts", "updates"):
        table.add_column(column, justify="right" if column in ("steps", "rollouts") else "left")
    for column in ("teacher forcing", "PPO clip", "learning rate"):
        table.add_column(column)
    per_rollout = setup.frames_per_rollout
    start = 0
    for index, stage in enumerate(pipeline.pipeline_stages):
        budget = _stage_frames(setup, stage)
        rollouts = budget // per_rollout
        losses = [f"{n} ({w:g})" for n, w in zip(stage.loss_names, stage.loss_weights, strict=True)]
        updates = []
        if stage.loss_names:
            minibatches = pipeline.setting(stage, "num_mini_batch")
            repeats = pipeline.setting(stage, "update_repeats")
            updates.append(f"{rollouts * minibatches * repeats:,} ({repeats} x {minibatches})")
        component = stage.offpolicy_component
        if component is not None:
            losses += [f"off-policy {n} ({w:g})" for n, w in zip(
                component.loss_names, component.loss_weights, strict=True)]  # fmt: skip
            updates.append(f"{rollouts * component.updates:,} off-policy")
        table.add_row(
            str(index),
            "\n".join(losses) or "(none: rollouts only)",
            f"{budget:,}",
            f"{rollouts:,}",
            "\n".join(updates) or "-",
            *_schedules(setup, stage, start, rollouts, per_rollout),
        )
        start += budget
    return table


def _stage_frames(setup: TrainingSetup, stage: PipelineStage) -> int:
    """The frames a stage runs: it ends with the whole rollout that reaches max_stage_steps."""
    per_rollout = setup.frames_per_rollout
    return math.ceil(stage.max_stage_steps / per_rollout) * per_rollout


def _memory_mib(setup: TrainingSetup) -> tuple[float, float, float]:
    """The rollout storage's tensors; the model with its gradient and two optimizer moments
    (Adam's; an estimate for other optimizers); the largest DAgger buffer of any stage."""
    storage = RolloutStorage(
        num_steps=setup.pipeline.num_steps,
        num_tasks=setup.num_tasks,
        observation_space=setup.observation_space,
        memory_shape=setup.model.memory_shape,
    )
    tensors = [v for v in vars(storage).values() if isinstance(v, torch.Tensor)]
    tensors += list(storage.observations.values())
    parameters = sum(p.numel() * p.element_size() for p in setup.model.parameters())
    step_bytes = sum(
        obs[0, 0].numel() * obs.element_size() for obs in storage.observations.values()
    )
    buffers = [
        stage.dataset_aggregation.max_sequences * storage.num_steps * (step_bytes + 16)
        for stage in setup.pipeline.pipeline_stages
        if stage.dataset_aggregation is not None
    ]
    storage_bytes = sum(t.numel() * t.element_size() for t in tensors)
    return storage_bytes / MIB, 4 * parameters / MIB, max(buffers, default=0) / MIB


def show(experiment: LoadedExperiment, max_sampler_processes: int | None = None) -> None:
    """Print the experiment's samplers, model and stages; raises what training would raise.
    With `nprocesses` given per trainer rank (a list), rank 0's part of the plan under torchrun
    with as many ranks."""
    counts = experiment.machine_params("train").rank_task_counts or ()
    ranks = Ranks(rank=0, world_size=len(counts)) if counts else Ranks()  # no process group
    setup = build_training_setup(
        experiment, seed=0, max_sampler_processes=max_sampler_processes, ranks=ranks
    )
    try:
        machine, pipeline = setup.machine, setup.pipeline
        processes, groups = sampler_packing(
            machine, num_samplers=setup.num_tasks, groups=setup.training_groups
        )
        storage_mib, model_mib, buffer_mib = _memory_mib(setup)
        parameters = sum(p.numel() for p in setup.model.parameters())
        frames = sum(_stage_frames(setup, stage) for stage in pipeline.pipeline_stages)
        console = Console()
        console.width = max(console.width, 140)  # the stage table's columns, unabridged
        split = f"{len(counts)} trainer ranks of {list(counts)} task samplers; rank 0: "
        console.print(
            f"[bold]{experiment.name}[/] (tag {experiment.tag()}): "
            + (split if counts else "")
            + f"{setup.num_tasks} task samplers in {processes} sampler "
            f"process{'es' if processes > 1 else ''}, "
            + ("double-buffered" if groups > 1 else "synchronous")
            + f", trained on {setup.device}; {pipeline.num_steps} steps per task per rollout = "
            f"{setup.frames_per_rollout:,} frames; {frames:,} "
            f"steps in all\nmodel {type(setup.model).__name__}: {parameters:,} parameters; "
            f"memory estimate: rollout storage {storage_mib:.1f} MiB, model with gradients "
            f"and Adam moments {model_mib:.1f} MiB"
            + (f", DAgger buffer {buffer_mib:.1f} MiB" if buffer_mib else ""),
            highlight=False,
        )
        console.print(_stage_table(setup))
    finally:
        for iterator in setup.offpolicy_iterators.values():
            iterator.close()
