"""Training on several trainer ranks started by torchrun, against the same run on one rank."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from stagerl.engine.resume import rank_share

FIXTURE = Path(__file__).parent / "fixtures" / "tiny_ranks.py"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]


def _train_command(ranks: int, output: Path, *extra: str) -> list[str]:
    train = ["-m", "stagerl", "train", str(FIXTURE), "-o", str(output), "-s", "5", *extra]
    if ranks == 1:
        return [sys.executable, *train]
    return [*TORCHRUN, "--nproc-per-node", str(ranks), *train]


def _train(ranks: int, output: Path, *extra: str, env: dict[str, str] | None = None) -> str:
    command = _train_command(ranks, output, *extra)
    env = {**os.environ, **(env or {})}
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


def _run_dirs(output: Path) -> list[Path]:
    return sorted(p.parent for p in output.glob("TinyRanks/*/metrics.jsonl"))


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _checkpoints(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints").glob("ckpt_*.pt"))


def _model(run_dir: Path, steps: int) -> dict[str, torch.Tensor]:
    path = run_dir / "checkpoints" / f"ckpt_{steps:012d}.pt"
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[int, Path]:
    """The fixture trained on 1 rank with 4 tasks and on 2 ranks with 2 tasks each."""
    output = tmp_path_factory.mktemp("runs")
    return {ranks: _single_run(ranks, output / f"ranks{ranks}") for ranks in (1, 2)}


def _single_run(ranks: int, output: Path) -> Path:
    _train(ranks, output)
    (run_dir,) = _run_dirs(output)
    return run_dir


@pytest.mark.timeout(600)
def test_two_ranks_count_switch_and_update_as_one_rank_with_all_tasks(runs, tmp_path):
    one, two = runs[1], runs[2]
    steps_and_stages = [[(r["step"], r["stage_index"]) for r in _rows(d)] for d in (one, two)]
    assert steps_and_stages[0] == steps_and_stages[1]
    assert steps_and_stages[0][-1] == (1088, 1)  # 64 + 1024 steps, 64 per rollout of 4 tasks
    assert _checkpoints(one) == _checkpoints(two)
    # the imitation rollout is the expert's on either side, so its update sees the same data:
    # the mean of the ranks' gradients is the gradient of the whole batch
    first, second = _model(one, 64), _model(two, 64)
    assert max((first[k] - second[k]).abs().max().item() for k in first) < 1e-6
    # and that update did move the model: the equality is not that of two untouched copies
    from stagerl.engine.trainer import Trainer
    from stagerl.experiment import load_experiment

    initial = Trainer(load_experiment(FIXTURE), run_dir=tmp_path, seed=5).setup.model
    moved = max((first[k] - v).abs().max().item() for k, v in initial.state_dict().items())
    assert moved > 1e-4
    record = json.loads((two / "run.json").read_text())
    assert record["world_size"] == 2 and record["launcher"]["name"] == "torchrun"
    assert [(r["rank"], r["first_task"], r["tasks"]) for r in record["ranks"]] == [
        (0, 0, 2),
        (1, 2, 2),
    ]
    seeds = json.loads((one / "run.json").read_text())["ranks"][0]["sampler_seeds"]
    assert record["ranks"][0]["sampler_seeds"] + record["ranks"][1]["sampler_seeds"] == seeds
    assert {"stagerl", "torch", "gymnasium"} <= set(record["versions"])
    assert "stagerl train" in record["command"] and record["seed"] == 5


@pytest.mark.timeout(600)
@pytest.mark.parametrize(("written_by", "resumed_on"), [(2, 1), (1, 2)])
def test_a_checkpoint_resumes_on_another_number_of_ranks(runs, tmp_path, written_by, resumed_on):
    checkpoint = runs[written_by] / "checkpoints" / "ckpt_000000000320.pt"
    log = _train(resumed_on, tmp_path, "--resume", str(checkpoint))
    assert f"written by {written_by} trainer ranks and this run has {resumed_on}" in log
    branch = next(d for d in _run_dirs(runs[written_by].parent.parent) if d != runs[written_by])
    rows = _rows(branch)
    # goes on from its step: rows every 128 frames from the first stage's end at 64
    assert [r["step"] for r in rows if r["step"] > 320][0] == 448
    assert rows[-1]["step"] == 1088 and rows[-1]["stage_index"] == 1
    assert json.loads((branch / "run.json").read_text())["world_size"] == resumed_on


@pytest.mark.timeout(300)
def test_rank_0s_early_stopping_criterion_ends_the_stage_on_every_rank(tmp_path, monkeypatch):
    # rank 1's criterion would end the PPO stage after 128 steps, rank 0's after 256: were each
    # rank to follow its own, they would part ways and wait on each other
    monkeypatch.setenv("TINY_RANKS_STOP_AFTER", "256,128")
    _train(2, tmp_path)
    (run_dir,) = _run_dirs(tmp_path)
    assert [(r["step"], r["stage_index"]) for r in _rows(run_dir)][-1] == (64 + 256, 1)
    assert _checkpoints(run_dir)[-1] == f"ckpt_{64 + 256:012d}.pt"


def test_a_rank_share_keeps_every_task_in_global_order():
    def part(first: int, count: int) -> dict:
        tasks = torch.arange(first, first + count)
        return {
            "samplers": [bytes([t]) for t in range(first, first + count)],
            "storage": {
                "observations": {"x": tasks.float()[:, None]},
                "masks": torch.ones(count, 1),
                "prev_actions": tasks,
                "memory": tasks.float()[None, :, None].repeat(2, 1, 3),
            },
            "rng": {"rank": first},
            "dagger_buffer": None,
            "offpolicy": {},
            "logger": {"sums": {"loss": 1.0}, "counts": {"loss": 1}, "last_emit_step": 0},
        }

    by_two = {"ranks": [part(0, 2), part(2, 3)]}
    same = rank_share(by_two, rank=1, world_size=2, first_task=2, num_tasks=3)
    assert same.rng == {"rank": 2}  # same ranks: as it was
    # 5 tasks on 3 ranks: tasks 3 and 4
    share = rank_share(by_two, rank=1, world_size=3, first_task=3, num_tasks=2)
    assert share.samplers == [b"\x03", b"\x04"] and share.rng is None and share.notes
    assert share.storage["prev_actions"].tolist() == [3, 4]
    assert share.storage["memory"][:, :, 0].tolist() == [[3.0, 4.0], [3.0, 4.0]]
    assert share.logger["sums"] == {}  # rank 0 alone takes the pending metric sums
    alone = rank_share(by_two, rank=0, world_size=1, first_task=0, num_tasks=5)
    assert alone.logger["sums"] == {"loss": 2.0}


def _rank_process(torchrun: psutil.Process, rank: int) -> psutil.Process:
    for child in torchrun.children():
        if child.environ().get("RANK") == str(rank):
            return child
    raise AssertionError(f"no rank {rank} under torchrun")


def _start_long_run(output: Path, log: Path, **env: str) -> subprocess.Popen:
    """2 ranks training for ever, led by torchrun in a session of its own; once training ran
    a few rollouts."""
    env = {**os.environ, "TINY_RANKS_PPO_STEPS": "100000000", **env}
    with log.open("w") as out:
        torchrun = subprocess.Popen(
            _train_command(2, output),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    deadline = time.monotonic() + 120
    while not list(output.glob("TinyRanks/*/metrics.jsonl")):
        assert time.monotonic() < deadline and torchrun.poll() is None, log.read_text()
        time.sleep(0.5)
    time.sleep(2)
    return torchrun


def _stopped_by_rank_1(tmp_path: Path, signum: int, limit: float, **env: str) -> str:
    """Send rank 1 `signum`; torchrun must exit non-zero within `limit` seconds, leaving no
    process of its session. Its output."""
    log = tmp_path / "log.txt"
    torchrun = _start_long_run(tmp_path / "out", log, **env)
    try:
        _rank_process(psutil.Process(torchrun.pid), 1).send_signal(signum)
        assert torchrun.wait(timeout=limit) != 0  # TimeoutExpired past the limit
    finally:
        if torchrun.poll() is None:
            os.killpg(torchrun.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _session(torchrun.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _session(torchrun.pid) == []
    return log.read_text()


@pytest.mark.timeout(300)
def test_a_killed_rank_stops_the_others_naming_it_and_leaves_no_process(tmp_path):
    output = _stopped_by_rank_1(tmp_path, signal.SIGKILL, limit=60)
    assert "stagerl: error: rank 0: lost rank 1" in output, output[-3000:]


@pytest.mark.timeout(300)
def test_a_hung_rank_is_named_after_the_rank_timeout(tmp_path):
    # rank 0 gives up after rank_timeout (5 s) plus the heartbeat check; torchrun then
    # SIGKILLs the stopped rank after its own grace period
    output = _stopped_by_rank_1(tmp_path, signal.SIGSTOP, limit=90, TINY_RANKS_RANK_TIMEOUT="5")
    assert "stagerl: error: rank 0: lost rank 1" in output, output[-3000:]
    assert "Timed out" in output


@pytest.mark.timeout(300)
def test_a_rank_stuck_in_its_own_work_is_named_though_its_heartbeat_goes_on(tmp_path):
    hang = {"TINY_RANKS_RANK_TIMEOUT": "5", "TINY_RANKS_HANG_ON_USR1": "1"}
    output = _stopped_by_rank_1(tmp_path, signal.SIGUSR1, limit=90, **hang)
    assert re.search(r"rank 0: rank 1 \(.*; the last it entered: .*\) never came to", output), (
        output[-3000:]
    )


@pytest.mark.timeout(300)
def test_the_ranks_wait_for_a_validation_longer_than_the_rank_timeout(tmp_path):
    # rank 0 validates each checkpoint (the imitation stage's final one at 64 steps, and the
    # run's at 320) for 7 s while rank 1 waits; a collective would give up after 5 s
    slow = {"TINY_RANKS_VALIDATION_SECONDS": "7", "TINY_RANKS_RANK_TIMEOUT": "5"}
    _train(2, tmp_path, env={**slow, "TINY_RANKS_PPO_STEPS": "256"})
    (run_dir,) = _run_dirs(tmp_path)
    validated = [row["step"] for row in _rows(run_dir) if "valid/episodes" in row]
    assert validated == [64, 320]


@pytest.mark.timeout(300)
def test_a_rank_failing_at_start_up_leaves_no_run_directory(tmp_path):
    # rank 1 fails building its model; torchrun then SIGTERMs rank 0, mid-start-up
    command = _train_command(2, tmp_path / "out")
    env = {**os.environ, "TINY_RANKS_FAIL_RANK": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode != 0
    assert "this rank fails starting" in done.stderr, done.stderr[-3000:]
    assert not list((tmp_path / "out").glob("*")), done.stderr[-3000:]


def _session(sid: int) -> list[str]:
    """Processes left of the session torchrun led."""
    left = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        try:
            if os.getsid(process.pid) == sid:
                left.append(" ".join(process.info["cmdline"] or []))
        except (ProcessLookupError, PermissionError):
            pass
    return left


def test_gradients_are_averaged_by_each_ranks_samples_and_a_missing_one_stays_missing(
    monkeypatch,
):
    # Rank 0 of 2 averaged its loss over 3 samples, rank 1 (its vector added in by the patched
    # all-reduce) over 1, as a [3, 1] split of the tasks gives: the mean weighs them 3 : 1, as
    # AllenAct weighs ranks by their share of the batch. A parameter without a gradient on any
    # rank stays without one (Adam would move a zero one).
    import torch.distributed as dist

    from stagerl.engine.distributed import Ranks

    # rank 1: gradient [6, 8] of `used`, none of `unused`, loss 10, over 1 sample
    partner = torch.tensor([6.0, 8.0, 0.0, 0.0, 0.0, 1.0, 0.0, 10.0, 1.0])
    monkeypatch.setattr(dist, "all_reduce", lambda flat: flat.add_(partner))
    used, unused = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))
    used.grad = torch.tensor([2.0, 4.0])
    ranks = Ranks(rank=0, world_size=2)
    loss = ranks.average_gradients([used, unused], torch.tensor(6.0), samples=3)
    assert used.grad.tolist() == [3.0, 5.0] and unused.grad is None  # (3 x [2, 4] + [6, 8]) / 4
    assert loss.item() == 7.0  # (3 x 6 + 10) / 4


@pytest.mark.timeout(60)
def test_a_rank_waiting_for_rank_0_gets_its_result_or_an_error_once_it_goes_silent(monkeypatch):
    import torch.distributed as dist

    from stagerl.engine.distributed import Heartbeat, RankError

    server = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(server.port))
    waiting = Heartbeat(rank=1, world_size=2)  # rank 0 only in what the store holds
    try:
        waiting.store.set("who/0", "host pid 7")
        waiting.store.set("done", "ok")
        assert waiting.wait_for("done", rank=0, what="validation") == b"ok"
        with pytest.raises(RankError, match=r"rank 1: lost rank 0 \(host pid 7\) during valid"):
            waiting.wait_for("never", rank=0, what="validation")
    finally:
        waiting.close()


def test_advantages_are_standardised_over_every_ranks_rollout(monkeypatch):
    # rank 0 holds advantages 1-4, rank 1 (added in by the patched all-reduce) 11-14: each
    # rank's own standardisation would give rank 0's last two steps positive advantages, the
    # joint one, as AllenAct's, gives all four negative ones
    import torch.distributed as dist

    from stagerl.engine.distributed import Ranks
    from stagerl.losses.base import standardize

    mine, partner = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([11.0, 12.0, 13.0, 14.0])
    sums = []

    def all_reduce(flat):
        if not sums:  # the sum and count, then the squared deviations from the joint mean
            flat.add_(torch.tensor([partner.sum(), len(partner)], dtype=flat.dtype))
            sums.append((flat[0] / flat[1]).item())
        else:
            flat.add_(((partner.double() - sums[0]) ** 2).sum())

    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    joint = Ranks(rank=0, world_size=2).standardize(mine)
    torch.testing.assert_close(joint, standardize(torch.cat([mine, partner]))[:4])
    assert (joint < 0).all()
