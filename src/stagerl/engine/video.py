"""Episode videos: test episodes played by a trained model in this process, one file each,
every frame the task's own RGB render with the caption (the mission) and the step drawn on.
MP4 when imageio has an ffmpeg encoder (`pip install imageio-ffmpeg`), GIF otherwise."""

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from stagerl.engine.evaluator import choose_actions, trained_model
from stagerl.experiment import LoadedExperiment
from stagerl.models.base import ActorCriticModel
from stagerl.tasks.base import Task

VIDEO_NAME = re.compile(r"^episode\d+_seed-?\d+_(success|failure)\.(gif|mp4)$")  # as written here


@dataclass(frozen=True)
class EpisodeVideo:
    """A written video: where, how many frames (the episode's steps + 1), and its outcome."""

    path: Path
    frames: int
    success: bool


MIN_WIDTH = 320  # pixels: a frame narrower is enlarged (whole times) to fit its caption
CAPTION_LINES = 2  # the strip above every frame holds this many lines (frames share a size)
LINE_HEIGHT = 12  # pixels, for PIL's default font


def annotate(frame: np.ndarray, text: str) -> np.ndarray:
    """The frame, enlarged to at least MIN_WIDTH pixels across (nearest neighbour, whole
    times), below a dark strip holding `text` wrapped to its width (a caption drawn over
    ObjectNav's 80x60 view hid the target's name and a quarter of the view)."""
    scale = -(-MIN_WIDTH // frame.shape[1])  # ceiling division
    frame = frame.repeat(scale, axis=0).repeat(scale, axis=1)
    strip = CAPTION_LINES * LINE_HEIGHT + 4
    image = Image.new("RGB", (frame.shape[1], strip + frame.shape[0]))
    image.paste(Image.fromarray(frame), (0, strip))
    draw, lines = ImageDraw.Draw(image), [""]
    for word in text.split():
        line = f"{lines[-1]} {word}".strip()
        if draw.textlength(line) > image.width - 8 and lines[-1]:
            lines.append(word)
        else:
            lines[-1] = line
    for index, line in enumerate(lines[:CAPTION_LINES]):
        draw.text((4, 2 + index * LINE_HEIGHT), line, fill=(255, 255, 255))
    return np.asarray(image)


@torch.no_grad()
def play(
    model: ActorCriticModel, task: Task, *, generator: torch.Generator, deterministic: bool
) -> list[np.ndarray]:
    """Run the task to its end; its frames, the first before any step."""
    device = next(model.parameters()).device
    memory = model.initial_memory(1)
    masks = torch.zeros(1, 1, device=device)
    prev_actions = torch.zeros(1, 1, dtype=torch.long, device=device)
    observations, frames, done = task.get_observations(), [], False
    while True:
        frames.append(annotate(task.render(), f"step {len(frames)}: {task.caption()}"))
        if done:
            return frames
        obs = {k: torch.as_tensor(v)[None, None].to(device) for k, v in observations.items()}
        output, memory = model(obs, memory, prev_actions, masks)
        action = choose_actions(
            output.distributions, deterministic=deterministic, generator=generator
        )
        result = task.step(int(action))
        observations, done = result.observation, result.done
        masks, prev_actions = torch.ones_like(masks), action[None].to(device)


def write_video(frames: list[np.ndarray], stem: Path) -> Path:
    """`stem.mp4` through imageio's ffmpeg plugin where installed, else `stem.gif`."""
    import imageio.v3 as iio

    if importlib.util.find_spec("imageio_ffmpeg") is not None:
        path = stem.with_suffix(".mp4")
        iio.imwrite(path, np.stack(frames), fps=4, macro_block_size=1)
    else:
        path = stem.with_suffix(".gif")
        iio.imwrite(path, np.stack(frames), duration=250, loop=0)
    return path


def earlier_videos(directory: Path) -> list[Path]:
    """Videos `record_videos` wrote to `directory` before: new ones would sit among them, an
    episode's file from one run beside its namesake of another outcome from the other."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if VIDEO_NAME.match(p.name))


def record_videos(
    experiment: LoadedExperiment,
    checkpoint: Path,
    *,
    directory: Path,
    episodes: int,
    seed: int = 0,
    deterministic: bool = False,
) -> list[EpisodeVideo]:
    """`episodes` test episodes (samplers taken in turn, seeded by `seed`) as video files in
    `directory`, named by episode, seed and outcome."""
    _, samplers, model = trained_model(experiment, checkpoint, seed=seed)
    directory.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    videos = []
    for index in range(episodes):
        task = samplers[index % len(samplers)].next_task()
        if task is None:
            break  # the test samplers ran out
        frames = play(model, task, generator=generator, deterministic=deterministic)
        success = bool(task.metrics().get("success", 0.0))
        outcome = "success" if success else "failure"
        stem = directory / f"episode{index:03d}_seed{getattr(task, 'seed', index)}_{outcome}"
        videos.append(EpisodeVideo(write_video(frames, stem), len(frames), success))
        task.close()
    for sampler in samplers:
        sampler.close()
    return videos
