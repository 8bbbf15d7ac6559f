"""The MiniGrid dataset iterator: ranks split episodes; each bad dataset is an error naming
its file, raised when the iterator is built (before any worker starts)."""

import json
from pathlib import Path

import numpy as np
import pytest
from gymnasium import spaces
from minari.data_collector.episode_buffer import EpisodeBuffer

from stagerl.errors import ConfigError
from stagerl.offpolicy.dataset import DatasetError, write_dataset
from stagerl.plugins.minigrid.offpolicy import create_minigrid_offpolicy_data_iterator
from stagerl.plugins.minigrid.recording import mission_tokens, observation_space
from stagerl.plugins.minigrid.sensors import EgocentricMiniGridSensor, MiniGridMissionSensor
from stagerl.tasks.sensors import SensorSuite

ENV_ID = "BabyAI-GoToObj-v0"
MISSION_SENSED = SensorSuite(
    [EgocentricMiniGridSensor(view_channels=3), MiniGridMissionSensor(instr_len=8)]
).observation_space
RENAMED_MISSION = SensorSuite(
    [EgocentricMiniGridSensor(view_channels=3), MiniGridMissionSensor(8, uuid="mission")]
).observation_space


def _hand_made(path: Path, episodes: int) -> Path:
    """Episodes of 1-3 steps whose every grid cell holds the episode's number."""
    tokens = mission_tokens("go to the red ball", ENV_ID).astype(np.uint8)

    def episode(index: int) -> EpisodeBuffer:
        steps = 1 + index % 3
        return EpisodeBuffer(
            seed=index,
            observations={
                "image": np.full((steps + 1, 7, 7, 3), index, np.uint8),
                "direction": np.zeros(steps + 1, np.int64),
                "mission": np.tile(tokens, (steps + 1, 1)),
            },
            actions=np.full(steps, 2, np.int64),
            rewards=np.ones(steps),
            terminations=np.arange(steps) == steps - 1,
            truncations=np.zeros(steps, bool),
        )

    recorded = {"env_id": ENV_ID, "agent_view_size": 7, "longest_mission": 5}
    return write_dataset(
        path,
        [[episode(index) for index in range(episodes)]],
        observation_space=observation_space(7),
        action_space=spaces.Discrete(7),
        env_spec=None,
        metadata=lambda: {"stagerl": recorded},
    )


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return _hand_made(tmp_path_factory.mktemp("hand-made") / "hand-made-v0", episodes=10)


def _episodes_seen(path: Path, **kwargs) -> set[int]:
    """The episodes (by number) an iterator's first epoch shows."""
    iterator = create_minigrid_offpolicy_data_iterator(path, instr_len=5, **kwargs)
    seen = set()
    while True:
        batch = next(iterator)
        if batch.epoch > 0:
            break
        seen |= set(batch.observations["minigrid_ego_image"][..., 0, 0, 0].flatten().tolist())
    iterator.close()
    return seen


def test_two_ranks_read_disjoint_episodes_that_cover_the_dataset(dataset):
    ranks = [dict(nrollouts=2, rollout_len=3, rank=rank, world_size=2) for rank in (0, 1)]
    first, second = _episodes_seen(dataset, **ranks[0]), _episodes_seen(dataset, **ranks[1])
    assert first.isdisjoint(second)
    assert first | second <= set(range(10)) and len(first | second) >= 8  # epoch tails drop


def test_allenacts_current_worker_and_num_workers_name_the_rank_and_world_size(dataset):
    ranks = dict(nrollouts=2, rollout_len=3)
    by_allenacts_names = _episodes_seen(dataset, current_worker=1, num_workers=2, **ranks)
    assert by_allenacts_names == _episodes_seen(dataset, rank=1, world_size=2, **ranks)
    with pytest.raises(ConfigError, match=r"rank=0 and current_worker=1 disagree"):
        create_minigrid_offpolicy_data_iterator(dataset, 2, 3, 5, current_worker=1, rank=0)


def test_restrict_max_steps_in_dataset_keeps_the_episodes_begun_within_it(dataset):
    # episodes of 1, 2, 3, 1, ... steps: the first three begin at steps 0, 1, 3 (< 6), the
    # fourth at 6; one stream in chunks of 2 plays their 6 steps with nothing left over
    seen = _episodes_seen(dataset, nrollouts=1, rollout_len=2, restrict_max_steps_in_dataset=6)
    assert seen == {0, 1, 2}
    with pytest.raises(ConfigError, match=r"restrict_max_steps_in_dataset=0 is invalid"):
        create_minigrid_offpolicy_data_iterator(dataset, 1, 2, 5, restrict_max_steps_in_dataset=0)


def test_missions_become_instr_len_tokens(dataset):
    sensed = SensorSuite(
        [EgocentricMiniGridSensor(view_channels=3), MiniGridMissionSensor(instr_len=6)]
    ).observation_space  # a mission sensor as long as instr_len
    iterator = create_minigrid_offpolicy_data_iterator(
        dataset, 2, 3, instr_len=6, observation_space=sensed
    )
    mission = next(iterator).observations["minigrid_mission"]
    assert mission.shape == (3, 2, 6) and (mission[..., 5] == 0).all()
    iterator.close()


def _truncated(dataset: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "truncated-v0"
    _hand_made(copy, episodes=10)
    hdf5 = copy / "data" / "main_data.hdf5"
    hdf5.write_bytes(hdf5.read_bytes()[: hdf5.stat().st_size // 2])
    return copy


def _garbage(dataset: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "garbage-v0"
    _hand_made(copy, episodes=10)
    (copy / "data" / "main_data.hdf5").write_bytes(b"not hdf5 at all" * 100)
    return copy


def _short_observations(dataset: Path, tmp_path: Path) -> Path:
    import h5py

    copy = tmp_path / "short-v0"
    _hand_made(copy, episodes=10)
    with h5py.File(copy / "data" / "main_data.hdf5", "r+") as file:
        images = file["episode_2"]["observations"]
        shorter = images["image"][:2]  # 3 actions, 2 images
        del images["image"]
        images["image"] = shorter
    return copy


def _mixed_views(dataset: Path, tmp_path: Path) -> Path:
    import h5py

    copy = tmp_path / "mixed-v0"
    _hand_made(copy, episodes=10)
    with h5py.File(copy / "data" / "main_data.hdf5", "r+") as file:
        images = file["episode_3"]["observations"]
        del images["image"]
        images["image"] = np.zeros((2, 5, 5, 3), np.uint8)  # 5x5 among 7x7 views
    return copy


def _damaged_group(dataset: Path, tmp_path: Path) -> Path:
    """A symbol table node's signature overwritten: h5py raises RuntimeError, not OSError."""
    copy = tmp_path / "damaged-v0"
    _hand_made(copy, episodes=10)
    hdf5 = copy / "data" / "main_data.hdf5"
    hdf5.write_bytes(hdf5.read_bytes().replace(b"SNOD", b"XXXX", 1))
    return copy


def _action_out_of_range(dataset: Path, tmp_path: Path) -> Path:
    import h5py

    copy = tmp_path / "actions-v0"
    _hand_made(copy, episodes=10)
    with h5py.File(copy / "data" / "main_data.hdf5", "r+") as file:
        file["episode_4"]["actions"][1] = 9  # MiniGrid has 7 actions
    return copy


def _edited_record(tmp_path: Path, name: str, edit) -> Path:
    """A hand-made dataset whose metadata's 'stagerl' entry `edit` changed."""
    copy = tmp_path / name
    _hand_made(copy, episodes=10)
    metadata_file = copy / "data" / "metadata.json"
    metadata = json.loads(metadata_file.read_text())
    edit(metadata["stagerl"])
    metadata_file.write_text(json.dumps(metadata))
    return copy


def _other_vocabulary(dataset: Path, tmp_path: Path) -> Path:
    vocabulary = ["<pad>", "<unk>", "walk"]
    return _edited_record(
        tmp_path, "vocabulary-v0", lambda record: record.update(vocabulary=vocabulary)
    )


def _not_minari_metadata(dataset: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "metadata-v0"
    _hand_made(copy, episodes=10)
    (copy / "data" / "metadata.json").write_text("[1]")
    return copy


def _incomplete_record(dataset: Path, tmp_path: Path) -> Path:
    return _edited_record(tmp_path, "incomplete-v0", lambda record: record.pop("longest_mission"))


@pytest.mark.parametrize(
    ("make", "kwargs", "message"),
    [
        (lambda d, t: t / "missing", {}, "no such dataset"),
        (_truncated, {}, "corrupt or unreadable|truncated"),
        (_garbage, {}, "corrupt or unreadable"),
        (lambda d, t: d, {"env_ids": ["BabyAI-GoToLocal-v0"]}, "recorded on BabyAI-GoToObj-v0"),
        (
            lambda d, t: d,
            {"observation_space": SensorSuite([EgocentricMiniGridSensor(5)]).observation_space},
            r"views are 7x7x3.*\(5, 5, 1\)",
        ),
        (lambda d, t: d, {"instr_len": 3}, "instr_len=3 is too short"),
        (
            lambda d, t: d,
            {"instr_len": None, "observation_space": MISSION_SENSED},
            r"instr_len=None, but .* minigrid_mission sensor gives 8 tokens",
        ),
        (
            lambda d, t: d,
            {"instr_len": 5, "observation_space": MISSION_SENSED},
            r"instr_len=5, but .* minigrid_mission sensor gives 8 tokens",
        ),
        (
            lambda d, t: d,
            {"instr_len": 8, "observation_space": RENAMED_MISSION},
            r"instr_len=8 reads the recorded missions as minigrid_mission, which none",
        ),
        (lambda d, t: d, {"rank": 10, "world_size": 11}, "leave trainer rank 10 of 11 none"),
        (_short_observations, {}, "episode_2 has 3 actions but only 2 'image' observations"),
        (_not_minari_metadata, {}, "not Minari metadata"),
        (_incomplete_record, {}, r"'stagerl' entry lacks \['longest_mission'\]"),
        (_other_vocabulary, {}, "recorded with another mission vocabulary"),
        (_mixed_views, {}, "its episodes' observations differ"),
        (_damaged_group, {}, r"corrupt or unreadable \(.*bad symbol table node signature"),
        (_action_out_of_range, {}, r"episode_4 step 1 has action 9, not one of the tasks' 7"),
    ],
    ids=[
        "missing",
        "truncated",
        "not-hdf5",
        "other-env",
        "other-view",
        "short-instr_len",
        "no-instr_len-for-the-mission-sensor",
        "instr_len-other-than-the-mission-sensor",
        "missions-no-sensor-reads",
        "more-ranks-than-episodes",
        "fewer-observations-than-actions",
        "metadata-not-minari",
        "record-without-longest_mission",
        "another-vocabulary",
        "views-of-two-sizes",
        "damaged-group-metadata",
        "action-out-of-range",
    ],
)
def test_bad_dataset_is_an_error_naming_the_file(dataset, tmp_path, make, kwargs, message):
    path = make(dataset, tmp_path)
    arguments = {"nrollouts": 2, "rollout_len": 3, "instr_len": 5, **kwargs}
    with pytest.raises(DatasetError, match=message) as raised:
        create_minigrid_offpolicy_data_iterator(path, **arguments)
    assert str(path) in str(raised.value)


def test_instr_len_beyond_the_recorded_tokens_pads_the_missions_with_zeros(dataset):
    short = create_minigrid_offpolicy_data_iterator(dataset, 2, 3, 8)
    long = create_minigrid_offpolicy_data_iterator(dataset, 2, 3, 40)
    missions = [it.episodes.observations["minigrid_mission"] for it in (short, long)]
    short.close(), long.close()
    assert missions[1].shape[1] == 40
    assert (missions[1][:, :8] == missions[0]).all() and not missions[1][:, 8:].any()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"current_worker": 1}, r"rank=1 and world_size=None .*give both or neither"),
        ({"num_workers": 2}, r"rank=None and world_size=2 .*give both or neither"),
        ({"num_workers": 2.0, "current_worker": 0}, r"num_workers=2.0 is invalid"),
        ({"nrollouts": True}, r"nrollouts=True is invalid"),
    ],
    ids=["rank-alone", "world-size-alone", "float-world-size", "bool-nrollouts"],
)
def test_ranks_come_together_and_counts_are_whole_numbers(dataset, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        create_minigrid_offpolicy_data_iterator(dataset, **{"nrollouts": 2, "rollout_len": 3,
                                                           "instr_len": 5, **kwargs})  # fmt: skip


def test_numpy_integers_are_counts_too(dataset):
    count = np.int64(2)
    iterator = create_minigrid_offpolicy_data_iterator(
        dataset, count, np.int64(3), 5, current_worker=np.int64(1), num_workers=count
    )
    iterator.close()
    assert (iterator.nrollouts, iterator.episodes.num_episodes) == (2, 5)  # odd episodes of 10
