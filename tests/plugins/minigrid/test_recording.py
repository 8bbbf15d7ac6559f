"""`stagerl record-dataset`: a Minari dataset of expert episodes, written atomically."""

import contextlib
import io
import os

import minari
import numpy as np
import pytest

from stagerl import ConfigError, cli
from stagerl.offpolicy.dataset import DatasetError, write_dataset
from stagerl.plugins.minigrid.recording import PlayedChunk, mission_tokens, observation_space
from stagerl.plugins.minigrid.sensors import TOKEN_IDS
from stagerl.plugins.minigrid.tasks import make_minigrid_env

pytestmark = pytest.mark.timeout(120)


def test_recorded_dataset_loads_in_minari_and_replays_in_the_env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative --out, as in the README
    argv = ["record-dataset", "--env", "BabyAI-GoToObj-v0", "--episodes", "100"]
    assert cli.main([*argv, "--out", "datasets/gotoobj-v0", "--seed", "3"]) == 0
    mode, umask = (tmp_path / "datasets" / "gotoobj-v0").stat().st_mode & 0o777, os.umask(0)
    os.umask(umask)
    assert mode == 0o777 & ~umask  # as any folder made here: other users may train on it

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    dataset = minari.load_dataset("gotoobj-v0")
    assert dataset.total_episodes == 100
    recorded = dataset.storage.metadata["stagerl"]
    assert (recorded["env_id"], recorded["seed"]) == ("BabyAI-GoToObj-v0", 3)
    assert recorded["vocabulary"][:3] == ["<pad>", "<unk>", "go"]
    assert dataset.storage.metadata["algorithm_name"] == "stagerl record-dataset (BabyAIExpert)"
    # Each observation is the one its action was taken in: replaying the actions from the
    # episode's seed meets the same grids, and the expert's episode ends in success.
    episode = next(dataset.iterate_episodes([0]))
    seed = dataset.storage.get_episode_metadata([0]).__next__()["seed"]
    env = make_minigrid_env("BabyAI-GoToObj-v0")
    with contextlib.redirect_stdout(io.StringIO()):
        obs, _ = env.reset(seed=seed)
    for step, action in enumerate(episode.actions):
        np.testing.assert_array_equal(episode.observations["image"][step], obs["image"])
        obs, reward, terminated, _, _ = env.step(action)
    assert terminated and reward > 0 and episode.terminations[-1]
    np.testing.assert_array_equal(episode.observations["image"][-1], obs["image"])


@pytest.mark.parametrize(
    ("env_id", "out", "message"),
    [
        ("MiniGrid-Unlock-v0", "unlock-v0", "MiniGrid-Unlock-v0: no expert to record"),
        ("CartPole-v1", "cartpole-v0", "is a CartPoleEnv, not a MiniGrid/BabyAI environment"),
        ("BabyAI-GoToObj-v0", "file/gotoobj-v0", "file/gotoobj-v0: cannot write a dataset there"),
    ],
    ids=["no-expert", "not-minigrid", "out-under-a-file"],
)
def test_a_recording_that_cannot_be_made_is_refused_naming_why(
    env_id, out, message, tmp_path, capsys
):
    (tmp_path / "file").write_text("")
    out = tmp_path / out
    argv = ["record-dataset", "--env", env_id, "--episodes", "2", "--out", str(out)]
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_interrupted_recording_leaves_nothing_that_looks_like_a_dataset(tmp_path):
    def chunks():
        yield []
        raise KeyboardInterrupt

    out = tmp_path / "broken-v0"
    env = make_minigrid_env("BabyAI-GoToObj-v0")
    with pytest.raises(KeyboardInterrupt):
        write_dataset(
            out,
            chunks(),
            observation_space=observation_space(7),
            action_space=env.action_space,
            env_spec=env.spec,
            metadata=dict,
        )
    assert list(tmp_path.iterdir()) == []


def test_an_existing_dataset_is_never_overwritten(empty_dataset):
    with pytest.raises(DatasetError, match="already exists"):
        write_dataset(
            empty_dataset,
            [],
            observation_space=None,
            action_space=None,
            env_spec=None,
            metadata=dict,
        )


def test_a_chunk_cut_short_counts_only_the_episodes_dropped_before_the_cut():
    played = PlayedChunk([None, "kept 1", None, "kept 2", None, "kept 3"])
    assert played.first(2) == (["kept 1", "kept 2"], 2)  # the drop after "kept 2" is unused
    assert played.first(10) == (["kept 1", "kept 2", "kept 3"], 3)


def test_recorded_missions_read_words_outside_the_vocabulary_as_the_sensor_does():
    # SimpleCrossing's mission has "opening", which the vocabulary lacks: <unk>, as in training
    tokens = mission_tokens("find the opening and get to the green goal square", "Crossing")
    assert tokens[2] == TOKEN_IDS["<unk>"] and tokens[1] == TOKEN_IDS["the"]
    with pytest.raises(ConfigError, match="Crossing: mission .* more than 32 words"):
        mission_tokens("go " * 33, "Crossing")
