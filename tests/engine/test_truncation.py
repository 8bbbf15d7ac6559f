"""Truncation end to end: tasks cut off at MAX_STEPS end as `truncated` (not terminated), are
bootstrapped with V(their last observation), and the returns use that value."""

import pytest
import torch

from stagerl.engine.rollout import collect_rollout, last_values
from stagerl.engine.setup import build_training_setup
from stagerl.engine.storage import RolloutStorage
from stagerl.experiment import load_experiment
from tests.variants import fixture_variant

pytestmark = pytest.mark.timeout(120)


def test_max_steps_truncates_bootstraps_and_enters_the_returns(tmp_path):
    config = fixture_variant(
        tmp_path, "tiny_ppo.py", {"STEPS = 1024": "STEPS = 1024\n    MAX_STEPS = 3"}
    )
    setup = build_training_setup(load_experiment(config), seed=0)
    storage = RolloutStorage(
        num_steps=12,
        num_tasks=setup.num_tasks,
        observation_space=setup.observation_space,
        memory_shape=setup.model.memory_shape,
    )
    with setup.start_sampler() as sampler:
        storage.set_observations(0, sampler.reset())
        storage.memory = setup.model.initial_memory(setup.num_tasks)
        result = collect_rollout(model=setup.model, sampler=sampler, storage=storage)
    truncated, terminated = storage.truncated, storage.terminated
    assert truncated.any() and not (truncated & terminated).any()
    assert all(e["ep_length"] <= 3 for e in result.episodes)
    assert {e["ep_length"] for e in result.episodes if e["success"] == 0} == {3.0}
    # V(s_final) where cut off, nothing elsewhere; the next step starts a new episode.
    assert (storage.bootstrap_values[truncated] != 0).all()
    assert (storage.bootstrap_values[~truncated] == 0).all()
    assert (storage.masks[1:][truncated | terminated] == 0).all()

    gamma = 0.9
    storage.compute_returns(
        last_values(setup.model, storage), gamma=gamma, gae_lambda=1, use_gae=False
    )
    expected = storage.rewards + gamma * storage.bootstrap_values
    assert torch.allclose(storage.returns[truncated], expected[truncated])
    # without bootstrapping (AllenAct's convention), by hand: tests/engine/test_storage.py
