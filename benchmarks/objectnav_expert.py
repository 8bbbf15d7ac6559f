"""The ObjectNav expert on the test scenes: success and SPL over the experiment's fixed test
episodes (100 over 50 scenes by default), and its steps per second.

    python benchmarks/objectnav_expert.py [--episodes 100]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from stagerl.plugins.miniworld import MiniWorldObjectNavExperimentConfig  # noqa: E402
from stagerl.plugins.miniworld.tasks import ObjectNavTaskSampler  # noqa: E402


def main() -> None:
    """The command line the module's docstring describes."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=100)
    args = parser.parse_args()
    config = MiniWorldObjectNavExperimentConfig
    sampler_args = config.test_task_sampler_args(process_ind=0, total_processes=1)
    sampler = ObjectNavTaskSampler(**{**sampler_args, "max_tasks": args.episodes})
    results, steps, start = [], 0, time.perf_counter()
    while (task := sampler.next_task()) is not None:
        while not task.is_done():
            task.step(task.query_expert()[0])
            steps += 1
        results.append(task.metrics())
    seconds = time.perf_counter() - start
    sampler.close()
    mean = {key: statistics.mean(r[key] for r in results) for key in results[0]}
    print(f"expert on {len(results)} test episodes: success {mean['success']:.3f}, "
          f"SPL {mean['spl']:.3f}, episode length {mean['ep_length']:.1f}, "
          f"{steps / seconds:.0f} steps/s with the expert planning each step")  # fmt: skip


if __name__ == "__main__":
    main()
