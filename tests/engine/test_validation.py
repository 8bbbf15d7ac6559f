"""Validation during training: on validation seeds only, logged as valid/*, and harmless."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from stagerl import Validation, cli
from stagerl.engine.checkpoint import load_checkpoint
from stagerl.engine.evaluator import episode_sampler, run_episodes
from stagerl.engine.model_setup import build_model
from stagerl.engine.setup import build_samplers
from stagerl.engine.trainer import Trainer
from stagerl.engine.validation import Validator
from stagerl.experiment import load_experiment
from stagerl.plugins.minigrid.tasks import SEED_RANGES

FIXTURES = Path(__file__).parents[1] / "fixtures"

pytestmark = pytest.mark.timeout(300)


def _seeds(episodes: list[dict]) -> list[int]:
    return [int(metrics["episode_seed"]) for metrics in episodes]


def test_validation_episodes_use_validation_seeds_disjoint_from_training_and_test():
    experiment = load_experiment(FIXTURES / "seed_reporting.py")
    _, train_samplers = build_samplers(experiment, "train", seed=0)
    train = [sampler.next_task().seed for sampler in train_samplers for _ in range(25)]
    model = build_model(experiment, train_samplers[0].action_space)
    machine, valid_samplers = build_samplers(experiment, "valid", seed=0)
    validation = Validation(episodes=10)
    with Validator(
        experiment, validation, machine=machine, samplers=valid_samplers, seed=0
    ) as validator:
        first, again = _seeds(validator.episodes(model)), _seeds(validator.episodes(model))
    machine, test_samplers = build_samplers(experiment, "test", seed=0)
    with episode_sampler(experiment, machine, samplers=test_samplers, episodes=10) as sampler:
        test = _seeds(
            run_episodes(model, sampler, deterministic=False, generator=torch.Generator())
        )

    low, high = SEED_RANGES["valid"]
    assert len(set(first)) == 10 and all(low <= seed < high for seed in first)
    assert sorted(again) == sorted(first)  # every round replays the same episodes
    assert not set(first) & set(train) and not set(first) & set(test)
    assert all(seed < low for seed in test) and all(seed >= high for seed in train)


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_validation_rows_are_logged_and_training_is_unchanged(tmp_path):
    experiment = load_experiment(FIXTURES / "seed_reporting.py")
    validated = Trainer(experiment, run_dir=tmp_path / "valid", seed=1).train()
    valid_rows = [row for row in _rows(tmp_path / "valid") if "valid/success" in row]
    # every 256 steps (the interval), which includes the checkpoints at 512 and 1024
    assert [row["step"] for row in valid_rows] == [256, 512, 768, 1024]
    for row in valid_rows:
        assert row["valid/episodes"] == 6
        assert 0.0 <= row["valid/success"] <= 1.0 and row["valid/ep_length"] > 0
        assert SEED_RANGES["valid"][0] <= row["valid/episode_seed"] < SEED_RANGES["valid"][1]
    board = EventAccumulator(str(tmp_path / "valid" / "tensorboard")).Reload()
    assert [e.step for e in board.Scalars("valid/success")] == [256, 512, 768, 1024]
    times = [e.step for e in board.Scalars("time")]  # the training rows' only
    assert len(times) == len(set(times)) == len(_rows(tmp_path / "valid")) - len(valid_rows)

    shutil.copy(FIXTURES / "tiny_ppo.py", tmp_path)  # which the fixture derives from
    config = tmp_path / "no_validation.py"
    source = (FIXTURES / "seed_reporting.py").read_text()
    config.write_text(source.replace("Validation(episodes=6, interval=256)", "None"))
    plain = Trainer(load_experiment(config), run_dir=tmp_path / "plain", seed=1).train()
    assert not any("valid/success" in row for row in _rows(tmp_path / "plain"))
    # validation samples its own actions: the training run's parameters are bit for bit equal
    for name, tensor in load_checkpoint(plain)["model"].items():
        torch.testing.assert_close(
            load_checkpoint(validated)["model"][name], tensor, rtol=0, atol=0
        )


def test_validation_without_validation_tasks_fails_before_training_naming_the_field(
    tmp_path, capsys
):
    shutil.copy(FIXTURES / "tiny_ppo.py", tmp_path)  # which the fixture derives from
    config = tmp_path / "no_valid_tasks.py"
    config.write_text(
        (FIXTURES / "seed_reporting.py").read_text()
        + "\n    @classmethod\n    def valid_task_sampler_args(cls, *args, **kwargs):\n"
        + '        raise NotImplementedError("SeedReporting defines no validation tasks")\n'
    )
    assert cli.main(["train", str(config), "-o", str(tmp_path / "runs")]) == 2
    error = capsys.readouterr().err
    assert "TrainingPipeline.validation is set, but SeedReporting.valid_task_sampler_args" in error
    assert "SeedReporting defines no validation tasks" in error
