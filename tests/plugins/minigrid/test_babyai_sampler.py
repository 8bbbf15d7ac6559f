"""AllenAct's BabyAITaskSampler arguments mean what they mean there; samplers that end end."""

import numpy as np
import pytest

from stagerl import ConfigError
from stagerl.plugins.minigrid import BabyAITask, BabyAITaskSampler, EgocentricMiniGridSensor
from stagerl.tasks.shared import SharedArrays, array_layout
from stagerl.tasks.worker import WorkerLoop

SENSORS = [EgocentricMiniGridSensor(agent_view_size=7, view_channels=3)]


def _seeds(sampler, count):
    return [None if (task := sampler.next_task()) is None else task.seed for _ in range(count)]


def test_deterministic_sampling_walks_the_seed_list_and_max_tasks_ends_it():
    sampler = BabyAITaskSampler(
        "BabyAI-GoToObj-v0",
        SENSORS,
        task_seeds_list=[11, 12, 13],
        max_tasks=4,
        deterministic_sampling=True,
    )
    assert sampler.length == 4
    assert _seeds(sampler, 6) == [11, 12, 13, 11, None, None]
    assert sampler.length == 0
    sampler.reset()
    assert _seeds(sampler, 2) == [11, 12]


def test_random_sampling_draws_from_the_list_reproducibly_and_reset_repeats_it():
    def draws(seed):
        sampler = BabyAITaskSampler("BabyAI-GoToObj-v0", SENSORS, seed=seed, num_unique_seeds=5)
        first = _seeds(sampler, 8)
        sampler.reset()
        assert _seeds(sampler, 8) == first
        return first

    assert set(draws(0)) <= set(range(5)) and draws(0) == draws(0) != draws(1)
    assert BabyAITaskSampler("BabyAI-GoToObj-v0", SENSORS).length == float("inf")


def test_class_action_names_are_minigrids_in_index_order():
    assert BabyAITask.class_action_names() == (
        "left", "right", "forward", "pickup", "drop", "toggle", "done"
    )  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_unique_seeds": 2, "task_seeds_list": [1, 2, 3]}, "num_unique_seeds=2 but"),
        ({"extra_task_kwargs": {"expert_view_size": 9}}, "extra_task_kwargs"),
        ({"env_builder": 3}, "env_builder=3"),
    ],
)
def test_inconsistent_arguments_are_named(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        BabyAITaskSampler(**{"env_builder": "BabyAI-GoToObj-v0", "sensors": SENSORS, **kwargs})


def test_in_training_a_sampler_that_ends_starts_over():
    sampler = BabyAITaskSampler(
        "BabyAI-GoToObj-v0",
        SENSORS,
        task_seeds_list=[5, 6],
        max_tasks=2,
        deterministic_sampling=True,
    )
    arrays = SharedArrays(
        bytearray(SharedArrays.nbytes(array_layout(sampler.observation_space, 1))),
        array_layout(sampler.observation_space, 1),
    )
    loop = WorkerLoop({0: sampler}, arrays, max_tasks=None)
    loop.reset()
    seeds = [loop.slots[0].task.seed]
    for _ in range(3):
        task = loop.slots[0].task
        task.num_steps_taken = task.max_steps - 1  # end it on the next step
        arrays["action"][:] = np.array([0])
        loop.step()
        seeds.append(loop.slots[0].task.seed)
    assert seeds == [5, 6, 5, 6] and arrays["active"][0]
