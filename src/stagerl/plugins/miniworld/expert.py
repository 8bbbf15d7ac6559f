"""The ObjectNav expert: the shortest path on the navigation map to the nearest object of the
target type, then turn to face it, look down until it is in view, and End."""

import math
from typing import Any

import numpy as np

from stagerl.plugins.miniworld.tasks import (
    END,
    LOOK_DOWN,
    LOOK_UP,
    MOVE_AHEAD,
    MOVE_STEP,
    PITCH_RANGE,
    ROTATE_DEGREES,
    ROTATE_LEFT,
    ROTATE_RIGHT,
    SUCCESS_DISTANCE,
)

FACING_DEGREES = 20  # close enough to facing an object to look down at it
PREFER_STRAIGHT = 0.05  # m: keep going straight unless a turn gains more than this


def _bearing(agent: Any, target: np.ndarray) -> float:
    """Degrees to turn left (negative: right) to face a floor point."""
    dx, dz = target[0] - agent.pos[0], target[2] - agent.pos[2]
    angle = math.degrees(math.atan2(-dz, dx) - agent.dir)
    return (angle + 180) % 360 - 180


def _turn_towards(angle: float) -> int:
    return ROTATE_LEFT if angle > 0 else ROTATE_RIGHT


def expert_action(task: Any) -> int:
    """The expert's action for the task's current state."""
    world = task.world()
    agent = world.agent
    targets = world.objects_of(task.target_type)
    nearest = min(targets, key=task.surface_distance)
    if task.surface_distance(nearest) <= SUCCESS_DISTANCE - 0.1:
        if task.target_visible():
            return END
        angle = _bearing(agent, nearest.pos)
        if abs(angle) > FACING_DEGREES:
            return _turn_towards(angle)
        if agent.cam_pitch > PITCH_RANGE[0]:
            return LOOK_DOWN
        return MOVE_AHEAD  # looked fully down and still hidden: go closer
    if agent.cam_pitch < 0:
        return LOOK_UP  # walk looking ahead
    return _step_on_the_map(task, world)


def _step_on_the_map(task: Any, world: Any) -> int:
    """MoveAhead if that makes the most progress down the distance field (within a margin),
    else turn towards the heading that would."""
    agent = world.agent
    values = {}
    for turns in range(-5, 7):  # every heading in ROTATE_DEGREES steps
        heading = agent.dir + math.radians(turns * ROTATE_DEGREES)
        step = np.array([math.cos(heading), 0.0, -math.sin(heading)]) * MOVE_STEP
        position = agent.pos + step
        if world.intersect(agent, position, agent.radius):
            continue
        values[turns] = task.map.distance_from(float(position[0]), float(position[2]))
    if not values:
        return ROTATE_LEFT
    best = min(values, key=lambda turns: (values[turns], abs(turns)))
    if 0 in values and values[0] <= values[best] + PREFER_STRAIGHT:
        return MOVE_AHEAD
    return _turn_towards(best)
