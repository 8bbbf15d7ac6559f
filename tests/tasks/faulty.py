"""Samplers that misbehave on purpose, for the worker fault tests (importable by workers)."""

import os
import signal
import time

import numpy as np
from gymnasium import spaces

from stagerl.tasks.base import Task, TaskSampler
from stagerl.tasks.sensors import Sensor, SensorSuite


class CounterSensor(Sensor):
    """Observes (slot, steps taken) so tests can see where each task is."""

    uuid = "counter"
    observation_space = spaces.Box(0, 10_000, (2,), dtype=np.int64)

    def get_observation(self, env, task):
        return np.array([task.slot, task.num_steps_taken], dtype=np.int64)


class ByteCounterSensor(CounterSensor):
    """Declares uint8 counts (other bounds than CounterSensor's), reads int64 ones that fit."""

    observation_space = spaces.Box(0, 255, (2,), dtype=np.uint8)


class NarrowByteCounterSensor(ByteCounterSensor):
    """ByteCounterSensor of other bounds: the same shared arrays."""

    observation_space = spaces.Box(0, 100, (2,), dtype=np.uint8)


class FloatCounterSensor(CounterSensor):
    """Declares int64 counts, reads floats: what numpy would cast silently."""

    def get_observation(self, env, task):
        return super().get_observation(env, task) + 0.5


class ShortCounterSensor(CounterSensor):
    """Declares two counts, reads one: what numpy would broadcast silently."""

    def get_observation(self, env, task):
        return super().get_observation(env, task)[:1]


class CountingTask(Task):
    """Reward = the action; ends (terminal) after `length` steps; misbehaves at `fail_at`."""

    def __init__(self, slot, length, fault, fail_at, sensors):
        self.slot, self.length, self.fault, self.fail_at = slot, length, fault, fail_at
        super().__init__(env=None, sensors=SensorSuite(sensors), max_steps=length + 5)

    @property
    def action_space(self):
        return spaces.Discrete(3)

    def _step(self, action):
        if self.fault and self.num_steps_taken == self.fail_at:
            if self.fault == "raise":
                raise ValueError("boom in the environment")
            if self.fault == "segfault":
                os.kill(os.getpid(), signal.SIGSEGV)
            if self.fault == "hang":
                if os.environ.get("STAGERL_TEST_HANG_MARKER"):  # tells a test the hang began
                    open(os.environ["STAGERL_TEST_HANG_MARKER"], "w").close()
                time.sleep(3600)
        return float(action), False

    def reached_terminal_state(self):
        return self.num_steps_taken >= self.length

    def query_expert(self):
        """The expert always says 2, but only on even steps."""
        return 2, self.num_steps_taken % 2 == 0

    def __repr__(self):
        return f"CountingTask(slot={self.slot})"


class CountingSampler(TaskSampler):
    def __init__(self, slot, length=3, fault=None, fail_at=1, sensors=None):
        self.sensors = sensors or [CounterSensor()]
        self.slot, self.episode_length, self.fault, self.fail_at = slot, length, fault, fail_at

    @property
    def observation_space(self):
        return SensorSuite(self.sensors).observation_space

    @property
    def action_space(self):
        return spaces.Discrete(3)

    def next_task(self):
        return CountingTask(self.slot, self.episode_length, self.fault, self.fail_at, self.sensors)

    def set_seed(self, seed):
        pass

    def close(self):
        if self.fault == "raise while closing":
            raise ValueError("boom while closing")
        if self.fault == "hang while closing":
            time.sleep(3600)

    def __setstate__(self, state):  # unpickled: in a worker, as it starts
        self.__dict__.update(state)
        if self.fault == "hang while starting":
            time.sleep(3600)
        if self.fault == "raise while starting":
            raise ValueError("boom while starting")

    def __repr__(self):
        return f"CountingSampler(slot={self.slot})"
