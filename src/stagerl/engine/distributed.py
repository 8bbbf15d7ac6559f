"""Several trainer processes ("ranks") training one experiment, started by torchrun.

Each rank steps its own share of the task samplers and runs the same update on its own rollout;
gradients are averaged across ranks every minibatch, so all ranks keep equal parameters (checked
every rollout by a checksum). Only rank 0 writes. A single process (no torchrun) is a world of
one, where every method here does nothing.

A lost rank: a rank that dies breaks the others' next collective at once; one that hangs
makes it time out after `MachineParams.rank_timeout`. Either way each rank's heartbeat (a counter
it bumps in the rendezvous store every second, from a thread) tells the others which rank went
silent, and each rank's count of the collectives it entered which one is stuck while alive
(its main thread hung in a call); they stop with an error naming it, and torchrun then stops
what is left of the run.
"""

import contextlib
import os
import pickle
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from stagerl.engine.logging import add_up_metrics
from stagerl.errors import StagerlError, StoppedOutsideTraining
from stagerl.losses.base import standardize

T = TypeVar("T")
BEAT_SECONDS = 1.0
SILENT_SECONDS = 3 * BEAT_SECONDS  # a rank whose counter stood still this long is lost
POLL_SECONDS = 0.1


class RankError(StagerlError):
    """Another trainer rank died, hung, stopped with an error, or drifted apart."""

    exit_code = 1


class Heartbeat:
    """A counter per rank in torchrun's rendezvous store, bumped every second by a thread of
    the rank; a rank whose counter stops moving is dead or hung (clocks of different machines
    never need to agree)."""

    def __init__(self, rank: int, world_size: int) -> None:
        run = os.environ.get("TORCHELASTIC_RUN_ID", "run")
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        store = dist.TCPStore(
            os.environ["MASTER_ADDR"],
            int(os.environ["MASTER_PORT"]),
            is_master=False,
            timeout=timedelta(seconds=10),
        )
        self.store = dist.PrefixStore(f"stagerl/{run}/{attempt}", store)
        self.rank, self.world_size = rank, world_size
        self.store.set(f"who/{rank}", f"{socket.gethostname()} pid {os.getpid()}")
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="stagerl-heartbeat", daemon=True)
        self.thread.start()

    def _beat(self) -> None:
        while not self.stopped.wait(BEAT_SECONDS):
            with contextlib.suppress(Exception):  # the store going away is reported elsewhere
                self.store.add(f"beat/{self.rank}", 1)

    def reached(self, count: int, what: str) -> None:
        """This rank's main thread enters its `count`-th collective, `what`."""
        self.store.set(f"at/{self.rank}", f"{count} {what}")

    def ranks_behind(self, count: int) -> list[str]:
        """The other ranks whose main thread has not entered this rank's `count`-th
        collective, described with the last one each entered."""
        behind = []
        for rank in (r for r in range(self.world_size) if r != self.rank):
            theirs, _, what = (
                self.store.get(f"at/{rank}").decode().partition(" ")
                if self.store.check([f"at/{rank}"])
                else ("0", "", "none yet")
            )
            if int(theirs) < count:
                who = self.store.get(f"who/{rank}").decode()
                behind.append(f"rank {rank} ({who}; the last it entered: {what})")
        return behind

    def silent_ranks(self, wait: float = SILENT_SECONDS) -> list[str]:
        """The other ranks whose counter did not move in `wait` seconds, described."""
        others = [r for r in range(self.world_size) if r != self.rank]
        before = {r: self.store.add(f"beat/{r}", 0) for r in others}
        time.sleep(wait)
        silent = [r for r in others if self.store.add(f"beat/{r}", 0) == before[r]]
        return [f"rank {r} ({self.store.get(f'who/{r}').decode()})" for r in silent]

    def wait_for(self, key: str, *, rank: int, what: str) -> bytes:
        """The value `rank` puts at `key`, waited for as long as that rank's counter moves."""
        beats, moved = self.store.add(f"beat/{rank}", 0), time.monotonic()
        while not self.store.check([key]):
            time.sleep(POLL_SECONDS)
            now = self.store.add(f"beat/{rank}", 0)
            if now != beats:
                beats, moved = now, time.monotonic()
            elif time.monotonic() - moved > SILENT_SECONDS:
                who = self.store.get(f"who/{rank}").decode()
                raise RankError(f"rank {self.rank}: lost rank {rank} ({who}) during {what}")
        return self.store.get(key)

    def close(self) -> None:
        """Stop beating."""
        self.stopped.set()


@dataclass
class Ranks:
    """This process's place among the trainer ranks, and the collectives the trainer uses."""

    rank: int = 0
    world_size: int = 1
    heartbeat: Heartbeat | None = field(default=None, repr=False)
    device: torch.device = field(default=torch.device("cpu"), repr=False)
    allreduce_seconds: float = 0.0  # spent averaging gradients, for the logs
    main_works: int = field(default=0, repr=False)  # calls of `wait_for_main` so far
    collectives: int = field(default=0, repr=False)  # entered so far by this rank

    @classmethod
    def from_environment(cls) -> "Ranks":
        """The ranks torchrun describes in `RANK` and `WORLD_SIZE`; one rank without them
        (the local rank, which picks the device, is `machine.local_rank()`)."""
        return cls(
            rank=int(os.environ.get("RANK", "0")), world_size=int(os.environ.get("WORLD_SIZE", "1"))
        )

    @property
    def distributed(self) -> bool:
        """True when more than one trainer rank runs."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0, the one that writes the run directory."""
        return self.rank == 0

    def start(self, device: torch.device, timeout: float) -> None:
        """Join the process group: nccl when this rank trains on a GPU, else gloo; collectives
        that wait longer than `timeout` seconds fail."""
        if not self.distributed or dist.is_initialized():
            return
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout))
        self.device = device
        if "MASTER_ADDR" in os.environ and "MASTER_PORT" in os.environ:
            self.heartbeat = Heartbeat(self.rank, self.world_size)

    def close(self) -> None:
        """Leave the process group."""
        if self.heartbeat is not None:
            self.heartbeat.close()
        if dist.is_initialized():
            with contextlib.suppress(Exception):
                dist.destroy_process_group()

    @contextlib.contextmanager
    def _collective(self, what: str) -> Iterator[None]:
        """Turn a failed collective into an error naming the ranks that went silent, or whose
        main thread never came to it (their heartbeat thread alive: a hang in their code)."""
        self.collectives += 1
        if self.heartbeat is not None:
            with contextlib.suppress(Exception):  # the store going away is reported below
                self.heartbeat.reached(self.collectives, what)
        try:
            yield
        except RankError:
            raise
        except Exception as error:
            raise RankError(self._lost(what, error)) from None

    def _lost(self, what: str, error: BaseException) -> str:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        try:
            silent = self.heartbeat.silent_ranks() if self.heartbeat else []
            behind = self.heartbeat.ranks_behind(self.collectives) if self.heartbeat else []
        except Exception:
            return f"rank {self.rank}: {what} failed and the rendezvous store is gone ({detail})"
        if silent:
            return f"rank {self.rank}: lost {', '.join(silent)} during {what} ({detail})"
        if behind:
            return (
                f"rank {self.rank}: {', '.join(behind)} never came to {what}: alive, but stuck "
                f"in its own work ({detail})"
            )
        return (
            f"rank {self.rank}: {what} failed, though every rank's heartbeat is alive: another "
            f"rank stopped with its own error (see its output above) ({detail})"
        )

    def average_gradients(
        self, parameters: list[nn.Parameter], loss: torch.Tensor, *, samples: int = 1
    ) -> torch.Tensor:
        """Replace each gradient by its mean over the ranks weighted by the `samples` each
        rank's loss averaged over, as AllenAct weighs ranks by their share of the batch (ranks
        may hold unequal shares of the tasks: `nprocesses=[3, 1]`); a missing gradient counts
        as zero. Return the ranks' weighted mean loss, so all ranks agree on whether the step
        is finite. A parameter no rank has a gradient for keeps none, as on one rank: the
        optimizer then leaves it alone (a zero gradient would still move it by Adam's
        momentum)."""
        if not self.distributed:
            return loss
        start = time.perf_counter()
        flat = torch.cat(
            [
                p.grad.reshape(-1) * samples if p.grad is not None else p.new_zeros(p.numel())
                for p in parameters
            ]
            + [p.new_ones(1) if p.grad is not None else p.new_zeros(1) for p in parameters]
            + [loss.detach().reshape(1).to(parameters[0].dtype) * samples]
            + [parameters[0].new_full((1,), float(samples))]
        )
        with self._collective("the gradient all-reduce"):
            dist.all_reduce(flat)
        has_gradient = (flat[-2 - len(parameters) : -2] > 0).tolist()
        flat /= flat[-1].clone()
        offset = 0
        for p, given in zip(parameters, has_gradient, strict=True):
            mean = flat[offset : offset + p.numel()].view_as(p)
            if not given:
                p.grad = None
            elif p.grad is None:
                p.grad = mean.clone()
            else:
                p.grad.copy_(mean)
            offset += p.numel()
        self.allreduce_seconds += time.perf_counter() - start
        return flat[-2]

    def standardize(self, values: torch.Tensor) -> torch.Tensor:
        """`values` less the mean, over the standard deviation (+ 1e-5), both over every rank's
        values, as AllenAct normalises advantages across its workers; one rank: `standardize`."""
        if not self.distributed:
            return standardize(values)
        flat = values.detach().double().flatten()
        totals = torch.stack([flat.sum(), flat.new_tensor(float(flat.numel()))]).to(self.device)
        with self._collective("the advantages' mean"):
            dist.all_reduce(totals)
        mean, count = totals[0].item() / totals[1].item(), totals[1].item()
        spread = ((flat - mean) ** 2).sum().reshape(1).to(self.device)
        with self._collective("the advantages' spread"):
            dist.all_reduce(spread)
        if count < 2:
            return torch.zeros_like(values)
        std = (spread.item() / (count - 1)) ** 0.5
        return (values - mean) / (std + 1e-5)

    def broadcast_parameters(self, model: nn.Module) -> None:
        """Give every rank rank 0's parameters and buffers."""
        if not self.distributed:
            return
        with self._collective("the start-up broadcast of the model"), torch.no_grad():
            for tensor in [*model.parameters(), *model.buffers()]:
                dist.broadcast(tensor.data, src=0)

    def end_rollout(self, stop: bool, *, stage_done: bool, model: nn.Module) -> tuple[bool, bool]:
        """Once per rollout: whether any rank was asked to stop (so all stop at the same
        rollout) and whether rank 0's early-stopping criterion ended the stage (so all change
        stage together, whatever a criterion reads), with a check that all ranks still hold
        the same parameters."""
        if not self.distributed:
            return stop, stage_done
        with torch.no_grad():
            checksum = torch.stack([p.double().sum() for p in model.parameters()]).sum()
        flags = checksum.new_tensor([float(stop), float(stage_done)])
        mine = torch.cat([flags, checksum[None]]).to(self.device)
        everyone = [torch.empty_like(mine) for _ in range(self.world_size)]
        with self._collective("the end-of-rollout check"):
            dist.all_gather(everyone, mine)
        sums = [float(t[2]) for t in everyone]
        if any(s != sums[0] for s in sums):
            raise RankError(
                f"rank {self.rank}: the ranks' parameters differ (checksums {sums}); a loss or "
                "model that changes parameters outside the optimizer step, or a gradient that "
                "depends on the rank, breaks distributed training"
            )
        return any(bool(t[0]) for t in everyone), bool(everyone[0][1])

    def all_gather(self, value: T, what: str) -> list[T]:
        """Every rank's `value`, in rank order."""
        if not self.distributed:
            return [value]
        gathered: list[Any] = [None] * self.world_size
        with self._collective(what):
            dist.all_gather_object(gathered, value)
        return gathered

    def gather(self, value: T, what: str) -> list[T] | None:
        """Every rank's `value` on rank 0 (None elsewhere)."""
        if not self.distributed:
            return [value]
        gathered: list[Any] | None = [None] * self.world_size if self.is_main else None
        with self._collective(what):
            dist.gather_object(value, gathered, dst=0)
        return gathered

    def from_main(self, compute: Callable[[], T], what: str) -> T:
        """`compute()` on rank 0, its result (or its error) given to every rank."""
        if not self.distributed:
            return compute()
        box: list[Any] = [None]
        if self.is_main:
            try:
                box[0] = ("ok", compute())
            except (StagerlError, StoppedOutsideTraining) as error:
                box[0] = ("error", pickle.dumps(error))
        with self._collective(what):
            dist.broadcast_object_list(box, src=0)
        status, value = box[0]
        if status == "error":
            error = pickle.loads(value)
            if not self.is_main:
                error = RankError(f"rank {self.rank}: rank 0 stopped: {error}")
            raise error
        return value

    def wait_for_main(self, work: Callable[[], None], what: str) -> None:
        """`work()` on rank 0, the other ranks waiting for it however long it takes while rank
        0's heartbeat goes on: a collective would give up after `rank_timeout`, and a
        validation may take longer. Rank 0 failing stops the others, naming it."""
        if not self.distributed:
            work()
            return
        if self.heartbeat is None:  # no rendezvous store to wait on: a collective waits
            self.from_main(work, what)
            return
        self.main_works += 1
        key = f"main_done/{self.main_works}"
        if self.is_main:
            outcome = b"failed"
            try:
                work()
                outcome = b"ok"
            finally:
                self.heartbeat.store.set(key, outcome)
            return
        if self.heartbeat.wait_for(key, rank=0, what=what) != b"ok":
            raise RankError(f"rank {self.rank}: rank 0 stopped with an error during {what}")

    def merge_metrics(
        self, sums: dict[str, float], counts: dict[str, int]
    ) -> tuple[dict[str, float], dict[str, int]]:
        """Metric sums and counts added up over the ranks."""
        if not self.distributed:
            return sums, counts
        return add_up_metrics(self.all_gather((dict(sums), dict(counts)), "metrics"))
