"""A worker's task slots: resuming from a snapshot replaces what the slots ran before; waiting
for a command polls before it sleeps."""

import pickle
import select

import pytest

from stagerl.tasks.shared import SharedArrays, array_layout
from stagerl.tasks.worker import WorkerLoop, poll_spinning
from tests.tasks.faulty import CountingSampler, CountingTask


class ClosingSampler(CountingSampler):
    """Counts its own and its tasks' `close()` calls, in a list shared through pickling."""

    def __init__(self, slot, closed):
        super().__init__(slot)
        self.closed = closed

    def next_task(self):
        task = ClosingTask(self.slot, self.episode_length, None, 0, self.sensors)
        task.closed = self.closed
        return task

    def close(self):
        self.closed.append(f"sampler {self.slot}")


class ClosingTask(CountingTask):
    def close(self):
        self.closed.append(f"task {self.slot}")


def test_restore_closes_the_samplers_and_tasks_it_replaces():
    closed = []
    samplers = [ClosingSampler(slot, closed) for slot in range(2)]
    layout = array_layout(samplers[0].observation_space, 2)
    arrays = SharedArrays(bytearray(SharedArrays.nbytes(layout)), layout)
    loop = WorkerLoop(dict(enumerate(samplers)), arrays, max_tasks=None)
    loop.reset()
    snapshot = pickle.loads(pickle.dumps(loop.snapshot()))  # as it crosses to a new worker
    closed.clear()
    loop.restore(snapshot)
    assert closed == ["task 0", "sampler 0", "task 1", "sampler 1"]
    assert all(loop.slots[i].sampler is not samplers[i] for i in range(2))


def test_close_closes_every_running_task_and_sampler_though_one_raises():
    closed = []
    samplers = [ClosingSampler(slot, closed) for slot in range(2)]
    layout = array_layout(samplers[0].observation_space, 2)
    loop = WorkerLoop(
        dict(enumerate(samplers)),
        SharedArrays(bytearray(SharedArrays.nbytes(layout)), layout),
        max_tasks=None,
    )
    loop.reset()
    failing = loop.slots[0].task.close

    def close_then_raise():
        failing()
        raise RuntimeError("task 0 failed to close")

    def sampler_close_then_raise():
        closed.append("sampler 0")
        raise RuntimeError("sampler 0 failed to close")

    loop.slots[0].task.close = close_then_raise
    loop.slots[0].sampler.close = sampler_close_then_raise  # the task's error is the one told
    with pytest.raises(RuntimeError, match="task 0 failed to close"):
        loop.close()
    assert closed == ["task 0", "sampler 0", "task 1", "sampler 1"]
    loop.close()  # once only
    assert len(closed) == 4


class _Poller:
    """Ready at its `ready_at`-th poll (never if None); records each poll's timeout."""

    def __init__(self, ready_at=None):
        self.timeouts, self.ready_at = [], ready_at

    def poll(self, timeout=None):
        self.timeouts.append(timeout)
        return [(3, select.POLLIN)] if len(self.timeouts) == self.ready_at else []


def test_a_spinning_wait_polls_without_sleeping_then_sleeps_until_its_timeout():
    spinning = _Poller(ready_at=5)
    assert poll_spinning(spinning, spin=60.0, timeout_ms=60_000) == [(3, select.POLLIN)]
    assert spinning.timeouts == [0] * 5  # found while polling: it never slept
    sleeping = _Poller()
    assert poll_spinning(sleeping, spin=0.001, timeout_ms=250) == []
    assert set(sleeping.timeouts[:-1]) == {0} and sleeping.timeouts[-1] == 250
    capped = _Poller()  # a spin longer than the timeout ends with it
    assert poll_spinning(capped, spin=60.0, timeout_ms=1) == [] and capped.timeouts[-1] == 1
    still = _Poller()
    assert poll_spinning(still, spin=0.0, timeout_ms=5) == [] and still.timeouts == [5]
