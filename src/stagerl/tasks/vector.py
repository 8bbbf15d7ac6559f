"""Trainer-side handle on the sampler worker processes.

Worker w owns a contiguous block of task slots. Each step the trainer writes one action per slot
into shared memory, sends every worker a tiny `step` command, and reads observations, rewards and
`terminated`/`truncated` flags back from shared memory. Only finished episodes' metrics are
pickled. A worker that raises, dies or stays silent past `timeout` becomes a `WorkerError`
naming the worker, its tasks and the cause, and all workers are stopped.
"""

import contextlib
import multiprocessing as mp
import multiprocessing.connection
import pickle
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


class VectorSampler:
    """Steps `len(samplers)` task slots in `num_workers` spawned processes.

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
    ) -> None:
        if not 1 <= num_workers <= len(samplers):
            raise ConfigError(
                f"num_workers={num_workers} is invalid: expected 1..{len(samplers)} (one task each)"
            )
        self.num_tasks = len(samplers)
        self.observation_space = samplers[0].observation_space
        self.action_space = samplers[0].action_space
        self.timeout = timeout
        self.uuids = list(self.observation_space.spaces)
        context = mp.get_context("spawn")
        self.arrays = SharedArrays.create(context, _layout(self.observation_space, self.num_tasks))
        bounds = np.linspace(0, self.num_tasks, num_workers + 1).astype(int)
        self.slots = [range(bounds[w], bounds[w + 1]) for w in range(num_workers)]
        self.descriptions = [", ".join(repr(samplers[i]) for i in slots) for slots in self.slots]
        self.conns, self.processes = [], []
        for w, slots in enumerate(self.slots):
            parent, child = context.Pipe()
            blob = pickle.dumps([samplers[i] for i in slots])
            args = (
                w,
                child,
                self.arrays.block,
                self.arrays.layout,
                slots.start,
                blob,
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

    def _views(self, prefix: str) -> dict[str, np.ndarray]:
        return {uuid: self.arrays[f"{prefix}/{uuid}"] for uuid in self.uuids}

    def _call_all(self, command: str, arguments: list[Any] | None = None) -> list[Any]:
        arguments = arguments or [None] * len(self.conns)
        for conn, argument in zip(self.conns, arguments, strict=True):
            with contextlib.suppress(OSError):  # a dead worker is reported by _receive
                conn.send((command, argument))
        return [self._receive(w, command) for w in range(len(self.conns))]

    def _receive(self, w: int, command: str) -> Any:
        conn, process = self.conns[w], self.processes[w]
        ready = mp.connection.wait([conn, process.sentinel], timeout=self.timeout)
        if conn in ready:
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
        self._call_all("reset")
        return self._views("obs")

    def step(self, actions: np.ndarray) -> StepBatch:
        self.arrays["action"][:] = actions
        finished = [item for part in self._call_all("step") for item in part]
        return StepBatch(
            observations=self._views("obs"),
            rewards=self.arrays["reward"],
            terminated=self.arrays["terminated"],
            truncated=self.arrays["truncated"],
            final_observations=self._views("final"),
            active=self.arrays["active"],
            finished=finished,
        )

    def next_scene(self) -> None:
        self._call_all("next_scene")

    def snapshot(self) -> list[bytes]:
        """One state per task slot, in slot order (independent of how slots are packed)."""
        return [state for part in self._call_all("snapshot") for state in part]

    def restore(self, snapshots: list[bytes]) -> dict[str, np.ndarray]:
        if len(snapshots) != self.num_tasks:
            raise ConfigError(
                f"checkpoint holds {len(snapshots)} task samplers' states but the experiment now "
                f"has {self.num_tasks}; resume with the same MachineParams.nprocesses"
            )
        self._call_all("restore", [snapshots[slots.start : slots.stop] for slots in self.slots])
        return self._views("obs")

    @property
    def active(self) -> np.ndarray:
        return self.arrays["active"]

    def close(self, graceful: bool = True) -> None:
        """Stop every worker; never leaves a process behind."""
        if graceful:
            for conn, process in zip(self.conns, self.processes, strict=True):
                if process.is_alive():
                    with contextlib.suppress(OSError):
                        conn.send(("close", None))
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
