"""The ObjectNav expert: along the shortest path on the navigation map to the nearest object of
the target type (turning towards a point 1 m down the path, then walking straight), then turn
to face the object, look down until it is in view, and End."""

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
LOOK_AHEAD = 1.0  # m down the shortest path: the point the expert walks towards
DETOUR_STEPS = 4  # steps the expert keeps to its detour rule once an object is in the way


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
    """Turn towards the farthest point of the next LOOK_AHEAD m of the shortest path that the
    agent can walk to in a straight line, until it is within FACING_DEGREES of ahead; then
    move. Turns come in runs and walks are straight, which a policy can learn from pixels.
    Where no point of the path is in a straight line (skirting an object), take the heading
    that gets closest to the goal (`_detour`)."""
    agent = world.agent
    if task.num_steps_taken < getattr(task, "detour_until", -1):
        return _detour(task, world)
    x, _, z = agent.pos
    points = task.map.path(float(x), float(z), LOOK_AHEAD)
    clear = [p for p in points if _clear(world, agent, np.array([p[0], 0.0, p[1]]))]
    if clear:
        angle = _bearing(agent, np.array([clear[-1][0], 0.0, clear[-1][1]]))
        if abs(angle) > FACING_DEGREES:
            return _turn_towards(angle)
        if not world.intersect(agent, agent.pos + agent.dir_vec * MOVE_STEP, agent.radius):
            return MOVE_AHEAD
    # skirting an object: detour for a few steps (by the step count, so asking twice in a
    # step gives one answer), or the two rules would undo each other's turns
    task.detour_until = task.num_steps_taken + DETOUR_STEPS
    return _detour(task, world)


def _detour(task: Any, world: Any) -> int:
    """MoveAhead if it is free and gets closer to the goal, else turn towards the free
    heading (in ROTATE_DEGREES steps) whose next step gets closest."""
    agent = world.agent
    here = task.map.distance_from(float(agent.pos[0]), float(agent.pos[2]))
    values = {}
    for turns in range(-5, 7):
        heading = agent.dir + math.radians(turns * ROTATE_DEGREES)
        position = agent.pos + np.array([math.cos(heading), 0.0, -math.sin(heading)]) * MOVE_STEP
        if not world.intersect(agent, position, agent.radius):
            values[turns] = task.map.distance_from(float(position[0]), float(position[2]))
    if 0 in values and values[0] < here - 0.05:
        return MOVE_AHEAD
    if not values:
        return ROTATE_LEFT
    best = min(values, key=lambda turns: (values[turns], abs(turns)))
    return _turn_towards(best if best else 1)


def _clear(world: Any, agent: Any, point: np.ndarray) -> bool:
    """The agent could walk from where it is to `point` in a straight line."""
    distance = float(np.linalg.norm(point - agent.pos))
    for fraction in np.linspace(0.0, 1.0, max(2, int(distance / 0.1)) + 1)[1:]:
        if world.intersect(agent, agent.pos + (point - agent.pos) * fraction, agent.radius):
            return False
    return True
