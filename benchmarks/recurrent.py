"""How fast the recurrent model's update pass is, in one run: `run_recurrent` against the
step-by-step definition (`run_recurrent_stepwise`), against running every episode stretch
in one packed call (`_packed`, what `run_recurrent` does for a GRU, and did for an LSTM), and
against an LSTM call per length class (what it did before `_length_groups` joined classes).

Forward and backward of the GoToObj example's model (BabyAIRecurrentACModel, LSTM-128) over
`[T, N]` minibatches where an episode ends on average every `--episode-lengths` steps (drawn
anew for each pass), with the update's thread count; each figure the median of `--repeats`
timed passes after a warm-up, the three ways taking turns on the same minibatch.

    python benchmarks/recurrent.py [--steps 32 128] [--tasks 8] [--episode-lengths 4 12 40]
"""

import argparse
import itertools
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


def _call_per_class(rnn, inputs, *, memory, masks):
    """`run_recurrent` with every length class in a call of its own."""
    grouping = base._length_groups
    base._length_groups = lambda rnn, longest, counts: list(range(len(longest)))
    try:
        return base.run_recurrent(rnn, inputs, memory=memory, masks=masks)
    finally:
        base._length_groups = grouping


def _pass_ms(model, observations, memory, masks) -> float:
    start = time.perf_counter()
    output, _ = model(observations, memory, torch.zeros_like(masks).long(), masks)
    (output.values.square().mean() - output.distributions.entropy().mean()).backward()
    return (time.perf_counter() - start) * 1000


def main() -> None:
    """The command line the module's docstring describes."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--episode-lengths", type=float, nargs="+", default=[4.0, 12.0, 40.0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    space = SensorSuite([EgocentricMiniGridSensor(view_channels=3)]).observation_space
    from gymnasium import spaces

    model = BabyAIRecurrentACModel(spaces.Discrete(7), space, use_memory=True)
    model_module = sys.modules["stagerl.plugins.minigrid.babyai_model"]
    ways = {
        "stepwise": base.run_recurrent_stepwise,
        "packed": base._packed,
        "per_class": _call_per_class,
        "run_recurrent": base.run_recurrent,
    }
    for steps, length in itertools.product(args.steps, args.episode_lengths):
        image = torch.randint(0, 11, (steps, args.tasks, 7, 7, 3), dtype=torch.uint8)
        memory = model.initial_memory(args.tasks)
        times: dict[str, list[float]] = {name: [] for name in ways}
        for repeat in range(args.repeats + 1):  # the first is the warm-up
            # new episode ends every time, as every minibatch of an update has its own
            masks = (torch.rand(steps, args.tasks) > 1 / length).float()
            for name, function in ways.items():
                model_module.run_recurrent = function  # the model's own reference to it
                elapsed = _pass_ms(model, {"minigrid_ego_image": image}, memory, masks)
                if repeat:
                    times[name].append(elapsed)
        model_module.run_recurrent = ways["run_recurrent"]
        ms = {name: statistics.median(values) for name, values in times.items()}
        print(
            f"[{steps:>3} x {args.tasks}], episodes of ~{length:>4.0f} steps: "
            + "   ".join(f"{name} {value:6.2f} ms" for name, value in ms.items())
            + f"   run_recurrent's speed-up: {ms['stepwise'] / ms['run_recurrent']:.2f}x over "
            f"stepwise, {ms['packed'] / ms['run_recurrent']:.2f}x over packed, "
            f"{ms['per_class'] / ms['run_recurrent']:.2f}x over per_class"
        )


if __name__ == "__main__":
    main()
