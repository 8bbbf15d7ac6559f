"""Files a run writes whole or not at all: checkpoints, the run record, the metrics rows kept
on resume."""

import errno
import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

# The temporary names `write_atomically` gives: `.tmp_<32 hex digits><the file's suffix>`.
_TEMPORARY = re.compile(r"^\.tmp_[0-9a-f]{32}(\.\w+)?$")


def write_atomically(path: Path, write: Callable[[BinaryIO], Any], *, replace: bool = True) -> None:
    """`write(file)` to a temporary file beside `path`, fsync, rename over `path`, fsync the
    folder: a crash (power loss included) leaves either the old file or the new one, never a
    part of either. Without `replace`, a FileExistsError where `path` exists (decided by the
    filesystem, at the moment of linking). The file gets the permissions the umask gives a new
    file (a temporary file from `tempfile` would be owner-only, hiding a run's records from a
    TensorBoard server run by another user)."""
    temporary = path.with_name(f".tmp_{uuid.uuid4().hex}{path.suffix}")
    fd = os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        if replace:
            os.replace(temporary, path)
        else:
            _link_new(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    temporary.unlink(missing_ok=True)  # linked: `path` is its other name
    _fsync_directory(path.parent)


def _link_new(temporary: Path, path: Path) -> None:
    """`temporary` also named `path`, which must not exist: a hard link, or where the
    filesystem has none (some network ones), a check and a rename."""
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise
    except OSError:
        if path.exists():
            raise FileExistsError(errno.EEXIST, "File exists", str(path)) from None
        os.replace(temporary, path)


def _fsync_directory(directory: Path) -> None:
    """Put a rename in `directory` on disk: until its entry is, a power loss can undo it.
    Where the filesystem cannot sync a folder (some network ones), the rename stays as safe as
    the filesystem makes it."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete the temporary files `write_atomically` left in `directory` when its process was
    killed mid-write (only names it gives); the paths deleted. Call it only while no other
    process can be writing there."""
    if not directory.is_dir():
        return []
    stale = [path for path in directory.iterdir() if _TEMPORARY.match(path.name)]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
