"""A worker's task slots: resuming from a snapshot replaces what the slots ran before."""

import pickle

from stagerl.tasks.shared import SharedArrays
from stagerl.tasks.vector import _layout
from stagerl.tasks.worker import WorkerLoop
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
