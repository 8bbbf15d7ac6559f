"""MiniGridTaskSampler over several env ids: training slots spread over them, and valid or test
samplers cover every one evenly, the same sequence after each reset."""

import warnings

import pytest

from stagerl.plugins.minigrid import EgocentricMiniGridSensor, MiniGridTaskSampler

ENV_IDS = ["MiniGrid-Empty-5x5-v0", "MiniGrid-LavaGapS5-v0"]
SENSORS = [EgocentricMiniGridSensor(view_channels=3)]


def _env_ids(sampler: MiniGridTaskSampler, episodes: int) -> list[str]:
    return [sampler.next_task().env_id for _ in range(episodes)]


def test_training_slots_start_spread_over_the_env_ids():
    samplers = [
        MiniGridTaskSampler(env_ids=ENV_IDS, sensors=SENSORS, slot=slot, num_slots=3)
        for slot in range(3)
    ]
    assert [_env_ids(s, 2) for s in samplers] == [
        [ENV_IDS[0]] * 2,
        [ENV_IDS[1]] * 2,
        [ENV_IDS[0]] * 2,
    ]


def test_test_samplers_cover_every_env_id_evenly_and_repeat_after_a_reset():
    sampler = MiniGridTaskSampler(env_ids=ENV_IDS, sensors=SENSORS, split="test")
    first = [(task.env_id, task.seed) for task in (sampler.next_task() for _ in range(4))]
    assert [env_id for env_id, _ in first] == ENV_IDS * 2
    sampler.reset()
    assert [(task.env_id, task.seed) for task in (sampler.next_task() for _ in range(4))] == first


def test_max_steps_above_the_envs_own_limit_warns_and_env_kwargs_raise_that_limit():
    sampler = MiniGridTaskSampler(env_ids=ENV_IDS[0], sensors=SENSORS, max_steps=200)
    with pytest.warns(UserWarning, match=r"max_steps=200 is above .*Empty-5x5-v0's own.*\(100\)"):
        sampler.next_task()
    raised = MiniGridTaskSampler(
        env_ids=ENV_IDS[0], sensors=SENSORS, max_steps=200, env_kwargs={"max_steps": 200}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        task = raised.next_task()
    assert (task.max_steps, task.env.unwrapped.max_steps) == (200, 200)


def test_an_environment_left_for_the_next_env_id_is_closed(monkeypatch):
    from stagerl.plugins.minigrid import tasks

    closed, make = [], tasks.make_minigrid_env

    def counted(env_id, **kwargs):
        env = make(env_id, **kwargs)
        env.close = lambda: closed.append(env_id)
        return env

    monkeypatch.setattr(tasks, "make_minigrid_env", counted)
    sampler = MiniGridTaskSampler(env_ids=ENV_IDS, sensors=SENSORS, split="test")
    _env_ids(sampler, 3)
    assert closed == ENV_IDS
