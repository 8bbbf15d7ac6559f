"""Named numpy arrays laid out in one shared-memory block, so steps cross processes unpickled;
the layout a vector sampler's slots share."""

from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import spaces

from stagerl.errors import ConfigError


@dataclass(frozen=True)
class ArraySpec:
    """The shape and numpy dtype string of one shared array."""

    shape: tuple[int, ...]
    dtype: str


class SharedArrays:
    """A dict of numpy views over one `RawArray`; the same layout is rebuilt in each worker."""

    def __init__(self, block: Any, layout: dict[str, ArraySpec]) -> None:
        self.block = block
        self.layout = layout
        buffer = memoryview(block).cast("B")
        self.arrays: dict[str, np.ndarray] = {}
        offset = 0
        for name, spec in layout.items():
            dtype = np.dtype(spec.dtype)
            offset = -(-offset // 64) * 64  # cache-line aligned, so views never straddle arrays
            count = int(np.prod(spec.shape))
            self.arrays[name] = np.frombuffer(buffer, dtype, count, offset).reshape(spec.shape)
            offset += count * dtype.itemsize

    @staticmethod
    def nbytes(layout: dict[str, ArraySpec]) -> int:
        """Bytes of one block holding every array of `layout`, each 64-byte aligned."""
        total = 0
        for spec in layout.values():
            total = -(-total // 64) * 64 + int(np.prod(spec.shape)) * np.dtype(spec.dtype).itemsize
        return max(total, 1)

    @classmethod
    def create(cls, context: Any, layout: dict[str, ArraySpec]) -> "SharedArrays":
        """A new shared block from the multiprocessing `context`, viewed as `layout`."""
        return cls(context.RawArray("b", cls.nbytes(layout)), layout)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]


def array_layout(space: spaces.Dict, num_tasks: int) -> dict[str, ArraySpec]:
    """The shared arrays of `num_tasks` slots observed through `space`: each sensor's reading
    and final reading (an episode's last), the actions, rewards and flags."""
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


def one_observation_space(samplers: list[Any]) -> spaces.Dict:
    """The first sampler's observation space; every sampler's must give the same shared arrays
    (one layout serves every slot): a ConfigError naming one that does not."""
    first = samplers[0].observation_space
    layout = array_layout(first, 1)
    for index, other in enumerate(samplers[1:], start=1):  # bounds may differ; not shapes, dtypes
        if array_layout(other.observation_space, 1) != layout:
            raise ConfigError(
                f"task sampler {index} ({other!r}) observes {other.observation_space}, "
                f"task sampler 0 {first}"
            )
    return first
