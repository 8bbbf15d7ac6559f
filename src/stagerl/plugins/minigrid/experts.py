"""Optimal-action experts for MiniGrid / BabyAI environments (torch-free).

Experts label the *current* state of an unwrapped minigrid env with the action an optimal
policy would take. They are used for imitation / teacher forcing, where the agent frequently
executes a different action than the expert suggested, so every expert must stay correct when
the executed action deviates from its suggestion.

Protocol per episode::

    env.reset(seed=...)
    expert.reset(env)
    while not done:
        action, valid = expert.expert_action()   # label for the current state
        env.step(executed)                       # executed may differ from `action`
        expert.record_action(executed)

This module must not import torch: it runs inside torch-free worker processes.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Protocol, runtime_checkable

from minigrid.core.actions import Actions
from minigrid.core.constants import DIR_TO_VEC
from minigrid.core.world_object import Goal, Lava
from minigrid.utils.baby_ai_bot import BabyAIBot

__all__ = ["BabyAIExpert", "Expert", "ShortestPathExpert", "make_expert"]

# Returned when no meaningful label exists; callers must mask such steps out.
INVALID: tuple[int, bool] = (0, False)


@runtime_checkable
class Expert(Protocol):
    """Stateful oracle giving the optimal action for the env's current state."""

    def reset(self, env: Any) -> None:
        """Bind to `env` right after `env.reset(seed=...)`; drops all per-episode state."""
        ...

    def expert_action(self) -> tuple[int, bool]:
        """Return `(action, valid)`; when `valid` is False the action is 0 and must be ignored."""
        ...

    def record_action(self, action: int) -> None:
        """Inform the expert of the action actually executed by `env.step` (may differ)."""
        ...


class BabyAIExpert:
    """Expert for BabyAI levels, backed by minigrid's `BabyAIBot`.

    The bot keeps an internal plan (a subgoal stack) plus memory of what it has seen, and
    `BabyAIBot.replan(action_taken)` must be called exactly once per env state: the call
    first repairs the plan using the action executed since the previous call (compared with
    the state remembered then), and then remembers the current state for the next call.
    Hence we replan *eagerly* in `reset` (first call, `action_taken=None`) and in
    `record_action` (with the executed action), and `expert_action` only returns the cached
    suggestion: it is cheap, idempotent, and the bot never misses a step even if no label is
    requested for some state. If the bot raises, a fresh bot replans from the current state
    (losing only its exploration memory); if that fails too the state is labelled invalid and
    a new bot is tried again after the next step.
    """

    def __init__(self) -> None:
        self._env: Any = None
        self._bot: BabyAIBot | None = None
        self._cached: tuple[int, bool] = INVALID

    def reset(self, env: Any) -> None:
        """Create a fresh bot for the new episode and plan for the initial state."""
        self._env = env.unwrapped
        self._bot = None
        self._fresh_plan()

    def expert_action(self) -> tuple[int, bool]:
        """Return the suggestion computed for the current state (cached, no replanning)."""
        if self._env is None:
            raise RuntimeError("BabyAIExpert.reset(env) must be called before expert_action()")
        return self._cached

    def record_action(self, action: int) -> None:
        """Replan for the new state, telling the bot which action was really executed."""
        if self._env is None:
            raise RuntimeError("BabyAIExpert.reset(env) must be called before record_action()")
        if self._bot is None:  # bot failed earlier: start over from the current state
            self._fresh_plan()
            return
        try:
            self._cached = self._to_label(self._bot.replan(int(action)))
        except Exception:  # e.g. DisappearedBoxError after a random toggle on a box
            self._fresh_plan()  # a new bot plans from the current state without that history

    def _fresh_plan(self) -> None:
        """(Re)create the bot; its first `replan` must get `None` (no previous action)."""
        try:
            self._bot = BabyAIBot(self._env)
            self._cached = self._to_label(self._bot.replan(None))
        except Exception:  # assertion / index errors on odd states
            self._bot = None
            self._cached = INVALID

    @staticmethod
    def _to_label(action: Any) -> tuple[int, bool]:
        if action is None:
            return INVALID
        return int(action), True


class ShortestPathExpert:
    """Expert for goal-reaching MiniGrid tasks (Empty, FourRooms, *Crossing, ...).

    Runs a BFS over (x, y, direction) with left / right / forward on the full grid, so the
    label depends only on the current state (executed actions are irrelevant). Cells that
    cannot be overlapped (walls, closed doors, objects) are blocked and lava is never entered.
    The result is cached until the next `record_action`, because the state only changes then.
    """

    _MOVES = (Actions.forward, Actions.left, Actions.right)

    def __init__(self) -> None:
        self._env: Any = None
        self._cached: tuple[int, bool] | None = None

    def reset(self, env: Any) -> None:
        """Bind to the freshly reset env."""
        self._env = env.unwrapped
        self._cached = None

    def expert_action(self) -> tuple[int, bool]:
        """First action of a shortest path to the Goal, or `(0, False)` if unreachable."""
        if self._env is None:
            raise RuntimeError("ShortestPathExpert.reset(env) must be called first")
        if self._cached is None:
            self._cached = self._plan()
        return self._cached

    def record_action(self, action: int) -> None:
        """Invalidate the cache; the plan is recomputed from the new state on demand."""
        del action  # the BFS is memoryless: only the resulting state matters
        self._cached = None

    def _plan(self) -> tuple[int, bool]:
        env = self._env
        free, goals = _passable_cells(env.grid)
        start = (int(env.agent_pos[0]), int(env.agent_pos[1]), int(env.agent_dir))
        if (start[0], start[1]) in goals:
            return INVALID  # already on the goal: episode is over, nothing to label
        first: dict[tuple[int, int, int], int] = {start: -1}
        queue = deque([start])
        while queue:
            state = queue.popleft()
            for move in self._MOVES:
                nxt = _transition(state, move, free)
                if nxt is None or nxt in first:
                    continue
                first[nxt] = int(move) if first[state] < 0 else first[state]
                if (nxt[0], nxt[1]) in goals:
                    return first[nxt], True
                queue.append(nxt)
        return INVALID


def _passable_cells(grid: Any) -> tuple[set[tuple[int, int]], set[tuple[int, int]]]:
    """Cells the agent may safely enter (never lava), and the Goal cells among them."""
    free: set[tuple[int, int]] = set()
    goals: set[tuple[int, int]] = set()
    for y in range(grid.height):
        for x in range(grid.width):
            cell = grid.get(x, y)
            if cell is None:
                free.add((x, y))
            elif isinstance(cell, Lava) or not cell.can_overlap():
                continue
            else:
                free.add((x, y))
                if isinstance(cell, Goal):
                    goals.add((x, y))
    return free, goals


def _transition(
    state: tuple[int, int, int], move: Actions, free: set[tuple[int, int]]
) -> tuple[int, int, int] | None:
    """Deterministic minigrid dynamics for left/right/forward; None if forward is blocked."""
    x, y, d = state
    if move == Actions.left:
        return x, y, (d - 1) % 4
    if move == Actions.right:
        return x, y, (d + 1) % 4
    dx, dy = DIR_TO_VEC[d]
    nx, ny = x + int(dx), y + int(dy)
    return (nx, ny, d) if (nx, ny) in free else None


def _is_babyai_level(env: Any) -> bool:
    """BabyAI levels carry a verifiable instruction tree (`instrs`) the bot can parse."""
    from minigrid.envs.babyai.core.roomgrid_level import RoomGridLevel

    return isinstance(env, RoomGridLevel) or hasattr(env, "instrs")


def make_expert(env: Any) -> Expert | None:
    """Pick the expert suited to `env` (inspected after `env.reset`), or None if unsupported.

    BabyAI levels get `BabyAIExpert`; plain MiniGrid tasks whose grid contains a Goal get
    `ShortestPathExpert`. The returned expert is not yet bound: call `reset(env)` on it.
    """
    env = env.unwrapped
    if _is_babyai_level(env):
        return BabyAIExpert()
    grid = getattr(env, "grid", None)
    if grid is not None and any(isinstance(cell, Goal) for cell in grid.grid):
        return ShortestPathExpert()
    return None
