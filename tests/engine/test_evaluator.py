"""Evaluation: the success rate's 95% interval, `--seed` choosing the sampled actions, and
evaluation samplers seeded apart from training."""

from pathlib import Path

import pytest

from stagerl.engine.evaluator import evaluate, success_interval
from stagerl.engine.setup import sampler_seeds
from stagerl.engine.trainer import Trainer
from stagerl.experiment import load_experiment

ROOT = Path(__file__).parents[2]


def test_wilson_interval_of_hand_computed_success_rates():
    # 45/50: centre (0.9 + 1.96^2/100) / (1 + 1.96^2/50) = 0.87146, half-width 0.08507;
    # 0/10: centre = half-width = (1.96^2/20) / (1 + 1.96^2/10) = 0.13877
    assert success_interval(45, 50) == pytest.approx((0.78640, 0.95653), abs=1e-5)
    assert success_interval(0, 10) == pytest.approx((0.0, 0.27754), abs=1e-5)
    assert success_interval(10, 10) == pytest.approx((0.72246, 1.0), abs=1e-5)


@pytest.mark.timeout(180)
def test_eval_seed_reproduces_its_episodes_and_another_seed_samples_others(tmp_path):
    experiment = load_experiment(ROOT / "tests" / "fixtures" / "tiny_ppo.py")
    checkpoint = Trainer(experiment, run_dir=tmp_path, seed=0).train(stop_after_steps=64)
    runs = [evaluate(experiment, checkpoint, episodes=24, seed=seed) for seed in (3, 3, 4)]
    assert runs[0] == runs[1]
    assert runs[0]["ep_length"] != runs[2]["ep_length"]
    assert runs[0]["success_ci95_low"] <= runs[0]["success"] <= runs[0]["success_ci95_high"]


def test_validation_and_test_samplers_are_seeded_apart_from_training():
    seeds = [sampler_seeds(3, 8, mode=mode) for mode in ("train", "valid", "test")]
    assert len(set().union(*seeds)) == 24
    assert sampler_seeds(3, 8, mode="valid") == seeds[1]  # reproducible
