"""Train projects/babyai/gotoobj_ppo.py end to end and report what it cost.

Prints wall time (start-up included), training frames per second, the peak PSS summed over the
run's process tree (from /proc/<pid>/smaps_rollup), and frames per second as a fraction of the
raw environment step rate measured in this same script (the ceiling on 2 cores).

    python benchmarks/gotoobj.py [--seed 7]
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "projects" / "babyai" / "gotoobj_ppo.py"
STEPS = 50_000


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            tree.setdefault(parent, []).append(int(entry))
    return tree


def tree_pss_kib(root: int) -> int:
    """Proportional set size of `root` and all its descendants, in KiB."""
    tree, total, todo = _children(), 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(tree.get(pid, []))
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def raw_env_rate(seconds: float = 3.0) -> float:
    """Random-action steps per second of one BabyAI-GoToObj env in this process (one core)."""
    import gymnasium as gym
    import minigrid  # noqa: F401

    env = gym.make("BabyAI-GoToObj-v0", disable_env_checker=True).unwrapped
    env.reset(seed=0)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        steps += 1
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


def train(seed: int) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as output:
        command = [
            sys.executable,
            "-m",
            "stagerl",
            "train",
            str(CONFIG),
            "-s",
            str(seed),
            "-o",
            output,
        ]
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        peak = 0
        while process.poll() is None:
            peak = max(peak, tree_pss_kib(process.pid))
            time.sleep(0.1)
        wall = time.perf_counter() - start
        if process.returncode != 0:
            sys.exit(f"training failed:\n{process.stderr.read().decode()}")
    return wall, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    ceiling = raw_env_rate()
    wall, peak_kib = train(args.seed)
    fps = STEPS / wall
    print(f"wall time (start-up included): {wall:.1f} s for {STEPS:,} steps")
    print(f"frames per second:             {fps:,.0f}")
    print(f"peak PSS of the process tree:  {peak_kib / 2**20:.2f} GiB")
    print(f"fps / raw env rate on 1 core:  {fps / ceiling:.2f}  (raw: {ceiling:,.0f} steps/s)")


if __name__ == "__main__":
    main()
