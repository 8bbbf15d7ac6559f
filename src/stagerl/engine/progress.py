"""A run's progress (saved in every checkpoint) and the ways training stops before its
stages end: a signal (during start-up or training), or too many non-finite updates in a row."""

import contextlib
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stagerl.engine.learner import UpdateResult
from stagerl.errors import StagerlError, StoppedOutsideTraining


class NonFiniteLossError(StagerlError):
    """Too many updates in a row had a NaN or infinite loss or gradient."""

    exit_code = 1


class Interrupted(StagerlError):
    """Training stopped on SIGINT/SIGTERM after saving a checkpoint."""

    def __init__(self, signum: int, checkpoint: Path | None) -> None:
        where = checkpoint or "written by rank 0"
        super().__init__(f"stopped by {signal.Signals(signum).name}; checkpoint {where}")
        self.exit_code = 128 + signum


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within, SIGTERM raises StoppedOutsideTraining: its default ends the process at once,
    past the clean-up of a new run's directory (torchrun sends it to every rank when one fails
    starting; so may a job scheduler). Training installs its own handler meanwhile, and puts
    this one back when it ends."""

    def stop(signum: int, frame: Any) -> None:
        raise StoppedOutsideTraining(signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass
class TrainingState:
    """The run's progress: stage, step counters and bookkeeping, saved in every checkpoint."""

    stage_index: int = 0
    stage_steps: int = 0
    total_steps: int = 0
    rollout_count: int = 0
    last_save_steps: int = 0
    last_valid_steps: int = 0
    nonfinite_in_a_row: int = 0  # on-policy updates
    offpolicy_nonfinite_in_a_row: int = 0
    stopped_early: bool = False  # the stage's early_stopping_criterion said so

    def count_nonfinite(self, outcome: UpdateResult, *, offpolicy: bool, limit: int) -> None:
        """Count an update phase's updates skipped for a NaN/inf loss or gradient, in order
        and across phases; a NonFiniteLossError once `limit` in a row. On-policy and off-policy
        updates count apart, so that good updates of one kind cannot hide the other's failing."""
        name = "offpolicy_nonfinite_in_a_row" if offpolicy else "nonfinite_in_a_row"
        in_a_row = getattr(self, name)
        for skipped in outcome.skips:
            in_a_row = in_a_row + 1 if skipped else 0
            if in_a_row >= limit:
                break
        setattr(self, name, in_a_row)
        if in_a_row >= limit:
            kind = "off-policy updates" if offpolicy else "updates"
            raise NonFiniteLossError(
                f"{in_a_row} {kind} in a row had a NaN/inf loss or gradient (at step "
                f"{self.total_steps}); the last good checkpoint is kept"
            )
