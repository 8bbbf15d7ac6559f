"""A worker's task slots: resuming from a snapshot replaces what the slots ran before; waiting
for a command polls before it sleeps."""

import os
import pickle
import select
import threading

from stagerl.tasks.shared import SharedArrays
from stagerl.tasks.vector import _layout
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
    layout = _layout(samplers[0].observation_space, 2)
    arrays = SharedArrays(bytearray(SharedArrays.nbytes(layout)), layout)
    loop = WorkerLoop(dict(enumerate(samplers)), arrays, max_tasks=None)
    loop.reset()
    snapshot = pickle.loads(pickle.dumps(loop.snapshot()))  # as it crosses to a new worker
    closed.clear()
    loop.restore(snapshot)
    assert closed == ["task 0", "sampler 0", "task 1", "sampler 1"]
    assert all(loop.slots[i].sampler is not samplers[i] for i in range(2))


def test_a_spinning_wait_returns_what_arrives_while_it_polls_and_sleeps_after_its_spin():
    read, write = os.pipe()
    poller = select.poll()
    poller.register(read, select.POLLIN)
    try:
        assert poll_spinning(poller, spin=0.01, timeout_ms=20) == []  # spun, slept, timed out
        writer = threading.Timer(0.001, os.write, (write, b"x"))
        writer.start()  # during the spin, which would otherwise outlast the test
        assert poll_spinning(poller, spin=60.0, timeout_ms=0) == [(read, select.POLLIN)]
        writer.join()
        os.read(read, 1)
        threading.Timer(0.05, os.write, (write, b"x")).start()  # after a spin of 1 ms
        assert poll_spinning(poller, spin=0.001, timeout_ms=10_000) == [(read, select.POLLIN)]
    finally:
        os.close(read)
        os.close(write)
