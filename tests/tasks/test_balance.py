"""The trainer's share of the slots: the split that evens the loads, kept only if faster."""

import pytest

from stagerl.tasks.balance import COMPARE, SETTLE, RolloutClock, SlotBalancer
from stagerl.tasks.balance import balanced_trainer_slots as even
from stagerl.tasks.vector import TRAINER, VectorSampler
from tests.tasks.faulty import CountingSampler

pytestmark = pytest.mark.timeout(60)


def test_the_even_split_equals_the_trainers_and_a_workers_work_per_step():
    # k = (w n - a W) / (t W + w), where a + t k = w (n - k) / W
    assert even(16, 1, trainer_slot=1.0, worker_slot=1.0, trainer_own=4.0) == 6.0
    assert even(16, 1, trainer_slot=2.0, worker_slot=1.0, trainer_own=4.0) == 4.0
    assert even(16, 3, trainer_slot=1.0, worker_slot=1.0, trainer_own=2.0) == 2.5
    assert even(16, 1, trainer_slot=1.0, worker_slot=1.0, trainer_own=100.0) == 0.0
    assert even(16, 1, trainer_slot=1.0, worker_slot=1.0, trainer_own=0.0) == 8.0  # n / (W + 1)


def test_the_clock_splits_the_rollouts_time_into_the_three_costs():
    clock = RolloutClock(
        start=0.0, end=10.0, waiting=3.0, stepping=2.0, worker_seconds=6.0,
        slot_steps=4, worker_slot_steps=12, steps=5,
    )  # fmt: skip
    assert clock.seconds_per_step() == 2.0
    assert clock.costs() == (0.5, 0.5, 1.0)  # t = 2 s / 4, w = 6 s / 12, a = (10 - 3 - 2) s / 5
    assert RolloutClock().costs() is None


def _clock(seconds_per_step, trainer_slots):
    """10 steps of 16 slots, where t = w = 1 ms and a = 4 ms (the even k is 6), taking
    `seconds_per_step`; the trainer waited for the rest."""
    end, stepping = 10 * seconds_per_step, 0.01 * trainer_slots
    return RolloutClock(
        start=0.0, end=end, waiting=end - stepping - 0.04, stepping=stepping,
        worker_seconds=0.01 * (16 - trainer_slots), slot_steps=10 * trainer_slots,
        worker_slot_steps=10 * (16 - trainer_slots), steps=10,
    )  # fmt: skip


@pytest.mark.parametrize("faster", [6, 0])
def test_the_even_split_is_tried_against_none_and_the_faster_kept(faster):
    balancer, current, seen = SlotBalancer(16, 1, most=8), 4, []
    for _ in range(3 + 2 * COMPARE):  # the start-up rollout, two settling, the comparison
        current = balancer.choose(current, _clock(0.011 if current == faster else 0.012, current))
        seen.append(current)
    assert seen == [4, 4, *[0, 6] * COMPARE, faster]
    assert balancer.settle == SETTLE


def test_balance_moves_the_slots_the_balancer_chooses():
    samplers = [CountingSampler(slot) for slot in range(8)]
    with VectorSampler(samplers, num_workers=1, groups=2, trainer_slots=1) as sampler:
        sampler.reset()
        sampler.balancer.choose = lambda current, clock: 4
        sampler.clock = _clock(0.012, 1)
        sampler.balance()
        assert [i for i, owner in enumerate(sampler.owners) if owner == TRAINER] == [2, 3, 6, 7]
        assert sampler.trainer_slots == 4 and sampler.clock.start is None  # measured anew
