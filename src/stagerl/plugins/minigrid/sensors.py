"""MiniGrid sensors: the egocentric grid encoding and the mission as fixed-length tokens."""

import re
import warnings
from typing import Any

import numpy as np
from gymnasium import spaces

from stagerl.errors import require
from stagerl.tasks.sensors import Sensor

# Every word of the BabyAI grammar and of most MiniGrid missions; 0 pads, 1 is an unknown word
# (must, from, near, opening, matching, hallway: words of single-mission MiniGrid levels). A
# word added would change every mission model's embedding size, and old checkpoints with it.
VOCABULARY = [
    "<pad>",
    "<unk>",
    "go",
    "to",
    "the",
    "a",
    "pick",
    "up",
    "open",
    "put",
    "next",
    "and",
    "then",
    "after",
    "you",
    "behind",
    "in",
    "front",
    "of",
    "on",
    "your",
    "left",
    "right",
    "red",
    "green",
    "blue",
    "purple",
    "yellow",
    "grey",
    "box",
    "ball",
    "key",
    "door",
    "object",
    "get",
    "goal",
    "square",
    "use",
    "avoid",
    "lava",
    "traverse",
    "rooms",
    "reach",
    "find",
    "unlock",
    "locked",
    "room",
    "fetch",
    "same",
    "as",
    "toggle",
    "pickup",
    "match",
    "exit",
    "corridor",
    "at",
    "end",
    "it",
]
TOKEN_IDS = {word: index for index, word in enumerate(VOCABULARY)}
MISSIONS_CACHED = 1024  # token ids kept per mission sensor


def mission_words(mission: str) -> list[str]:
    """The mission's words, as the vocabulary holds them."""
    return re.findall(r"[a-z]+", mission.lower())


def tokenize_mission(mission: str, max_len: int) -> np.ndarray:
    """Words to ids from the fixed vocabulary, truncated or zero-padded to `max_len`."""
    words = mission_words(mission)[:max_len]
    tokens = np.zeros(max_len, dtype=np.int64)
    tokens[: len(words)] = [TOKEN_IDS.get(word, 1) for word in words]
    return tokens


class EgocentricMiniGridSensor(Sensor):
    """The agent's `view x view x view_channels` grid encoding, as uint8: the first
    `view_channels` of (object, colour, state). As in AllenAct, one channel (the object types)
    unless `view_channels=3` asks for all."""

    def __init__(
        self, agent_view_size: int = 7, view_channels: int = 1, uuid: str = "minigrid_ego_image"
    ) -> None:
        require(
            view_channels in (1, 2, 3),
            "EgocentricMiniGridSensor.view_channels",
            value=view_channels,
            expected="1, 2 or 3 (object, colour, state)",
        )
        self.uuid = uuid
        self.view_channels = view_channels
        self.observation_space = spaces.Box(
            0, 255, (agent_view_size, agent_view_size, view_channels), dtype=np.uint8
        )

    def get_observation(self, env: Any, task: Any) -> np.ndarray:
        """The agent's egocentric view, its first `view_channels` channels."""
        image = task.last_obs["image"]
        if image.shape[:2] != self.observation_space.shape[:2]:
            raise ValueError(
                f"{task!r}: egocentric view is {image.shape[:2]}, sensor expects "
                f"{self.observation_space.shape[:2]}; give the sensor and the env one "
                "agent_view_size (the env's: MiniGridExperimentConfig.ENV_KWARGS)"
            )
        return image[..., : self.view_channels]


MISSION_UUID = "minigrid_mission"  # AllenAct's, which the BabyAI model reads
_CUT_WARNED: set[int] = set()  # the instr_len values warned about in this process


class MiniGridMissionSensor(Sensor):
    """The mission string as `instr_len` token ids (0 = padding) from stagerl's vocabulary of
    the BabyAI and MiniGrid missions; cached per distinct mission."""

    def __init__(self, instr_len: int = 16, uuid: str = MISSION_UUID) -> None:
        require(
            isinstance(instr_len, int) and instr_len > 0,
            "MiniGridMissionSensor.instr_len",
            value=instr_len,
            expected="a positive number of words",
        )
        self.uuid = uuid
        self.max_len = instr_len
        self.observation_space = spaces.Box(0, len(VOCABULARY) - 1, (instr_len,), dtype=np.int64)
        self._cache: dict[str, np.ndarray] = {}

    def get_observation(self, env: Any, task: Any) -> np.ndarray:
        """The mission's token ids."""
        mission = task.last_obs["mission"]
        tokens = self._cache.get(mission)
        if tokens is None:
            if len(self._cache) >= MISSIONS_CACHED:  # levels of many missions (BossLevel)
                self._cache.clear()
            tokens = self._cache[mission] = tokenize_mission(mission, self.max_len)
            self._warn_if_cut(mission)
        return tokens

    def _warn_if_cut(self, mission: str) -> None:
        """Warn (once a process) that missions lose words: the last ones often name the goal."""
        words = len(mission_words(mission))
        if words > self.max_len and self.max_len not in _CUT_WARNED:
            _CUT_WARNED.add(self.max_len)
            warnings.warn(
                f"MiniGridMissionSensor(instr_len={self.max_len}) keeps the first "
                f"{self.max_len} of {words} words of {mission!r}; give it a larger instr_len",
                stacklevel=2,
            )

    def __getstate__(self) -> dict[str, Any]:
        """Without the cache: every sampler snapshot (one a rollout, and checkpoints) pickles
        the sensor."""
        return {**self.__dict__, "_cache": {}}
