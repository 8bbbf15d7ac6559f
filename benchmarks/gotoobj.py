"""The GoToObj example end to end: `stagerl train projects/babyai/gotoobj_ppo.py` (50,000
steps), wall time from the command's start (start-up included), median frames/s and (in a
run of its own) the peak PSS of its process tree, against the same run with synchronous sampling
(`double_buffered=False`) in this run, and with `--baseline DIR` against another commit's
work tree too (its own copy of the example), e.g. the code before the throughput work:

    git worktree add /tmp/baseline 483871a
    python benchmarks/gotoobj.py [--runs 3] [--baseline /tmp/baseline]

Runs take turns, `--runs` of each; medians are printed, with the ratios.
"""

import argparse
import statistics
import tempfile
from pathlib import Path

from throughput import GOTOOBJ, ROOT, SYNCHRONOUS, _variant, median_fps, run_training


def main() -> None:
    """The command line the module's docstring describes."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each path (default 3)")
    parser.add_argument("--baseline", type=Path, help="another commit's work tree to compare")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as variants:
        runs = {  # name: (experiment file, work tree stagerl is imported from)
            "double-buffered": (GOTOOBJ, ROOT),
            "synchronous": (_variant(GOTOOBJ, variants, SYNCHRONOUS), ROOT),
        }
        if args.baseline:
            baseline = args.baseline.resolve()
            runs["baseline"] = (baseline / GOTOOBJ.relative_to(ROOT), baseline)
        walls: dict[str, list[float]] = {name: [] for name in runs}
        fps: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.runs):
            for name, (config, checkout) in runs.items():
                with tempfile.TemporaryDirectory() as output:
                    seconds, _ = run_training(config, output, checkout=checkout)
                    fps[name].append(median_fps(output))
                walls[name].append(seconds)
        peaks = {}  # in runs of their own: reading PSS slows a run
        for name, (config, checkout) in runs.items():
            with tempfile.TemporaryDirectory() as output:
                peaks[name] = run_training(config, output, checkout=checkout, memory=True)[1]
    wall = {name: statistics.median(times) for name, times in walls.items()}
    speed = {name: statistics.median(rates) for name, rates in fps.items()}
    for name in runs:
        print(f"{name:>16}: 50,000 steps in {wall[name]:5.1f} s (median of {args.runs}, start-up "
              f"included; target <= 20 s), {speed[name]:5.0f} frames/s, "
              f"peak PSS {peaks[name]:4.0f} MiB (target <= 512 MiB)")  # fmt: skip
    for name in [name for name in runs if name != "double-buffered"]:
        by_wall = wall[name] / wall["double-buffered"]
        by_fps = speed["double-buffered"] / speed[name]
        print(f"double-buffered / {name}: {by_wall:.2f}x the speed by wall time, "
              f"{by_fps:.2f}x by frames/s")  # fmt: skip


if __name__ == "__main__":
    main()
