"""Stable-Baselines3's PPO on the settings an experiment file states in RL Zoo's names (a
module-level `RL_ZOO` dict, as benchmarks/doorkey_mlp_ppo.py), for benchmarks/learning.py's
`--sb3`: the same seeds, test episodes and summary as stagerl's runs.

SB3 sees what stagerl's MLP sees: the environment's 7x7 view of raw numbers (`ImgObsWrapper`,
no division by 255), through its `MlpPolicy` (64x64 tanh, separate policy and value networks).
Training success is counted per rollout (stagerl's `metric_accumulate_interval` there); a test
episode runs the trained policy, sampling its actions, on seeds apart from training's.
"""

import importlib.util
import statistics
import time
from pathlib import Path
from typing import Any

TEST_SEEDS = 10**7  # test episode i of seed s resets with seed TEST_SEEDS + 1000 s + i


def settings_of(config: Path) -> tuple[str, dict[str, Any]]:
    """The environment id and the `RL_ZOO` dict of an experiment file."""
    spec = importlib.util.spec_from_file_location(config.stem, config)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "RL_ZOO"):
        raise SystemExit(f"{config} states no RL_ZOO settings; --sb3 needs them")
    (experiment,) = [
        value for value in vars(module).values()
        if isinstance(value, type) and value.__module__ == module.__name__
    ]  # fmt: skip
    return experiment.ENV_ID, module.RL_ZOO


def _make_env(env_id: str):
    import gymnasium as gym
    import minigrid  # noqa: F401  (registers the environments)
    from minigrid.wrappers import ImgObsWrapper
    from stable_baselines3.common.monitor import Monitor

    return Monitor(ImgObsWrapper(gym.make(env_id)))


def _success_callback(curve: dict[str, list]):
    from stable_baselines3.common.callbacks import BaseCallback

    class RolloutSuccess(BaseCallback):
        """Success (an episode ended with a reward) of the episodes each rollout finished."""

        def _on_rollout_start(self) -> None:
            self.finished: list[float] = []

        def _on_step(self) -> bool:
            for info in self.locals["infos"]:
                if "episode" in info:  # MiniGrid rewards only reaching the goal
                    self.finished.append(float(info["episode"]["r"] > 0))
            return True

        def _on_rollout_end(self) -> None:
            if self.finished:
                curve["steps"].append(self.num_timesteps)
                curve["success"].append(statistics.mean(self.finished))

    return RolloutSuccess()


def test_success(model: Any, env_id: str, seed: int, episodes: int) -> float:
    """The share of `episodes` test episodes the policy finishes with a reward."""
    env, successes = _make_env(env_id), []
    for episode in range(episodes):
        observation, _ = env.reset(seed=TEST_SEEDS + 1000 * seed + episode)
        done, reward = False, 0.0
        while not done:
            action, _ = model.predict(observation, deterministic=False)
            observation, reward, terminated, truncated, _ = env.step(int(action))
            done = terminated or truncated
        successes.append(float(terminated and reward > 0))
    return statistics.mean(successes)


def run_sb3_seed(config: Path, seed: int, episodes: int, threshold: float) -> dict[str, Any]:
    """Train and test SB3's PPO for one seed; a row as benchmarks/learning.py's `run_seed`."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    torch.set_num_threads(1)  # its update of a 64x64 MLP gains nothing from a second thread
    env_id, zoo = settings_of(config)
    envs = DummyVecEnv([lambda: _make_env(env_id)] * zoo["n_envs"])
    envs.seed(seed)
    options = {k: v for k, v in zoo.items() if k not in ("n_envs", "n_timesteps")}
    model = PPO(
        "MlpPolicy", envs, seed=seed, verbose=0, policy_kwargs=dict(normalize_images=False),
        **options,
    )  # fmt: skip
    curve: dict[str, list] = {"steps": [], "success": []}
    start = time.perf_counter()
    model.learn(zoo["n_timesteps"], callback=_success_callback(curve))
    wall = time.perf_counter() - start
    reached = next(
        (s for s, v in zip(curve["steps"], curve["success"], strict=True) if v >= threshold), None
    )
    return {
        "seed": seed,
        "test_success": test_success(model, env_id, seed, episodes),
        "first_step_at_threshold": reached,
        "wall_s": wall,
        "run_dir": None,
        "curve": curve,
    }
