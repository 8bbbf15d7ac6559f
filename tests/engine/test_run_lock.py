"""One training process holds a run directory at a time (refused through the command line:
tests/test_reliability.py); holding it deletes the temporary files a killed run left."""

import pytest

from stagerl.engine.run_lock import hold_run_dir
from stagerl.errors import StagerlError


def test_a_run_directory_is_refused_while_held_and_free_once_let_go(tmp_path):
    busy = pytest.raises(StagerlError, match=f"{tmp_path}: another process is training")
    with hold_run_dir(tmp_path), busy, hold_run_dir(tmp_path):
        pass
    with pytest.raises(KeyboardInterrupt), hold_run_dir(tmp_path):
        raise KeyboardInterrupt  # let go on an error too
    with hold_run_dir(tmp_path):
        pass


def test_a_run_directory_that_cannot_be_written_is_refused_naming_it(tmp_path, monkeypatch):
    def read_only(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(
        "pathlib.Path.open", read_only
    )  # as a read-only folder (root ignores modes)
    with (
        pytest.raises(StagerlError, match=f"{tmp_path}: cannot train there"),
        hold_run_dir(tmp_path),
    ):
        pass


def test_holding_a_run_directory_deletes_only_temporary_files_left_by_atomic_writes(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    stale = [checkpoints / f".tmp_{'0' * 32}.pt", tmp_path / f".tmp_{'f' * 32}.jsonl"]
    kept = [
        checkpoints / "ckpt_000000000100.pt",
        checkpoints / ".tmp_notes.pt",  # not a name write_atomically gives
        tmp_path / f"x.tmp_{'0' * 32}.pt",
    ]
    for path in stale + kept:
        path.write_bytes(b"")
    with hold_run_dir(tmp_path):
        assert [path.exists() for path in stale + kept] == [False, False, True, True, True]
