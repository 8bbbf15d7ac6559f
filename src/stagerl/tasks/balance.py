"""How many task slots the trainer steps itself while double-buffered.

While the workers step one group of slots, the trainer acts for the other; with the workers on
every core but the trainer's, that core idles whenever acting costs less than stepping. So the
trainer also steps a few slots in its own process, at the moments it would otherwise wait for
the workers. Stepping a slot here or in a worker gives the same results (each slot owns its
sampler, task and their RNGs), so the split may follow measured times. Over each rollout:

- `t`: the trainer's seconds to step one of its slots once;
- `w`: a worker's seconds to step one of its slots once (the workers report their busy time);
- `a`: the trainer's own seconds per step: acting and recording, neither stepping nor waiting.

With `n` slots, `W` workers and `k` slots in the trainer, the trainer's work per step is
`a + t k` and a worker's `w (n - k) / W`; they are even at `k = (w n - a W) / (t W + w)`.
`t` and `w` differ: a slot of the GoToObj example cost the trainer 228 us a step and a worker
at most 155 (the trainer's caches hold the model too).
"""

import statistics
import time
from dataclasses import dataclass, field

KEEP = 0.75  # the weight of the running averages' past: about four rollouts' memory
COMPARE = 4  # rollouts at each of the two splits a comparison tries
SETTLE = 64  # rollouts between comparisons


def first_trainer_slots(num_slots: int, num_workers: int) -> int:
    """The trainer's slots before anything is measured: half a worker's share, at least one."""
    return max(1, num_slots // (2 * (num_workers + 1)))


def balanced_trainer_slots(
    num_slots: int, num_workers: int, *, trainer_slot: float, worker_slot: float, trainer_own: float
) -> float:
    """The `k` that evens the loads (the module's docstring), from the costs `t`, `w` and `a`,
    within [0, n / (W + 1)]: never more than an even share of the stepping."""
    k = (worker_slot * num_slots - trainer_own * num_workers) / (
        trainer_slot * num_workers + worker_slot
    )
    return min(max(k, 0.0), num_slots / (num_workers + 1))


@dataclass
class RolloutClock:
    """One rollout's sampling as the trainer saw it, from the first step sent to the last
    received: the time it waited for workers and stepped its own slots, and the time the
    workers reported working on steps."""

    start: float | None = None
    end: float = 0.0
    waiting: float = 0.0
    stepping: float = 0.0
    worker_seconds: float = 0.0
    slot_steps: int = 0  # steps of single slots taken in the trainer
    worker_slot_steps: int = 0  # and in the workers
    steps: int = 0  # steps of the whole sampler (every group once)

    def begin(self) -> None:
        """Mark a step sent; the first one starts the clock."""
        if self.start is None:
            self.start = time.perf_counter()

    def seconds_per_step(self) -> float | None:
        """Wall seconds per step, or None before a whole step."""
        if self.start is None or self.steps == 0:
            return None
        return (self.end - self.start) / self.steps

    def costs(self) -> tuple[float | None, float, float] | None:
        """`(t, w, a)` as the module's docstring defines them (`t` None when the trainer
        stepped no slot), or None before a whole step stepped by workers."""
        if self.start is None or self.steps == 0 or self.worker_slot_steps == 0:
            return None
        own = (self.end - self.start) - self.waiting - self.stepping
        trainer_slot = self.stepping / self.slot_steps if self.slot_steps else None
        return trainer_slot, self.worker_seconds / self.worker_slot_steps, own / self.steps


@dataclass
class SlotBalancer:
    """The trainer's share of `num_slots` slots beside `num_workers` workers, up to `most`.

    The costs, averaged over rollouts, give the even `k`. But where the two processes slow
    each other down more than the costs show, stepping anything in the trainer loses (the
    ObjectNav example: 10-25%, MiniWorld's software renderer running threads of its own). So
    the even `k` is tried against none: `COMPARE` rollouts each, taking turns so that slow
    drifts (episodes shortening as the agent learns) cancel; the faster by the median ratio
    of neighbouring rollouts' time per step is kept for `SETTLE` rollouts, then tried again."""

    num_slots: int
    num_workers: int
    most: int  # the most slots the trainer may step
    costs: list[float] | None = None  # running averages of t, w and a
    plan: list[int] = field(default_factory=list)  # the splits of a comparison under way
    times: list[float] = field(default_factory=list)  # seconds per step of its rollouts so far
    settle: int = 2  # rollouts until the next comparison
    started: bool = False  # the first rollout, which starts things up, is not counted

    def choose(self, current: int, clock: RolloutClock) -> int:
        """The trainer's slots for the next rollout, after `clock` measured one at `current`."""
        measured, per_step = clock.costs(), clock.seconds_per_step()
        if measured is None or per_step is None or not self.started:
            self.started = measured is not None
            return current
        self._average(measured)
        if self.plan:
            self.times.append(per_step)
            if len(self.times) < len(self.plan):
                return self.plan[len(self.times)]
            return self._decide()
        self.settle -= 1
        if self.settle > 0:
            return current
        trainer_slot, worker_slot, trainer_own = self.costs
        even = round(
            balanced_trainer_slots(
                self.num_slots,
                self.num_workers,
                trainer_slot=trainer_slot,
                worker_slot=worker_slot,
                trainer_own=trainer_own,
            )
        )
        even = min(even, self.most)
        if even == 0:
            self.settle = SETTLE
            return 0
        self.plan, self.times = [0, even] * COMPARE, []
        return self.plan[0]

    def _average(self, measured: tuple[float | None, float, float]) -> None:
        if self.costs is None:  # until the trainer steps a slot, take it as costly as a worker
            self.costs = [measured[1] if measured[0] is None else measured[0], *measured[1:]]
            return
        self.costs = [
            old if new is None else KEEP * old + (1 - KEEP) * new
            for old, new in zip(self.costs, measured, strict=True)
        ]

    def _decide(self) -> int:
        """The faster split of the finished comparison; the next one in `SETTLE` rollouts."""
        ratios = [self.times[i + 1] / self.times[i] for i in range(0, len(self.times), 2)]
        chosen = self.plan[1] if statistics.median(ratios) < 1 else 0
        self.plan, self.times, self.settle = [], [], SETTLE
        return chosen
