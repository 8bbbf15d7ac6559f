"""How reliably an experiment learns: train it once per seed, evaluate each, summarise.

For every seed, one after another (two trainings at once would share the cores and distort
each other's timing): `stagerl train CONFIG -s SEED`, then `stagerl eval` of the final
checkpoint on the test tasks. Prints per seed the test success, the first logged step whose
training success reaches the threshold, and the wall time; then min / median / mean. Writes
`learning.json` and `learning.png` (every seed's training success against steps) to `--out`.

With `--sb3`, Stable-Baselines3's PPO is trained and tested instead, on the settings the file
states in RL Zoo's names (benchmarks/sb3_reference.py; no plot).

    python benchmarks/learning.py projects/babyai/gotoobj_ppo.py --seeds 1-8
    python benchmarks/learning.py benchmarks/doorkey_mlp_ppo.py --seeds 1-8 [--sb3]
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from stagerl.plotting import curve, plot_runs, read_metrics  # noqa: E402

METRIC = "train/success"


def parse_seeds(text: str) -> list[int]:
    """`1-8` or `1,3,5` (or a mix, `1-3,7`) to a list of seeds."""
    seeds: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        seeds.extend(range(int(low), int(high or low) + 1))
    if not seeds:
        raise argparse.ArgumentTypeError(f"no seeds in {text!r}")
    return seeds


def _stagerl(*args: str) -> None:
    """Run the CLI of this checkout's `src/` (not whatever stagerl is installed)."""
    command = [sys.executable, "-m", "stagerl", *args]
    path = os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
    environment = {**os.environ, "PYTHONPATH": path}
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=environment)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")


def run_seed(config: Path, seed: int, out: Path, episodes: int, threshold: float) -> dict:
    """Train and evaluate one seed; its run directory stays under `out/seed_<seed>`."""
    output = out / f"seed_{seed}"
    before = set(output.glob("*/*/metrics.jsonl"))  # runs of an earlier call, or another config
    start = time.perf_counter()
    _stagerl("train", str(config), "-s", str(seed), "-o", str(output))
    wall = time.perf_counter() - start
    (metrics,) = set(output.glob("*/*/metrics.jsonl")) - before
    run_dir = metrics.parent
    checkpoint = sorted(run_dir.glob("checkpoints/ckpt_*.pt"))[-1]
    results = run_dir / "test.json"
    _stagerl(
        "eval", str(config), "-c", str(checkpoint), "--episodes", str(episodes),
        "--output-json", str(results),
    )  # fmt: skip
    steps, success = curve(read_metrics(run_dir), METRIC)
    reached = next(
        (step for step, value in zip(steps, success, strict=True) if value >= threshold), None
    )
    return {
        "seed": seed,
        "test_success": json.loads(results.read_text())["success"],
        "first_step_at_threshold": reached,
        "wall_s": wall,
        "run_dir": str(run_dir),
        "curve": {"steps": steps, "success": success},
    }


def summarise(values: list[float]) -> dict[str, float | None]:
    """min / median / mean; an infinite one (a seed that never got there) becomes None."""
    stats = {
        "min": min(values),
        "median": statistics.median(values),
        "mean": statistics.mean(values),
    }
    return {name: value if math.isfinite(value) else None for name, value in stats.items()}


def _number(value: float | None) -> str:
    return "never" if value is None else f"{value:,.3f}"


def report(rows: list[dict], threshold: float) -> dict:
    """Print the per-seed table and the summary; return the summary."""
    print(f"{'seed':>6} {'test success':>13} {f'first step >= {threshold}':>22} {'wall s':>8}")
    for row in rows:
        reached = row["first_step_at_threshold"]
        print(
            f"{row['seed']:>6} {row['test_success']:>13.3f} "
            f"{reached if reached is not None else 'never':>22} {row['wall_s']:>8.1f}"
        )
    # A seed that never reaches the threshold counts as infinitely slow for the median.
    firsts = [row["first_step_at_threshold"] or float("inf") for row in rows]
    summary = {
        "test_success": summarise([row["test_success"] for row in rows]),
        "first_step_at_threshold": summarise(firsts),
        "wall_s": summarise([row["wall_s"] for row in rows]),
        "seeds_reaching_threshold_in_test": sum(r["test_success"] >= threshold for r in rows),
    }
    for name, stats in summary.items():
        if isinstance(stats, dict):
            print(f"{name:>26}: " + "  ".join(f"{k} {_number(v)}" for k, v in stats.items()))
    print(f"seeds with test success >= {threshold}: {summary['seeds_reaching_threshold_in_test']}")
    return summary


def main() -> None:
    """The command line the module's docstring describes."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", type=Path, help="experiment file")
    parser.add_argument("--seeds", type=parse_seeds, default=parse_seeds("1-8"), help="e.g. 1-8")
    parser.add_argument("--episodes", type=int, default=200, help="test episodes per seed")
    parser.add_argument("--threshold", type=float, default=0.95, help="success to reach")
    parser.add_argument(
        "--out", type=Path, help="where runs and results go (default: runs/learning/<config>)"
    )
    parser.add_argument("--sb3", action="store_true", help="train SB3's PPO on RL_ZOO settings")
    args = parser.parse_args()
    config = args.config.resolve()
    name = config.stem + ("-sb3" if args.sb3 else "")
    out = (args.out or ROOT / "runs" / "learning" / name).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in args.seeds:
        if args.sb3:
            from sb3_reference import run_sb3_seed

            rows.append(run_sb3_seed(config, seed, args.episodes, args.threshold))
        else:
            rows.append(run_seed(config, seed, out, args.episodes, args.threshold))
        row = rows[-1]
        print(f"seed {seed}: test success {row['test_success']:.3f}", file=sys.stderr)
    summary = report(rows, args.threshold)
    result = {"config": str(config), "episodes": args.episodes, "threshold": args.threshold}
    result["system"] = "stable-baselines3" if args.sb3 else "stagerl"
    (out / "learning.json").write_text(
        json.dumps({**result, "summary": summary, "seeds": rows}, indent=2) + "\n"
    )
    if args.sb3:
        print(f"results in {out}/learning.json", file=sys.stderr)
        return
    plot_runs(
        [Path(row["run_dir"]) for row in rows],
        out / "learning.png",
        metric=METRIC,
        title=f"{config.stem}, seeds {', '.join(str(row['seed']) for row in rows)}",
        threshold=args.threshold,
    )
    print(f"results in {out}/learning.json and learning.png", file=sys.stderr)


if __name__ == "__main__":
    main()
