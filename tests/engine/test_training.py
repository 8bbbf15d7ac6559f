"""End-to-end training: the seed's pipeline runs, and a resumed run continues where it stopped."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from stagerl import cli
from stagerl.engine.checkpoint import list_checkpoints, load_checkpoint
from stagerl.engine.evaluator import evaluate
from stagerl.engine.trainer import Trainer
from stagerl.experiment import load_experiment
from stagerl.plugins.minigrid.recording import record_dataset

ROOT = Path(__file__).parents[2]
FIXTURES = ROOT / "tests" / "fixtures"

pytestmark = pytest.mark.timeout(300)


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_seed_ppo_pipeline_trains_a_few_rollouts(tmp_path):
    experiment = load_experiment(ROOT / "projects" / "seed" / "ppo_minigrid.py")
    trainer = Trainer(experiment, run_dir=tmp_path, seed=0)
    final = trainer.train(stop_after_steps=3 * 16 * 128)
    state = load_checkpoint(final)["state"]
    assert state["total_steps"] == state["stage_steps"] == 3 * 2048
    assert state["rollout_count"] == 3
    lr = trainer.setup.optimizer.param_groups[0]["lr"]
    assert lr == pytest.approx(2.5e-4 * (1 - 6144 / 1e6))
    rows = _rows(tmp_path)
    assert [row["step"] for row in rows] == [2048, 4096, 6144]  # every 640 steps, per rollout
    assert rows[-1]["loss/ppo_loss/clip"] == pytest.approx(0.1 * (1 - 6144 / 1e6))
    assert "train/success" in rows[-1] and "train/ep_length" in rows[-1]
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def _params(checkpoint: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(checkpoint)["model"]


def test_resume_latest_continues_with_same_stage_and_steps_and_equal_parameters(tmp_path):
    config = FIXTURES / "tiny_ppo.py"
    experiment = load_experiment(config)
    straight = Trainer(experiment, run_dir=tmp_path / "straight", seed=3).train()

    output = tmp_path / "runs"
    assert cli.main(["train", str(config), "-o", str(output), "-s", "3"]) == 0
    run_dir = next((output / "TinyPPO").iterdir())
    # pretend the run died after its 512-step checkpoint
    for checkpoint in list_checkpoints(run_dir):
        if load_checkpoint(checkpoint)["state"]["total_steps"] > 512:
            checkpoint.unlink()
    rows = _rows(run_dir)
    assert rows[-1]["step"] == 1024
    with (run_dir / "metrics.jsonl").open("a") as file:
        file.write('{"step": 1088, "stag')  # a row cut short by the kill
    assert cli.main(["train", str(config), "-o", str(output), "--resume", "latest"]) == 0

    resumed = list_checkpoints(run_dir)[0]
    state = load_checkpoint(resumed)["state"]
    assert (state["stage_index"], state["total_steps"]) == (1, 1024)
    assert [r["step"] for r in _rows(run_dir)] == [256, 512, 768, 1024]  # no gap, no repeat
    for name, tensor in _params(straight).items():
        torch.testing.assert_close(_params(resumed)[name], tensor, rtol=0, atol=0)


def test_a2c_pipeline_trains_and_improves_the_policy(tmp_path):
    config = tmp_path / "a2c.py"
    config.write_text(
        (FIXTURES / "tiny_ppo.py")
        .read_text()
        .replace("from stagerl import PPO,", "from stagerl import A2C, A2CConfig, PPO,")
        .replace(
            '"ppo_loss": PPO(clip_decay=LinearDecay(cls.STEPS), **PPOConfig)',
            '"ppo_loss": A2C(**A2CConfig)',
        )
        .replace("update_repeats=2", "update_repeats=1")
        .replace("STEPS = 1024", "STEPS = 8192")
    )
    experiment = load_experiment(config)
    early = Trainer(experiment, run_dir=tmp_path / "early", seed=0).train(stop_after_steps=256)
    final = Trainer(experiment, run_dir=tmp_path / "run", seed=0).train()
    assert "loss/ppo_loss/action_loss" in _rows(tmp_path / "run")[-1]
    assert load_checkpoint(final)["state"]["total_steps"] == 8192
    before = evaluate(experiment, early, episodes=50)
    after = evaluate(experiment, final, episodes=50)
    # MiniGrid-Empty-Random-5x5: shorter episodes, more reward (0.47 -> 0.61 measured)
    assert after["reward"] > before["reward"] + 0.1
    assert after["ep_length"] < before["ep_length"] - 8


def test_seed_offpolicy_pipeline_trains_from_a_recorded_dataset(tmp_path, monkeypatch):
    """The seed's third pipeline as projects/babyai has it, with shorter chunks (NUM_STEPS)."""
    dataset = record_dataset(
        env_id="BabyAI-GoToLocal-v0", episodes=400, out=tmp_path / "gotolocal-v0", seed=0
    )
    monkeypatch.setenv("STAGERL_DATASET", str(dataset))
    experiment = load_experiment(ROOT / "projects" / "babyai" / "gotolocal_offpolicy_bc.py")

    class Shorter(experiment.config):
        NUM_STEPS = 8  # 2 steps of 16 tasks per rollout; chunks of [8, 128] from the dataset

    trainer = Trainer(dataclasses.replace(experiment, config=Shorter), run_dir=tmp_path, seed=0)
    state = load_checkpoint(trainer.train(stop_after_steps=2 * 32))["state"]
    assert (state["total_steps"], state["rollout_count"]) == (64, 2)
    first, last = _rows(tmp_path)[0], _rows(tmp_path)[-1]
    assert last["offpolicy/samples"] == 2 * 16 * 8 * 128  # 16 batches per rollout
    loss = "offpolicy/offpolicy_expert_ce_loss/expert_ce"
    assert last[loss] < first[loss] < 2.0  # starts near log(7) = 1.95 and goes down
    assert 0 < last["offpolicy/offpolicy_expert_ce_loss/epoch_progress"] < 1
    assert not [key for key in last if key.startswith("loss/")]  # no on-policy update
