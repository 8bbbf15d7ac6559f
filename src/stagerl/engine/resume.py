"""Where a resumed run continues (in its own run directory when resuming its newest checkpoint,
else in a new branch directory, so that nothing of the original run is ever overwritten), and
what it takes back from the checkpoint."""

import difflib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from stagerl.engine.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINTS_DIR,
    find_latest_run,
    list_checkpoints,
    load_checkpoint,
    load_latest,
    new_run_dir,
)
from stagerl.engine.learner import step_lr_scheduler
from stagerl.engine.logging import add_up_metrics
from stagerl.engine.storage import join_carry_states, slice_carry_state
from stagerl.errors import CheckpointError
from stagerl.experiment import LoadedExperiment

DIFF_LINES_SHOWN = 20


@dataclass(frozen=True)
class ResumePlan:
    """The checkpoint to resume, its contents, and the run directory training continues in."""

    checkpoint: Path
    payload: dict[str, Any]
    run_dir: Path
    branched_from: Path | None  # the original run, when this resume starts a branch
    config_change: list[str]  # the diff from the saved config to the file now; [] if none

    @property
    def in_place(self) -> bool:
        """Whether training continues in the checkpoint's own run directory (not a new one)."""
        return self.checkpoint.parent.parent == self.run_dir

    def confirm_in_held_run(self) -> None:
        """Once the run is held (so that a resume refused because another trainer holds it
        writes nothing there): an in-place resume checks that its checkpoint is still the run's
        newest (a trainer that held the run while this plan was made may have written others
        since), then the config's diff is kept in the run directory."""
        newest = list_checkpoints(self.run_dir)[:1]
        if self.in_place and newest and newest[0].resolve() != self.checkpoint.resolve():
            raise CheckpointError(
                f"{self.run_dir}: {newest[0].name} was written while this resume was planned "
                f"from {self.checkpoint.name}; run the command again"
            )
        if self.config_change:
            step = self.payload["state"]["total_steps"]
            path = self.run_dir / f"config_change_at_{step}.diff"
            path.write_text("\n".join(self.config_change) + "\n")


def _checkpoint_and_payload(
    target: str, output: Path, tag: str, seed: int | None, warn: Any
) -> tuple[Path, dict, bool]:
    """The checkpoint, its contents, and whether it was named as a file (not picked as the
    newest readable one of a run)."""
    if target == "latest":
        return *load_latest(find_latest_run(output, tag, seed=seed), warn), False
    path = Path(target)
    if not path.exists():
        raise CheckpointError(f"--resume {path}: no such checkpoint file or run directory")
    if path.is_dir():
        return *load_latest(path, warn), False
    return path, load_checkpoint(path), True


def check_experiment(payload: dict[str, Any], experiment: LoadedExperiment) -> None:
    """The checkpoint was written by this experiment (class and tag), in this format."""
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"checkpoint format {payload.get('format')} is from an older stagerl; this one "
            f"resumes format {CHECKPOINT_FORMAT} (evaluating it with `stagerl eval` still works)"
        )
    tag = experiment.tag()
    if payload.get("experiment") != experiment.name or payload.get("tag") != tag:
        raise CheckpointError(
            f"checkpoint is from experiment {payload.get('experiment')} ({payload.get('tag')}), "
            f"not {experiment.name} ({tag})"
        )


def saved_config(payload: dict[str, Any], experiment: LoadedExperiment) -> str:
    """The config text a checkpoint saved, with the experiment files it loaded (from a
    checkpoint written before those were saved: taken to be as they are now)."""
    loaded = payload.get("loaded_sources", experiment.loaded_sources)
    return payload.get("config_source", "") + loaded


def config_diff(saved: str, current: str, *, saved_name: str, current_name: str) -> list[str]:
    """The unified diff from the config a checkpoint saved to the file as it is now."""
    return list(
        difflib.unified_diff(
            saved.splitlines(), current.splitlines(), saved_name, current_name, lineterm=""
        )
    )


def diff_summary(diff: list[str]) -> str:
    """A diff's first DIFF_LINES_SHOWN lines, and how many more there are."""
    shown = diff[:DIFF_LINES_SHOWN]
    more = len(diff) - len(shown)
    return "\n".join(shown) + (f"\n... ({more} more diff lines)" if more else "")


def _start_branch(
    original: Path | None, tag_dir: Path, checkpoint: Path, payload: dict[str, Any]
) -> Path:
    """A new run directory in `tag_dir` recording where it came from. It gets the original
    run's metrics rows and TensorBoard events up to the checkpoint (the logger drops later
    ones) and its config."""
    branch = new_run_dir(tag_dir)
    try:
        if original is not None:
            for name in ("metrics.jsonl", "config.py"):
                if (original / name).exists():
                    shutil.copy(original / name, branch / name)
            if (original / "tensorboard").is_dir():
                shutil.copytree(original / "tensorboard", branch / "tensorboard")
        record = {
            "resumed_from_checkpoint": str(checkpoint.resolve()),
            "original_run": str(original.resolve()) if original is not None else None,
            "total_steps": payload["state"]["total_steps"],
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        (branch / "branch.json").write_text(json.dumps(record, indent=2) + "\n")
    except BaseException:  # a full disk, a signal: no half-made branch left to resume
        shutil.rmtree(branch, ignore_errors=True)
        raise
    return branch


def plan_resume(
    target: str,
    *,
    output: Path,
    experiment: LoadedExperiment,
    allow_config_change: bool,
    warn: Any,
    seed: int | None = None,
) -> ResumePlan:
    """Load the checkpoint `target` names (`latest`: of the runs of `seed` when given, a run
    directory or a file) and decide where training continues: in place, unless a file older
    than its run's newest checkpoint, or one outside a run's `checkpoints/`, was named: that
    starts a new run directory. An experiment file that differs from the one the checkpoint
    saved is refused unless `allow_config_change`; then the plan holds the diff.
    A `seed` other than the checkpoint's is refused."""
    tag = experiment.tag()
    checkpoint, payload, named = _checkpoint_and_payload(target, output, tag, seed, warn)
    check_experiment(payload, experiment)
    if seed is not None and payload.get("seed") != seed:
        raise CheckpointError(
            f"{checkpoint} was trained with seed {payload.get('seed')}, not {seed}: resume it "
            "without -s (a run keeps its seed)"
        )
    diff = config_diff(
        saved_config(payload, experiment),
        experiment.full_source,
        saved_name=f"{checkpoint.name}:config.py",
        current_name=str(experiment.path),
    )
    if diff and not allow_config_change:
        raise CheckpointError(
            f"{experiment.path} differs from the config saved in {checkpoint}:\n"
            f"{diff_summary(diff)}\nresume with --allow-config-change to go on with the edited "
            "file (the diff is recorded in the run directory)"
        )
    run_dir, branched_from = checkpoint.parent.parent, None
    newest = list_checkpoints(run_dir)
    if checkpoint.parent.name != CHECKPOINTS_DIR:  # a file on its own: no run to write into
        run_dir = _start_branch(None, output / tag, checkpoint, payload)
    elif named and newest and newest[0].resolve() != checkpoint.resolve():
        branched_from = run_dir
        run_dir = _start_branch(run_dir, run_dir.parent, checkpoint, payload)
    return ResumePlan(checkpoint, payload, run_dir, branched_from, diff)


@dataclass
class RankShare:
    """What one rank continues from a checkpoint: its samplers' states, the storage carried
    into the next rollout, its RNG states (None: re-seed), DAgger buffer, off-policy learners
    and metric sums; and notes on anything that could not continue as it was."""

    samplers: list[bytes]
    storage: dict[str, Any]
    rng: dict[str, Any] | None
    dagger_buffer: dict[str, Any] | None
    offpolicy: dict[int, dict[str, Any]]
    logger: dict[str, Any]
    notes: list[str]


def rank_share(
    payload: dict[str, Any], *, rank: int, world_size: int, first_task: int, num_tasks: int
) -> RankShare:
    """Rank `rank`'s share of a checkpoint. Written by as many ranks: that rank's part as it
    was. By another number: tasks keep their samplers and carried storage (the global task
    order is the same on any number of ranks); RNG streams are re-seeded; a rank keeps the
    DAgger buffer of the old rank with its index (if any); off-policy iterators restart this
    rank's share of their dataset; rank 0 takes all ranks' pending metric sums."""
    parts = payload["ranks"]
    if len(parts) == world_size:
        part = parts[rank]
        return RankShare(
            part["samplers"],
            part["storage"],
            part["rng"],
            part["dagger_buffer"],
            part["offpolicy"],
            part["logger"],
            [],
        )
    tasks = slice(first_task, first_task + num_tasks)
    pending = [(part["logger"]["sums"], part["logger"]["counts"]) for part in parts]
    sums, counts = add_up_metrics(pending if rank == 0 else [])
    logger = dict(parts[0]["logger"], sums=sums, counts=counts)
    offpolicy = {
        index: {**state, "iterator": None, "memory": None}
        for index, state in parts[0]["offpolicy"].items()
    }
    notes = [
        f"the checkpoint was written by {len(parts)} trainer ranks and this run has "
        f"{world_size}: every task continues its sampler and carried memory; the ranks' random "
        "streams are re-seeded from the seed and step"
        + ("; off-policy iterators restart each rank's share of the dataset" if offpolicy else "")
        + (
            "; DAgger buffers of ranks beyond the new count are dropped"
            if len(parts) > world_size
            else ""
        )
    ]
    return RankShare(
        samplers=[state for part in parts for state in part["samplers"]][tasks],
        storage=slice_carry_state(
            join_carry_states([part["storage"] for part in parts]),
            first=first_task,
            count=num_tasks,
        ),
        rng=None,
        dagger_buffer=parts[rank]["dagger_buffer"] if rank < len(parts) else None,
        offpolicy=offpolicy,
        logger=logger,
        notes=notes,
    )


def drop_unused_dagger_buffer(share: RankShare, stages: list[Any], stage: int) -> None:
    """Drop the DAgger buffer saved for pipeline stage `stage` if that stage no longer
    aggregates (its config changed, `--allow-config-change`), with a note."""
    if share.dagger_buffer is None:
        return
    if stage < len(stages) and stages[stage].dataset_aggregation is not None:
        return
    share.dagger_buffer = None
    share.notes.append(
        f"pipeline_stages[{stage}] has no dataset_aggregation now: the DAgger buffer the "
        "checkpoint saved for it is dropped"
    )


def load_saved_state(what: str, target: Any, *, state: dict, source: str) -> None:
    """`target.load_state_dict(state)`; a CheckpointError naming `source` and `what` when the
    saved state does not fit (the experiment's model or optimizer changed since)."""
    try:
        target.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError) as error:
        raise CheckpointError(
            f"{source}: its {what} does not fit this experiment's (edited since it was "
            f"saved?): {error}"
        ) from None


def _resume_optimization(optimizer: Any, scheduler: Any, resume: dict, edited: bool) -> None:
    """The optimizer's running state (Adam's moments, ...) from the checkpoint. Its settings
    and the LR schedule are the checkpoint's too, unless the experiment file was edited since
    (resumed with `--allow-config-change`): then they are the file's, the schedule evaluated at
    the step reached, so that an edited learning rate takes effect."""
    settings = [
        {k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups
    ]
    load_saved_state(
        "optimizer", optimizer, state=resume["optimizer"], source="the checkpoint resumed from"
    )
    if not edited:
        if scheduler is not None and resume["lr_scheduler"] is not None:
            scheduler.load_state_dict(resume["lr_scheduler"])
        return
    for group, setting in zip(optimizer.param_groups, settings, strict=True):
        group.update(setting)
    step_lr_scheduler(scheduler, resume["state"]["total_steps"])


def _check_resumable(
    resume: dict[str, Any], experiment: LoadedExperiment, total_tasks: int
) -> None:
    check_experiment(resume, experiment)
    if resume["num_tasks"] != total_tasks:
        raise CheckpointError(
            f"checkpoint has {resume['num_tasks']} task samplers, machine_params('train') now "
            f"gives nprocesses={total_tasks}; resume with the nprocesses the run started with"
        )


def restore_training(
    resume: dict[str, Any],
    experiment: LoadedExperiment,
    *,
    total_tasks: int,
    model: torch.nn.Module,
    optimizer: Any,
    scheduler: Any,
) -> None:
    """A resumed run's model, optimizer and LR schedule from its checkpoint, once the
    checkpoint is checked to be this experiment's, with as many task samplers."""
    _check_resumable(resume, experiment, total_tasks)
    load_saved_state("model", model, state=resume["model"], source="the checkpoint resumed from")
    edited = saved_config(resume, experiment) != experiment.full_source
    _resume_optimization(optimizer, scheduler, resume, edited)
