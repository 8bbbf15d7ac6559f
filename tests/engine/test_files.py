"""Atomic writes survive a crash or a power loss whole."""

import os
import stat

from stagerl.engine.files import write_atomically


def test_an_atomic_write_fsyncs_the_folder_once_the_file_has_its_name(tmp_path, monkeypatch):
    path, fsync, synced = tmp_path / "run.json", os.fsync, []

    def recording_fsync(fd: int) -> None:
        synced.append((stat.S_ISDIR(os.fstat(fd).st_mode), path.exists()))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    write_atomically(path, lambda file: file.write(b"{}"))
    assert synced == [(False, False), (True, True)]  # the file's data, then its new name
