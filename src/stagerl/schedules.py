"""Schedules: plain callables of a step count, used for clip decay, teacher forcing and LambdaLR."""

from collections.abc import Sequence

from stagerl.errors import require


class LinearDecay:
    """Linear interpolation from `startp` to `endp` over `steps`, then constant at `endp`."""

    def __init__(self, steps: int, startp: float = 1.0, endp: float = 0.0) -> None:
        require(steps > 0, "LinearDecay.steps", steps, "a positive number of steps")
        self.steps = steps
        self.startp = startp
        self.endp = endp

    def __call__(self, epoch: int) -> float:
        fraction = min(max(epoch, 0) / self.steps, 1.0)
        return self.startp + (self.endp - self.startp) * fraction

    def __repr__(self) -> str:
        return f"LinearDecay(steps={self.steps}, startp={self.startp}, endp={self.endp})"


class MultiLinearDecay:
    """Consecutive linear segments: `MultiLinearDecay([LinearDecay(...), LinearDecay(...)])`."""

    def __init__(self, segments: Sequence[LinearDecay]) -> None:
        require(len(segments) > 0, "MultiLinearDecay.segments", segments, "at least one segment")
        self.segments = list(segments)

    def __call__(self, epoch: int) -> float:
        for segment in self.segments:
            if epoch < segment.steps:
                return segment(epoch)
            epoch -= segment.steps
        return self.segments[-1].endp


class ConstantSchedule:
    """Always `value`; the explicit form of 'no decay'."""

    def __init__(self, value: float = 1.0) -> None:
        self.value = value

    def __call__(self, epoch: int) -> float:
        return self.value
