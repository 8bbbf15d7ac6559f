"""The shared-memory sampler: steps round-trip, and every worker fault becomes a clear error."""

import os

import numpy as np
import psutil
import pytest

from stagerl.errors import WorkerError
from stagerl.tasks.vector import VectorSampler
from tests.tasks.faulty import CountingSampler

pytestmark = pytest.mark.timeout(60)


def test_observations_rewards_and_episode_ends_cross_shared_memory():
    samplers = [CountingSampler(slot, length=2) for slot in range(4)]
    with VectorSampler(samplers, num_workers=2) as sampler:
        obs = sampler.reset()
        assert obs["counter"].tolist() == [[0, 0], [1, 0], [2, 0], [3, 0]]
        step = sampler.step(np.array([0, 1, 2, 1]))
        assert step.rewards.dtype == np.float32
        assert step.rewards.tolist() == [0.0, 1.0, 2.0, 1.0]
        assert step.observations["counter"][:, 1].tolist() == [1, 1, 1, 1]
        assert not step.terminated.any() and step.finished == []
        step = sampler.step(np.array([2, 2, 2, 2]))
        assert step.terminated.all() and not step.truncated.any()
        assert step.final_observations["counter"][:, 1].tolist() == [2, 2, 2, 2]
        assert step.observations["counter"][:, 1].tolist() == [0, 0, 0, 0]  # new episodes
        assert sorted(slot for slot, _ in step.finished) == [0, 1, 2, 3]
        rewards = {slot: metrics["reward"] for slot, metrics in step.finished}
        assert rewards == {0: 0.0 + 2.0, 1: 1.0 + 2.0, 2: 2.0 + 2.0, 3: 1.0 + 2.0}  # the actions
        assert all(metrics["ep_length"] == 2.0 for _, metrics in step.finished)


def test_max_tasks_deactivates_slots():
    samplers = [CountingSampler(slot, length=1) for slot in range(2)]
    with VectorSampler(samplers, num_workers=1, max_tasks=[1, 2]) as sampler:
        sampler.reset()
        sampler.step(np.zeros(2, dtype=np.int64))
        assert sampler.active.tolist() == [False, True]
        sampler.step(np.zeros(2, dtype=np.int64))
        assert not sampler.active.any()


def _run_until_fault(fault, timeout=60.0):
    """The fault's error and the workers' pids (a hang instead fails the module's timeout)."""
    samplers = [CountingSampler(0), CountingSampler(1, fault=fault)]
    sampler = VectorSampler(samplers, num_workers=2, timeout=timeout)
    pids = [p.pid for p in sampler.processes]
    sampler.reset()
    with pytest.raises(WorkerError) as error:
        for _ in range(5):
            sampler.step(np.zeros(2, dtype=np.int64))
    return str(error.value), pids


def _assert_gone(pids):
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_worker_exception_names_worker_task_and_cause():
    message, pids = _run_until_fault("raise")
    assert "sampler worker 1" in message
    assert "CountingTask(slot=1)" in message
    assert "ValueError: boom in the environment" in message
    _assert_gone(pids)


def test_worker_segfault_is_reported_with_its_tasks():
    message, pids = _run_until_fault("segfault")
    assert "sampler worker 1 (tasks: CountingSampler(slot=1))" in message
    assert "died during 'step'" in message and str(-11) in message
    _assert_gone(pids)


def test_hung_worker_times_out():
    message, pids = _run_until_fault("hang", timeout=1.0)
    assert "sampler worker 1" in message and "did not answer 'step' within 1 s" in message
    _assert_gone(pids)


def test_killed_worker_is_reported():
    samplers = [CountingSampler(0), CountingSampler(1)]
    sampler = VectorSampler(samplers, num_workers=2)
    sampler.reset()
    pids = [p.pid for p in sampler.processes]
    os.kill(pids[0], 9)
    with pytest.raises(
        WorkerError, match=r"sampler worker 0 .* died during 'step' \(exit code -9\)"
    ):
        sampler.step(np.zeros(2, dtype=np.int64))
    _assert_gone(pids)  # the surviving worker is stopped too
