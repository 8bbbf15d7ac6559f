"""How fast the recurrent model's update pass is: `run_recurrent` (every episode stretch in one
packed call) against the step-by-step definition, `run_recurrent_stepwise`, in one run.

Forward and backward of the GoToObj example's model (BabyAIRecurrentACModel, LSTM-128) over
`[T, N]` minibatches where an episode ends on average every `--episode-length` steps, with the
update's thread count; each figure the median of `--repeats` timed passes after a warm-up.

    python benchmarks/recurrent.py [--steps 32 128] [--tasks 8] [--episode-length 8]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from stagerl.models import base  # noqa: E402
from stagerl.plugins.minigrid import BabyAIRecurrentACModel  # noqa: E402
from stagerl.plugins.minigrid.sensors import EgocentricMiniGridSensor  # noqa: E402
from stagerl.tasks.sensors import SensorSuite  # noqa: E402


def _pass_ms(model, observations, memory, masks, repeats: int) -> float:
    times = []
    for repeat in range(repeats + 1):  # the first is the warm-up
        start = time.perf_counter()
        output, _ = model(observations, memory, torch.zeros_like(masks).long(), masks)
        (output.values.square().mean() - output.distributions.entropy().mean()).backward()
        if repeat:
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--episode-length", type=float, default=8.0)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    space = SensorSuite([EgocentricMiniGridSensor(view_channels=3)]).observation_space
    from gymnasium import spaces

    model = BabyAIRecurrentACModel(spaces.Discrete(7), space, use_memory=True)
    packed = base.run_recurrent
    for steps in args.steps:
        image = torch.randint(0, 11, (steps, args.tasks, 7, 7, 3), dtype=torch.uint8)
        masks = (torch.rand(steps, args.tasks) > 1 / args.episode_length).float()
        memory = model.initial_memory(args.tasks)
        timings = {}
        for name, function in (("stepwise", base.run_recurrent_stepwise), ("packed", packed)):
            base_module = sys.modules["stagerl.plugins.minigrid.babyai_model"]
            base_module.run_recurrent = function  # the model's own reference to it
            timings[name] = _pass_ms(
                model, {"minigrid_ego_image": image}, memory, masks, args.repeats
            )
        base_module.run_recurrent = packed
        print(
            f"[{steps:>3} x {args.tasks}] stepwise {timings['stepwise']:7.2f} ms   "
            f"packed {timings['packed']:7.2f} ms   speed-up {timings['stepwise'] / timings['packed']:.2f}x"
        )


if __name__ == "__main__":
    main()
