"""Tasks, samplers and sensors. Nothing here imports torch: worker processes import it."""

from stagerl.tasks.base import RLStepResult, Task, TaskSampler
from stagerl.tasks.sensors import ExpertActionSensor, Sensor, SensorSuite

__all__ = ["ExpertActionSensor", "RLStepResult", "Sensor", "SensorSuite", "Task", "TaskSampler"]
