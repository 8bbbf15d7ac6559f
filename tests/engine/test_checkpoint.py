"""Checkpoints are written whole or not at all, and a run keeps the newest K it wrote (a run
resumed in place keeping an earlier one's: tests/test_reliability.py; every stage's final one:
tests/engine/test_stages.py)."""

import errno
import pickle
import time
from pathlib import Path

import pytest
import torch

from stagerl.engine.checkpoint import (
    CheckpointRotation,
    find_latest_run,
    list_checkpoints,
    load_latest,
    new_run_dir,
    save_checkpoint,
)
from stagerl.errors import CheckpointError


def test_only_the_newest_k_checkpoints_are_kept_and_no_temporary_file_remains(tmp_path):
    rotation = CheckpointRotation(keep=2)
    for steps in (100, 200, 300, 400):
        rotation.wrote(
            save_checkpoint(
                tmp_path, total_steps=steps, payload={"model": {"w": torch.tensor(steps)}}
            )
        )
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "ckpt_000000000400.pt",
        "ckpt_000000000300.pt",
    ]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "ckpt_000000000300.pt",
        "ckpt_000000000400.pt",
    ]


def test_a_failed_write_leaves_the_previous_checkpoint_untouched(tmp_path):
    save_checkpoint(tmp_path, total_steps=100, payload={"model": {"w": torch.tensor(1)}})

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(CheckpointError, match="ckpt_000000000200.pt: could not write.*disk full"):
        save_checkpoint(tmp_path, total_steps=200, payload={"model": {}, "bad": Unpicklable()})
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["ckpt_000000000100.pt"]
    path, payload = load_latest(tmp_path)
    assert payload["model"]["w"] == 1


def test_resume_with_no_readable_checkpoint_says_so(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "ckpt_000000000100.pt").write_bytes(b"garbage")
    skipped = []
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
        load_latest(tmp_path, warn=skipped.append)
    assert "ckpt_000000000100.pt: unreadable checkpoint" in skipped[0]
    assert skipped[0].endswith("kept as ckpt_000000000100.pt.unreadable")
    # set aside: kept whole, but no longer listed, so never counted among the newest to keep
    assert list_checkpoints(tmp_path) == []
    assert (tmp_path / "checkpoints" / "ckpt_000000000100.pt.unreadable").read_bytes() == b"garbage"


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.EIO, "Input/output error"),
        MemoryError(),
        # torch's CPU allocator out of memory: a RuntimeError, as its zip reader's errors are
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate "
            "memory: you tried to allocate 281474976710656 bytes. Error code 12"
        ),
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError(  # a newer torch wrote it: no reason to resume an older one instead
            "Attempted to read a PyTorch file with version 99, but the maximum supported "
            "version for reading is 10. Your PyTorch installation may be too old."
        ),
    ],
    ids=["io", "memory", "cpu-allocator", "cuda-allocator", "newer-torch"],
)
def test_a_checkpoint_unread_for_io_or_memory_is_named_and_not_set_aside(
    tmp_path, monkeypatch, error
):
    for steps in (100, 200):
        save_checkpoint(tmp_path, total_steps=steps, payload={"model": {"w": torch.tensor(steps)}})
    newest = list_checkpoints(tmp_path)[0]

    def load(path, **kwargs):
        raise error

    monkeypatch.setattr(torch, "load", load)
    with pytest.raises(CheckpointError, match=f"{newest}: could not read the checkpoint"):
        load_latest(tmp_path, warn=pytest.fail)  # not resumed from the older one either
    assert list_checkpoints(tmp_path)[0] == newest


STAMP = "2025-01-01_00-00-00"


def test_run_directories_made_in_the_same_second_get_distinct_names(tmp_path, monkeypatch):
    monkeypatch.setattr(time, "strftime", lambda fmt: STAMP)
    # another job may take a name after any check that it is free: only mkdir may decide
    monkeypatch.setattr(Path, "exists", lambda self: False)
    names = [new_run_dir(tmp_path / "Tag").name for _ in range(3)]
    assert names == [STAMP, f"{STAMP}_1", f"{STAMP}_2"]


def test_resume_latest_takes_the_run_with_the_highest_suffix_in_a_second(tmp_path):
    for name in (f"{STAMP}_9", f"{STAMP}_10", "2024-12-31_23-59-59_11"):
        save_checkpoint(tmp_path / "Tag" / name, total_steps=100, payload={"model": {}})
    assert find_latest_run(tmp_path, "Tag").name == f"{STAMP}_10"


def test_a_checkpoint_with_a_flipped_bit_is_set_aside_not_resumed_with_other_weights(tmp_path):
    for steps in (100, 200):
        weights = torch.full((64,), float(steps))
        save_checkpoint(tmp_path, total_steps=steps, payload={"model": {"w": weights}})
    newest = list_checkpoints(tmp_path)[0]
    data = bytearray(newest.read_bytes())
    at = data.find(torch.full((64,), 200.0).numpy().tobytes())  # the stored weights
    data[at + 5] ^= 0x01
    newest.write_bytes(bytes(data))
    skipped = []
    path, payload = load_latest(tmp_path, warn=skipped.append)
    assert path.name == "ckpt_000000000100.pt" and payload["model"]["w"][0] == 100
    assert "fails its CRC" in skipped[0]


def test_a_process_replaces_only_checkpoints_it_wrote(tmp_path):
    earlier = save_checkpoint(tmp_path, total_steps=100, payload={"model": {"w": torch.tensor(1)}})
    before = earlier.read_bytes()
    rotation = CheckpointRotation(keep=5)
    # resumed from it and nothing trained since: it stands as it is
    assert rotation.save(tmp_path, total_steps=100, payload={"model": {}}, resumed_steps=100)
    with pytest.raises(CheckpointError, match="exists: a checkpoint of another run"):
        rotation.save(tmp_path, total_steps=100, payload={"model": {}}, resumed_steps=50)
    assert earlier.read_bytes() == before
    own = rotation.save(tmp_path, total_steps=200, payload={"model": {}}, resumed_steps=100)
    rotation.save(tmp_path, total_steps=200, payload={"model": {"w": 2}}, resumed_steps=100)
    assert torch.load(own, weights_only=False)["model"] == {"w": 2}  # its own: replaced


def test_resume_latest_refuses_a_newest_run_without_a_checkpoint_not_resuming_an_older(tmp_path):
    save_checkpoint(tmp_path / "Tag" / f"{STAMP}_1", total_steps=100, payload={"model": {}})
    (tmp_path / "Tag" / f"{STAMP}_2").mkdir()
    (tmp_path / "Tag" / f"{STAMP}_2" / "train.lock").touch()  # killed before its first checkpoint
    (tmp_path / "Tag" / "videos").mkdir()  # no run: never taken for the newest
    with pytest.raises(CheckpointError, match=f"{STAMP}_2: the newest run has no checkpoint"):
        find_latest_run(tmp_path, "Tag")


def test_a_resume_planned_in_place_is_refused_once_a_newer_checkpoint_appeared(tmp_path):
    from stagerl.engine.resume import ResumePlan

    planned = save_checkpoint(tmp_path / "run", total_steps=100, payload={"model": {}})
    plan = ResumePlan(planned, {"state": {"total_steps": 100}}, tmp_path / "run", None, [])
    plan.confirm_in_held_run()
    # the trainer that held the run meanwhile wrote another before it let go
    save_checkpoint(tmp_path / "run", total_steps=200, payload={"model": {}})
    with pytest.raises(CheckpointError, match="ckpt_000000000200.pt was written while"):
        plan.confirm_in_held_run()


def test_eval_of_a_tag_folder_takes_its_newest_runs_newest_checkpoint(tmp_path):
    from stagerl.engine.checkpoint import checkpoint_to_evaluate

    save_checkpoint(tmp_path / "Tag" / f"{STAMP}_1", total_steps=100, payload={"model": {}})
    newest = save_checkpoint(tmp_path / "Tag" / f"{STAMP}_2", total_steps=50, payload={})
    (tmp_path / "Tag" / f"{STAMP}_3").mkdir()  # a run still before its first checkpoint
    (tmp_path / "Tag" / f"{STAMP}_3" / "train.lock").touch()
    assert checkpoint_to_evaluate(tmp_path / "Tag") == newest
    assert checkpoint_to_evaluate(tmp_path / "Tag" / f"{STAMP}_1").name == "ckpt_000000000100.pt"


def test_sigterm_while_a_checkpoint_loads_is_no_checkpoint_error(tmp_path, monkeypatch):
    import signal

    from stagerl.errors import StoppedOutsideTraining

    path = save_checkpoint(tmp_path, total_steps=100, payload={"model": {}})

    def load(*args, **kwargs):
        raise StoppedOutsideTraining(signal.SIGTERM)  # as the start-up handler raises it

    monkeypatch.setattr(torch, "load", load)
    with pytest.raises(StoppedOutsideTraining):  # exit 143, not "could not read the checkpoint"
        load_latest(tmp_path, warn=pytest.fail)
    assert list_checkpoints(tmp_path) == [path]
    # rank 0 sends it to the other ranks as it is (Ranks.from_main pickles errors)
    copy = pickle.loads(pickle.dumps(StoppedOutsideTraining(signal.SIGTERM)))
    assert (copy.exit_code, str(copy)) == (143, str(StoppedOutsideTraining(signal.SIGTERM)))
