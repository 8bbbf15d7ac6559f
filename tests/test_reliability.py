"""Killed runs resume exactly; worker faults, bad checkpoints and signals end runs cleanly (resuming
in place or in a branch: tests/test_resume.py)."""

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

from stagerl import cli
from stagerl.engine.checkpoint import list_checkpoints, load_checkpoint
from stagerl.engine.progress import NonFiniteLossError
from stagerl.engine.trainer import Trainer
from stagerl.experiment import load_experiment
from stagerl.losses.offpolicy import ExpertCELoss
from stagerl.losses.ppo import PPO
from tests.variants import fixture_variant

ROOT = Path(__file__).parents[1]
FIXTURES = ROOT / "tests" / "fixtures"

pytestmark = pytest.mark.timeout(240)


def _variant(tmp_path: Path, name: str, steps: int, source: str = "tiny_ppo.py") -> Path:
    """A copy of a fixture experiment with a longer step budget."""
    text = (FIXTURES / source).read_text()
    text = text.replace("STEPS = 1024", f"STEPS = {steps}").replace(
        "STAGE_STEPS = 512", f"STAGE_STEPS = {steps}"
    )
    path = tmp_path / f"{name}.py"
    path.write_text(text)
    return path


def _stagerl(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "stagerl", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        **kwargs,
    )


def _wait_for_checkpoint(run_root: Path, min_steps: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for checkpoint in run_root.glob("*/*/checkpoints/ckpt_*.pt"):
            if int(checkpoint.stem.split("_")[1]) >= min_steps:
                return
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


def _final_params(run_dir: Path) -> tuple[dict, dict]:
    payload = load_checkpoint(list_checkpoints(run_dir)[0])
    return payload["model"], payload["state"]


@pytest.mark.parametrize("fixture", ["tiny_ppo.py", "tiny_dagger_ppo.py", "tiny_offpolicy_bc.py"])
def test_sigkilled_run_resumes_to_the_same_parameters_and_steps(
    tmp_path, fixture, empty_dataset, monkeypatch
):
    """Also exact for off-policy stages (the iterator's place mid-epoch and each stream's
    memory are in the checkpoint), and when the resumed run packs the samplers into two
    processes instead of one (`-m 2`: samplers are saved one by one)."""
    monkeypatch.setenv("STAGERL_DATASET", str(empty_dataset))  # read by tiny_offpolicy_bc.py
    config = _variant(tmp_path, "cfg", 1024 if fixture == "tiny_dagger_ppo.py" else 2048, fixture)
    straight = _stagerl("train", str(config), "-o", str(tmp_path / "straight"), "-s", "3")
    assert straight.wait() == 0, straight.communicate()

    output = tmp_path / "killed"
    run = _stagerl("train", str(config), "-o", str(output), "-s", "3")
    _wait_for_checkpoint(output, 1280, run)  # in the second stage for the two-stage fixture
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    resumed = _stagerl("train", str(config), "-o", str(output), "--resume", "latest", "-m", "2")
    out, err = resumed.communicate()
    assert resumed.returncode == 0, err
    assert "resuming" in err

    expected_params, expected_state = _final_params(next((tmp_path / "straight").glob("*/*")))
    params, state = _final_params(next(output.glob("*/*")))
    assert state == expected_state
    for name, tensor in expected_params.items():
        torch.testing.assert_close(params[name], tensor, rtol=0, atol=0)
    # the metrics rows: no step lost or repeated across the kill, each in its stage
    assert _steps_and_stages(output) == _steps_and_stages(tmp_path / "straight")


@pytest.mark.timeout(120)
def test_a_run_killed_while_validating_a_checkpoint_validates_it_on_resume(tmp_path):
    config, output = str(FIXTURES / "tiny_ranks.py"), tmp_path / "runs"
    slow = {**os.environ, "TINY_RANKS_VALIDATION_SECONDS": "60", "TINY_RANKS_PPO_STEPS": "64"}
    run = _stagerl("train", config, "-o", str(output), env=slow)
    _wait_for_checkpoint(output, 64, run)  # the imitation stage's final one, then validated
    time.sleep(0.5)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    quick = {**slow, "TINY_RANKS_VALIDATION_SECONDS": "0.01"}
    resumed = _stagerl("train", config, "-o", str(output), "--resume", "latest", env=quick)
    assert resumed.wait() == 0, resumed.communicate()
    (run_dir,) = output.glob("*/*")
    validated = lambda: [  # noqa: E731
        row["step"]
        for row in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
        if "valid/episodes" in row
    ]
    assert validated() == [64, 128]
    # the final checkpoint too left its validation to do; its row was written: no second one
    (final,) = run_dir.glob("checkpoints/ckpt_000000000128.pt")
    assert load_checkpoint(final)["state"]["last_valid_steps"] == 64
    again = _stagerl("train", config, "-o", str(output), "--resume", "latest", env=quick)
    assert again.wait() == 0, again.communicate()
    assert validated() == [64, 128]


def _steps_and_stages(output: Path) -> list[tuple[int, str]]:
    rows = (next(output.glob("*/*")) / "metrics.jsonl").read_text().splitlines()
    return [(row["step"], row["stage"]) for row in map(json.loads, rows)]


def test_truncated_newest_checkpoint_is_skipped_by_resume_latest(tmp_path, capsys):
    config = FIXTURES / "tiny_ppo.py"
    Trainer(load_experiment(config), run_dir=tmp_path / "TinyPPO" / "run", seed=0).train(
        stop_after_steps=512
    )
    run_dir = tmp_path / "TinyPPO" / "run"
    newest, previous = list_checkpoints(run_dir)[:2]
    newest.write_bytes(newest.read_bytes()[:100])
    assert cli.main(["train", str(config), "-o", str(tmp_path), "--resume", "latest"]) == 0
    err = capsys.readouterr().err
    assert f"skipping checkpoint: {newest}: unreadable checkpoint" in err
    assert f"resuming {run_dir} from {previous.name}" in err
    assert len((run_dir / "checkpoints" / f"{newest.name}.unreadable").read_bytes()) == 100


def test_checkpoint_from_another_experiment_is_refused(tmp_path, capsys):
    final = Trainer(
        load_experiment(FIXTURES / "tiny_ppo.py"), run_dir=tmp_path / "r", seed=0
    ).train(stop_after_steps=64)
    code = cli.main(["train", str(FIXTURES / "tiny_dagger_ppo.py"), "--resume", str(final)])
    assert code == 2
    assert "checkpoint is from experiment TinyPPO" in capsys.readouterr().err
    code = cli.main(["eval", str(FIXTURES / "tiny_dagger_ppo.py"), "-c", str(final)])
    assert code == 2


def test_resume_with_other_machine_params_is_refused(tmp_path, capsys):
    final = Trainer(
        load_experiment(FIXTURES / "tiny_ppo.py"), run_dir=tmp_path / "r", seed=0
    ).train(stop_after_steps=64)
    config = fixture_variant(
        tmp_path, "tiny_ppo.py", {"NUM_TRAIN_SAMPLERS = 4": "NUM_TRAIN_SAMPLERS = 6"}
    )
    resume = ["--resume", str(final), "--allow-config-change"]
    assert cli.main(["train", str(config), *resume]) == 2
    assert "checkpoint has 4 task samplers" in capsys.readouterr().err


def test_model_with_wrong_action_space_is_a_config_error(tmp_path, capsys):
    config = tmp_path / "wrong_actions.py"
    config.write_text(
        (FIXTURES / "tiny_ppo.py")
        .read_text()
        .replace(
            "return super().create_model(memory_dim=32, **kwargs)",
            "from gymnasium import spaces\n"
            "        from stagerl.plugins.minigrid import MiniGridActorCritic\n"
            "        from stagerl.tasks.sensors import SensorSuite\n"
            "        return MiniGridActorCritic(spaces.Discrete(3), SensorSuite(cls.SENSORS)"
            ".observation_space)",
        )
    )
    assert cli.main(["train", str(config), "-o", str(tmp_path)]) == 2
    assert "the model has 3 actions but the tasks have 7" in capsys.readouterr().err


def test_nonfinite_losses_skip_updates_then_stop_keeping_last_good_checkpoint(
    tmp_path, monkeypatch
):
    real_loss, calls = PPO.loss, {"n": 0}

    def poisoned(self, step_count, batch, output):
        calls["n"] += 1
        loss, info = real_loss(self, step_count, batch, output)
        return (loss * float("nan") if step_count > 256 else loss), info

    monkeypatch.setattr(PPO, "loss", poisoned)
    trainer = Trainer(
        load_experiment(FIXTURES / "tiny_ppo.py"), run_dir=tmp_path, seed=0, max_nonfinite_updates=8
    )
    with pytest.raises(NonFiniteLossError, match="8 updates in a row had a NaN/inf loss"):
        trainer.train()
    good = load_checkpoint(list_checkpoints(tmp_path)[0])
    assert good["state"]["total_steps"] == 256
    assert all(torch.isfinite(t).all() for t in good["model"].values())
    assert all(torch.isfinite(p).all() for p in trainer.setup.model.parameters())


def test_nonfinite_offpolicy_updates_stop_the_run_though_its_onpolicy_updates_are_good(
    tmp_path, monkeypatch, empty_dataset
):
    real_loss = ExpertCELoss.loss

    def poisoned(self, *args, **kwargs):
        loss, info = real_loss(self, *args, **kwargs)
        return loss * float("nan"), info

    monkeypatch.setattr(ExpertCELoss, "loss", poisoned)
    monkeypatch.setenv("STAGERL_DATASET", str(empty_dataset))
    config = fixture_variant(
        tmp_path,
        "tiny_offpolicy_bc.py",
        {  # a PPO loss in the stage too: 1 on-policy update, 2 off-policy ones per rollout
            "Builder, OffPolicyPipelineComponent": (
                "PPO, Builder, OffPolicyPipelineComponent, PPOConfig"
            ),
            "num_mini_batch=0": "num_mini_batch=1",
            "update_repeats=0": "update_repeats=1",
            'named_losses={"bc"': 'named_losses={"ppo": PPO(**PPOConfig), "bc"',
            "loss_names=[],": 'loss_names=["ppo"],',
        },
    )
    trainer = Trainer(load_experiment(config), run_dir=tmp_path / "r", seed=0)  # 10 in a row
    with pytest.raises(NonFiniteLossError, match="10 off-policy updates in a row"):
        trainer.train()
    assert trainer.state.total_steps == 320  # five rollouts of 4 tasks x 16 steps
    row = json.loads((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["offpolicy/skipped_updates"] == 2.0 and row["skipped_updates"] == 0.0


def test_a_worker_fault_ends_the_run_with_exit_1_and_a_checkpoint(tmp_path):
    # How each fault is detected and named: tests/tasks/test_vector.py. Here: what the run does.
    env = {**os.environ, "STAGERL_TEST_FAULT": "segfault", "STAGERL_TEST_TIMEOUT": "60"}
    process = _stagerl(
        "train", str(FIXTURES / "faulty_experiment.py"), "-o", str(tmp_path), env=env
    )
    _, err = process.communicate(timeout=60)  # never a hang
    assert process.returncode == 1
    assert "sampler worker 1 (tasks: CountingSampler(slot=1))" in err and "exit code -11" in err
    assert "checkpoint before this rollout:" in err  # saved, since it safely could


def test_killed_worker_stops_the_run_and_leaves_no_process(tmp_path):
    process = _stagerl("train", str(FIXTURES / "faulty_experiment.py"), "-o", str(tmp_path))
    _wait_for_checkpoint(tmp_path, 16, process)
    parent = psutil.Process(process.pid)
    workers = [
        p
        for p in parent.children(recursive=True)
        if "spawn_main" in " ".join(p.cmdline()) and "resource_tracker" not in " ".join(p.cmdline())
    ]
    everything = parent.children(recursive=True)
    assert len(workers) == 2
    workers[0].kill()
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1
    assert re.search(r"sampler worker \d .* died during '(step|snapshot)' \(exit code -9\)", err)
    gone, alive = psutil.wait_procs(everything, timeout=10)
    assert not alive


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    process = _stagerl("train", str(FIXTURES / "faulty_experiment.py"), "-o", str(tmp_path))
    _wait_for_checkpoint(tmp_path, 16, process)
    children = psutil.Process(process.pid).children(recursive=True)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM
    assert "stopped by SIGTERM; checkpoint" in err
    run_dir = next(tmp_path.glob("*/*"))
    state = load_checkpoint(list_checkpoints(run_dir)[0])["state"]
    assert state["total_steps"] % 16 == 0
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive


def test_second_ctrl_c_exits_at_once_even_while_a_worker_hangs(tmp_path):
    marker = tmp_path / "hanging"
    env = {
        **os.environ,
        "STAGERL_TEST_FAULT": "hang",
        "STAGERL_TEST_TIMEOUT": "600",
        "STAGERL_TEST_HANG_MARKER": str(marker),
    }
    process = _stagerl(
        "train", str(FIXTURES / "faulty_experiment.py"), "-o", str(tmp_path / "out"), env=env
    )
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "the worker never began to hang"
    time.sleep(0.2)  # the trainer now waits on the hanging worker's step
    children = psutil.Process(process.pid).children(recursive=True)
    process.send_signal(signal.SIGINT)  # first: finish the rollout, then checkpoint and stop
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)  # second: stop now
    _, err = process.communicate(timeout=10)  # at once: TimeoutExpired otherwise
    assert process.returncode == 130
    assert "stagerl: interrupted" in err
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive


def test_a_run_whose_workers_fail_to_start_leaves_no_run_directory(tmp_path):
    env = {**os.environ, "STAGERL_TEST_FAULT": "raise while starting"}
    config = FIXTURES / "faulty_experiment.py"
    process = _stagerl("train", str(config), "-o", str(tmp_path / "out"), env=env)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 1 and "boom while starting" in err, err[-3000:]
    assert not list((tmp_path / "out").glob("*"))  # so --resume latest never meets it


def test_sigterm_during_start_up_leaves_no_run_directory(tmp_path):
    # torchrun SIGTERMs every rank when one fails starting; its default would end the process
    # past the clean-up of the new run's directory
    marker = tmp_path / "building"
    config = fixture_variant(
        tmp_path,
        "tiny_ppo.py",
        {
            "        return super().create_model(memory_dim=32, **kwargs)": (
                f"        __import__('pathlib').Path({str(marker)!r}).touch()\n"
                "        __import__('time').sleep(60)"
            )
        },
    )
    process = _stagerl("train", str(config), "-o", str(tmp_path / "runs"))
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "the model was never built"
    assert list((tmp_path / "runs").glob("*/*"))  # the run's directory, held meanwhile
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 128 + signal.SIGTERM
    assert "stopped by SIGTERM while not training (starting up" in err
    assert not list((tmp_path / "runs").glob("*"))


def test_sigterm_just_before_training_handles_it_leaves_no_run_directory(tmp_path, monkeypatch):
    # between building the trainer and training's own handler: still start-up's, not the
    # default (which would end the process past every clean-up)
    from stagerl.engine.logging import MetricsLogger

    before, real_init = signal.getsignal(signal.SIGTERM), MetricsLogger.__init__

    def sigterm_then_init(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(MetricsLogger, "__init__", sigterm_then_init)
    code = cli.main(["train", str(FIXTURES / "tiny_ppo.py"), "-o", str(tmp_path / "runs")])
    assert code == 128 + signal.SIGTERM
    assert not list((tmp_path / "runs").glob("*"))
    assert signal.getsignal(signal.SIGTERM) == before  # put back once the command ends
