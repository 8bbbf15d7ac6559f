"""The shared-memory sampler: steps round-trip, and every worker fault becomes a clear error."""

import os
import pickle
import signal

import numpy as np
import psutil
import pytest

from stagerl.errors import ConfigError, WorkerError
from stagerl.plugins.minigrid import BabyAITaskSampler, EgocentricMiniGridSensor
from stagerl.tasks.sensors import ExpertActionSensor
from stagerl.tasks.vector import (
    TRAINER,
    VectorSampler,
    _deadline,
    most_trainer_slots,
    slot_owners,
)
from stagerl.tasks.worker import SPIN_SECONDS
from tests.tasks.faulty import (
    ByteCounterSensor,
    CounterSensor,
    CountingSampler,
    FloatCounterSensor,
    NarrowByteCounterSensor,
    ShortCounterSensor,
)

pytestmark = pytest.mark.timeout(60)


def test_observations_rewards_and_episode_ends_cross_shared_memory():
    samplers = [CountingSampler(slot, length=2) for slot in range(4)]
    with VectorSampler(samplers, num_workers=2) as sampler:
        obs = sampler.reset()
        assert obs["counter"].tolist() == [[0, 0], [1, 0], [2, 0], [3, 0]]
        step = sampler.step(np.array([0, 1, 2, 1]))
        assert step.rewards.dtype == np.float32
        assert step.rewards.tolist() == [0.0, 1.0, 2.0, 1.0]
        assert step.observations["counter"][:, 1].tolist() == [1, 1, 1, 1]
        assert not step.terminated.any() and step.finished == []
        step = sampler.step(np.array([2, 2, 2, 2]))
        assert step.terminated.all() and not step.truncated.any()
        assert step.final_observations["counter"][:, 1].tolist() == [2, 2, 2, 2]
        assert step.observations["counter"][:, 1].tolist() == [0, 0, 0, 0]  # new episodes
        assert sorted(slot for slot, _ in step.finished) == [0, 1, 2, 3]
        rewards = {slot: metrics["reward"] for slot, metrics in step.finished}
        assert rewards == {0: 0.0 + 2.0, 1: 1.0 + 2.0, 2: 2.0 + 2.0, 3: 1.0 + 2.0}  # the actions
        assert all(metrics["ep_length"] == 2.0 for _, metrics in step.finished)


def test_max_tasks_deactivates_slots():
    samplers = [CountingSampler(slot, length=1) for slot in range(2)]
    with VectorSampler(samplers, num_workers=1, max_tasks=[1, 2]) as sampler:
        sampler.reset()
        sampler.step(np.zeros(2, dtype=np.int64))
        assert sampler.active.tolist() == [False, True]
        sampler.step(np.zeros(2, dtype=np.int64))
        assert not sampler.active.any()


def test_a_snapshot_asked_for_ahead_is_of_the_slots_as_they_are_when_read():
    samplers = [CountingSampler(slot, length=9) for slot in range(4)]
    with VectorSampler(samplers, num_workers=2, groups=2, trainer_slots=1) as sampler:

        def steps_taken():
            return [pickle.loads(state)[1].num_steps_taken for state in sampler.snapshot()]

        sampler.reset()
        sampler.step(np.ones(4, dtype=np.int64))
        sampler.ask_for_snapshot()  # the workers pickle their slots now
        assert steps_taken() == [1, 1, 1, 1]
        sampler.ask_for_snapshot()  # answered already: nothing is asked
        sampler.step(np.ones(4, dtype=np.int64))
        sampler.ask_for_snapshot()  # its replies wait in the pipes while the slots step on:
        rewards = sampler.step(np.array([0, 1, 2, 1])).rewards.tolist()
        assert rewards == [0.0, 1.0, 2.0, 1.0]  # read in order, not taken for the step's
        assert steps_taken() == [3, 3, 3, 3]  # and that answer forgotten
        sampler.ask_for_snapshot()
        sampler.next_scene()
        assert steps_taken() == [3, 3, 3, 3]


def _double_buffered_run(trainer_slots, moves):
    """20 steps of 6 BabyAI slots in two groups, with fixed random actions; after step t, the
    trainer steps `moves[t]` slots. Every step's observations, rewards, ends and finished."""
    sensors = [EgocentricMiniGridSensor(view_channels=3)]
    samplers = [BabyAITaskSampler("BabyAI-GoToObj-v0", sensors, seed=s) for s in range(6)]
    actions = np.random.default_rng(0).integers(0, 3, size=(20, 6))
    seen = []
    with VectorSampler(samplers, num_workers=2, groups=2, trainer_slots=trainer_slots) as sampler:
        seen.append(sampler.reset()["minigrid_ego_image"].copy())
        for t in range(20):
            for g, tasks in enumerate(sampler.groups):
                sampler.send_step(g, actions[t, tasks])
            for g in range(2):
                step = sampler.receive_step(g)
                flags = (step.rewards, step.terminated, step.truncated)
                seen += [step.observations["minigrid_ego_image"].copy(), *map(np.copy, flags)]
                seen.append(step.finished)
            if t in moves:
                sampler.move_slots(moves[t])
    return seen


def test_slots_stepped_in_the_trainer_and_moved_mid_episode_give_the_same_steps():
    expected = _double_buffered_run(trainer_slots=0, moves={})
    moved = _double_buffered_run(trainer_slots=2, moves={3: 4, 8: 1, 12: 3, 15: 0})
    assert len(expected) == len(moved) == 1 + 20 * 2 * 5
    for a, b in zip(expected, moved, strict=True):
        if isinstance(a, list):
            assert a == b
        else:
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "fault, cause",
    [
        ("raise", "ValueError: boom in the environment"),
        ("hang", "did not finish 'step' within 1 s"),
    ],
)
def test_a_fault_in_a_slot_the_trainer_steps_names_it_and_stops_the_workers(fault, cause):
    samplers = [CountingSampler(0), CountingSampler(1, fault=fault)]  # slot 1: the trainer's
    sampler = VectorSampler(samplers, num_workers=1, groups=2, trainer_slots=1, timeout=1.0)
    pids = [p.pid for p in sampler.processes]
    sampler.reset()
    with pytest.raises(WorkerError) as error:
        for _ in range(3):
            for g in range(2):
                sampler.send_step(g, np.zeros(1, dtype=np.int64))
            for g in range(2):
                sampler.receive_step(g)
    message = str(error.value)
    assert "the trainer's own slots (tasks: CountingSampler(slot=1))" in message
    assert "CountingTask(slot=1)" in message and cause in message
    _assert_gone(pids)


@pytest.mark.parametrize(
    ("fault", "by_trainer", "cause"),
    [
        ("raise while closing", False, "raised during 'close' (no task):\nValueError: boom"),
        ("hang while closing", False, "did not answer 'close' within 1 s"),
        ("raise while closing", True, "failed to close: ValueError: boom while closing"),
        ("hang while closing", True, "failed to close: TimeoutError: did not close within 1 s"),
    ],
)
def test_a_slot_that_fails_to_close_is_named(fault, by_trainer, cause):
    samplers = [CountingSampler(0), CountingSampler(1, fault=fault)]
    packing = dict(num_workers=1, groups=2, trainer_slots=1) if by_trainer else {"num_workers": 2}
    sampler = VectorSampler(samplers, timeout=1.0, **packing)
    pids = [p.pid for p in sampler.processes]
    sampler.reset()
    with pytest.raises(WorkerError) as error:
        sampler.close()
    owner = "the trainer's own slots" if by_trainer else "sampler worker 1"
    assert f"{owner} (tasks: CountingSampler(slot=1))" in str(error.value)
    assert cause in str(error.value)
    _assert_gone(pids)


@pytest.mark.parametrize(
    ("sensor", "read"),
    [(FloatCounterSensor, "float64 shaped (2,)"), (ShortCounterSensor, "int64 shaped (1,)")],
)
def test_readings_that_do_not_fit_their_space_are_named(sensor, read):
    samplers = [CountingSampler(0), CountingSampler(1, sensors=[sensor()])]
    sampler = VectorSampler(samplers, num_workers=2, timeout=10.0)
    with pytest.raises(WorkerError) as error:
        sampler.reset()
    assert "sampler worker 1" in str(error.value)
    assert f"sensor 'counter' read {read}, but its observation space is int64" in str(error.value)


def test_integer_readings_that_fit_a_narrower_type_are_taken_whatever_the_bounds():
    sensors = [ByteCounterSensor(), NarrowByteCounterSensor()]  # bounds differ, arrays do not
    samplers = [CountingSampler(slot, sensors=[sensor]) for slot, sensor in enumerate(sensors)]
    with VectorSampler(samplers, num_workers=1, timeout=10.0) as sampler:
        assert sampler.reset()["counter"].tolist() == [[0, 0], [1, 0]]


def test_samplers_of_other_observation_spaces_are_refused():
    other = CountingSampler(1, sensors=[CounterSensor(), ExpertActionSensor(nactions=3)])
    with pytest.raises(ConfigError, match=r"task sampler 1 \(CountingSampler\(slot=1\)\)"):
        VectorSampler([CountingSampler(0), other], num_workers=1)


def test_the_trainer_takes_at_most_an_even_share_and_leaves_every_worker_a_slot():
    for slots in range(1, 13):
        for workers in range(1, slots + 1):
            for groups in (1, 2):
                bounds = np.linspace(0, slots, groups + 1).astype(int)
                split = [slice(int(a), int(b)) for a, b in zip(bounds, bounds[1:], strict=False)]
                most = most_trainer_slots(split, workers)
                assert most <= slots / (workers + 1)
                for k in range(most + 1):
                    owners = slot_owners(split, num_workers=workers, trainer_slots=k)
                    assert owners.count(TRAINER) == k
                    assert set(owners) - {TRAINER} == set(range(workers))


def test_the_trainers_deadline_hands_an_outer_timer_back_with_its_time():
    signal.setitimer(signal.ITIMER_REAL, 500.0)
    try:
        with _deadline(30.0, "unused"):
            pass
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 499.0 < left <= 500.0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _run_until_fault(fault, spin, timeout=60.0):
    """The fault's error and the workers' pids (a hang instead fails the module's timeout);
    with `spin`, the trainer and the workers poll before they sleep, as in training on a core
    each."""
    samplers = [CountingSampler(0), CountingSampler(1, fault=fault)]
    sampler = VectorSampler(samplers, num_workers=2, timeout=timeout, spin=spin)
    pids = [p.pid for p in sampler.processes]
    sampler.reset()
    with pytest.raises(WorkerError) as error:
        for _ in range(5):
            sampler.step(np.zeros(2, dtype=np.int64))
    return str(error.value), pids


def _assert_gone(pids):
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


@pytest.mark.parametrize("spin", [0.0, SPIN_SECONDS])
def test_worker_exception_names_worker_task_and_cause(spin):
    message, pids = _run_until_fault("raise", spin)
    assert "sampler worker 1" in message
    assert "CountingTask(slot=1)" in message
    assert "ValueError: boom in the environment" in message
    _assert_gone(pids)


@pytest.mark.parametrize("spin", [0.0, SPIN_SECONDS])
def test_worker_segfault_is_reported_with_its_tasks(spin):
    message, pids = _run_until_fault("segfault", spin)
    assert "sampler worker 1 (tasks: CountingSampler(slot=1))" in message
    assert "died during 'step'" in message and str(-11) in message
    _assert_gone(pids)


@pytest.mark.parametrize("spin", [0.0, SPIN_SECONDS])
def test_hung_worker_times_out(spin):
    message, pids = _run_until_fault("hang", spin, timeout=1.0)
    assert "sampler worker 1" in message and "did not answer 'step' within 1 s" in message
    _assert_gone(pids)


def test_a_worker_hung_before_reading_a_long_message_times_out():
    # a restore larger than the pipe's buffer waits in send until the worker reads it
    sampler = VectorSampler(
        [CountingSampler(0, fault="hang while starting")], num_workers=1, timeout=1.0
    )
    pids = [p.pid for p in sampler.processes]
    with pytest.raises(WorkerError, match=r"sampler worker 0 .* did not answer 'restore'"):
        sampler.restore([b"x" * 1_000_000])
    _assert_gone(pids)


def test_killed_worker_is_reported():
    samplers = [CountingSampler(0), CountingSampler(1)]
    sampler = VectorSampler(samplers, num_workers=2)
    sampler.reset()
    pids = [p.pid for p in sampler.processes]
    os.kill(pids[0], 9)
    with pytest.raises(
        WorkerError, match=r"sampler worker 0 .* died during 'step' \(exit code -9\)"
    ):
        sampler.step(np.zeros(2, dtype=np.int64))
    _assert_gone(pids)  # the surviving worker is stopped too
