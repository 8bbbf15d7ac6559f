"""Schedules: plain callables of a step count, used for clip decay, teacher forcing and LambdaLR."""

from collections.abc import Sequence

from stagerl.errors import require


class LinearDecay:
    """Linear interpolation from `startp` to `endp` over `steps`, then constant at `endp`.

    A negative `steps` clamps the step to 0, as AllenAct's does: `startp` throughout (its BabyAI
    baselines build such decays where they mean none). A decay over 0 steps, which AllenAct
    divides by zero on, is over before it starts: `endp` throughout.
    """

    def __init__(self, steps: int, startp: float = 1.0, endp: float = 0.0) -> None:
        require(
            isinstance(steps, int | float) and not isinstance(steps, bool),
            "LinearDecay.steps",
            value=steps,
            expected="a number of steps",
        )
        self.steps = steps
        self.startp = startp
        self.endp = endp

    def __call__(self, epoch: int) -> float:
        if self.steps < 0:
            return self.startp
        if self.steps == 0:
            return self.endp
        fraction = min(max(epoch, 0) / self.steps, 1.0)
        return self.startp + (self.endp - self.startp) * fraction

    def __repr__(self) -> str:
        return f"LinearDecay(steps={self.steps}, startp={self.startp}, endp={self.endp})"


class MultiLinearDecay:
    """Consecutive linear segments: `MultiLinearDecay(stages=[LinearDecay(...), ...])`."""

    def __init__(self, stages: Sequence[LinearDecay]) -> None:
        require(
            len(stages) > 0,
            "MultiLinearDecay.stages",
            value=stages,
            expected="at least one LinearDecay",
        )
        self.stages = list(stages)

    def __call__(self, epoch: int) -> float:
        for stage in self.stages:
            if epoch < stage.steps:
                return stage(epoch)
            epoch -= stage.steps
        return self.stages[-1].endp


class ConstantSchedule:
    """Always `value`; the explicit form of 'no decay'."""

    def __init__(self, value: float = 1.0) -> None:
        self.value = value

    def __call__(self, epoch: int) -> float:
        return self.value
