"""The GoToObj example end to end: `stagerl train projects/babyai/gotoobj_ppo.py` (50,000
steps), wall time from the command's start (start-up included) and the peak PSS of its process
tree, against the same run with synchronous sampling (`double_buffered=False`) in this run.
Runs alternate between the two, `--runs` of each; medians are printed, with the ratio.

    python benchmarks/gotoobj.py [--runs 3]
"""

import argparse
import statistics
import tempfile

from throughput import GOTOOBJ, SYNCHRONOUS, _variant, run_training


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each path (default 3)")
    args = parser.parse_args()
    walls: dict[str, list[float]] = {"double-buffered": [], "synchronous": []}
    peaks: dict[str, list[float]] = {"double-buffered": [], "synchronous": []}
    with tempfile.TemporaryDirectory() as variants:
        configs = {
            "double-buffered": GOTOOBJ,
            "synchronous": _variant(GOTOOBJ, variants, SYNCHRONOUS),
        }
        for _ in range(args.runs):
            for name, config in configs.items():
                with tempfile.TemporaryDirectory() as output:
                    wall, peak = run_training(config, output)
                walls[name].append(wall)
                peaks[name].append(peak)
    for name in walls:
        wall, peak = statistics.median(walls[name]), max(peaks[name])
        print(f"{name:>16}: 50,000 steps in {wall:5.1f} s (median of {args.runs}, start-up "
              f"included; target <= 20 s), peak PSS {peak:4.0f} MiB (target <= 512 MiB)")  # fmt: skip
    ratio = statistics.median(walls["synchronous"]) / statistics.median(walls["double-buffered"])
    print(f"double-buffered / synchronous speed: {ratio:.2f}x")


if __name__ == "__main__":
    main()
