"""Experts through the task API: `query_expert` and the ExpertActionSensor solve test episodes."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stagerl import ConfigError, ExpertActionSensor, MLPActorCritic
from stagerl.plugins.minigrid import (
    EgocentricMiniGridSensor,
    MiniGridExperimentConfig,
    MiniGridTaskSampler,
)


def _success_rate(env_id: str, episodes: int, random_fraction: float = 0.0) -> float:
    sensors = [EgocentricMiniGridSensor(view_channels=3), ExpertActionSensor(nactions=7)]
    sampler = MiniGridTaskSampler(env_ids=env_id, sensors=sensors, split="test")
    rng = np.random.default_rng(0)
    successes = 0
    for _ in range(episodes):
        task = sampler.next_task()
        while not task.is_done():
            action, valid = task.get_observations()[ExpertActionSensor.UUID]
            if rng.random() < random_fraction or not valid:
                action = rng.integers(0, 3)
            task.step(int(action))
        successes += task.metrics()["success"]
    return successes / episodes


def test_expert_actions_from_the_sensor_solve_test_episodes_despite_other_actions_taken():
    # The task tells its expert each action taken, so the plan survives 30% random actions
    # (the experts alone: test_experts.py).
    assert _success_rate("BabyAI-GoToLocal-v0", 100, random_fraction=0.3) >= 0.9


@pytest.mark.parametrize(
    ("env_id", "named"),
    [
        ("MiniGrid-DoorKey-5x5-v0", "gives no action at an episode's start"),  # a locked door
        ("MiniGrid-Fetch-5x5-N2-v0", "needs an expert, and this env has none"),  # no goal square
    ],
)
def test_an_expert_sensor_on_tasks_without_a_working_expert_is_an_error(env_id, named):
    sensors = [EgocentricMiniGridSensor(view_channels=3), ExpertActionSensor(nactions=7)]
    with pytest.raises(ConfigError, match=f"{env_id}: .*{named}"):
        MiniGridTaskSampler(env_ids=env_id, sensors=sensors)


def test_tasks_without_expert_sensor_never_build_an_expert():
    sampler = MiniGridTaskSampler(
        env_ids="BabyAI-GoToObj-v0", sensors=[EgocentricMiniGridSensor(view_channels=3)]
    )
    task = sampler.next_task()
    assert task.expert is None and task.query_expert() == (0, False)


def test_evaluation_slots_never_repeat_each_others_episodes():
    # (that the splits' seeds are disjoint: tests/engine/test_validation.py)
    def seeds(split, slots=4, per_slot=50):
        found = set()
        for slot in range(slots):
            sampler = MiniGridTaskSampler(
                env_ids="MiniGrid-Empty-5x5-v0",
                split=split,
                seed=slot,
                slot=slot,
                num_slots=slots,
                sensors=[EgocentricMiniGridSensor(view_channels=3)],
            )
            found |= {sampler.next_task().seed for _ in range(per_slot)}
        return found

    assert len(seeds("valid")) == len(seeds("test")) == 200


def test_validation_and_test_tasks_of_an_imitation_experiment_build_no_expert():
    from stagerl.engine.setup import build_samplers
    from stagerl.experiment import load_experiment

    experiment = load_experiment(Path(__file__).parents[2] / "fixtures" / "tiny_dagger_ppo.py")
    factories = {
        mode: {s.expert_factory is None for s in build_samplers(experiment, mode, seed=0)[1]}
        for mode in ("train", "valid", "test")
    }
    assert factories == {"train": {False}, "valid": {True}, "test": {True}}


def test_the_model_of_an_imitation_experiment_does_not_read_the_expert():
    class ImitationMLP(MiniGridExperimentConfig):
        ENV_ID = "MiniGrid-Empty-5x5-v0"
        SENSORS = [EgocentricMiniGridSensor(view_channels=3), ExpertActionSensor(nactions=7)]
        MODEL = MLPActorCritic

    model = ImitationMLP.create_model()
    assert model.uuids == ["minigrid_ego_image"]
    assert model.policy_net[0].in_features == 7 * 7 * 3


def test_an_expert_turned_off_plans_nothing_and_plans_afresh_when_turned_on(monkeypatch):
    from stagerl.plugins.minigrid import experts
    from stagerl.tasks.shared import SharedArrays, array_layout
    from stagerl.tasks.worker import WorkerLoop

    replans: list[Any] = []

    class CountingBot(experts.BabyAIBot):
        def replan(self, action_taken: Any = None) -> Any:
            replans.append(action_taken)
            return super().replan(action_taken)

    monkeypatch.setattr(experts, "BabyAIBot", CountingBot)
    sensors = [EgocentricMiniGridSensor(view_channels=3), ExpertActionSensor(nactions=7)]
    sampler = MiniGridTaskSampler(env_ids="BabyAI-GoToLocal-v0", sensors=sensors, seed=1)
    layout = array_layout(sampler.observation_space, 1)
    loop = WorkerLoop(
        {0: sampler}, SharedArrays(bytearray(SharedArrays.nbytes(layout)), layout), max_tasks=None
    )
    loop.reset()
    expert = loop.arrays["obs/expert_action"]
    assert expert[0, 1] == 1  # planned
    planned = len(replans)
    assert loop.use_expert(False) is False  # nothing to observe again
    for action in (0, 0, 2):
        loop.arrays["action"][0] = action
        loop.step()
        assert expert[0].tolist() == [0, 0]  # "no action", without asking the bot
    assert len(replans) == planned
    assert loop.use_expert(True) is True  # the running task is observed again
    task = loop.slots[0].task
    fresh = experts.BabyAIExpert()
    fresh.reset(task.env)  # a new bot planning from where the episode now is
    assert replans[planned] is None  # the task's bot too started over, not from a stale plan
    assert expert[0].tolist() == [fresh.expert_action()[0], 1]
