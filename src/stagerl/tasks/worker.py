"""The sampler worker process: steps its task slots on command, through shared memory.

Imports only numpy, gymnasium and the environment (never torch): each worker costs tens of MiB
and starts in well under a second. Any exception is sent to the trainer with the slot's task.
"""

import contextlib
import importlib.util
import io
import os
import pickle
import signal
import sys
import traceback
from dataclasses import dataclass
from typing import Any

from stagerl.tasks.base import Task, TaskSampler
from stagerl.tasks.shared import ArraySpec, SharedArrays


@dataclass(frozen=True)
class WorkerExperiment:
    """What a worker needs of the experiment file: where it is (to unpickle classes defined in
    it) and the gymnasium environments it registered (pickled `EnvSpec`s).

    The file itself is imported only when something pickled refers to it: it usually imports
    torch, which the workers otherwise never load.
    """

    module_name: str
    path: str
    env_specs: bytes = pickle.dumps(())


class _ExperimentUnpickler(pickle.Unpickler):
    """Finds classes defined inside the experiment file, which is not an importable module."""

    def __init__(self, data: bytes, experiment: WorkerExperiment | None) -> None:
        super().__init__(io.BytesIO(data))
        self.experiment = experiment

    def find_class(self, module: str, name: str) -> Any:
        """Load the experiment file as `module` the first time one of its classes is asked for."""
        experiment = self.experiment
        if experiment and module == experiment.module_name and module not in sys.modules:
            spec = importlib.util.spec_from_file_location(module, experiment.path)
            loaded = importlib.util.module_from_spec(spec)
            sys.modules[module] = loaded
            spec.loader.exec_module(loaded)
        return super().find_class(module, name)


def _register_envs(experiment: WorkerExperiment | None) -> None:
    """Register what the experiment file registered in the trainer, unless already there."""
    if experiment is None:
        return
    specs = _ExperimentUnpickler(experiment.env_specs, experiment).load()
    if specs:
        from gymnasium.envs.registration import registry

        for spec in specs:
            registry.setdefault(spec.id, spec)


class WorkerLoop:
    """The slots one worker owns: a sampler and its current task per slot."""

    def __init__(
        self,
        samplers: list[TaskSampler],
        arrays: SharedArrays,
        slots: list[int],
        max_tasks: list[int | None] | None,
    ) -> None:
        self.samplers = samplers
        self.arrays = arrays
        self.slots = slots  # the sampler-wide index of each of this worker's slots
        self.max_tasks_given = max_tasks is not None
        self.max_tasks = max_tasks or [None] * len(samplers)
        self.tasks_started = [0] * len(samplers)
        self.tasks: list[Task | None] = [None] * len(samplers)
        self.current = -1  # slot being worked on, for error messages
        self.uuids = list(samplers[0].observation_space.spaces)

    def describe(self) -> str:
        """The slot and task being worked on, for error messages."""
        if 0 <= self.current < len(self.tasks):
            task = self.tasks[self.current]
            return f"slot {self.slots[self.current]}, task {task!r}"
        return "no task"

    def _write(self, prefix: str, slot: int, obs: dict) -> None:
        for uuid in self.uuids:
            self.arrays[f"{prefix}/{uuid}"][self.slots[slot]] = obs[uuid]

    def _start_next(self, slot: int) -> None:
        """The slot's next task. Training (no limits) starts an exhausted sampler over, so a
        finite list of training tasks repeats; evaluation ends the slot at its limit or when its
        sampler has no task left."""
        limit, sampler = self.max_tasks[slot], self.samplers[slot]
        task = None
        if not self.max_tasks_given:
            task = sampler.next_task()
            if task is None:
                sampler.reset()
                task = sampler.next_task()
            if task is None:
                raise RuntimeError(f"{sampler!r} has no task to give, even after reset()")
        elif limit is None or self.tasks_started[slot] < limit:
            task = sampler.next_task()
        self.tasks[slot] = task
        self.arrays["active"][self.slots[slot]] = task is not None
        if task is not None:
            self.tasks_started[slot] += 1
            self._write("obs", slot, task.get_observations())

    def reset(self, _: Any = None) -> None:
        """Start every slot's sampler over (a fixed valid/test sequence begins again)."""
        for slot, sampler in enumerate(self.samplers):
            self.current = slot
            if self.tasks[slot] is not None:
                self.tasks[slot].close()
            sampler.reset()
            self.tasks_started[slot] = 0
            self._start_next(slot)

    def step(self, local: list[int] | None = None) -> list[tuple[int, dict[str, float]]]:
        """Step the slots `local` (indices into this worker's slots; all of them if None)."""
        finished = []
        actions, rewards = self.arrays["action"], self.arrays["reward"]
        terminated, truncated = self.arrays["terminated"], self.arrays["truncated"]
        for slot in range(len(self.tasks)) if local is None else local:
            task, self.current, index = self.tasks[slot], slot, self.slots[slot]
            if task is None:
                rewards[index], terminated[index], truncated[index] = 0.0, False, False
                continue
            result = task.step(int(actions[index]))
            rewards[index] = result.reward
            terminal = result.done and task.reached_terminal_state()
            terminated[index], truncated[index] = terminal, result.done and not terminal
            if not result.done:
                self._write("obs", slot, result.observation)
                continue
            self._write("final", slot, result.observation)
            finished.append((index, task.metrics()))
            task.close()
            self._start_next(slot)
        return finished

    def next_scene(self, _: Any = None) -> None:
        """Move every sampler of this worker to its next scene."""
        for sampler in self.samplers:
            sampler.next_scene()

    def snapshot(self, _: Any = None) -> list[bytes]:
        """Per slot, everything needed to continue exactly: its sampler, running task and their
        RNGs. Per slot, so that a run can resume with its samplers packed differently."""
        return [
            pickle.dumps((self.samplers[slot], self.tasks[slot], self.tasks_started[slot]))
            for slot in range(len(self.samplers))
        ]

    def restore(self, slots: list[bytes]) -> None:
        """Continue from `snapshot()`'s bytes, one entry per slot; the samplers and tasks
        started before are closed (their environments with them)."""
        for slot, data in enumerate(slots):
            if self.tasks[slot] is not None:
                self.tasks[slot].close()
            self.samplers[slot].close()
            self.samplers[slot], self.tasks[slot], self.tasks_started[slot] = pickle.loads(data)
        for slot, task in enumerate(self.tasks):
            self.current = slot
            self.arrays["active"][self.slots[slot]] = task is not None
            if task is not None:
                self._write("obs", slot, task.get_observations())

    def close(self, _: Any = None) -> None:
        """Close every sampler (and its environments)."""
        for sampler in self.samplers:
            sampler.close()


def worker_main(
    worker_index: int,
    conn: Any,
    block: Any,
    layout: dict[str, ArraySpec],
    slots: list[int],
    samplers_blob: bytes,
    max_tasks: list[int | None] | None,
    experiment: WorkerExperiment | None,
) -> None:
    """Serve commands from the trainer until `close` or until the trainer goes away."""
    # Ctrl-C and group-wide SIGTERM reach workers too; the trainer decides how to shut down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    loop = None
    try:
        samplers = _ExperimentUnpickler(samplers_blob, experiment).load()
        _register_envs(experiment)
        loop = WorkerLoop(samplers, SharedArrays(block, layout), slots, max_tasks)
        while True:
            try:
                command, argument = conn.recv()
            except (EOFError, OSError):
                return  # the trainer is gone: nothing left to serve
            reply = getattr(loop, command)(argument)
            conn.send(("ok", reply))
            if command == "close":
                return
    except BaseException as error:  # report everything, even KeyboardInterrupt, then exit
        where = loop.describe() if loop else "while starting"
        message = f"{type(error).__name__}: {error}\n{traceback.format_exc()}"
        with contextlib.suppress(OSError, BrokenPipeError):
            conn.send(("error", (where, message)))
        os._exit(1)
