"""`stagerl record-dataset`: the plugin's expert plays MiniGrid/BabyAI episodes in worker
processes and the episodes become a Minari dataset.

Per step the dataset holds the egocentric grid (`image`), the agent's `direction`, the mission
as token ids (`mission`, the plugin's vocabulary) and the expert's action, reward and
`terminated`/`truncated`. Only episodes the expert completes are kept (a demonstration that
fails teaches the failure); how many were dropped is in the metadata. The workers import
numpy and the environments only.
"""

import contextlib
import io
import multiprocessing as mp
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces

from stagerl.errors import ConfigError
from stagerl.offpolicy.dataset import DatasetError, write_dataset
from stagerl.plugins.minigrid.experts import make_expert
from stagerl.plugins.minigrid.sensors import VOCABULARY, mission_words, tokenize_mission
from stagerl.plugins.minigrid.tasks import SEED_RANGES, make_minigrid_env

MISSION_TOKENS = 32  # stored mission length; BabyAI's longest missions have about 25 words
EPISODES_PER_CHUNK = 50  # one worker job; also the unit of writing to disk


@dataclass
class PlayedChunk:
    """One job's episodes in seed order: a Minari episode buffer for each the expert finished,
    None for each it dropped."""

    outcomes: list[Any | None]

    def first(self, count: int) -> tuple[list[Any], int]:
        """The first `count` kept episodes (or all), and how many were dropped before the last
        of them (all of the chunk's drops when it is used whole)."""
        kept, dropped = [], 0
        for outcome in self.outcomes:
            if len(kept) == count:
                break
            if outcome is None:
                dropped += 1
            else:
                kept.append(outcome)
        return kept, dropped


def _mission_words(episode: Any) -> int:
    """The number of words of a recorded episode's mission."""
    return int((episode.observations["mission"][0] != 0).sum())


def observation_space(agent_view_size: int) -> spaces.Dict:
    """The recorded observation space (minigrid's own `MissionSpace` does not serialise)."""
    return spaces.Dict(
        {
            "image": spaces.Box(0, 255, (agent_view_size, agent_view_size, 3), np.uint8),
            "direction": spaces.Discrete(4),
            "mission": spaces.Box(0, len(VOCABULARY) - 1, (MISSION_TOKENS,), np.uint8),
        }
    )


def mission_tokens(mission: str, env_id: str) -> np.ndarray:
    """The mission's token ids as the mission sensor reads them (a word outside the vocabulary
    as `<unk>`, as a few MiniGrid missions have: "find the opening ..."); an error for a
    mission of more words than recordings keep."""
    if len(mission_words(mission)) > MISSION_TOKENS:
        raise ConfigError(
            f"{env_id}: mission {mission!r} cannot be recorded: more than {MISSION_TOKENS} words"
        )
    return tokenize_mission(mission, MISSION_TOKENS)


def _expert_for(env: Any, env_id: str) -> Any:
    """The expert of a reset `env`; an error naming the env if it has none."""
    expert = make_expert(env)
    if expert is None:
        raise ConfigError(
            f"{env_id}: no expert to record (the BabyAI bot plays BabyAI levels, a shortest-"
            "path expert MiniGrid tasks with a goal square)"
        )
    return expert


def _play_episode(env: Any, env_id: str, seed: int) -> Any | None:
    """One expert episode as a Minari episode buffer, or None if the expert did not finish."""
    from minari.data_collector.episode_buffer import EpisodeBuffer

    with contextlib.redirect_stdout(io.StringIO()):  # BabyAI prints each rejected layout
        obs, _ = env.reset(seed=seed)
    expert = _expert_for(env, env_id)
    expert.reset(env)
    tokens = mission_tokens(obs["mission"], env_id)
    images, directions, actions, rewards, terminations, truncations = [], [], [], [], [], []
    done = False
    while not done:
        action, valid = expert.expert_action()
        if not valid:
            return None
        images.append(obs["image"])
        directions.append(obs["direction"])
        obs, reward, terminated, truncated, _ = env.step(action)
        expert.record_action(action)
        actions.append(action)
        rewards.append(float(reward))
        terminations.append(bool(terminated))
        truncations.append(bool(truncated))
        done = terminated or truncated
    if not (terminations[-1] and rewards[-1] > 0):
        return None
    images.append(obs["image"])
    directions.append(obs["direction"])
    return EpisodeBuffer(
        seed=seed,
        observations={
            "image": np.stack(images).astype(np.uint8),
            "direction": np.asarray(directions, dtype=np.int64),
            "mission": np.tile(tokens.astype(np.uint8), (len(images), 1)),
        },
        actions=np.asarray(actions, dtype=np.int64),
        rewards=np.asarray(rewards, dtype=np.float64),
        terminations=np.asarray(terminations),
        truncations=np.asarray(truncations),
    )


def chunk_seeds(seed: int, chunk: int) -> list[int]:
    """Episode seeds of one chunk: reproducible, from the training seed range (never test's)."""
    low, high = SEED_RANGES["train"]
    rng = np.random.default_rng([seed, chunk])
    return rng.integers(low, high, EPISODES_PER_CHUNK).tolist()


def play_chunk(env_id: str, *, seed: int, chunk: int) -> PlayedChunk:
    """A worker's job: play one chunk of episodes."""
    env = make_minigrid_env(env_id)
    outcomes = [
        _play_episode(env, env_id, episode_seed) for episode_seed in chunk_seeds(seed, chunk)
    ]
    env.close()
    return PlayedChunk(outcomes)


class _Recording:
    """Submits chunks to the workers and hands back their episodes in chunk order."""

    def __init__(self, pool: ProcessPoolExecutor, env_id: str, seed: int, workers: int) -> None:
        self.pool, self.env_id, self.seed = pool, env_id, seed
        self.in_flight = 2 * workers
        self.dropped = self.longest_mission = 0

    def chunks(self, episodes: int, progress: Any) -> Iterator[list[Any]]:
        """Exactly `episodes` kept episodes, chunk by chunk; `progress(n)` after each chunk."""
        pending: list[Future] = []
        next_chunk = kept = 0
        while kept < episodes:
            while len(pending) < self.in_flight:
                pending.append(
                    self.pool.submit(play_chunk, self.env_id, seed=self.seed, chunk=next_chunk)
                )
                next_chunk += 1
            played: PlayedChunk = pending.pop(0).result()
            take, dropped = played.first(episodes - kept)
            if kept == 0 and self.dropped + dropped >= 1000:
                raise ConfigError(f"{self.env_id}: the expert completed none of 1,000 episodes")
            kept += len(take)
            self.dropped += dropped
            self.longest_mission = max([self.longest_mission, *map(_mission_words, take)])
            progress(len(take))
            yield take
        for future in pending:
            future.cancel()


def record_dataset(
    *, env_id: str, episodes: int, out: Path, seed: int = 0, workers: int = 2
) -> Path:
    """Record `episodes` expert episodes of `env_id` as a Minari dataset in `out`."""
    from rich.progress import Progress

    if Path(out).exists():
        raise DatasetError(f"{out} already exists; choose another --out or delete it")
    env = make_minigrid_env(env_id)  # fails here, naming the id, if it is not registered
    view = env.unwrapped.agent_view_size
    with contextlib.redirect_stdout(io.StringIO()):
        env.reset(seed=seed)  # an expert is chosen by what the reset grid holds
    expert_name = type(_expert_for(env, env_id)).__name__
    context = mp.get_context("spawn")  # workers never inherit the parent's state
    with (
        ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool,
        Progress(transient=True) as bar,
    ):
        task = bar.add_task(f"recording {env_id}", total=episodes)
        recording = _Recording(pool, env_id, seed, workers)
        return write_dataset(
            out,
            recording.chunks(episodes, lambda count: bar.advance(task, count)),
            observation_space=observation_space(view),
            action_space=env.action_space,
            env_spec=env.spec,
            metadata=lambda: {
                "algorithm_name": f"stagerl record-dataset ({expert_name})",
                "stagerl": {
                    "version": stagerl_version(),
                    "env_id": env_id,
                    "seed": seed,
                    "agent_view_size": view,
                    "vocabulary": VOCABULARY,
                    "longest_mission": recording.longest_mission,
                    "dropped_episodes": recording.dropped,
                },
            },
        )


def stagerl_version() -> str:
    """The installed stagerl's version, for the dataset's metadata."""
    try:
        return version("stagerl")
    except Exception:  # running from a source tree that is not installed
        return "unknown"
