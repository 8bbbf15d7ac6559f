"""True DAgger: rollouts are aggregated into a bounded buffer that the imitation loss samples."""

import json

import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch import optim

from stagerl import PPO, Builder, ConfigError, Imitation, PipelineStage, PPOConfig, TrainingPipeline
from stagerl.engine.aggregation import ExpertDataBuffer
from stagerl.engine.checkpoint import load_checkpoint
from stagerl.engine.storage import RolloutStorage
from stagerl.engine.trainer import Trainer
from stagerl.errors import CheckpointError
from stagerl.experiment import load_experiment
from stagerl.pipeline import DatasetAggregation
from tests.engine.test_stages import TINY

SPACE = spaces.Dict({"x": spaces.Box(0, 10_000, (2,), dtype=np.int64)})


def _storage(rollout: int, steps=4, tasks=3) -> RolloutStorage:
    storage = RolloutStorage(
        num_steps=steps, num_tasks=tasks, observation_space=SPACE, memory_shape=(1, 2)
    )
    for t in range(steps + 1):
        storage.observations["x"][t] = torch.tensor([[rollout * 10 + n, t] for n in range(tasks)])
    storage.memory = torch.full((1, tasks, 2), float(rollout))
    return storage


def test_buffer_keeps_whole_sequences_and_overwrites_the_oldest():
    buffer = ExpertDataBuffer(capacity=5, num_steps=4, observation_space=SPACE, memory_shape=(1, 2))
    for rollout in range(3):  # 9 sequences into 5 slots
        buffer.add(_storage(rollout))
    assert buffer.size == 5
    kept = sorted(int(x) for x in buffer.observations["x"][:, 0, 0])
    assert kept == [11, 12, 20, 21, 22]  # the four oldest were overwritten
    batch = buffer.sample(16, torch.Generator().manual_seed(0))
    obs = batch.observations["x"]
    assert obs.shape == (4, 16, 2)
    for column in range(16):
        sequence = int(obs[0, column, 0])
        assert obs[:, column, 0].tolist() == [sequence] * 4
        assert obs[:, column, 1].tolist() == [0, 1, 2, 3]
        assert batch.memory[0, column].tolist() == [float(sequence // 10)] * 2
    assert buffer.nbytes > 0


def test_a_saved_buffer_loads_into_another_capacity_keeping_the_newest_sequences():
    # max_sequences edited before a resume (--allow-config-change)
    def buffer(capacity: int, steps: int = 4) -> ExpertDataBuffer:
        return ExpertDataBuffer(
            capacity=capacity, num_steps=steps, observation_space=SPACE, memory_shape=(1, 2)
        )

    saved = buffer(5)
    for rollout in range(3):  # 9 sequences into 5 slots: 11, 12, 20, 21, 22 kept, 11 oldest
        saved.add(_storage(rollout))
    same, smaller, larger = buffer(5), buffer(3), buffer(8)
    for loaded in (same, smaller, larger):
        loaded.load_state_dict(saved.state_dict())
    assert torch.equal(same.observations["x"], saved.observations["x"]) and same.next == 4
    assert [int(x) for x in smaller.observations["x"][:, 0, 0]] == [20, 21, 22]
    assert (smaller.size, smaller.next) == (3, 0)
    assert [int(x) for x in larger.observations["x"][:5, 0, 0]] == [11, 12, 20, 21, 22]
    assert (larger.size, larger.next) == (5, 5)
    larger.add(_storage(3))  # appended after the newest
    assert [int(x) for x in larger.observations["x"][5:, 0, 0]] == [30, 31, 32]
    with pytest.raises(CheckpointError, match="DAgger buffer holds sequences shaped"):
        buffer(5, steps=8).load_state_dict(saved.state_dict())


def test_dataset_aggregation_needs_an_imitation_loss():
    with pytest.raises(ConfigError, match="dataset_aggregation needs an Imitation loss"):
        TrainingPipeline(
            named_losses={"ppo_loss": PPO(**PPOConfig), "imitation_loss": Imitation()},
            pipeline_stages=[
                PipelineStage(
                    loss_names=["ppo_loss"],
                    max_stage_steps=10,
                    dataset_aggregation=DatasetAggregation(),
                )
            ],
            optimizer_builder=Builder(optim.Adam, dict(lr=1e-3)),
            num_steps=8,
        )


def _aggregating(monkeypatch):
    """The tiny two-stage experiment, its first stage aggregating (16 sequences); the stage."""
    experiment = load_experiment(TINY)
    pipeline = experiment.config.training_pipeline()
    stage = pipeline.pipeline_stages[0]
    stage.dataset_aggregation = DatasetAggregation(max_sequences=16, sequences_per_minibatch=2)
    monkeypatch.setattr(experiment.config, "training_pipeline", classmethod(lambda c: pipeline))
    return experiment, stage


@pytest.mark.timeout(120)
def test_aggregating_stage_trains_on_samples_of_past_rollouts(tmp_path, monkeypatch):
    experiment, _ = _aggregating(monkeypatch)
    final = Trainer(experiment, run_dir=tmp_path, seed=0).train(stop_after_steps=576)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    stage0 = [row for row in rows if row["step"] <= 512]
    assert "loss/aggregated/imitation_loss/imitation_loss" in stage0[-1]
    # 4 tasks per rollout, 2 rollouts per row: 8 sequences after the first row, then capped
    assert [r["aggregated_sequences"] for r in stage0] == pytest.approx([6.0, 14.0, 16.0, 16.0])
    # one rollout into the PPO stage, which has no use for the buffer: checkpoints drop it
    assert load_checkpoint(final)["ranks"][0]["dagger_buffer"] is None


@pytest.mark.timeout(120)
def test_resuming_a_stage_that_no_longer_aggregates_drops_the_saved_buffer(tmp_path, monkeypatch):
    experiment, stage = _aggregating(monkeypatch)
    saved = Trainer(experiment, run_dir=tmp_path / "a", seed=0).train(stop_after_steps=64)
    assert load_checkpoint(saved)["ranks"][0]["dagger_buffer"] is not None
    stage.dataset_aggregation = None  # the config edited (--allow-config-change)
    resumed = Trainer(experiment, run_dir=tmp_path / "b", seed=0, resume=load_checkpoint(saved))
    assert resumed.share.notes == [
        "pipeline_stages[0] has no dataset_aggregation now: the DAgger buffer the checkpoint "
        "saved for it is dropped"
    ]
    final = resumed.train(stop_after_steps=128)
    assert load_checkpoint(final)["state"]["total_steps"] == 128
