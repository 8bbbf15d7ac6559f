"""The ObjectNav expert: while no object of the target type is in view, turn left on the spot
(one full turn at most); else along the shortest path to the nearest one (straight at it
where the line is clear, else on the navigation map, turning towards a point 1 m down the
path, then walking straight), turn to face it, look down until it is in view, and End.

The search is there for the student, not for the expert: a policy that sees only pixels cannot
learn which way an unseen object lies (the map tells only the expert), but it can learn to look
around until it sees one and then to walk to it."""

import math
from typing import Any

import numpy as np

from stagerl.plugins.miniworld.scenes import AGENT_RADIUS, NavigationMap
from stagerl.plugins.miniworld.tasks import (
    END,
    GOAL_REACH,
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
SEARCH_TURNS = 360 // ROTATE_DEGREES  # the longest search: one full turn
BASE_HEIGHT = 0.2  # m of an object's base that miniworld's occlusion query tests
APPROACH_DISTANCE = 0.6  # m from a target's surface that a direct approach walks to
MEMORY_STEPS = 4  # steps the expert keeps to its path after the last target went out of view
STALL_STEPS = 180 // ROTATE_DEGREES + 2  # walking steps in one place: more than any turn run
# m the expert's map keeps clear beyond the agent's radius: 0.25 m steps at 30 degree headings
# cannot thread a gap only as wide as the agent (it stood wedged at one for whole episodes)
EXPERT_MARGIN = 0.1


def _bearing(agent: Any, target: np.ndarray) -> float:
    """Degrees to turn left (negative: right) to face a floor point."""
    dx, dz = target[0] - agent.pos[0], target[2] - agent.pos[2]
    angle = math.degrees(math.atan2(-dz, dx) - agent.dir)
    return (angle + 180) % 360 - 180


def _step_blocked(world: Any) -> bool:
    """Whether a MoveAhead from here would run into a wall or an object."""
    agent = world.agent
    return bool(world.intersect(agent, agent.pos + agent.dir_vec * MOVE_STEP, agent.radius))


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
    if agent.cam_pitch != 0:  # walk (and search) looking ahead
        return LOOK_UP if agent.cam_pitch < 0 else LOOK_DOWN
    if _searching(task, world, targets):
        return ROTATE_LEFT
    return _step_on_the_map(task, world)


def _searching(task: Any, world: Any, targets: list) -> bool:
    """Whether to look around: no target has been in view for more than MEMORY_STEPS steps
    (or none yet), and the search that began then has made less than a full turn; after a
    full turn in vain the expert walks its path until a target comes into view. The answer
    depends only on the state, so asking twice in a step gives one answer."""
    step = task.num_steps_taken
    if _in_view(world, targets):
        task.target_seen_at = step
    seen = getattr(task, "target_seen_at", None)
    began = 0 if seen is None else seen + MEMORY_STEPS + 1
    return began <= step < began + SEARCH_TURNS


def _in_view(world: Any, targets: list) -> bool:
    """Some target is in the agent's view: found by the occlusion query (which tests an
    object's base), or within the horizontal field of view and so near that its base is
    below the view."""
    agent, frame = world.agent, world.obs_fb
    half_fov = math.radians(agent.cam_fov_y / 2)
    half_width = math.degrees(math.atan(math.tan(half_fov) * frame.width / frame.height))
    lowest_ray = min(half_fov - math.radians(agent.cam_pitch), math.radians(89))
    below_view = (agent.cam_height - BASE_HEIGHT) / math.tan(lowest_ray)  # m from the camera
    for target in targets:
        near = np.hypot(*(target.pos - agent.pos)[[0, 2]]) < below_view
        if near and abs(_bearing(agent, target.pos)) < half_width:
            return True
    return not world.get_visible_ents().isdisjoint(targets)


def _step_on_the_map(task: Any, world: Any) -> int:
    """Turn towards the farthest point of the next LOOK_AHEAD m of the shortest path that the
    agent can walk to in a straight line, until it is within FACING_DEGREES of ahead; then
    move. Turns come in runs and walks are straight, which a policy can learn from pixels.
    Where no point of the path is in a straight line (skirting an object), take the heading
    that gets closest to the goal (`_detour`)."""
    agent = world.agent
    step = task.num_steps_taken
    if _stalled(task, agent) and step >= getattr(task, "detour_until", -1):
        task.detour_until = step + DETOUR_STEPS  # the rules below turned to and fro
    if step < getattr(task, "detour_until", -1):
        return _detour(task, world)
    direct = _direct_step(task, world)
    if direct is not None:
        return direct
    x, _, z = agent.pos
    points = _expert_map(task, agent).path(float(x), float(z), ahead=LOOK_AHEAD)
    # the farthest point first: usually it is clear, and the nearer ones need not be checked
    farthest = next(
        (p for p in reversed(points) if _clear(world, agent, np.array([p[0], 0.0, p[1]]))), None
    )
    if farthest is not None:
        angle = _bearing(agent, np.array([farthest[0], 0.0, farthest[1]]))
        if abs(angle) > FACING_DEGREES:
            return _turn_towards(angle)
        if not _step_blocked(world):
            return MOVE_AHEAD
    # skirting an object: detour for a few steps (by the step count, so asking twice in a
    # step gives one answer), or the two rules would undo each other's turns
    task.detour_until = task.num_steps_taken + DETOUR_STEPS
    return _detour(task, world)


def _stalled(task: Any, agent: Any) -> bool:
    """Whether the walking rules have kept the agent in one place for STALL_STEPS steps in a
    row: the direct approach and the map can turn it each way in turn (a step towards the
    target blocked, the path's point to the other side). The same answer asked twice in a
    step."""
    step = task.num_steps_taken
    here = (round(float(agent.pos[0]), 6), round(float(agent.pos[2]), 6))
    last = getattr(task, "walking", None)  # (step of the last walking step, where, since)
    consecutive = last is not None and last[1] == here and step - 1 <= last[0] <= step
    task.walking = (step, here, last[2] if consecutive else step)
    return step - task.walking[2] >= STALL_STEPS


def _direct_step(task: Any, world: Any) -> int | None:
    """Where the way to the nearest target is a clear straight line (the shortest path, which
    the grid's path only approximates), head for the target itself: turn until it is within
    FACING_DEGREES of ahead, then walk. The action then follows from where the target lies
    in the frame. None where the line or the step is blocked."""
    agent = world.agent
    target = min(world.objects_of(task.target_type), key=task.surface_distance)
    offset = (target.pos - agent.pos) * np.array([1.0, 0.0, 1.0])
    centre_distance = float(np.linalg.norm(offset))
    stop = target.pos - offset / centre_distance * (target.radius + APPROACH_DISTANCE)
    if not _clear(world, agent, stop):
        return None
    angle = _bearing(agent, target.pos)
    if abs(angle) > FACING_DEGREES:
        return _turn_towards(angle)
    # the heading may be up to FACING_DEGREES off the clear line: a blocked step would be
    # asked for again and again
    if _step_blocked(world):
        return None
    return MOVE_AHEAD


def _detour(task: Any, world: Any) -> int:
    """MoveAhead if it is free and gets closer to the goal, else turn towards the free
    heading (in ROTATE_DEGREES steps) whose next step gets closest."""
    agent = world.agent
    field = _expert_map(task, agent)
    here = field.distance_from(float(agent.pos[0]), float(agent.pos[2]))
    values = {}
    for turns in range(-5, 7):
        heading = agent.dir + math.radians(turns * ROTATE_DEGREES)
        position = agent.pos + np.array([math.cos(heading), 0.0, -math.sin(heading)]) * MOVE_STEP
        if not world.intersect(agent, position, agent.radius):
            values[turns] = field.distance_from(float(position[0]), float(position[2]))
    if 0 in values and values[0] < here - 0.05:
        return MOVE_AHEAD
    if not values:
        return ROTATE_LEFT
    best = min(values, key=lambda turns: (values[turns], abs(turns)))
    return _turn_towards(best if best else 1)


def _expert_map(task: Any, agent: Any) -> NavigationMap:
    """The navigation map with EXPERT_MARGIN more clearance, or the task's own where that
    leaves no way to the goal from around the agent."""
    if getattr(task, "expert_map", None) is None:
        clearance = AGENT_RADIUS + EXPERT_MARGIN
        task.expert_map = NavigationMap(
            task.scene, task.target_type, reach=GOAL_REACH, clearance=clearance
        )
    wide = task.expert_map
    i, j = wide.cell(float(agent.pos[0]), float(agent.pos[2]))
    around = wide.distance[max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2]
    return wide if np.isfinite(around).any() else task.map


def _clear(world: Any, agent: Any, point: np.ndarray) -> bool:
    """The agent could walk from where it is to `point` in a straight line."""
    distance = float(np.linalg.norm(point - agent.pos))
    for fraction in np.linspace(0.0, 1.0, max(2, int(distance / 0.1)) + 1)[1:]:
        if world.intersect(agent, agent.pos + (point - agent.pos) * fraction, agent.radius):
            return False
    return True
