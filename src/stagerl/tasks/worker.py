"""The sampler worker process: steps its task slots on command, through shared memory.

Imports only numpy, gymnasium and the environment (never torch): each worker costs tens of MiB
and starts in well under a second. Any exception is sent to the trainer with the slot's task.
"""

import contextlib
import importlib.util
import io
import os
import pickle
import select
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np

from stagerl.tasks.base import Task, TaskSampler
from stagerl.tasks.shared import ArraySpec, SharedArrays

EXPERIMENT_MODULE_PREFIX = "stagerl_experiment_"  # the modules experiment files load as
# How long a process with a core of its own polls before it sleeps, waiting for a reply or a
# command: on a 2-core VM a pipe round trip took 67-97 us when the kernel had to wake the
# reader, 13-19 us when the reader was polling (docs/performance.md).
SPIN_SECONDS = 0.002


def poll_spinning(
    poller: Any, spin: float, timeout_ms: float | None = None
) -> list[tuple[int, int]]:
    """`poller.poll(timeout_ms)` (a `select.poll`), after polling without sleeping for up to
    `spin` seconds (never past the timeout)."""
    if timeout_ms is not None:
        spin = min(spin, timeout_ms / 1000)
    end = time.perf_counter() + spin
    while spin > 0 and time.perf_counter() < end:
        if ready := poller.poll(0):
            return ready
    return poller.poll(timeout_ms)


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
        """Load the experiment file (and the files it loads) the first time a class of an
        experiment module is asked for. Such a module that is still unknown was named after
        the file's path when the state was saved (before the file moved, or by the run's
        `config.py`): its classes are the experiment file's as the run loads it now."""
        experiment = self.experiment
        if experiment and module.rpartition(".")[2].startswith(EXPERIMENT_MODULE_PREFIX):
            if experiment.module_name not in sys.modules:
                spec = importlib.util.spec_from_file_location(
                    experiment.module_name, experiment.path
                )
                loaded = importlib.util.module_from_spec(spec)
                sys.modules[experiment.module_name] = loaded
                spec.loader.exec_module(loaded)
            if module not in sys.modules:
                module = experiment.module_name
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


@dataclass
class _Slot:
    """One task slot: its sampler, current task, tasks started since the last reset and, in
    evaluation, the most tasks it may run (None: until its sampler has none left)."""

    sampler: TaskSampler
    task: Task | None = None
    started: int = 0
    limit: int | None = None

    def close(self) -> None:
        """Close the running task and the sampler (their environments with them); the task's
        error, if both raise."""
        try:
            if self.task is not None:
                self.task.close()
        except Exception:
            with contextlib.suppress(Exception):
                self.sampler.close()
            raise
        self.sampler.close()


def _fits(value: np.ndarray, dtype: np.dtype) -> bool:
    """Whether `value` goes into an array of `dtype` as it is: integers (or bools) into an
    integer or bool type whose range holds them, else a cast numpy counts as safe or of one
    kind (no float into an integer type)."""
    if value.dtype.kind in "biu" and dtype.kind in "biu":
        low, high = (0, 1) if dtype.kind == "b" else (np.iinfo(dtype).min, np.iinfo(dtype).max)
        return value.size == 0 or bool(low <= value.min() and value.max() <= high)
    return bool(np.can_cast(value.dtype, dtype, "same_kind"))


class WorkerLoop:
    """The task slots one process steps, by their index in the shared arrays. Slots can move
    to another process's loop and back (`release`, `adopt`) between steps."""

    def __init__(
        self,
        samplers: dict[int, TaskSampler],
        arrays: SharedArrays,
        *,
        max_tasks: dict[int, int | None] | None,
        experiment: WorkerExperiment | None = None,
    ) -> None:
        self.arrays = arrays
        self.experiment = experiment  # to unpickle slots whose classes its file defines
        self.endless = max_tasks is None  # training: a slot starts its sampler over forever
        self.slots = {
            index: _Slot(sampler, limit=None if max_tasks is None else max_tasks[index])
            for index, sampler in samplers.items()
        }
        self.current: int | None = None  # slot being worked on, for error messages
        self.uuids = [name.removeprefix("obs/") for name in arrays.layout if name[:4] == "obs/"]

    def describe(self) -> str:
        """The slot and task being worked on, for error messages."""
        if self.current in self.slots:
            return f"slot {self.current}, task {self.slots[self.current].task!r}"
        return "no task"

    def _write(self, prefix: str, index: int, obs: dict) -> None:
        for uuid in self.uuids:
            self.arrays[f"{prefix}/{uuid}"][index] = obs[uuid]

    def _start_next(self, index: int) -> None:
        """The slot's next task. Training (no limits) starts an exhausted sampler over, so a
        finite list of training tasks repeats; evaluation ends the slot at its limit or when its
        sampler has no task left."""
        slot = self.slots[index]
        task = None
        if self.endless:
            task = slot.sampler.next_task()
            if task is None:
                slot.sampler.reset()
                task = slot.sampler.next_task()
            if task is None:
                raise RuntimeError(f"{slot.sampler!r} has no task to give, even after reset()")
        elif slot.limit is None or slot.started < slot.limit:
            task = slot.sampler.next_task()
        slot.task = task
        self.arrays["active"][index] = task is not None
        if task is not None:
            slot.started += 1
            observations = task.get_observations()
            self._check_readings(observations)
            self._write("obs", index, observations)

    def _check_readings(self, observations: dict) -> None:
        """A task's first readings fit the shared arrays in shape and kind: numpy would
        broadcast or cast them silently (a float 300.7 into a uint8 Box as 44)."""
        for uuid in self.uuids:
            value, target = np.asarray(observations[uuid]), self.arrays[f"obs/{uuid}"][0]
            if value.shape != target.shape or not _fits(value, target.dtype):
                raise ValueError(
                    f"sensor {uuid!r} read {value.dtype} shaped {value.shape}, but its "
                    f"observation space is {target.dtype} shaped {target.shape}"
                )

    def reset(self, _: Any = None) -> None:
        """Start every slot's sampler over (a fixed valid/test sequence begins again)."""
        for index, slot in self.slots.items():
            self.current = index
            if slot.task is not None:
                slot.task.close()
            slot.sampler.reset()
            slot.started = 0
            self._start_next(index)

    def step(self, indices: list[int] | None = None) -> list[tuple[int, dict[str, float]]]:
        """Step the slots `indices` (all of this loop's if None); the finished episodes'
        slots and metrics."""
        finished = []
        actions, rewards = self.arrays["action"], self.arrays["reward"]
        terminated, truncated = self.arrays["terminated"], self.arrays["truncated"]
        for index in self.slots if indices is None else indices:
            self.current, task = index, self.slots[index].task
            if task is None:
                rewards[index], terminated[index], truncated[index] = 0.0, False, False
                continue
            result = task.step(int(actions[index]))
            rewards[index] = result.reward
            terminal = result.done and task.reached_terminal_state()
            terminated[index], truncated[index] = terminal, result.done and not terminal
            if not result.done:
                self._write("obs", index, result.observation)
                continue
            self._write("final", index, result.observation)
            finished.append((index, task.metrics()))
            task.close()
            self._start_next(index)
        return finished

    def next_scene(self, _: Any = None) -> None:
        """Move every sampler of this loop to its next scene."""
        for slot in self.slots.values():
            slot.sampler.next_scene()

    def use_expert(self, enabled: bool) -> bool:
        """Turn the tasks' experts on or off (`SensorSuite.expert_enabled`). A running task
        whose expert comes back on resumes it and is observed again (the reading was
        "no action"); True if any was."""
        observed = False
        for index, slot in self.slots.items():
            self.current = index
            suite = getattr(slot.task or slot.sampler, "sensor_suite", None)
            if suite is None or suite.expert_enabled == enabled:
                continue
            for holder in (slot.sampler, slot.task):
                if getattr(holder, "sensor_suite", None) is not None:
                    holder.sensor_suite.expert_enabled = enabled
            if enabled and slot.task is not None:
                slot.task.resume_expert()
                self._write("obs", index, slot.task.get_observations())
                observed = True
        return observed

    def snapshot(self, _: Any = None) -> dict[int, bytes]:
        """Per slot, everything needed to continue exactly: its sampler, running task and their
        RNGs. Per slot, so that a run can resume with its samplers packed differently."""
        return {
            index: pickle.dumps((slot.sampler, slot.task, slot.started))
            for index, slot in self.slots.items()
        }

    def restore(self, states: dict[int, bytes]) -> None:
        """Continue from `snapshot()`'s bytes of this loop's slots; the samplers and tasks
        started before are closed (their environments with them)."""
        for index, data in states.items():
            slot = self.slots[index]
            slot.close()
            slot.sampler, slot.task, slot.started = self._load(data)
        for index, slot in self.slots.items():
            self.current = index
            self.arrays["active"][index] = slot.task is not None
            if slot.task is not None:
                self._write("obs", index, slot.task.get_observations())

    def release(self, indices: list[int]) -> dict[int, bytes]:
        """Hand the slots `indices` over to another loop (`adopt`): their whole state; their
        samplers and tasks here are closed. Observations stay in the shared arrays."""
        released = {}
        for index in indices:
            self.current = index
            released[index] = pickle.dumps(self.slots[index])
            self.slots.pop(index).close()
        return released

    def adopt(self, released: dict[int, bytes]) -> None:
        """Take over the slots another loop released, where they stood."""
        for index, data in released.items():
            self.current = index
            self.slots[index] = self._load(data)

    def _load(self, data: bytes) -> Any:
        return _ExperimentUnpickler(data, self.experiment).load()

    def close(self, _: Any = None) -> None:
        """Close every slot's running task and sampler (and its environments), once; all of
        them though one raises (the first error is raised after)."""
        slots, self.slots = self.slots, {}
        errors = []
        for slot in slots.values():
            try:
                slot.close()
            except Exception as error:
                errors.append(error)
        if errors:
            raise errors[0]


def worker_main(
    worker_index: int,
    conn: Any,
    *,
    block: Any,
    layout: dict[str, ArraySpec],
    samplers_blob: bytes,
    max_tasks: dict[int, int | None] | None,
    experiment: WorkerExperiment | None,
    spin: float = 0.0,
) -> None:
    """Serve commands from the trainer until `close` or until the trainer goes away; wait
    for the next step by `poll_spinning` for `spin` seconds (after other commands, such as
    the snapshot asked for before an update, it sleeps at once: the update's threads want
    the cores)."""
    # Ctrl-C and group-wide SIGTERM reach workers too; the trainer decides how to shut down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    loop = None
    try:
        samplers = _ExperimentUnpickler(samplers_blob, experiment).load()
        _register_envs(experiment)
        loop = WorkerLoop(
            samplers, SharedArrays(block, layout), max_tasks=max_tasks, experiment=experiment
        )
        commands = select.poll()
        commands.register(conn.fileno(), select.POLLIN)
        command = None
        while True:
            poll_spinning(commands, spin if command == "step" else 0.0)  # also wakes on EOF
            try:
                command, argument = conn.recv()
            except (EOFError, OSError):
                return  # the trainer is gone: nothing left to serve
            start = time.perf_counter()
            reply = getattr(loop, command)(argument)
            conn.send(("ok", reply, time.perf_counter() - start))  # the time, for balancing
            if command == "close":
                return
    except BaseException as error:  # report everything, even KeyboardInterrupt, then exit
        where = loop.describe() if loop else "while starting"
        message = f"{type(error).__name__}: {error}\n{traceback.format_exc()}"
        with contextlib.suppress(OSError, BrokenPipeError):
            conn.send(("error", (where, message), 0.0))
        os._exit(1)
