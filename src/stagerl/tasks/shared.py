"""Named numpy arrays laid out in one shared-memory block, so steps cross processes unpickled."""

from dataclasses import dataclass
from typing import Any

import numpy as np


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
