"""Trainer-side handle on the sampler worker processes.

The task slots form `groups` contiguous groups (one, or two for double-buffered sampling), and
the workers own slots dealt round-robin, so that stepping one group keeps every worker busy.
Each step the trainer writes one action per slot of a group into shared memory, sends each of
the group's workers a tiny `step` command, and later reads observations, rewards and
`terminated`/`truncated` flags back from shared memory: in between it may act for the other
group. Only finished episodes' metrics are pickled. A worker that raises, dies or stays silent
past `timeout` becomes a `WorkerError` naming the worker, its tasks and the cause, and all
workers are stopped.

With `trainer_slots`, the trainer steps the last few slots of each group itself, when it
receives that group's step (so its workers step theirs meanwhile), and `balance()` moves slots
between the trainer and the workers as measured times say (stagerl.tasks.balance).
"""

import contextlib
import itertools
import multiprocessing as mp
import pickle
import select
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from stagerl.errors import ConfigError, WorkerError
from stagerl.tasks.balance import RolloutClock, SlotBalancer
from stagerl.tasks.base import TaskSampler
from stagerl.tasks.shared import SharedArrays, array_layout, one_observation_space
from stagerl.tasks.worker import WorkerExperiment, WorkerLoop, poll_spinning, worker_main

TRAINER = -1  # the owner of the slots the trainer steps itself
PIPE_BUFFER = 4096  # bytes a pipe surely takes without a reader (POSIX's PIPE_BUF; Linux: 64 KiB)


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


@contextlib.contextmanager
def _deadline(seconds: float, message: str) -> Iterator[None]:
    """Raise TimeoutError(message) in the main thread if the block runs past `seconds` (no
    limit in other threads: only the main thread receives signals). A timer already set
    (pytest-timeout's, say) keeps its handler and runs on with its remaining time. A blocking
    system call is interrupted too; a C extension looping without returning to Python is not."""
    outer, interval = signal.getitimer(signal.ITIMER_REAL)
    if threading.current_thread() is not threading.main_thread() or 0 < outer <= seconds:
        yield  # no limit here, or the outer timer fires first anyway
        return

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(message)

    previous = signal.signal(signal.SIGALRM, expire)
    start = time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL if previous is None else previous)
        if outer:
            left = outer - (time.monotonic() - start)
            signal.setitimer(signal.ITIMER_REAL, max(left, 1e-6), interval)


def slot_owners(groups: list[slice], *, num_workers: int, trainer_slots: int) -> list[int]:
    """Which process steps each slot: the trainer (`TRAINER`) the last `trainer_slots` slots,
    split evenly between the groups (an odd one to the last, the larger), and the workers the
    rest, dealt round-robin so that stepping one group keeps every worker busy. One more
    trainer slot moves only one slot."""
    owners = [slot % num_workers for slot in range(groups[-1].stop)]
    for g, group in enumerate(groups):
        extra = len(groups) - 1 - g < trainer_slots % len(groups)
        mine = trainer_slots // len(groups) + int(extra)
        for slot in range(max(group.start, group.stop - mine), group.stop):
            owners[slot] = TRAINER
    return owners


def most_trainer_slots(groups: list[slice], num_workers: int) -> int:
    """The most slots the trainer may step: at most an even share of all (n / (W + 1)), and
    never so many that a worker is left without a slot."""
    num_slots = groups[-1].stop
    for k in range(num_slots // (num_workers + 1), 0, -1):
        if (
            len(set(slot_owners(groups, num_workers=num_workers, trainer_slots=k)) - {TRAINER})
            == num_workers
        ):
            return k
    return 0


class VectorSampler:
    """Steps `len(samplers)` task slots in `num_workers` spawned processes (and `trainer_slots`
    of them in this one), all at once (`step`) or one of `groups` groups at a time
    (`send_step` then `receive_step`).

    Without `max_tasks` (training) every slot runs forever, starting its sampler over when it
    has no task left. With `max_tasks` (evaluation) slot i runs at most `max_tasks[i]` tasks
    (`None`: until its sampler has none left) and then stays inactive until `reset()`.

    With `spin`, the trainer and the workers wait for each other's replies and commands by
    polling for up to `spin` seconds before sleeping (`poll_spinning`): for when every
    process has a core of its own.
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
        trainer_slots: int = 0,
        spin: float = 0.0,
    ) -> None:
        if not 1 <= num_workers <= len(samplers):
            raise ConfigError(
                f"num_workers={num_workers} is invalid: expected 1..{len(samplers)} (one task each)"
            )
        if not 1 <= groups <= len(samplers):
            raise ConfigError(f"groups={groups} is invalid: expected 1..{len(samplers)}")
        self.num_tasks = len(samplers)
        self.num_workers = num_workers
        self.observation_space = one_observation_space(samplers)
        self.action_space = samplers[0].action_space
        self.timeout = timeout
        self.spin = spin
        self.uuids = list(self.observation_space.spaces)
        context = mp.get_context("spawn")
        self.arrays = SharedArrays.create(
            context, array_layout(self.observation_space, self.num_tasks)
        )
        bounds = np.linspace(0, self.num_tasks, groups + 1).astype(int)
        self.groups = [slice(int(a), int(b)) for a, b in itertools.pairwise(bounds)]
        most = most_trainer_slots(self.groups, num_workers)
        trainer_slots = min(trainer_slots, most)
        self.balancer = SlotBalancer(self.num_tasks, num_workers, most) if trainer_slots else None
        self.owners = slot_owners(self.groups, num_workers=num_workers, trainer_slots=trainer_slots)
        self.names = [repr(sampler) for sampler in samplers]
        limits = dict(enumerate(max_tasks)) if max_tasks is not None else None
        mine = {i: s for i, s in enumerate(samplers) if self.owners[i] == TRAINER}
        # a copy, as a worker would unpickle it: the caller's samplers stay untouched
        self.local = WorkerLoop(
            pickle.loads(pickle.dumps(mine)), self.arrays, max_tasks=limits, experiment=experiment
        )
        self.conns, self.processes = [], []
        for w in range(num_workers):
            slots = {i: s for i, s in enumerate(samplers) if self.owners[i] == w}
            self._start_worker(context, w, slots, limits, experiment)
        # Replies are awaited with one poll object per worker and step commands are pickled
        # in advance (`_route`): pickling and building a selector every step cost as much as
        # stepping a task.
        self.pollers = [self._poller(w) for w in range(num_workers)]
        self.clock = RolloutClock()
        self.reply_seconds = 0.0
        self.sent: set[int] = set()  # groups whose step was sent and not yet received
        self.snapshot_asked = False  # the workers were asked for one; their replies are unread
        self.snapshot_taken: list[bytes] | None = None  # of the slots as they are now
        self.expert_enabled: bool | None = None  # as the tasks' suites hold it; None: unknown
        self._route()

    def _poller(self, w: int) -> select.poll:
        """A poll object that wakes on worker `w`'s reply or its exit."""
        poller = select.poll()
        poller.register(self.conns[w].fileno(), select.POLLIN)
        poller.register(self.processes[w].sentinel, select.POLLIN)
        return poller

    def _route(self) -> None:
        """Each group's step command per worker and trainer slots, from `owners`."""
        self.step_all = pickle.dumps(("step", None))
        self.group_workers: list[dict[int, bytes]] = []
        self.group_local: list[list[int]] = []
        for group in self.groups:
            slots = range(group.start, group.stop)
            workers = sorted({self.owners[i] for i in slots} - {TRAINER})
            self.group_workers.append(
                {
                    w: pickle.dumps(("step", [i for i in slots if self.owners[i] == w]))
                    for w in workers
                }
            )
            self.group_local.append([i for i in slots if self.owners[i] == TRAINER])

    def _start_worker(
        self,
        context: Any,
        w: int,
        samplers: dict[int, TaskSampler],
        max_tasks: dict[int, int | None] | None,
        experiment: WorkerExperiment | None,
    ) -> None:
        parent, child = context.Pipe()
        kwargs = dict(
            block=self.arrays.block,
            layout=self.arrays.layout,
            samplers_blob=pickle.dumps(samplers),
            max_tasks=max_tasks,
            experiment=experiment,
            spin=self.spin,
        )
        process = context.Process(
            target=worker_main,
            args=(w, child),
            kwargs=kwargs,
            daemon=True,
            name=f"stagerl-worker-{w}",
        )
        process.start()
        child.close()
        self.conns.append(parent)
        self.processes.append(process)

    def _views(self, prefix: str, group: slice = slice(None)) -> dict[str, np.ndarray]:
        return {uuid: self.arrays[f"{prefix}/{uuid}"][group] for uuid in self.uuids}

    def _send(self, w: int, message: bytes) -> None:
        # A dead worker, or one that does not read (hung before its first command) while a
        # message larger than the pipe's buffer waits, is reported by _receive.
        large = len(message) > PIPE_BUFFER
        deadline = _deadline(self.timeout, "not read") if large else contextlib.nullcontext()
        with deadline, contextlib.suppress(OSError):  # TimeoutError is an OSError
            self.conns[w].send_bytes(message)

    def _changing(self) -> None:
        """Before a command that may change the slots: read the replies of a snapshot asked
        for (they come first on each pipe) and forget it."""
        if self.snapshot_asked:
            self.snapshot()
        self.snapshot_taken = None

    def _call_all(self, command: str, arguments: list[Any] | None = None) -> list[Any]:
        """`command` in every worker and in the trainer's own loop (its argument last); their
        replies, the trainer's last."""
        self._changing()
        arguments = arguments or [None] * (len(self.conns) + 1)
        for w in range(len(self.conns)):
            self._send(w, pickle.dumps((command, arguments[w])))
        mine = self._local(command, arguments[-1])
        return [*(self._receive(w, command) for w in range(len(self.conns))), mine]

    def _describe(self, owner: int) -> str:
        where = f"sampler worker {owner}" if owner != TRAINER else "the trainer's own slots"
        tasks = ", ".join(self.names[i] for i, o in enumerate(self.owners) if o == owner)
        return f"{where} (tasks: {tasks})"

    def _local(self, command: str, argument: Any = None) -> Any:
        """`command` on the slots the trainer steps itself; a failure, or no answer within
        `timeout`, is a WorkerError naming them, as a worker's would be."""
        if not self.local.slots:
            return getattr(self.local, command)(argument)  # nothing there to fail or hang
        try:
            with _deadline(self.timeout, f"did not finish '{command}' within {self.timeout:.0f} s"):
                return getattr(self.local, command)(argument)
        except Exception as error:
            where = self.local.describe()
            self.close(graceful=False)
            raise WorkerError(
                f"{self._describe(TRAINER)} raised during '{command}' ({where}):\n"
                f"{type(error).__name__}: {error}"
            ) from error

    def _receive(self, w: int, command: str) -> Any:
        conn, process = self.conns[w], self.processes[w]
        ready = {fd for fd, _ in poll_spinning(self.pollers[w], self.spin, self.timeout * 1000)}
        if conn.fileno() in ready:
            try:
                status, payload, seconds = conn.recv()
            except (EOFError, OSError):
                status, payload, seconds = "dead", None, 0.0
            if status == "ok":
                self.reply_seconds = seconds  # how long the worker worked on it
                return payload
            if status == "error":
                where, message = payload
                self._fail(w, f"raised during '{command}' ({where}):\n{message}")
        if not ready:
            self._fail(w, f"did not answer '{command}' within {self.timeout:.0f} s")
        process.join(timeout=1.0)
        self._fail(w, f"died during '{command}' (exit code {process.exitcode})")

    def _fail(self, w: int, cause: str) -> None:
        description = self._describe(w)
        self.close(graceful=False)
        raise WorkerError(f"{description} {cause}")

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
            finished=sorted(finished, key=lambda item: item[0]),  # the same for any packing
        )

    def step(self, actions: np.ndarray) -> StepBatch:
        """Step every slot and wait for all of them."""
        self._changing()
        self.arrays["action"][:] = actions
        for w in range(len(self.conns)):
            self._send(w, self.step_all)
        finished = self._local("step")
        finished += [item for w in range(len(self.conns)) for item in self._receive(w, "step")]
        return self._batch(slice(None), finished)

    def send_step(self, group: int, actions: np.ndarray) -> None:
        """Start stepping group `group`'s slots (`self.groups[group]`) with `actions`; the
        other group's shared memory may be read and written meanwhile. The trainer's own
        slots of the group are stepped in `receive_step`."""
        self._changing()
        self.clock.begin()
        self.arrays["action"][self.groups[group]] = actions
        for w, message in self.group_workers[group].items():
            self._send(w, message)
        self.sent.add(group)

    def receive_step(self, group: int) -> StepBatch:
        """Step the trainer's slots of the group, then wait for the step `send_step(group, ...)`
        started; views of that group's slots, `finished` with slot indices of the whole
        sampler."""
        finished = []
        if group in self.sent and self.group_local[group]:
            start = time.perf_counter()
            finished = self._local("step", self.group_local[group])
            self.clock.stepping += time.perf_counter() - start
            self.clock.slot_steps += len(self.group_local[group])
        self.sent.discard(group)
        start = time.perf_counter()
        for w in self.group_workers[group]:
            finished += self._receive(w, "step")
            self.clock.worker_seconds += self.reply_seconds
        self.clock.end = time.perf_counter()
        self.clock.waiting += self.clock.end - start
        size = self.groups[group].stop - self.groups[group].start
        self.clock.worker_slot_steps += size - len(self.group_local[group])
        self.clock.steps += group == len(self.groups) - 1
        return self._batch(self.groups[group], finished)

    def balance(self) -> None:
        """Between rollouts: move slots between the trainer and the workers as the balancer
        chooses from the rollout's times (stagerl.tasks.balance). Does nothing unless the
        trainer was given slots; the results are the same however the slots are packed."""
        clock, self.clock = self.clock, RolloutClock()
        if self.balancer is not None:
            chosen = self.balancer.choose(self.trainer_slots, clock)
            if chosen != self.trainer_slots:
                self.move_slots(chosen)

    @property
    def trainer_slots(self) -> int:
        """How many slots the trainer steps itself now."""
        return self.owners.count(TRAINER)

    def move_slots(self, trainer_slots: int) -> None:
        """Let the trainer step `trainer_slots` slots (`slot_owners`), moving each slot whose
        owner changes with its whole state; only between steps."""
        owners = slot_owners(self.groups, num_workers=self.num_workers, trainer_slots=trainer_slots)
        moved = [i for i in range(self.num_tasks) if owners[i] != self.owners[i]]
        states: dict[int, bytes] = {}
        for owner in {self.owners[i] for i in moved}:
            states |= self._call(owner, "release", [i for i in moved if self.owners[i] == owner])
        self.owners = owners  # an error adopting names the new owner and the tasks it took
        for owner in {owners[i] for i in moved}:
            self._call(owner, "adopt", {i: states[i] for i in moved if owners[i] == owner})
        self._route()

    def _call(self, owner: int, command: str, argument: Any) -> Any:
        self._changing()
        if owner == TRAINER:
            return self._local(command, argument)
        self._send(owner, pickle.dumps((command, argument)))
        return self._receive(owner, command)

    def next_scene(self) -> None:
        """Move every worker's samplers to their next scene."""
        self._call_all("next_scene")

    def use_expert(self, enabled: bool) -> dict[str, np.ndarray] | None:
        """Turn the tasks' experts on or off (`WorkerLoop.use_expert`) unless already so; the
        tasks' observations if turning them on observed any task again, else None."""
        if enabled == self.expert_enabled:
            return None
        observed = self._call_all("use_expert", [enabled] * (len(self.conns) + 1))
        self.expert_enabled = enabled
        return self._views("obs") if any(observed) else None

    def ask_for_snapshot(self) -> None:
        """Have the workers start on `snapshot()` now and answer when it is called: between
        rollouts they pickle their slots while the trainer updates (3.7 ms a rollout of the
        GoToObj example, the trainer waiting, before)."""
        if not self.snapshot_asked and self.snapshot_taken is None:
            for w in range(len(self.conns)):
                self._send(w, pickle.dumps(("snapshot", None)))
            self.snapshot_asked = True

    def snapshot(self) -> list[bytes]:
        """One state per task slot, in slot order (independent of how slots are packed)."""
        if self.snapshot_taken is None:
            self.ask_for_snapshot()
            self.snapshot_asked = False
            parts = [self._receive(w, "snapshot") for w in range(len(self.conns))]
            parts.append(self._local("snapshot"))
            states = {i: state for part in parts for i, state in part.items()}
            self.snapshot_taken = [states[slot] for slot in range(self.num_tasks)]
        return list(self.snapshot_taken)

    def restore(self, snapshots: list[bytes]) -> dict[str, np.ndarray]:
        """Continue from `snapshot()`; the restored tasks' current observations."""
        if len(snapshots) != self.num_tasks:
            raise ConfigError(
                f"checkpoint holds {len(snapshots)} task samplers' states but the experiment now "
                f"has {self.num_tasks}; resume with the same MachineParams.nprocesses"
            )
        per_owner = [
            {i: snapshots[i] for i in range(self.num_tasks) if self.owners[i] == owner}
            for owner in [*range(len(self.conns)), TRAINER]
        ]
        self._call_all("restore", per_owner)
        self.expert_enabled = None  # as each slot's snapshot holds it
        return self._views("obs")

    @property
    def active(self) -> np.ndarray:
        """Per slot, whether it still has a task (evaluation slots run out)."""
        return self.arrays["active"]

    def close(self, graceful: bool = True) -> None:
        """Stop every worker; never leaves a process behind. Closing gracefully, a worker or
        the trainer's own slots failing to close, or taking over `timeout`, is a WorkerError
        naming them (after a failure, closing what failed may fail too: given up on)."""
        if graceful:
            alive = [w for w, process in enumerate(self.processes) if process.is_alive()]
            for w in alive:
                self._send(w, pickle.dumps(("close", None)))
            for w in alive:
                self._receive(w, "close")
        for process in self.processes:
            process.join(timeout=2.0 if graceful else 0.1)
            if process.is_alive():
                process.kill()
                process.join(timeout=5.0)
        for conn in self.conns:
            conn.close()
        self.processes, self.conns = [], []
        where = self._describe(TRAINER)
        try:
            with _deadline(self.timeout, f"did not close within {self.timeout:.0f} s"):
                self.local.close()
        except Exception as error:
            if graceful:
                raise WorkerError(
                    f"{where} failed to close: {type(error).__name__}: {error}"
                ) from error

    def __enter__(self) -> "VectorSampler":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(graceful=exc[0] is None)
