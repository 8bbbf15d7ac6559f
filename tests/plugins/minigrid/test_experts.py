"""Tests for the torch-free MiniGrid / BabyAI experts."""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path
from typing import Any

import gymnasium as gym
import minigrid  # noqa: F401  (registers the MiniGrid / BabyAI env ids)
import numpy as np
import pytest
from minigrid.core.actions import Actions
from minigrid.core.world_object import Lava

from stagerl.plugins.minigrid import experts
from stagerl.plugins.minigrid.experts import (
    BabyAIExpert,
    Expert,
    ShortestPathExpert,
    make_expert,
)

RANDOM_P = 0.3


def _make(env_id: str) -> Any:
    return gym.make(env_id, disable_env_checker=True).unwrapped


def _episode(env: Any, expert: Expert, seed: int, rng: np.random.Generator | None) -> dict:
    """Run one episode; with `rng`, RANDOM_P of executed actions are uniformly random."""
    env.reset(seed=seed)
    expert.reset(env)
    stats = {"success": False, "expert_steps_into_lava": 0, "invalid": 0}
    while True:
        action, valid = expert.expert_action()
        if not valid:
            assert action == 0
            stats["invalid"] += 1
        randomize = not valid or (rng is not None and rng.random() < RANDOM_P)
        executed = int(rng.integers(env.action_space.n)) if randomize and rng else action
        _, reward, terminated, truncated, _ = env.step(executed)
        if not randomize and isinstance(env.grid.get(*env.agent_pos), Lava):
            stats["expert_steps_into_lava"] += 1
        expert.record_action(executed)
        if terminated or truncated:
            stats["success"] = bool(terminated and reward > 0)
            return stats


def _success_rate(env_id: str, seeds: range, random_actions: bool = False) -> float:
    env = _make(env_id)
    rng = np.random.default_rng(1234) if random_actions else None
    wins = 0
    for seed in seeds:
        env.reset(seed=seed)
        expert = make_expert(env)
        assert expert is not None
        wins += _episode(env, expert, seed, rng)["success"]
    return wins / len(seeds)


# ---------------------------------------------------------------- success rates


def test_babyai_expert_solves_gotolocal() -> None:
    # Measured: 200/200.
    assert _success_rate("BabyAI-GoToLocal-v0", range(200)) >= 0.99


def test_babyai_expert_tolerates_random_executed_actions() -> None:
    # The bot is told the executed action, so it repairs its plan. Measured: 200/200.
    assert _success_rate("BabyAI-GoToLocal-v0", range(200), random_actions=True) >= 0.95


def test_shortest_path_expert_solves_lava_crossing() -> None:
    # Measured: 200/200.
    assert _success_rate("MiniGrid-LavaCrossingS9N1-v0", range(200)) >= 0.99


@pytest.mark.parametrize(
    "env_id",
    ["MiniGrid-SimpleCrossingS9N1-v0", "MiniGrid-FourRooms-v0", "MiniGrid-Empty-Random-5x5-v0"],
)
def test_shortest_path_expert_solves_goal_tasks(env_id: str) -> None:
    assert _success_rate(env_id, range(10)) == 1.0


def test_lava_expert_never_steps_into_lava_under_random_actions() -> None:
    env = _make("MiniGrid-LavaCrossingS9N1-v0")
    rng = np.random.default_rng(7)
    for seed in range(100):
        stats = _episode(env, ShortestPathExpert(), seed, rng)
        assert stats["expert_steps_into_lava"] == 0, seed


# ---------------------------------------------------------------- optimality


def _true_distance(env: Any) -> int:
    """BFS through the real env dynamics (agent teleported, then stepped) to the goal."""
    start = (*map(int, env.agent_pos), int(env.agent_dir))
    saved_steps = env.step_count
    dist, queue = {start: 0}, deque([start])
    try:
        while queue:
            state = queue.popleft()
            for action in (Actions.left, Actions.right, Actions.forward):
                env.agent_pos, env.agent_dir = state[:2], state[2]
                env.step_count = 0  # keep the time-discounted reward positive
                _, reward, terminated, _, _ = env.step(action)
                if terminated and reward > 0:
                    return dist[state] + 1
                nxt = (*map(int, env.agent_pos), int(env.agent_dir))
                if not terminated and nxt not in dist:
                    dist[nxt] = dist[state] + 1
                    queue.append(nxt)
    finally:
        env.agent_pos, env.agent_dir, env.step_count = start[:2], start[2], saved_steps
    raise AssertionError("goal unreachable")


@pytest.mark.parametrize("env_id", ["MiniGrid-LavaCrossingS9N1-v0", "MiniGrid-FourRooms-v0"])
def test_shortest_path_expert_is_optimal(env_id: str) -> None:
    env = _make(env_id)
    for seed in range(3):
        env.reset(seed=seed)
        optimum = _true_distance(env)
        expert = ShortestPathExpert()
        expert.reset(env)
        steps, terminated, reward = 0, False, 0.0
        while not terminated and steps <= optimum:
            action, valid = expert.expert_action()
            assert valid
            _, reward, terminated, _, _ = env.step(action)
            expert.record_action(action)
            steps += 1
        assert terminated and reward > 0 and steps == optimum


# ---------------------------------------------------------------- make_expert


@pytest.mark.parametrize(
    ("env_id", "cls"),
    [
        ("BabyAI-GoToLocal-v0", BabyAIExpert),
        ("BabyAI-PickupLoc-v0", BabyAIExpert),
        ("MiniGrid-LavaCrossingS9N1-v0", ShortestPathExpert),
        ("MiniGrid-Empty-Random-5x5-v0", ShortestPathExpert),
        ("MiniGrid-FourRooms-v0", ShortestPathExpert),
        # Dynamic-Obstacles does contain a Goal (obstacles are treated as blocked cells).
        ("MiniGrid-Dynamic-Obstacles-5x5-v0", ShortestPathExpert),
        ("MiniGrid-Fetch-5x5-N2-v0", None),  # pick-up mission, no Goal, no BabyAI instrs
        ("MiniGrid-GoToDoor-5x5-v0", None),
    ],
)
def test_make_expert_picks_class(env_id: str, cls: type | None) -> None:
    env = _make(env_id)
    env.reset(seed=0)
    expert = make_expert(env)
    if cls is None:
        assert expert is None
    else:
        assert type(expert) is cls
        assert isinstance(expert, Expert)


# ---------------------------------------------------------------- protocol details


def test_unreachable_goal_is_invalid_with_action_zero() -> None:
    # DoorKey: the goal is behind a locked door, which the BFS treats as a wall.
    env = _make("MiniGrid-DoorKey-5x5-v0")
    env.reset(seed=0)
    expert = make_expert(env)
    assert isinstance(expert, ShortestPathExpert)
    expert.reset(env)
    assert expert.expert_action() == (0, False)


class _SpyBot(experts.BabyAIBot):
    calls: list[Any] = []

    def replan(self, action_taken: Any = None) -> Any:
        _SpyBot.calls.append(action_taken)
        return super().replan(action_taken)


def test_babyai_expert_replans_once_per_state_with_executed_action(monkeypatch) -> None:
    monkeypatch.setattr(experts, "BabyAIBot", _SpyBot)
    _SpyBot.calls = []
    env = _make("BabyAI-GoToLocal-v0")
    env.reset(seed=3)
    expert = BabyAIExpert()
    expert.reset(env)
    executed = []
    for action in (Actions.left, Actions.left, Actions.forward):
        assert expert.expert_action() == expert.expert_action()  # cached, no extra replan
        env.step(action)
        expert.record_action(int(action))
        executed.append(int(action))
    assert _SpyBot.calls == [None, *executed]


def test_babyai_expert_survives_bot_errors(monkeypatch) -> None:
    class _BrokenBot:
        def __init__(self, env: Any) -> None:
            raise RuntimeError("boom")

    env = _make("BabyAI-GoToLocal-v0")
    env.reset(seed=0)
    expert = BabyAIExpert()
    monkeypatch.setattr(experts, "BabyAIBot", _BrokenBot)
    expert.reset(env)
    assert expert.expert_action() == (0, False)
    env.step(Actions.left)
    expert.record_action(int(Actions.left))
    assert expert.expert_action() == (0, False)
    monkeypatch.undo()  # the bot works again: the expert recovers on the next step
    env.step(Actions.right)
    expert.record_action(int(Actions.right))
    action, valid = expert.expert_action()
    assert valid and action in {int(a) for a in Actions}


def test_experts_module_does_not_import_torch() -> None:
    # It runs in torch-free worker processes; check its own imports statically.
    tree = ast.parse(Path(experts.__file__).read_text())
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not any(name.split(".")[0] == "torch" for name in imported)
