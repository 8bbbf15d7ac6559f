"""Checkpoints: written atomically, never deleted by a later run, corrupt ones skipped with a
reason and set aside."""

import json
import pickle
import re
import shutil
import time
import zipfile
from pathlib import Path
from typing import Any

import torch

from stagerl.engine.files import write_atomically
from stagerl.errors import CheckpointError, CheckpointWriteError, CorruptCheckpointError

_NAME = re.compile(r"^ckpt_(\d+)\.pt$")
# 3: what each trainer rank keeps (samplers, storage, RNG, ...) under "ranks"
# (2: one rank's, at the top; 1: sampler states one per worker process, not per sampler)
CHECKPOINT_FORMAT = 3
CHECKPOINTS_DIR = "checkpoints"  # in a run directory
_RUN_FILES = ("train.lock", "run.json", "branch.json", CHECKPOINTS_DIR)  # in run directories
# What torch.load raises for a truncated or damaged file: its zip reader a RuntimeError, the
# unpickler the others. An OSError or MemoryError says nothing about the file's contents, nor
# does torch's allocator running out of memory (also a RuntimeError: `_damaged`).
_DAMAGED = (pickle.UnpicklingError, EOFError, RuntimeError, ValueError)
_NOT_DAMAGED = re.compile(
    r"can't allocate memory|out of memory|maximum supported version", re.IGNORECASE
)


def _damaged(error: Exception) -> bool:
    """Whether torch.load's `error` says the file is damaged (not that memory ran out, nor
    that a newer torch wrote it)."""
    if isinstance(error, torch.OutOfMemoryError) or _NOT_DAMAGED.search(str(error)):
        return False
    return isinstance(error, _DAMAGED)


def checkpoint_dir(run_dir: Path) -> Path:
    """Where a run keeps its checkpoints."""
    return run_dir / CHECKPOINTS_DIR


def checkpoint_path(run_dir: Path, total_steps: int) -> Path:
    """Where a run's checkpoint of `total_steps` goes."""
    return checkpoint_dir(run_dir) / f"ckpt_{total_steps:012d}.pt"


def save_checkpoint(
    run_dir: Path, *, total_steps: int, payload: dict[str, Any], replace: bool = True
) -> Path:
    """Write the checkpoint atomically (`write_atomically`, which without `replace` raises
    FileExistsError rather than write over a file); its path."""
    path = checkpoint_path(run_dir, total_steps)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda file: torch.save(payload, file), replace=replace)
    except FileExistsError:
        raise
    except (OSError, RuntimeError) as error:  # torch's zip writer: a RuntimeError on a full disk
        free = shutil.disk_usage(run_dir).free / 2**20 if run_dir.exists() else 0
        raise CheckpointWriteError(
            f"{path}: could not write the checkpoint ({type(error).__name__}: {error}; "
            f"{free:,.0f} MiB free there)"
        ) from error
    return path


class CheckpointRotation:
    """Writes one training process's checkpoints, replacing none it did not write, and keeps
    the newest `keep` of them, deleting older ones, but never a stage's final checkpoint. It
    only knows the paths this process wrote, so a run resumed in place (perhaps with a smaller
    `keep`) never deletes or overwrites an earlier run's."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.deletable: list[Path] = []  # oldest first
        self.written: set[Path] = set()

    def save(
        self, run_dir: Path, *, total_steps: int, payload: dict[str, Any], resumed_steps: int
    ) -> Path:
        """Save (and rotate). A checkpoint of `total_steps` that an earlier run wrote stays as
        it is: the one resumed from, where nothing was trained since (`resumed_steps`, -1 for a
        new run); any other is an error."""
        path = checkpoint_path(run_dir, total_steps)
        try:
            save_checkpoint(
                run_dir, total_steps=total_steps, payload=payload, replace=path in self.written
            )
        except FileExistsError:
            if total_steps == resumed_steps:
                return path
            raise CheckpointError(
                f"{path} exists: a checkpoint of another run is never replaced"
            ) from None
        self.written.add(path)
        self.wrote(path)
        return path

    def wrote(self, path: Path) -> None:
        """`path` was just written: delete this process's checkpoints beyond the newest `keep`."""
        if path in self.deletable:  # written again at the same step: it is the newest now
            self.deletable.remove(path)
        self.deletable.append(path)
        while len(self.deletable) > self.keep:
            self.deletable.pop(0).unlink(missing_ok=True)

    def keep_newest(self) -> None:
        """Never delete the checkpoint this process wrote last (a stage's final one)."""
        if self.deletable:
            self.deletable.pop()


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint files of a run, newest (most steps) first."""
    directory = checkpoint_dir(run_dir)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if _NAME.match(p.name)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)), reverse=True)


def checkpoint_to_evaluate(path: Path) -> Path:
    """The checkpoint `stagerl eval -c PATH` means: the file, or the newest checkpoint of a run
    directory (or of its `checkpoints/`), or of a tag folder's newest run with one."""
    if path.is_dir():
        found = list_checkpoints(path.parent if path.name == CHECKPOINTS_DIR else path)
        if not found:  # a tag folder: its newest run with a checkpoint
            listed = (list_checkpoints(run) for run in runs_of(path))
            found = next((checkpoints for checkpoints in listed if checkpoints), [])
        if not found:
            raise CheckpointError(
                f"{path}: no checkpoint there; name a ckpt_N.pt file or a run directory"
            )
        return found[0]
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    return path


def _failing_crc(path: Path) -> str | None:
    """The first member of a checkpoint's zip archive whose CRC does not match, if any (a file
    that is no readable archive is left to torch.load to report)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return None


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's contents (on the CPU). A damaged file raises CorruptCheckpointError; any
    other failure to read it (an I/O error, too little memory) a CheckpointError: both name it.
    torch.load does not check the archive's CRCs, so a flipped bit would load as a different
    weight: they are checked first."""
    damaged = _failing_crc(path)
    if damaged is not None:
        raise CorruptCheckpointError(f"{path}: unreadable checkpoint ({damaged} fails its CRC)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        if _damaged(error):
            raise CorruptCheckpointError(
                f"{path}: unreadable checkpoint ({type(error).__name__}: {error})"
            ) from None
        raise CheckpointError(
            f"{path}: could not read the checkpoint ({type(error).__name__}: {error}); it is "
            "left as it is: try again once the cause is fixed"
        ) from error
    if not isinstance(payload, dict) or "model" not in payload:
        raise CorruptCheckpointError(f"{path}: not a stagerl checkpoint")
    return payload


def load_latest(run_dir: Path, warn: Any = print) -> tuple[Path, dict[str, Any]]:
    """The newest readable checkpoint of a run; each damaged one skipped is named with the
    reason and renamed to `<name>.unreadable`: kept, but no longer resumed again. A checkpoint
    that cannot be read for another reason (an I/O error) stops the search: resuming an older
    one would silently drop the steps after it."""
    for path in list_checkpoints(run_dir):
        try:
            return path, load_checkpoint(path)
        except CorruptCheckpointError as error:
            kept = path.rename(path.with_name(path.name + ".unreadable"))
            warn(f"skipping checkpoint: {error}; kept as {kept.name}")
    raise CheckpointError(f"{run_dir}: no readable checkpoint to resume from")


def new_run_dir(tag_dir: Path) -> Path:
    """A new run directory `tag_dir/<local time to the second>[_<n>]`, created; never one that
    exists. Only mkdir decides which name is free: jobs sharing an output directory may start
    in the same second, and a name free when checked may be taken before it is made."""
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    tag_dir.mkdir(parents=True, exist_ok=True)
    run_dir, suffix = tag_dir / stamp, 0
    while True:
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            suffix += 1
            run_dir = tag_dir / f"{stamp}_{suffix}"


def runs_of(tag_dir: Path) -> list[Path]:
    """The run directories in a tag's folder, newest first: those holding what a run writes
    first (its lock, record or checkpoints), not other folders such as `videos/`."""
    if not tag_dir.is_dir():
        return []
    runs = [d for d in tag_dir.iterdir() if any((d / name).exists() for name in _RUN_FILES)]
    return sorted(runs, key=_run_order, reverse=True)


def _run_order(run_dir: Path) -> tuple[str, int]:
    """Sorts run directories by time, then by suffix as a number (`_10` after `_9`)."""
    stamp, _, suffix = run_dir.name.rpartition("_")
    return (stamp, int(suffix)) if suffix.isdigit() else (run_dir.name, 0)


def _run_seed(run_dir: Path) -> int | None:
    """The seed a run's `run.json` records, or None."""
    try:
        return json.loads((run_dir / "run.json").read_text()).get("seed")
    except (OSError, ValueError, AttributeError):
        return None


def find_latest_run(output_dir: Path, tag: str, *, seed: int | None = None) -> Path:
    """The newest run directory of `tag` (of those whose `run.json` records `seed`, when given:
    runs of several seeds can share a tag); an error where it has no checkpoint, rather than an
    older run resumed in its place."""
    tag_dir = output_dir / tag
    runs = runs_of(tag_dir)
    if seed is not None:
        runs = [run for run in runs if _run_seed(run) == seed]
    of_seed = "" if seed is None else f" of seed {seed}"
    if not runs:
        raise CheckpointError(f"{tag_dir}: no run{of_seed} to resume (--resume latest)")
    if not list_checkpoints(runs[0]):
        raise CheckpointError(
            f"{runs[0]}: the newest run{of_seed} has no checkpoint (it stopped before its "
            "first): resume an older run by its directory, or remove this one"
        )
    return runs[0]
