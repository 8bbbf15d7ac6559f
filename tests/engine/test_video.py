"""`stagerl eval --video`: one file per test episode, read back frame by frame."""

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from stagerl import cli
from stagerl.engine.setup import build_samplers
from stagerl.engine.trainer import Trainer
from stagerl.engine.video import CAPTION_LINES, LINE_HEIGHT, annotate
from stagerl.experiment import load_experiment
from tests.variants import fixture_variant

pytestmark = pytest.mark.timeout(180)


def _replayed_length(experiment, checkpoint, slot):
    """The episode's length, replayed here with the most likely actions."""
    model = experiment.call("create_model")
    model.load_state_dict(torch.load(checkpoint, weights_only=False)["model"])
    _, samplers = build_samplers(experiment, "test", seed=0)
    task, memory, mask = samplers[slot].next_task(), model.initial_memory(1), torch.zeros(1, 1)
    observations, action = task.get_observations(), torch.zeros(1, 1, dtype=torch.long)
    with torch.no_grad():
        while not task.is_done():
            obs = {k: torch.as_tensor(v)[None, None] for k, v in observations.items()}
            output, memory = model(obs, memory, action, mask)
            action, mask = output.distributions.probs.argmax(-1), torch.ones(1, 1)
            observations = task.step(int(action)).observation
    return task.num_steps_taken, task.metrics()["success"]


def test_eval_video_writes_each_episode_with_its_frames_size_and_outcome(tmp_path):
    # 5 steps at most, so that episodes of the barely trained model are short both ways
    config = fixture_variant(
        tmp_path, "tiny_ppo.py", {"STEPS = 1024": "STEPS = 1024\n    MAX_STEPS = 5"}
    )
    experiment = load_experiment(config)
    checkpoint = Trainer(experiment, run_dir=tmp_path / "run", seed=0).train(stop_after_steps=64)
    videos = tmp_path / "videos"
    argv = ["eval", str(config), "-c", str(checkpoint), "--episodes", "2", "--deterministic"]
    assert cli.main([*argv, "--video", str(videos), "--video-episodes", "3"]) == 0
    files = sorted(videos.iterdir())
    assert [f.name.split("_")[0] for f in files] == ["episode000", "episode001", "episode002"]
    for slot, path in enumerate(files):
        frames = iio.imread(path, index=None)
        length, success = _replayed_length(experiment, checkpoint, slot)
        assert frames.shape[0] == length + 1  # the first observation, then one per step
        # the 5x5 grid rendered 32 pixels a cell, twice as large, below the caption's strip
        assert frames.shape[1:3] == (CAPTION_LINES * LINE_HEIGHT + 4 + 2 * 5 * 32, 2 * 5 * 32)
        assert path.stem.endswith("_success" if success else "_failure")


def test_a_small_frame_is_enlarged_below_its_whole_caption():
    view = np.arange(60 * 80 * 3, dtype=np.uint8).reshape(60, 80, 3)  # ObjectNav's 80x60
    caption = "step 42: find a Duckie; " + "and a long instruction " * 3
    frame = annotate(view, caption)
    strip = CAPTION_LINES * LINE_HEIGHT + 4
    assert frame.shape == (strip + 4 * 60, 4 * 80, 3)
    np.testing.assert_array_equal(frame[strip::4, ::4], view)  # the view whole, not covered
    lines = frame[:strip].max(axis=(1, 2)) > 0  # rows with text: two lines of it
    assert lines[2 : 2 + LINE_HEIGHT].any() and lines[2 + LINE_HEIGHT :].any()
