"""A run's progress (saved in every checkpoint) and the two ways training stops before its
stages end: a signal, or too many non-finite updates in a row."""

import signal
from dataclasses import dataclass
from pathlib import Path

from stagerl.errors import StagerlError


class NonFiniteLossError(StagerlError):
    """Too many updates in a row had a NaN or infinite loss or gradient."""

    exit_code = 1


class Interrupted(StagerlError):
    """Training stopped on SIGINT/SIGTERM after saving a checkpoint."""

    def __init__(self, signum: int, checkpoint: Path | None) -> None:
        where = checkpoint or "written by rank 0"
        super().__init__(f"stopped by {signal.Signals(signum).name}; checkpoint {where}")
        self.exit_code = 128 + signum


@dataclass
class TrainingState:
    """The run's progress: stage, step counters and bookkeeping, saved in every checkpoint."""

    stage_index: int = 0
    stage_steps: int = 0
    total_steps: int = 0
    rollout_count: int = 0
    last_save_steps: int = 0
    last_valid_steps: int = 0
    nonfinite_in_a_row: int = 0
    stopped_early: bool = False  # the stage's early_stopping_criterion said so
