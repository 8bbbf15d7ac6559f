"""`stagerl eval`: a checkpoint on the test tasks, its results printed and written as JSON
beside it (or to `--output-json`), and optionally videos of some episodes."""

import argparse
import json
import os
import sys
from pathlib import Path

from stagerl.errors import StagerlError

VIDEO_EPISODES = 4  # with --video and no --video-episodes


def _print_results(results: dict) -> None:
    for key, value in results.items():
        if key.startswith("success_ci95"):
            continue
        shown = f"{value:.4f}" if isinstance(value, float) else f"{value}"
        if key == "success" and "success_ci95_low" in results:
            low, high = results["success_ci95_low"], results["success_ci95_high"]
            shown += f"  (95% CI {low:.4f}-{high:.4f})"
        print(f"{key:>12}: {shown}")


def _require_writable(path: Path, option: str, *, folder: bool = False) -> None:
    """Fail before the work, not after it: `path` (a file, or with `folder` a folder that may
    not exist yet) can be written."""
    if not folder and path.exists() and not path.is_file() and not path.is_dir():
        if not os.access(path, os.W_OK):  # a pipe or a device, written as it is
            raise StagerlError(f"{option} {path}: cannot write there")
        return
    if folder and path.is_dir():
        parent = path
    elif path.is_dir() or (folder and path.exists()):
        raise StagerlError(f"{option} {path}: expected a {'folder' if folder else 'file'}")
    else:
        parent = path.parent
    while folder and not parent.exists() and parent != parent.parent:
        parent = parent.parent  # the folder and those above it will be made
    if not (parent.is_dir() and os.access(parent, os.W_OK)):
        raise StagerlError(f"{option} {path}: cannot write there (no writable folder)")


def _check_video_folder(folder: Path) -> None:
    """`--video` can be written and holds no earlier evaluation's videos (this one's would
    mix with them: an episode's success beside its namesake's failure)."""
    from stagerl.engine.video import earlier_videos

    _require_writable(folder, "--video", folder=True)
    earlier = earlier_videos(folder)
    if earlier:
        raise StagerlError(
            f"--video {folder}: it holds videos of an earlier evaluation "
            f"({earlier[0].name}, ...); choose another folder"
        )


def _results_path(checkpoint: Path, args: argparse.Namespace) -> Path:
    """Next to the checkpoint, named by the settings, so evaluations of other settings are
    kept side by side (one with the same settings gives the same numbers)."""
    mode = "deterministic" if args.deterministic else "sampled"
    episodes = f"_{args.episodes}episodes" if args.episodes else ""
    return checkpoint.with_suffix(f".eval_seed{args.seed}_{mode}{episodes}.json")


def _write_results(output: Path, text: str) -> None:
    """Whole or not at all, through a symlink (not over it); plainly where the path is no
    regular file (/dev/stdout, a pipe)."""
    from stagerl.engine.files import write_atomically

    try:
        if output.exists() and not output.is_file():
            output.write_text(text)
        else:
            write_atomically(output.resolve(), lambda file: file.write(text.encode()))
    except OSError as error:
        raise StagerlError(f"{output}: cannot write the results ({error.strerror})") from None


def evaluate(args: argparse.Namespace) -> int:
    """`stagerl eval`: a checkpoint on the test tasks."""
    from stagerl.engine.checkpoint import checkpoint_to_evaluate
    from stagerl.engine.evaluator import evaluate as run_evaluation
    from stagerl.experiment import load_experiment

    experiment = load_experiment(args.config)
    checkpoint = checkpoint_to_evaluate(args.checkpoint)
    output = args.output_json or _results_path(checkpoint, args)
    beside = "the results beside the checkpoint (or pass --output-json)"
    _require_writable(output, "--output-json" if args.output_json else beside)
    if args.video_episodes is not None and not args.video:
        raise StagerlError("--video-episodes needs --video DIR (where the videos go)")
    if args.video:
        _check_video_folder(args.video)
    print(f"stagerl: evaluating {checkpoint}", file=sys.stderr)
    results = run_evaluation(
        experiment,
        checkpoint,
        episodes=args.episodes,
        deterministic=args.deterministic,
        seed=args.seed,
        max_sampler_processes=args.max_sampler_processes,
    )
    _print_results(results)
    if args.episodes and results["episodes"] < args.episodes:
        print(
            f"stagerl: the test samplers ran out after {results['episodes']} of the "
            f"{args.episodes} episodes asked for",
            file=sys.stderr,
        )
    settings = {
        "checkpoint": str(checkpoint.resolve()),
        "seed": args.seed,
        "deterministic": args.deterministic,
        "episodes_asked": args.episodes,
    }
    _write_results(output, json.dumps({**results, **settings}, indent=2) + "\n")
    print(f"stagerl: results written to {output}", file=sys.stderr)
    if args.video:
        from stagerl.engine.video import record_videos

        videos = record_videos(
            experiment,
            checkpoint,
            directory=args.video,
            episodes=args.video_episodes or VIDEO_EPISODES,
            seed=args.seed,
            deterministic=args.deterministic,
        )
        for video in videos:
            print(f"stagerl: video {video.path} ({video.frames} frames)", file=sys.stderr)
    return 0
