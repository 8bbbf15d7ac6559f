"""The Task contract: what `_step` reports ends the episode, as do a terminal state and
`max_steps`."""

from gymnasium import spaces

from stagerl.tasks.base import Task
from stagerl.tasks.sensors import SensorSuite


class CutOffTask(Task):
    """An environment that cuts its episodes off after 3 steps, never terminating them."""

    action_space = spaces.Discrete(2)

    def _step(self, action: int) -> tuple[float, bool]:
        return 1.0, self.num_steps_taken + 1 >= 3

    def reached_terminal_state(self) -> bool:
        return False


def test_an_episode_the_environment_cut_off_is_done_though_not_terminal():
    task = CutOffTask(env=None, sensors=SensorSuite([]), max_steps=1000)
    done = [task.step(0).done for _ in range(3)]
    assert done == [False, False, True] and task.is_done() and not task.reached_terminal_state()
