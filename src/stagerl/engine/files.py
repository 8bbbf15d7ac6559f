"""Files a run writes whole or not at all: checkpoints, the run record, the metrics rows kept
on resume."""

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO


def write_atomically(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """`write(file)` to a temporary file beside `path`, fsync, rename over `path`, fsync the
    folder: a crash (power loss included) leaves either the old file or the new one, never a
    part of either. The file gets the permissions the umask gives a new file (a temporary file
    from `tempfile` would be owner-only, hiding a run's records from a TensorBoard server run by
    another user)."""
    temporary = path.with_name(f".tmp_{uuid.uuid4().hex}{path.suffix}")
    fd = os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    """Put a rename in `directory` on disk: until its entry is, a power loss can undo it."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
