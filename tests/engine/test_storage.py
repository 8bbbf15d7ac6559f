"""Recurrent minibatches keep each task's sequence whole and in order; feed-forward ones are
single steps drawn from the whole rollout."""

import numpy as np
import pytest
import torch
from gymnasium import spaces

from stagerl.engine.storage import RolloutStorage


def _filled_storage(steps=5, tasks=6, memory_shape=(1, 3)):
    space = spaces.Dict({"x": spaces.Box(0, 10_000, (2,), dtype=np.int64)})
    storage = RolloutStorage(
        num_steps=steps, num_tasks=tasks, observation_space=space, memory_shape=memory_shape
    )
    for t in range(steps + 1):
        # observation of task n at step t encodes (n, t)
        storage.observations["x"][t] = torch.tensor([[n, t] for n in range(tasks)])
    if memory_shape == (1, 3):
        storage.memory = (
            torch.arange(tasks, dtype=torch.float).view(1, tasks, 1).expand(1, tasks, 3)
        )
    storage.actions[:] = torch.arange(tasks) * 10 + torch.arange(steps).view(-1, 1)
    return storage


def test_minibatches_are_whole_task_sequences_in_step_order():
    storage = _filled_storage()
    seen = []
    for batch in storage.minibatches(3, torch.Generator().manual_seed(0)):
        obs = batch.observations["x"]
        assert obs.shape == (5, 2, 2)
        for column in range(obs.shape[1]):
            task = int(obs[0, column, 0])
            seen.append(task)
            assert obs[:, column, 0].tolist() == [task] * 5  # one task per column
            assert obs[:, column, 1].tolist() == list(range(5))  # every step, in order
            assert batch.actions[:, column].tolist() == [task * 10 + t for t in range(5)]
            assert batch.memory[0, column].tolist() == [task] * 3  # memory at its first step
    assert sorted(seen) == list(range(6))  # every task exactly once


def test_minibatch_order_is_shuffled_by_the_generator():
    storage = _filled_storage(tasks=8)
    order = lambda seed: [  # noqa: E731
        int(b.observations["x"][0, 0, 0])
        for b in storage.minibatches(8, torch.Generator().manual_seed(seed))
    ]
    assert order(0) == order(0)
    assert sorted(order(1)) == list(range(8))
    # shuffled, not in task order, and each seed its own order (8! orders: no chance repeat)
    orders = {tuple(order(seed)) for seed in range(4)}
    assert len(orders) == 4 and tuple(range(8)) not in orders


def test_feed_forward_minibatches_are_single_steps_each_step_of_the_rollout_once():
    storage = _filled_storage(steps=5, tasks=2, memory_shape=(0, 0))
    storage.returns[:] = storage.actions * 0.5
    seen = []
    batches = list(storage.minibatches(4, torch.Generator().manual_seed(0)))
    assert [b.actions.shape for b in batches] == [(1, 3), (1, 3), (1, 2), (1, 2)]  # 10 steps
    for batch in batches:
        assert batch.memory.shape == (0, batch.actions.shape[1], 0)
        for (task, t), action, ret in zip(
            batch.observations["x"][0].tolist(), batch.actions[0], batch.returns[0], strict=True
        ):
            assert action == task * 10 + t and ret == action * 0.5  # each field of one step
            seen.append((task, t))
    assert sorted(seen) == [(n, t) for n in range(2) for t in range(5)]
    assert seen[:5] != sorted(seen)[:5]  # drawn across tasks and steps, not in order


@pytest.mark.parametrize("views", ["numpy", "tensors"])  # a CPU's, and any other device's
def test_insert_records_a_step_of_some_tasks_and_masks_from_their_ends(views):
    storage = _filled_storage(steps=2, tasks=4)
    if views == "tensors":
        storage._filled = {
            name: getattr(storage, name) if name[:4] != "obs/" else storage.observations["x"]
            for name in storage._filled
        }
    storage.bootstrap_values.fill_(7.0)
    storage.insert(
        0,
        actions=torch.tensor([1, 2, 3]),
        log_probs=torch.tensor([-0.5, -1.0, -1.5]),
        values=torch.tensor([0.25, 0.5, 0.75]),
        rewards=np.array([1, 0, 0], dtype=np.float32),
        terminated=np.array([True, False, False]),
        truncated=np.array([False, True, False]),
        next_observations={"x": np.full((3, 2), 9, np.int64)},
        tasks=slice(1, 4),
    )
    assert storage.masks[1, 1:].tolist() == [0.0, 0.0, 1.0]
    # The executed actions, also where an episode starts: the mask, not a 0 action, says so.
    assert storage.prev_actions[1, 1:].tolist() == [1, 2, 3]
    assert storage.actions[0].tolist() == [0, 1, 2, 3]  # task 0 untouched
    assert storage.log_probs[0, 1:].tolist() == [-0.5, -1.0, -1.5]
    assert storage.values[0, 1:].tolist() == [0.25, 0.5, 0.75]
    assert storage.rewards[0].tolist() == [0.0, 1.0, 0.0, 0.0]
    assert storage.rewards[0].dtype == torch.float32
    assert storage.terminated[0].tolist() == [False, True, False, False]
    assert storage.truncated[0].tolist() == [False, False, True, False]
    assert storage.bootstrap_values[0].tolist() == [7.0, 0.0, 0.0, 0.0]
    assert storage.observations["x"][1].tolist() == [[0, 1], [9, 9], [9, 9], [9, 9]]


def test_minibatch_count_is_exactly_num_mini_batch_with_sizes_differing_by_at_most_one():
    storage = _filled_storage(tasks=16)
    sizes = [b.actions.shape[1] for b in storage.minibatches(5, torch.Generator())]
    assert sizes == [4, 3, 3, 3, 3]
    sizes = [b.actions.shape[1] for b in storage.minibatches(6, torch.Generator())]
    assert sizes == [3, 3, 3, 3, 2, 2]


def _storage_with_returns_rollout(**settings):
    """The hand-computed rollout of test_returns.py (one task, four steps) in a storage."""
    from tests.engine.test_returns import ROLLOUT

    space = spaces.Dict({"x": spaces.Box(0, 1, (1,), dtype=np.int64)})
    storage = RolloutStorage(num_steps=4, num_tasks=1, observation_space=space, memory_shape=(0, 0))
    for name in ("rewards", "values", "terminated", "truncated", "bootstrap_values"):
        getattr(storage, name).copy_(ROLLOUT[name])
    storage.compute_returns(ROLLOUT["last_values"], gamma=0.9, gae_lambda=0.5, **settings)
    return storage


def test_time_limit_is_terminal_without_bootstrap_time_limit():
    bootstrapped = _storage_with_returns_rollout(use_gae=True)
    terminal = _storage_with_returns_rollout(use_gae=True, bootstrap_time_limit=False)
    assert bootstrapped.advantages.flatten().tolist() == pytest.approx([1.85, 1.0, 10.5, 6.5])
    # t=2 now ends its episode with nothing after it: 3 + 0 - 1.5 = 1.5
    assert terminal.advantages.flatten().tolist() == pytest.approx([1.85, 1.0, 1.5, 6.5])


def test_normalized_advantages_are_standardised_over_the_whole_rollout():
    storage = _storage_with_returns_rollout(use_gae=True)
    advantages = torch.tensor([1.85, 1.0, 10.5, 6.5])
    expected = (advantages - advantages.mean()) / (advantages.std() + 1e-5)
    assert storage.normalized_advantages.flatten().tolist() == pytest.approx(expected.tolist())
    batch = storage.batch(torch.tensor([0]))
    assert batch.normalized_advantages.flatten().tolist() == pytest.approx(expected.tolist())
