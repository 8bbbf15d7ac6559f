"""Off-policy learning on MiniGrid/BabyAI: batches from datasets `stagerl record-dataset` wrote,
observed as the plugin's sensors observe the tasks, and the behaviour-cloning loss."""

from pathlib import Path
from typing import Any

import numpy as np
from minigrid.core.actions import Actions

from stagerl.errors import ConfigError, is_number, require, require_positive
from stagerl.losses.offpolicy import ExpertCELoss
from stagerl.offpolicy.dataset import DatasetError, leading_episodes, read_episodes, read_metadata
from stagerl.offpolicy.iterator import TruncatedBPTTIterator
from stagerl.plugins.minigrid.sensors import VOCABULARY

# Recorded key -> the uuid of the sensor that observes the same thing during training.
SENSOR_UUIDS = {"image": "minigrid_ego_image", "mission": "minigrid_mission"}
# What `stagerl record-dataset` writes about the recording, and the checks here read.
RECORDED_KEYS = ("env_id", "agent_view_size", "longest_mission")


class MiniGridOffPolicyExpertCELoss(ExpertCELoss):
    """The seed's behaviour-cloning loss: cross-entropy of the policy on the recorded expert's
    actions; `total_episodes_in_epoch` (the episodes of a rank's share of the dataset) makes
    `epoch_progress`."""


def _recorded_by_stagerl(path: Path, metadata: dict[str, Any]) -> dict[str, Any]:
    recorded = metadata.get("stagerl")
    if not isinstance(recorded, dict):
        raise DatasetError(
            f"{metadata['hdf5_path']}: not a MiniGrid dataset from `stagerl record-dataset` "
            "(its metadata has no 'stagerl' entry)"
        )
    missing = [key for key in RECORDED_KEYS if key not in recorded]
    if missing:
        raise DatasetError(
            f"{metadata['hdf5_path']}: its metadata's 'stagerl' entry lacks {missing}; "
            "record the dataset again with `stagerl record-dataset`"
        )
    return recorded


def _sensor_space(observation_space: Any, key: str) -> Any:
    """The space of the sensor that observes recorded `key` during training, if SENSORS has it."""
    return getattr(observation_space, "spaces", {}).get(SENSOR_UUIDS[key])


def _image_space(observation_space: Any) -> Any:
    return _sensor_space(observation_space, "image")


def _sensor_channels(observation_space: Any) -> int:
    """How many of the recorded (object, colour, state) channels the image sensor keeps."""
    image = _image_space(observation_space)
    return 3 if image is None else int(image.shape[-1])


def _check_fits(
    path: Path,
    recorded: dict[str, Any],
    instr_len: int | None,
    observation_space: Any,
    env_ids: list[str] | None,
) -> None:
    """The dataset was recorded for these tasks, with these observations."""
    if env_ids is not None and recorded["env_id"] not in env_ids:
        raise DatasetError(
            f"{path}: recorded on {recorded['env_id']}, but the experiment's tasks are "
            f"{list(env_ids)}; record a dataset for them with `stagerl record-dataset`"
        )
    view = recorded["agent_view_size"]
    channels = _sensor_channels(observation_space)
    if _image_space(observation_space) is not None and (
        tuple(_image_space(observation_space).shape[:2]) != (view, view) or channels > 3
    ):
        raise DatasetError(
            f"{path}: recorded views are {view}x{view}x3, the experiment's "
            f"{SENSOR_UUIDS['image']} sensor gives {tuple(_image_space(observation_space).shape)}"
        )
    mission = _sensor_space(observation_space, "mission")
    if observation_space is not None and mission is None and instr_len is not None:
        raise DatasetError(
            f"{path}: instr_len={instr_len} reads the recorded missions as "
            f"{SENSOR_UUIDS['mission']}, which none of the experiment's sensors gives (a "
            "MiniGridMissionSensor under another uuid?): give the sensor that uuid, or "
            "create the iterator with instr_len=None"
        )
    if mission is not None and instr_len != mission.shape[0]:
        raise DatasetError(
            f"{path}: instr_len={instr_len}, but the experiment's {SENSOR_UUIDS['mission']} "
            f"sensor gives {mission.shape[0]} tokens, which the model reads from every batch; "
            f"create the iterator with instr_len={mission.shape[0]}"
        )
    if recorded.get("vocabulary", VOCABULARY) != VOCABULARY:
        raise DatasetError(
            f"{path}: recorded with another mission vocabulary than this stagerl's, so its "
            "token ids mean other words; record the dataset again with `stagerl record-dataset`"
        )
    if instr_len is not None and instr_len < recorded["longest_mission"]:
        raise DatasetError(
            f"{path}: instr_len={instr_len} is too short: the longest recorded mission has "
            f"{recorded['longest_mission']} words"
        )


def _one_of(name: str, value: int | None, alias: str, alias_value: int | None) -> int | None:
    """A whole number given under stagerl's name or AllenAct's (`alias`), or None; both given
    must agree."""
    for field, given in ((name, value), (alias, alias_value)):
        require(given is None or is_number(given, whole=True), field, value=given,
                expected="an integer")  # fmt: skip
    if value is not None and alias_value is not None and value != alias_value:
        raise ConfigError(f"{name}={value} and {alias}={alias_value} disagree; give one of them")
    return next((int(given) for given in (value, alias_value) if given is not None), None)


def _rank_of(
    rank: int | None, world_size: int | None, current_worker: int | None, num_workers: int | None
) -> tuple[int, int]:
    """`(rank, world_size)` under stagerl's names or AllenAct's, given together or not at all
    (then `(0, 1)`): a world size alone would have every rank read rank 0's share."""
    rank = _one_of("rank", rank, "current_worker", current_worker)
    world_size = _one_of("world_size", world_size, "num_workers", num_workers)
    if (rank is None) != (world_size is None):
        raise ConfigError(
            f"rank={rank} and world_size={world_size} (AllenAct's current_worker and "
            "num_workers): give both or neither"
        )
    return (rank, world_size) if rank is not None and world_size is not None else (0, 1)


def create_minigrid_offpolicy_data_iterator(
    path: str | Path,
    nrollouts: int,
    rollout_len: int,
    instr_len: int | None,
    restrict_max_steps_in_dataset: int | None = None,
    current_worker: int | None = None,
    num_workers: int | None = None,
    *,
    rank: int | None = None,
    world_size: int | None = None,
    seed: int = 0,
    observation_space: Any = None,
    env_ids: list[str] | None = None,
    prefetch: int = 4,
) -> TruncatedBPTTIterator:
    """Truncated-BPTT batches (`[rollout_len, nrollouts]`) of a recorded dataset, with the
    grid as `minigrid_ego_image` and, unless `instr_len` is None, the mission as
    `instr_len` tokens in `minigrid_mission`. Rank `rank` of `world_size` reads every
    `world_size`-th episode from its `rank`-th on, so ranks never share an episode
    (`current_worker` and `num_workers` are AllenAct's names for them). Given
    `restrict_max_steps_in_dataset`, only the first recorded episodes are used: each one begun
    before that many steps (as AllenAct counts, so the last may go past it).

    The trainer passes `rank`, `world_size`, `seed`, `observation_space` and `env_ids`; the
    dataset is checked against them before anything starts.
    """
    path = Path(path)
    metadata = read_metadata(path)
    recorded = _recorded_by_stagerl(path, metadata)
    _check_fits(path, recorded, instr_len, observation_space, env_ids)
    rank, world_size = _rank_of(rank, world_size, current_worker, num_workers)
    if not 0 <= rank < world_size:
        raise DatasetError(f"{path}: rank {rank} is not within world_size {world_size}")
    keys = ["image"] + (["mission"] if instr_len is not None else [])
    used, why = int(metadata["total_episodes"]), "record at least one episode per rank"
    if restrict_max_steps_in_dataset is not None:
        require_positive("restrict_max_steps_in_dataset", restrict_max_steps_in_dataset, whole=True)
        used = leading_episodes(path, int(restrict_max_steps_in_dataset))
        why = f"restrict_max_steps_in_dataset={restrict_max_steps_in_dataset} keeps too few"
    indices = np.arange(rank, used, world_size)
    if not len(indices):
        raise DatasetError(
            f"{path}: {used} episodes leave trainer rank {rank} of {world_size} none; {why}"
        )
    episodes = read_episodes(
        path, observation_keys=keys, episode_indices=indices, num_actions=len(Actions)
    )
    observations = episodes.observations
    observations["image"] = observations["image"][..., : _sensor_channels(observation_space)]
    if instr_len is not None:
        missions = observations["mission"][:, :instr_len].astype(np.int64)
        padding = instr_len - missions.shape[1]  # past the recorded tokens: padding (0) too
        observations["mission"] = np.pad(missions, ((0, 0), (0, max(padding, 0))))
    episodes.observations = {SENSOR_UUIDS[key]: observations[key] for key in keys}
    return TruncatedBPTTIterator(
        episodes, nrollouts=nrollouts, rollout_len=rollout_len, seed=seed, prefetch=prefetch
    )
