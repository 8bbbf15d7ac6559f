"""Metrics: averaged over `metric_accumulate_interval` steps, written to TensorBoard event
files, to `metrics.jsonl` (one row per interval) and to a live progress line."""

import contextlib
import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from torch.utils.tensorboard import SummaryWriter

from stagerl.engine.files import write_atomically


def _truncate_jsonl(path: Path, last_step: int) -> set[int]:
    """Drop rows written after the checkpoint we resume from, so no step appears twice. The
    kept rows go to a new file that replaces the old one: a crash midway loses no history.
    Returns the steps of the kept validation rows."""
    if not path.exists():
        return set()
    kept, validated = [], set()
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
            if row["step"] <= last_step:
                kept.append(line)
                if any(key.startswith("valid/") for key in row):
                    validated.add(row["step"])
        except (ValueError, KeyError, TypeError):
            pass  # a row cut short when the run was killed
    text = "".join(line + "\n" for line in kept)
    write_atomically(path, lambda file: file.write(text.encode()))
    return validated


@dataclass
class TrainingMetrics:
    """What an early-stopping criterion sees: the episode metrics (`success`, `ep_length`,
    `reward`, ...) of the window the last rollout closed, or none, as AllenAct's
    `ScalarMeanTracker` gives them."""

    mean_values: dict[str, float]
    count_values: dict[str, int]

    @classmethod
    def from_row(cls, row: dict[str, Any], counts: dict[str, int]) -> "TrainingMetrics":
        """The `train/*` means of a logged row and their counts."""
        keys = [key for key in row if key.startswith("train/")]
        return cls(
            {key.removeprefix("train/"): row[key] for key in keys},
            {key.removeprefix("train/"): counts.get(key, 0) for key in keys},
        )

    def means(self) -> dict[str, float]:
        """Each metric's mean over the window."""
        return dict(self.mean_values)

    def counts(self) -> dict[str, int]:
        """How many values each mean is over."""
        return dict(self.count_values)

    def sums(self) -> dict[str, float]:
        """Each metric's total over the window (mean times count)."""
        return {key: mean * self.count_values[key] for key, mean in self.mean_values.items()}


def add_up_metrics(
    parts: Iterable[tuple[dict[str, float], dict[str, int]]],
) -> tuple[dict[str, float], dict[str, int]]:
    """Several `(sums, counts)` of metrics as one (a key some parts lack counts 0 there)."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for part_sums, part_counts in parts:
        for key, value in part_sums.items():
            sums[key] = sums.get(key, 0.0) + value
            counts[key] = counts.get(key, 0) + part_counts[key]
    return sums, counts


def _no_merge(
    sums: dict[str, float], counts: dict[str, int]
) -> tuple[dict[str, float], dict[str, int]]:
    return sums, counts


class _Console(Console):
    """rich's Console, but a closed pipe (the `| tee` reading stderr killed, say) silences it
    rather than exiting the process: training goes on, its rows are in metrics.jsonl and
    TensorBoard."""

    def on_broken_pipe(self) -> None:
        """Print nothing more (rich's own exits)."""
        self.quiet = True


class MetricsLogger:
    """Without `tensorboard_and_console` (`TrainingPipeline.should_log=False`) only
    `metrics.jsonl` is written; without a `run_dir` (trainer ranks other than 0) nothing is,
    but rows are still made, for early stopping. `merge` adds up the sums and counts of all
    ranks before a row is made."""

    def __init__(
        self,
        run_dir: Path | None,
        *,
        interval: int,
        total_steps: int,
        start_step: int = 0,
        state: dict[str, Any] | None = None,
        tensorboard_and_console: bool = True,
        merge: Callable[[dict, dict], tuple[dict, dict]] = _no_merge,
    ) -> None:
        self.interval = interval
        self.total_steps = total_steps
        self.merge = merge
        self.jsonl = self.writer = None
        self.validated_steps: set[int] = set()  # of the rows kept from before a resume
        tensorboard_and_console = tensorboard_and_console and run_dir is not None
        if run_dir is not None:
            run_dir.mkdir(parents=True, exist_ok=True)
            jsonl = run_dir / "metrics.jsonl"
            self.validated_steps = _truncate_jsonl(jsonl, start_step)
            self.jsonl = jsonl.open("a")
        if tensorboard_and_console:
            self.writer = SummaryWriter(
                str(run_dir / "tensorboard"), purge_step=start_step + 1 if start_step else None
            )
        self.console = _Console(file=sys.stderr, quiet=not tensorboard_and_console)
        # On a terminal, a live bar between the rows; elsewhere (CI, files) just the rows.
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
            disable=not (self.console.is_terminal and tensorboard_and_console),
        )
        self.bar = self.progress.add_task("training", total=total_steps, completed=start_step)
        self.progress.start()
        self.sums: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)
        self.last_counts: dict[str, int] = {}  # of the last row written
        self.last_emit_step = start_step
        self.earlier_seconds = 0.0  # of training before a resume
        if state:
            self.sums.update(state["sums"])
            self.counts.update(state["counts"])
            self.last_emit_step = state["last_emit_step"]
            self.earlier_seconds = state.get("seconds", 0.0)
        self.last_emit_time = self.start_time = time.monotonic()
        self.start_step = start_step
        self.window_start_step = start_step  # of the open window's frames/s (not before a resume)

    def start_clock(self) -> None:
        """Count training time (fps, the ETA, `time`) from now: the samplers' start-up is none."""
        self.last_emit_time = self.start_time = time.monotonic()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Leave the time spent within (a validation) out of the open window's frames/s; the
        ETA and `time` still count it."""
        start = time.monotonic()
        try:
            yield
        finally:
            self.last_emit_time += time.monotonic() - start

    def state_dict(self) -> dict[str, Any]:
        """The open window's sums and the time trained so far, for checkpoints."""
        return {
            "sums": dict(self.sums),
            "counts": dict(self.counts),
            "last_emit_step": self.last_emit_step,
            "seconds": self.seconds(),
        }

    def add(self, values: dict[str, float], prefix: str = "") -> None:
        """Add one value per metric to the open window."""
        for key, value in values.items():
            self.sums[prefix + key] += value
            self.counts[prefix + key] += 1

    def set(self, values: dict[str, float]) -> None:
        """Values the next row shows as they are now (counters), not averaged."""
        for key, value in values.items():
            self.sums[key], self.counts[key] = value, 1

    def maybe_emit(
        self, step: int, *, stage_index: int, stage: str, force: bool = False
    ) -> dict[str, Any] | None:
        """Write one averaged row, tagged with the stage, if `interval` steps passed."""
        self.progress.update(self.bar, completed=step, description=f"stage {stage}")
        if step - self.last_emit_step < self.interval and not (
            force and step > self.last_emit_step
        ):
            return None
        now = time.monotonic()
        sums, counts = self.merge(self.sums, self.counts)
        row: dict[str, Any] = {key: sums[key] / counts[key] for key in sorted(sums)}
        row["fps"] = (step - self.window_start_step) / max(now - self.last_emit_time, 1e-9)
        row["time"] = self.seconds(now)
        row = self.write_row(step, stage_index=stage_index, stage=stage, values=row)
        self._print_progress(row, now)
        self.last_counts = dict(counts)
        self.sums.clear()
        self.counts.clear()
        self.last_emit_step, self.last_emit_time = step, now
        self.window_start_step = step
        return row

    def seconds(self, now: float | None = None) -> float:
        """Training seconds so far, those before a resume included."""
        now = time.monotonic() if now is None else now
        return self.earlier_seconds + now - self.start_time

    def write_row(
        self,
        step: int,
        *,
        stage_index: int,
        stage: str,
        values: dict[str, float],
        file_only: Iterable[str] = (),
    ) -> dict[str, Any]:
        """One row as it stands, at `step`, to TensorBoard (less `file_only`) and
        `metrics.jsonl`."""
        row: dict[str, Any] = {**values, "stage_index": stage_index}
        for key, value in row.items():
            if self.writer is not None and key not in file_only:
                self.writer.add_scalar(key, value, step)
        row = {"step": step, "stage": stage, **row}
        if self.jsonl is not None:
            self.jsonl.write(json.dumps(row) + "\n")
            self.jsonl.flush()
        return row

    def log_validation(
        self, step: int, *, stage_index: int, stage: str, values: dict[str, float]
    ) -> None:
        """A row of `valid/*` means of its own, and a line saying what they were."""
        self.write_row(  # TensorBoard has the training row's time and stage at this step
            step,
            stage_index=stage_index,
            stage=stage,
            values={**values, "time": self.seconds()},
            file_only=("time", "stage_index"),
        )
        shown = "  ".join(
            f"{key.removeprefix('valid/')} {values[key]:.3f}"
            for key in ("valid/success", "valid/ep_length", "valid/reward")
            if key in values
        )
        episodes = int(values.get("valid/episodes", 0))
        self._say(
            f"[bold]{step:>9,}[/]/{self.total_steps:,} steps  validation ({episodes} episodes): "
            + shown
        )

    def _say(self, line: str) -> None:
        """A line on the terminal; a terminal gone (a dropped session's I/O error, a closed
        pipe: `_Console`) silences the lines, not the training."""
        try:
            self.console.print(line, highlight=False, soft_wrap=True)
        except OSError:
            self.console.quiet = True

    def _print_progress(self, row: dict[str, Any], now: float) -> None:
        step = row["step"]
        rate = (step - self.start_step) / max(now - self.start_time, 1e-9)
        eta = max(self.total_steps - step, 0) / max(rate, 1e-9)  # the last rollout overshoots
        success = row.get("train/success")
        self._say(
            f"[bold]{step:>9,}[/]/{self.total_steps:,} steps  {row['fps']:7.0f} fps  "
            f"stage {row['stage']}  success "
            + (f"{success:.3f}" if success is not None else "  -  ")
            + f"  ETA {eta:5.0f} s"
            + ("  (the last rollout ran past the budget)" if step > self.total_steps else "")
        )

    def close(self) -> None:
        """Stop the progress line and flush the TensorBoard writer."""
        self.progress.stop()
        if self.writer is not None:
            self.writer.close()
        if self.jsonl is not None:
            self.jsonl.close()
