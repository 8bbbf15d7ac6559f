"""MiniGrid sensors give fixed-shape arrays: missions become tokens of a fixed vocabulary."""

import pickle
import warnings
from types import SimpleNamespace

import numpy as np
import pytest

from stagerl.plugins.minigrid import (
    EgocentricMiniGridSensor,
    MiniGridMissionSensor,
    MiniGridTaskSampler,
    sensors,
    tokenize_mission,
)
from stagerl.plugins.minigrid.sensors import TOKEN_IDS


def test_missions_become_fixed_length_tokens_with_padding_and_unknowns():
    tokens = tokenize_mission("go to the red ball", max_len=8)
    assert tokens.dtype == np.int64 and tokens.shape == (8,)
    assert tokens.tolist() == [TOKEN_IDS[w] for w in ["go", "to", "the", "red", "ball"]] + [0, 0, 0]
    assert tokenize_mission("go to the zebra", max_len=4).tolist()[-1] == 1  # unknown word
    assert tokenize_mission("a " * 20, max_len=5).shape == (5,)  # truncated


def test_sensor_observations_match_their_spaces():
    sensors = [EgocentricMiniGridSensor(view_channels=3), MiniGridMissionSensor(instr_len=8)]
    sampler = MiniGridTaskSampler(env_ids="BabyAI-GoToLocal-v0", sensors=sensors)
    task = sampler.next_task()
    for _ in range(5):
        observations = task.get_observations()
        for uuid, box in sampler.observation_space.spaces.items():
            assert observations[uuid].shape == box.shape
            assert observations[uuid].dtype == box.dtype
            assert box.contains(observations[uuid])
        task.step(2)


def test_the_mission_cache_stays_bounded_and_out_of_pickles(monkeypatch):
    # every rollout pickles each slot's sampler, sensors included: BossLevel's missions are
    # nearly all distinct, and the cache grew by one each episode
    monkeypatch.setattr(sensors, "MISSIONS_CACHED", 3)
    sensor = MiniGridMissionSensor(instr_len=8)
    for colour in ("red", "green", "blue", "grey", "yellow"):
        task = SimpleNamespace(last_obs={"mission": f"go to the {colour} ball"})
        assert sensor.get_observation(None, task)[3] == TOKEN_IDS[colour]
        assert len(sensor._cache) <= 3
    assert len(sensor._cache) > 0 and pickle.loads(pickle.dumps(sensor))._cache == {}


def test_a_mission_longer_than_instr_len_is_cut_with_a_warning_once(monkeypatch):
    from stagerl.plugins.minigrid import sensors

    monkeypatch.setattr(sensors, "_CUT_WARNED", set())
    sensor = MiniGridMissionSensor(instr_len=8)
    mission = "put the red ball next to the blue box"  # 9 words: the goal's last is cut
    with pytest.warns(UserWarning, match=r"instr_len=8\) keeps the first 8 of 9 words"):
        tokens = sensor.get_observation(None, SimpleNamespace(last_obs={"mission": mission}))
    assert tokens[-1] == TOKEN_IDS["blue"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once a process
        sensor.get_observation(None, SimpleNamespace(last_obs={"mission": mission + " now"}))
