"""Multi-stage pipelines: stages switch at their step budget or when a criterion accepts
(resuming inside a stage: tests/test_reliability.py)."""

import json
import pickle
import time
from pathlib import Path

import pytest
import torch

from stagerl import cli
from stagerl.engine.checkpoint import list_checkpoints, load_checkpoint
from stagerl.engine.trainer import Trainer
from stagerl.experiment import load_experiment
from tests.variants import fixture_variant

ROOT = Path(__file__).parents[2]
TINY = ROOT / "tests" / "fixtures" / "tiny_dagger_ppo.py"

pytestmark = pytest.mark.timeout(300)


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_stages_switch_at_their_step_budget(tmp_path):
    final = Trainer(load_experiment(TINY), run_dir=tmp_path, seed=0, keep_checkpoints=1).train()
    state = load_checkpoint(final)["state"]
    # the final checkpoint keeps the last stage's steps (a larger budget resumes it)
    assert (state["stage_index"], state["stage_steps"], state["total_steps"]) == (1, 512, 1024)
    # the first stage's final model stays, though only the newest checkpoint is to be kept
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "ckpt_000000001024.pt",
        "ckpt_000000000512.pt",
    ]
    rows = _rows(tmp_path)
    assert {r["stage"] for r in rows if r["step"] <= 512} == {"0:imitation_loss"}
    assert {r["stage_index"] for r in rows} == {0, 1}  # also a TensorBoard scalar
    assert {r["stage"] for r in rows if r["step"] > 512} == {"1:ppo_loss"}
    stage0 = [r for r in rows if r["step"] <= 512]
    # p = 1 - frames/512, taken at each step of the row's two 64-frame rollouts (4 tasks x 16
    # steps): the mean of 1 - 4t/512 over t = 0..31 is 1 - 62/512
    assert stage0[0]["teacher_forcing"] == pytest.approx(1 - 62 / 512)
    assert all("teacher_forcing" not in r for r in rows if r["step"] > 512)
    assert all("loss/imitation_loss/imitation_loss" in r for r in stage0)


def test_a_stage_ends_with_a_row_of_its_own_when_the_log_interval_does_not_divide_it(tmp_path):
    config = fixture_variant(
        tmp_path,
        "tiny_dagger_ppo.py",
        {"metric_accumulate_interval=128": "metric_accumulate_interval=384"},
    )
    output = tmp_path / "runs"
    assert cli.main(["train", str(config), "-o", str(output), "-s", "0"]) == 0
    (run,) = (output / "TinyDaggerThenPPO").iterdir()
    rows = [(r["step"], r["stage"]) for r in _rows(run)]
    stage0, stage1 = "0:imitation_loss", "1:ppo_loss"
    assert rows == [(384, stage0), (512, stage0), (896, stage1), (1024, stage1)]
    # The checkpoint at the stage's end (save_interval=256) was saved with that row written:
    # a run resumed from it does not write the row again.
    time.sleep(1.1)  # run directories are named by the second
    at_stage_end = run / "checkpoints" / "ckpt_000000000512.pt"
    assert cli.main(["train", str(config), "-o", str(output), "--resume", str(at_stage_end)]) == 0
    (branch,) = [d for d in (output / "TinyDaggerThenPPO").iterdir() if d != run]
    assert [(r["step"], r["stage"]) for r in _rows(branch)] == rows


def test_seed_dagger_then_ppo_pipeline_trains_through_both_stages(tmp_path):
    experiment = load_experiment(ROOT / "projects" / "seed" / "dagger_then_ppo_minigrid.py")
    final = Trainer(experiment, run_dir=tmp_path, seed=0).train(stop_after_steps=6 * 2048)
    state = load_checkpoint(final)["state"]
    assert (state["stage_index"], state["stage_steps"]) == (1, 2048)  # 5 DAgger rollouts, 1 PPO
    stages = [r["stage"] for r in _rows(tmp_path)]
    assert stages[0] == "0:imitation_loss" and stages[-1] == "1:ppo_loss"


@pytest.mark.parametrize(
    "condition, stage_end",
    [
        # rollouts of 64 steps, rows every 128: asked after every rollout, with no metrics
        # after one that closes no window (as AllenAct does) ...
        ("stage_steps >= 192 and not training_metrics.means()", 192),
        # ... and with the window's metrics after one that does
        ("stage_steps >= 160 and 'ep_length' in training_metrics.means()", 256),
    ],
)
def test_early_stopping_criterion_is_asked_after_every_rollout(tmp_path, condition, stage_end):
    # called by keyword, as AllenAct calls it: a criterion's parameters may come in any order
    criterion = (
        "early_stopping_criterion=lambda *, total_steps, stage_steps, training_metrics: "
        f"{condition},\n                    teacher_forcing="
    )
    config = fixture_variant(tmp_path, "tiny_dagger_ppo.py", {"teacher_forcing=": criterion})
    final = Trainer(load_experiment(config), run_dir=tmp_path, seed=0).train()
    rows = _rows(tmp_path)
    assert max(r["step"] for r in rows if r["stage"] == "0:imitation_loss") == stage_end
    state = load_checkpoint(final)["state"]
    assert (state["stage_index"], state["total_steps"]) == (1, stage_end + 512)


def test_a_stage_that_reads_no_expert_action_turns_the_experts_off_and_learns_the_same(tmp_path):
    # PPO reads no expert action: its stage turns the tasks' experts off, which changes none
    # of what it learns. The same run with a PPO that claims to read them keeps them on.
    reading_ppo = "type('ReadingPPO', (PPO,), {'reads_expert_actions': True})(**PPOConfig)"
    runs = {
        "off": TINY,
        "on": fixture_variant(tmp_path, "tiny_dagger_ppo.py", {"PPO(**PPOConfig)": reading_ppo}),
    }
    finals = {}
    for name, config in runs.items():
        final = Trainer(load_experiment(config), run_dir=tmp_path / name, seed=0).train()
        finals[name] = load_checkpoint(final)
        samplers = [pickle.loads(state)[0] for state in finals[name]["ranks"][0]["samplers"]]
        assert {s.sensor_suite.expert_enabled for s in samplers} == {name == "on"}
    on, off = finals["on"]["model"], finals["off"]["model"]
    assert all(torch.equal(on[key], off[key]) for key in on)


def test_a_run_resumed_where_the_experts_come_back_on_continues_exactly(tmp_path):
    # PPO (experts off), then DAgger: turned on again, each task's expert plans afresh and the
    # rollout's first row is observed again; resumed from the checkpoint at the switch
    ppo_first = {
        '                PipelineStage(loss_names=["ppo_loss"], max_stage_steps=steps),\n'
        "            ],": "            ],",
        "            pipeline_stages=[\n": "            pipeline_stages=[\n"
        '                PipelineStage(loss_names=["ppo_loss"], max_stage_steps=steps),\n',
    }
    config = fixture_variant(tmp_path, "tiny_dagger_ppo.py", ppo_first)
    straight = Trainer(load_experiment(config), run_dir=tmp_path / "straight", seed=0).train()
    at_switch = Trainer(load_experiment(config), run_dir=tmp_path / "cut", seed=0).train(
        stop_after_steps=512
    )
    assert cli.main(["train", str(config), "--resume", str(at_switch)]) == 0
    resumed = tmp_path / "cut" / "checkpoints" / "ckpt_000000001024.pt"  # the run went on there
    expected, got = load_checkpoint(straight)["model"], load_checkpoint(resumed)["model"]
    assert all(torch.equal(expected[key], got[key]) for key in expected)
    assert [r["stage"] for r in _rows(tmp_path / "straight")][-1] == "1:imitation_loss"


def test_losses_and_models_that_may_read_expert_actions_keep_the_experts_on(tmp_path):
    from stagerl import PPO, PPOConfig
    from stagerl.engine.setup import build_training_setup

    class PPOWithCloning(PPO):  # a subclass may add a term that reads them
        pass

    assert not PPO(**PPOConfig).reads_expert_actions
    assert PPOWithCloning(**PPOConfig).reads_expert_actions
    every_sensor = {  # a model built with the expert's reading among its inputs
        "    @classmethod\n    def create_model(cls, **kwargs):\n        return super()": (
            "    @classmethod\n    def create_model(cls, **kwargs):\n"
            "        from gymnasium import spaces\n"
            "        from stagerl import MLPActorCritic\n"
            "        from stagerl.tasks.sensors import SensorSuite\n"
            "        space = SensorSuite(cls.SENSORS).observation_space\n"
            "        return MLPActorCritic(spaces.Discrete(7), space)\n"
            "        return super()"
        )
    }
    configs = {
        "default": TINY,
        "every sensor": fixture_variant(tmp_path, "tiny_dagger_ppo.py", every_sensor),
    }
    reads = {
        name: build_training_setup(load_experiment(config), seed=0).model_reads_expert
        for name, config in configs.items()
    }
    assert reads == {"default": False, "every sensor": True}


def test_a_stages_own_gamma_and_gae_lambda_reach_its_returns(tmp_path, monkeypatch):
    from stagerl.engine.storage import RolloutStorage

    stage = 'PipelineStage(loss_names=["ppo_loss"], max_stage_steps=steps)'
    config = fixture_variant(
        tmp_path, "tiny_dagger_ppo.py", {stage: stage[:-1] + ", gamma=0.5, gae_lambda=0.25)"}
    )
    seen, compute = [], RolloutStorage.compute_returns

    def recording(storage, values, **settings):
        seen.append((settings["gamma"], settings["gae_lambda"]))
        return compute(storage, values, **settings)

    monkeypatch.setattr(RolloutStorage, "compute_returns", recording)
    Trainer(load_experiment(config), run_dir=tmp_path / "run", seed=0).train()
    # 8 rollouts of 4 tasks x 16 steps per 512-step stage: the pipeline's 0.99 and 1.0, then
    # the PPO stage's own
    assert seen == [(0.99, 1.0)] * 8 + [(0.5, 0.25)] * 8
