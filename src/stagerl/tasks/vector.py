"""Trainer-side handle on the sampler worker processes.

The task slots form `groups` contiguous groups (one, or two for double-buffered sampling), and
the workers own slots dealt round-robin, so that stepping one group keeps every worker busy.
Each step the trainer writes one action per slot of a group into shared memory, sends each of
the group's workers a tiny `step` command, and later reads observations, rewards and
`terminated`/`truncated` flags back from shared memory: in between it may act for the other
group. Only finished episodes' metrics are pickled. A worker that raises, dies or stays silent
past `timeout` becomes a `WorkerError` naming the worker, its tasks and the cause, and all
workers are stopped.
"""

import contextlib
import itertools
import multiprocessing as mp
import pickle
import select
from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import spaces

from stagerl.errors import ConfigError, WorkerError
from stagerl.tasks.base import TaskSampler
from stagerl.tasks.shared import ArraySpec, SharedArrays
from stagerl.tasks.worker import WorkerExperiment, worker_main


@dataclass
class StepBatch:
    """Views into shared memory: valid until the next `step`. Copy what you keep."""

    observations: dict[str, np.ndarray]
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    final_observations: dict[str, np.ndarray]
    active: np.ndarray
    finished: list[tuple[int, dict[str, float]]]


def _layout(space: spaces.Dict, num_tasks: int) -> dict[str, ArraySpec]:
    layout = {}
    for uuid, box in space.spaces.items():
        if not isinstance(box, spaces.Box):
            raise ConfigError(f"sensor {uuid!r}: observation_space must be a Box, got {box}")
        for prefix in ("obs", "final"):
            layout[f"{prefix}/{uuid}"] = ArraySpec((num_tasks, *box.shape), box.dtype.str)
    layout["action"] = ArraySpec((num_tasks,), "<i8")
    layout["reward"] = ArraySpec((num_tasks,), "<f4")  # float32 from the first step
    for flag in ("terminated", "truncated", "active"):
        layout[flag] = ArraySpec((num_tasks,), "|b1")
    return layout


def pack_slots(num_tasks: int, num_workers: int) -> list[list[int]]:
    """Each worker's task slots, dealt round-robin: every contiguous group of slots is shared
    as evenly as it can be, so stepping one group keeps every worker busy."""
    return [list(range(w, num_tasks, num_workers)) for w in range(num_workers)]


class VectorSampler:
    """Steps `len(samplers)` task slots in `num_workers` spawned processes, all at once
    (`step`) or one of `groups` groups at a time (`send_step` then `receive_step`).

    Without `max_tasks` (training) every slot runs forever, starting its sampler over when it
    has no task left. With `max_tasks` (evaluation) slot i runs at most `max_tasks[i]` tasks
    (`None`: until its sampler has none left) and then stays inactive until `reset()`.
    """

    def __init__(
        self,
        samplers: list[TaskSampler],
        *,
        num_workers: int,
        timeout: float = 60.0,
        max_tasks: list[int | None] | None = None,
        experiment: WorkerExperiment | None = None,
        groups: int = 1,
    ) -> None:
        if not 1 <= num_workers <= len(samplers):
            raise ConfigError(
                f"num_workers={num_workers} is invalid: expected 1..{len(samplers)} (one task each)"
            )
        if not 1 <= groups <= len(samplers):
            raise ConfigError(f"groups={groups} is invalid: expected 1..{len(samplers)}")
        self.num_tasks = len(samplers)
        self.observation_space = samplers[0].observation_space
        self.action_space = samplers[0].action_space
        self.timeout = timeout
        self.uuids = list(self.observation_space.spaces)
        context = mp.get_context("spawn")
        self.arrays = SharedArrays.create(context, _layout(self.observation_space, self.num_tasks))
        self.slots = pack_slots(self.num_tasks, num_workers)
        bounds = np.linspace(0, self.num_tasks, groups + 1).astype(int)
        self.groups = [slice(int(a), int(b)) for a, b in itertools.pairwise(bounds)]
        # per group, its workers and each one's slots in it, as indices into its own slots
        self.group_workers: list[dict[int, list[int]]] = [{} for _ in self.groups]
        for w, slots in enumerate(self.slots):
            for local, slot in enumerate(slots):
                g = next(g for g, group in enumerate(self.groups) if slot < group.stop)
                self.group_workers[g].setdefault(w, []).append(local)
        self.descriptions = [", ".join(repr(samplers[i]) for i in slots) for slots in self.slots]
        self.conns, self.processes = [], []
        for w, slots in enumerate(self.slots):
            self._start_worker(context, w, [samplers[i] for i in slots], max_tasks, experiment)
        # Per step only these pre-pickled bytes cross the pipes, and replies are awaited with
        # one poll object per worker: pickling and building a selector every time cost as much
        # as stepping a task.
        self.pollers = []
        for conn, process in zip(self.conns, self.processes, strict=True):
            poller = select.poll()
            poller.register(conn.fileno(), select.POLLIN)
            poller.register(process.sentinel, select.POLLIN)
            self.pollers.append(poller)
        self.step_all = pickle.dumps(("step", None))
        self.step_group = [
            {w: pickle.dumps(("step", local)) for w, local in workers.items()}
            for workers in self.group_workers
        ]

    def _start_worker(
        self,
        context: Any,
        w: int,
        samplers: list[TaskSampler],
        max_tasks: list[int | None] | None,
        experiment: WorkerExperiment | None,
    ) -> None:
        slots = self.slots[w]
        parent, child = context.Pipe()
        args = (
            w,
            child,
            self.arrays.block,
            self.arrays.layout,
            slots,
            pickle.dumps(samplers),
            None if max_tasks is None else [max_tasks[i] for i in slots],
            experiment,
        )
        process = context.Process(
            target=worker_main, args=args, daemon=True, name=f"stagerl-worker-{w}"
        )
        process.start()
        child.close()
        self.conns.append(parent)
        self.processes.append(process)

    def _views(self, prefix: str, group: slice = slice(None)) -> dict[str, np.ndarray]:
        return {uuid: self.arrays[f"{prefix}/{uuid}"][group] for uuid in self.uuids}

    def _send(self, w: int, message: bytes) -> None:
        with contextlib.suppress(OSError):  # a dead worker is reported by _receive
            self.conns[w].send_bytes(message)

    def _call_all(self, command: str, arguments: list[Any] | None = None) -> list[Any]:
        arguments = arguments or [None] * len(self.conns)
        for w, argument in enumerate(arguments):
            self._send(w, pickle.dumps((command, argument)))
        return [self._receive(w, command) for w in range(len(self.conns))]

    def _receive(self, w: int, command: str) -> Any:
        conn, process = self.conns[w], self.processes[w]
        ready = {fd for fd, _ in self.pollers[w].poll(self.timeout * 1000)}
        if conn.fileno() in ready:
            try:
                status, payload = conn.recv()
            except (EOFError, OSError):
                status, payload = "dead", None
            if status == "ok":
                return payload
            if status == "error":
                where, message = payload
                self._fail(w, f"raised during '{command}' ({where}):\n{message}")
        if not ready:
            self._fail(w, f"did not answer '{command}' within {self.timeout:.0f} s")
        process.join(timeout=1.0)
        self._fail(w, f"died during '{command}' (exit code {process.exitcode})")

    def _fail(self, w: int, cause: str) -> None:
        self.close(graceful=False)
        raise WorkerError(f"sampler worker {w} (tasks: {self.descriptions[w]}) {cause}")

    def reset(self) -> dict[str, np.ndarray]:
        """Start every slot's sampler over; the first observations of all slots."""
        self._call_all("reset")
        return self._views("obs")

    def _batch(self, group: slice, finished: list[tuple[int, dict[str, float]]]) -> StepBatch:
        return StepBatch(
            observations=self._views("obs", group),
            rewards=self.arrays["reward"][group],
            terminated=self.arrays["terminated"][group],
            truncated=self.arrays["truncated"][group],
            final_observations=self._views("final", group),
            active=self.arrays["active"][group],
            finished=finished,
        )

    def step(self, actions: np.ndarray) -> StepBatch:
        """Step every slot and wait for all of them."""
        self.arrays["action"][:] = actions
        for w in range(len(self.conns)):
            self._send(w, self.step_all)
        finished = [item for w in range(len(self.conns)) for item in self._receive(w, "step")]
        return self._batch(slice(None), finished)

    def send_step(self, group: int, actions: np.ndarray) -> None:
        """Start stepping group `group`'s slots (`self.groups[group]`) with `actions`; the
        other group's shared memory may be read and written meanwhile."""
        self.arrays["action"][self.groups[group]] = actions
        for w, message in self.step_group[group].items():
            self._send(w, message)

    def receive_step(self, group: int) -> StepBatch:
        """Wait for the step `send_step(group, ...)` started; views of that group's slots,
        `finished` with slot indices of the whole sampler."""
        finished = [item for w in self.group_workers[group] for item in self._receive(w, "step")]
        return self._batch(self.groups[group], finished)

    def next_scene(self) -> None:
        """Move every worker's samplers to their next scene."""
        self._call_all("next_scene")

    def snapshot(self) -> list[bytes]:
        """One state per task slot, in slot order (independent of how slots are packed)."""
        states: list[bytes] = [b""] * self.num_tasks
        for slots, part in zip(self.slots, self._call_all("snapshot"), strict=True):
            for slot, state in zip(slots, part, strict=True):
                states[slot] = state
        return states

    def restore(self, snapshots: list[bytes]) -> dict[str, np.ndarray]:
        """Continue from `snapshot()`; the restored tasks' current observations."""
        if len(snapshots) != self.num_tasks:
            raise ConfigError(
                f"checkpoint holds {len(snapshots)} task samplers' states but the experiment now "
                f"has {self.num_tasks}; resume with the same MachineParams.nprocesses"
            )
        self._call_all("restore", [[snapshots[i] for i in slots] for slots in self.slots])
        return self._views("obs")

    @property
    def active(self) -> np.ndarray:
        """Per slot, whether it still has a task (evaluation slots run out)."""
        return self.arrays["active"]

    def close(self, graceful: bool = True) -> None:
        """Stop every worker; never leaves a process behind."""
        if graceful:
            for w, process in enumerate(self.processes):
                if process.is_alive():
                    self._send(w, pickle.dumps(("close", None)))
        for process in self.processes:
            process.join(timeout=2.0 if graceful else 0.1)
            if process.is_alive():
                process.kill()
                process.join(timeout=5.0)
        for conn in self.conns:
            conn.close()
        self.processes, self.conns = [], []

    def __enter__(self) -> "VectorSampler":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(graceful=exc[0] is None)
