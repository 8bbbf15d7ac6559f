"""One training process per run directory: a second one there (say `--resume latest` while
the run is alive) would truncate its metrics and delete its checkpoints under it."""

import contextlib
import fcntl
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

from stagerl.engine.checkpoint import checkpoint_dir, list_checkpoints
from stagerl.engine.files import remove_stale_temporaries
from stagerl.errors import StagerlError

LOCK_FILE = "train.lock"  # in a run directory; left there (deleting it would race a locker)


@contextlib.contextmanager
def hold_run_dir(run_dir: Path) -> Iterator[None]:
    """Hold `run_dir` for this training process until the block ends: an exclusive lock on its
    lock file (the kernel releases it if the process dies), then the temporary files a run
    killed mid-write left in it are deleted. Readers such as `stagerl eval` take no lock."""
    path = run_dir / LOCK_FILE
    try:
        lock = path.open("a")
    except OSError as error:  # a read-only run directory, say
        raise StagerlError(f"{run_dir}: cannot train there ({error.strerror})") from None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StagerlError(
                f"{run_dir}: another process is training in this run directory (it holds "
                f"{LOCK_FILE}); wait for it to end, or stop it, before resuming there"
            ) from None
        except OSError as error:  # a filesystem without locks: train, unguarded
            print(
                f"stagerl: {path}: cannot lock the run directory ({error}); nothing stops "
                "another trainer from writing there meanwhile",
                file=sys.stderr,
            )
        for directory in (run_dir, checkpoint_dir(run_dir)):
            remove_stale_temporaries(directory)
        yield


def remove_unstarted(run_dir: Path) -> None:
    """Delete a new run's (or a branch's) directory that failed before it trained, once no
    longer held: it has no checkpoint, only its lock, its records and what a branch copies
    in. Then its tag's folder too, if that is empty."""
    if not list_checkpoints(run_dir):
        shutil.rmtree(run_dir, ignore_errors=True)
        with contextlib.suppress(OSError):  # the tag's folder too, if it held only this run
            run_dir.parent.rmdir()
