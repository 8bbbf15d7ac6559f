"""Does the learner ever wait for the dataset? The off-policy iterator's batches per second next
to the learner's updates per second, for an experiment's off-policy stage.

Builds the first off-policy stage's iterator as the trainer does (the dataset from the
experiment, or `STAGERL_DATASET`), then times, one after the other in this process:
1. `--batches` batches drawn from the iterator alone (its background thread assembling them);
2. `--batches` off-policy updates of the experiment's model (forward, backward, step), each
   drawing its batch from the same iterator, with the trainer's update threads.
A ratio above 1 means batches come faster than the learner consumes them.

    python benchmarks/offpolicy.py projects/babyai/gotolocal_offpolicy_bc.py --batches 20
"""

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from stagerl.engine.distributed import Ranks  # noqa: E402
from stagerl.engine.learner import WeightedLoss  # noqa: E402
from stagerl.engine.offpolicy import OffPolicyLearner  # noqa: E402
from stagerl.engine.setup import (  # noqa: E402
    build_model,
    build_pipeline,
    build_samplers,
    offpolicy_iterators,
)
from stagerl.experiment import load_experiment  # noqa: E402


def main() -> None:
    """The command line the module's docstring describes."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args()

    experiment = load_experiment(args.config)
    pipeline = build_pipeline(experiment)
    index, stage = next(
        (i, s) for i, s in enumerate(pipeline.pipeline_stages) if s.offpolicy_component
    )
    component = stage.offpolicy_component
    machine, samplers = build_samplers(experiment, "train", seed=0)
    start = time.perf_counter()
    iterators = offpolicy_iterators(
        pipeline, samplers, seed=0, first_stage=index, ranks=Ranks(), tasks_per_rank=[len(samplers)]
    )
    iterator = iterators[index]
    print(f"dataset loaded in {time.perf_counter() - start:.1f} s")

    next(iterator)  # starts the thread; warm-up
    start = time.perf_counter()
    for _ in range(args.batches):
        batch = next(iterator)
    iterator_rate = args.batches / (time.perf_counter() - start)
    steps, streams = batch.actions.shape

    model = build_model(experiment, samplers[0].action_space)
    optimizer = pipeline.optimizer_builder(model.parameters())
    losses = [
        WeightedLoss(name, pipeline.named_losses[name], weight)
        for name, weight in zip(component.loss_names, component.loss_weights, strict=True)
    ]
    learner = OffPolicyLearner(component, iterator, losses=losses)
    learner.updates = 1
    torch.set_num_threads(machine.update_threads)
    update = dict(model=model, optimizer=optimizer, stage_steps=0, max_grad_norm=0.5)
    learner.update(**update)  # warm-up
    start = time.perf_counter()
    for _ in range(args.batches):
        learner.update(**update)
    learner_rate = args.batches / (time.perf_counter() - start)
    iterator.close()

    print(f"batch [{steps} x {streams}] = {steps * streams:,} samples")
    print(f"iterator: {iterator_rate:8.2f} batches/s")
    print(
        f"learner:  {learner_rate:8.2f} updates/s ({learner_rate * steps * streams:,.0f} samples/s)"
    )
    print(f"iterator / learner: {iterator_rate / learner_rate:.1f}x")


if __name__ == "__main__":
    main()
