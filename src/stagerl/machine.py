"""MachineParams: how many task samplers a mode runs, on which devices, in how many processes;
what each trainer rank gets of them."""

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from stagerl.cores import usable_cores
from stagerl.errors import (
    ConfigError,
    is_number,
    require,
    require_bool,
    require_positive,
)

_UNSUPPORTED_MACHINE_FIELDS = ("sensor_preprocessor_graph", "visualizer", "local_worker_ids")
MAX_TIMEOUT = 2_000_000.0  # s: poll() and torch.distributed take no longer


def _device_name(device: Any, field_name: str) -> str:
    """AllenAct's device forms: a CUDA index (-1 is the CPU), a string, a torch.device."""
    if isinstance(device, bool):
        raise ConfigError(f"{field_name}={device!r} is invalid: expected a device")
    if isinstance(device, int):
        return "cpu" if device == -1 else f"cuda:{device}"
    if isinstance(device, str) or type(device).__name__ == "device":
        return str(device)
    raise ConfigError(
        f"{field_name}={device!r} is invalid: expected a CUDA index, 'cpu', 'cuda[:i]' or a "
        "torch.device"
    )


def _devices(value: Any, field_name: str) -> tuple[str, ...]:
    """The trainer devices: one, or one per trainer process of a machine (torchrun's local
    ranks take them in order)."""
    if value is None or (isinstance(value, Sequence) and not isinstance(value, str) and not value):
        return ("cpu",)
    values = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    return tuple(_device_name(v, field_name) for v in values)


def _is_count(value: Any) -> bool:
    return is_number(value, whole=True) and value >= 0


def local_rank() -> int:
    """This trainer's index on its machine (torchrun's `LOCAL_RANK`), else 0."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def trainers_on_this_machine() -> int:
    """Trainer processes sharing this machine's cores: torchrun's `--nproc-per-node`
    (`LOCAL_WORLD_SIZE`), else 1."""
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def _pick(values: tuple[str, ...], local_rank: int, field_name: str) -> str:
    """The device of one local rank: its own entry, or the one entry for all (a bare 'cuda'
    becomes the local rank's GPU)."""
    if len(values) == 1:
        name = values[0]
        return f"cuda:{local_rank}" if name == "cuda" and trainers_on_this_machine() > 1 else name
    if local_rank >= len(values):
        raise ConfigError(
            f"{field_name}={list(values)} names {len(values)} devices, one per trainer process, "
            f"but this is local rank {local_rank}; start at most {len(values)} per machine"
        )
    return values[local_rank]


@dataclass(frozen=True)
class MachineParams:
    """`nprocesses` task samplers (one task each) and the `devices` the model trains on, with
    AllenAct's meaning; stagerl packs the samplers into sampler worker processes itself.

    - `devices`: `None`/`[]` (the CPU), a CUDA index, `'cuda[:i]'` or a `torch.device`;
      `gpu_ids` is AllenAct's older name for it. `sampler_devices` (default: `devices`) is what
      the `*_task_sampler_args` methods receive as `devices`.
    - `max_sampler_processes`: at most this many sampler processes (default: one per core
      `cores()` counts, in double-buffered training one fewer, leaving the trainer a core;
      `stagerl train -m K` overrides it). AllenAct starts one process per sampler unless `-m`.
    - `worker_timeout`: seconds a sampler process may take to answer before the run stops.
    - `rank_timeout`: seconds a trainer rank (under torchrun) waits for the others in an
      all-reduce before the run stops naming the silent one; rank 0's validation is waited
      for without this limit.
    - `update_threads`: torch threads for updates. The trainer acts with one thread while the
      workers step (oversubscribed threads spin and run many times slower) and updates with
      `update_threads` while the workers idle.
    - `double_buffered`: in training, the samplers form two halves that take turns, so the
      workers step one half while the model acts for the other (default); with a core to
      spare, the trainer also steps a few samplers itself when that is measured faster
      (docs/performance.md). `False`: the model acts for all samplers, then waits for all of
      them. The rollouts are alike in distribution either way, and each is reproducible from
      its seed.
    """

    nprocesses: int | Sequence[int]
    devices: Any = None
    sampler_devices: Any = None
    gpu_ids: Any = None
    max_sampler_processes: int | None = None
    worker_timeout: float = 60.0
    update_threads: int = 2
    double_buffered: bool = True
    rank_timeout: float = 300.0
    sensor_preprocessor_graph: Any = None
    visualizer: Any = None
    local_worker_ids: Any = None
    trainer_devices: tuple[str, ...] = field(init=False, repr=False)
    task_sampler_devices: tuple[str, ...] = field(init=False, repr=False)
    rank_task_counts: tuple[int, ...] | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        for name in _UNSUPPORTED_MACHINE_FIELDS:
            require(
                getattr(self, name) is None,
                f"MachineParams.{name}",
                value=getattr(self, name),
                expected="None (stagerl has no sensor preprocessors, visualizers or worker ids)",
            )
        self._settle_nprocesses()
        self._settle_devices()
        require_positive(
            "MachineParams.max_sampler_processes",
            self.max_sampler_processes,
            whole=True,
            allow_none=True,
        )
        require_positive("MachineParams.update_threads", self.update_threads, whole=True)
        for name in ("worker_timeout", "rank_timeout"):
            value = getattr(self, name)
            require_positive(f"MachineParams.{name}", value)
            # poll() takes whole milliseconds in a C int: about 24.8 days
            require(
                value <= MAX_TIMEOUT,
                f"MachineParams.{name}",
                value=value,
                expected="at most 2,000,000 s",
            )
        require_bool("MachineParams.double_buffered", self.double_buffered)

    def _settle_nprocesses(self) -> None:
        """`nprocesses` as the total count of task samplers; given per trainer rank (a
        sequence), those counts are kept in `rank_task_counts`."""
        counts = self.nprocesses
        if isinstance(counts, Sequence) and not isinstance(counts, str):
            counts = tuple(counts)
            require(
                counts and all(_is_count(c) for c in counts),
                "MachineParams.nprocesses",
                value=self.nprocesses,
                expected="task samplers per trainer process, each >= 0",
            )
            object.__setattr__(self, "rank_task_counts", counts)
            counts = sum(counts)
        require(
            _is_count(counts),
            "MachineParams.nprocesses",
            value=self.nprocesses,
            expected="a number of task samplers >= 0",
        )
        object.__setattr__(self, "nprocesses", counts)

    def _settle_devices(self) -> None:
        """The trainer's devices from `devices` (or `gpu_ids`, its older name), the samplers'
        from `sampler_devices` (the trainer's by default)."""
        if self.gpu_ids is not None and self.devices is not None:
            raise ConfigError("MachineParams: give devices or gpu_ids (its older name), not both")
        given = self.gpu_ids if self.gpu_ids is not None else self.devices
        trainer = _devices(given, self._devices_field)
        object.__setattr__(self, "trainer_devices", trainer)
        samplers = self.sampler_devices
        sampler = (
            trainer if samplers is None else _devices(samplers, "MachineParams.sampler_devices")
        )
        object.__setattr__(self, "task_sampler_devices", sampler)

    @property
    def device(self) -> str:
        """Where the model, the rollout storage and the updates live, e.g. 'cpu' or 'cuda:0'
        (of a trainer started by torchrun: the entry of its local rank)."""
        return _pick(self.trainer_devices, local_rank(), self._devices_field)

    @property
    def _devices_field(self) -> str:
        return "MachineParams.gpu_ids" if self.gpu_ids is not None else "MachineParams.devices"

    def task_counts(self, world_size: int) -> tuple[int, ...]:
        """Each rank's number of task samplers: `nprocesses` per rank when a list, else the
        total split as evenly as it goes, the first ranks taking one more."""
        counts = self.rank_task_counts
        if counts is None:
            base, extra = divmod(self.nprocesses, world_size)
            return tuple(base + int(r < extra) for r in range(world_size))
        if len(counts) != world_size:
            raise ConfigError(
                f"MachineParams.nprocesses={list(counts)} gives samplers for {len(counts)} "
                f"trainer processes, but torchrun started {world_size}"
            )
        return tuple(counts)

    def for_rank(self, rank: int, world_size: int) -> tuple["MachineParams", int]:
        """This rank's share: its task samplers (`task_counts`) and its devices, and the global
        index of its first sampler."""
        counts = self.task_counts(world_size)
        if counts[rank] == 0:
            raise ConfigError(
                f"MachineParams.nprocesses={self.nprocesses} leaves rank {rank} of {world_size} "
                "no task sampler; give at least one sampler per trainer process"
            )
        if len(self.trainer_devices) > 1 and trainers_on_this_machine() == 1:
            raise ConfigError(
                f"{self._devices_field} names {len(self.trainer_devices)} devices, one per "
                "trainer process: start that many with torchrun --nproc-per-node "
                f"{len(self.trainer_devices)}"
            )
        mine = _pick(self.trainer_devices, local_rank(), self._devices_field)
        samplers = _pick(self.task_sampler_devices, local_rank(), "MachineParams.sampler_devices")
        share = replace(
            self, nprocesses=counts[rank], devices=mine, gpu_ids=None, sampler_devices=samplers
        )
        return share, sum(counts[:rank])

    def changed(self, **changes: Any) -> "MachineParams":
        """A copy with `changes`. Unlike `dataclasses.replace`, it keeps a per-rank
        `nprocesses` list as given (`replace` would pass on only its sum)."""
        counts = self.rank_task_counts
        changes.setdefault("nprocesses", list(counts) if counts else self.nprocesses)
        return replace(self, **changes)

    def sampler_processes(self, spare_core: bool = False) -> int:
        """How many worker processes step the samplers: `max_sampler_processes`, else one per
        core of this trainer's share of the machine (one core fewer with `spare_core`, which
        double-buffered training asks for: the trainer acts while the workers step, and on a
        core of its own it was measured 1.3x faster at sampling the GoToObj example on 2 cores
        than sharing both; docs/performance.md), never more than there are samplers."""
        cores = max(1, self.cores() - int(spare_core))
        return max(1, min(self.nprocesses, self.max_sampler_processes or cores))

    def threads_for_updates(self) -> int:
        """`update_threads`, at most this trainer's share of the cores."""
        return min(self.update_threads, self.cores())

    @staticmethod
    def cores() -> int:
        """The cores this trainer process may use: those of the machine it may use
        (`usable_cores`: its CPU affinity, within a container's CPU quota), shared evenly by
        the trainer processes torchrun started on it."""
        return max(1, usable_cores() // trainers_on_this_machine())

    @classmethod
    def instance_from(cls, value: "MachineParams | dict[str, Any]", where: str) -> "MachineParams":
        """A MachineParams as it is, or built from AllenAct's dict form."""
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            try:
                return cls(**value)
            except TypeError as error:
                raise ConfigError(
                    f"{where} returned a dict MachineParams rejects: {error}"
                ) from None
        raise ConfigError(f"{where} must return MachineParams(...) or a dict, got {value!r}")
