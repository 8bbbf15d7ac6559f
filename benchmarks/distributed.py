"""Trainer ranks on this machine, and an estimate of how training scales to many.

Measured here, one after another (never two at once):
- `stagerl train projects/babyai/gotoobj_ppo.py` on 1 rank and under `torchrun` on 2 ranks
  (the same 16 tasks split 8 + 8), `--runs` of each, alternating: frames/s (median of the
  metrics rows after the first) and, for 2 ranks, the share of an update spent in the gradient
  all-reduce (`allreduce_share`, which includes waiting for the slower rank);
- the gloo all-reduce of a 1-float and of a gradient-sized buffer (the example model's
  parameters) between 2 ranks: from these, a latency `a` and a per-byte time `b`.

Then arithmetic, not measurement: R ranks, each with the 1-rank run's share of tasks and cores
(weak scaling: each rank as this machine), take per rollout the measured 1-rank rollout time
plus `num_mini_batch x update_repeats` ring all-reduces of 2(R-1) a + 2(R-1)/R x bytes x b. With
loopback figures this is the bound for ranks on one machine; across machines the network's
latency and bandwidth replace them (the table also shows an assumed 10 Gbit/s, 50 us network).

    python benchmarks/distributed.py [--runs 2] [--json distributed.json]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from throughput import GOTOOBJ, ROOT, metrics_rows, run_training

RANKS_SHOWN = (1, 2, 4, 8, 16, 32, 64)
NETWORK = {"latency_s": 50e-6, "seconds_per_byte": 8 / 10e9}  # assumed: 10 Gbit/s, 50 us


def _fps_and_share(config: Path, ranks: int) -> tuple[float, float | None]:
    with tempfile.TemporaryDirectory() as output:
        run_training(config, output, ranks=ranks)
        rows = metrics_rows(output)
    fps = statistics.median(row["fps"] for row in rows)
    shares = [row["allreduce_share"] for row in rows if "allreduce_share" in row]
    return fps, statistics.median(shares) if shares else None


def _allreduce_worker(numel: int, repeats: int) -> None:
    """Under torchrun: time `repeats` all-reduces of `numel` floats; rank 0 prints the median."""
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    buffer = torch.ones(numel)
    times = []
    for _ in range(repeats):
        dist.barrier()
        start = time.perf_counter()
        dist.all_reduce(buffer)
        times.append(time.perf_counter() - start)
    if dist.get_rank() == 0:
        print(json.dumps({"seconds": statistics.median(times)}))
    dist.destroy_process_group()


def _allreduce_seconds(numel: int, repeats: int = 200) -> float:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node=2", __file__, "--allreduce-worker", str(numel), str(repeats)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["seconds"]


def _example_sizes() -> tuple[int, int, int]:
    """The example's parameter count, frames per rollout and all-reduces per rollout."""
    sys.path.insert(0, str(ROOT / "src"))
    from stagerl.engine.model_setup import build_model
    from stagerl.engine.setup import build_pipeline
    from stagerl.experiment import load_experiment

    experiment = load_experiment(GOTOOBJ)
    pipeline = build_pipeline(experiment)
    sampler_args = experiment.call(
        "train_task_sampler_args", process_ind=0, total_processes=1, seeds=[0]
    )
    action_space = experiment.call("make_sampler_fn", **sampler_args).action_space
    parameters = sum(p.numel() for p in build_model(experiment, action_space).parameters())
    tasks = experiment.machine_params("train").nprocesses
    stage = pipeline.pipeline_stages[0]
    allreduces = pipeline.setting(stage, "num_mini_batch") * pipeline.setting(
        stage, "update_repeats"
    )
    return parameters, pipeline.num_steps * tasks, allreduces


def _estimate(rollout_s: float, frames: int, allreduces: int, nbytes: int, link: dict) -> list:
    rows = []
    for ranks in RANKS_SHOWN:
        ring = 2 * (ranks - 1) * link["latency_s"]
        ring += 2 * (ranks - 1) / ranks * nbytes * link["seconds_per_byte"]
        seconds = rollout_s + allreduces * ring
        rows.append(
            {"ranks": ranks, "fps": ranks * frames / seconds, "efficiency": rollout_s / seconds}
        )
    return rows


def main() -> None:
    """The command line the module's docstring describes."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=2, help="runs on 1 and on 2 ranks (default 2)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    results: dict = {"fps_1_rank": [], "fps_2_ranks": [], "allreduce_share_2_ranks": []}
    for _ in range(args.runs):
        results["fps_1_rank"].append(_fps_and_share(GOTOOBJ, 1)[0])
        fps, share = _fps_and_share(GOTOOBJ, 2)
        results["fps_2_ranks"].append(fps)
        results["allreduce_share_2_ranks"].append(share)
    parameters, frames, allreduces = _example_sizes()
    small, large = _allreduce_seconds(1), _allreduce_seconds(parameters)
    # for 2 ranks the ring takes 2 steps of latency and moves the buffer once: t = 2a + n b
    loopback = {
        "latency_s": small / 2,
        "seconds_per_byte": max(large - small, 0) / (4 * parameters),
    }
    fps_1 = statistics.median(results["fps_1_rank"])
    rollout_s = frames / fps_1
    figures = {
        "fps_1_rank": fps_1,
        "fps_2_ranks": statistics.median(results["fps_2_ranks"]),
        "allreduce_share_2_ranks": statistics.median(results["allreduce_share_2_ranks"]),
        "parameters": parameters,
        "allreduce_1_float_s": small,
        "allreduce_gradient_s": large,
        "rollout_s_1_rank": rollout_s,
        "estimate_loopback": _estimate(rollout_s, frames, allreduces, 4 * parameters, loopback),
        "estimate_10gbit": _estimate(rollout_s, frames, allreduces, 4 * parameters, NETWORK),
    }
    print(f"GoToObj example, {os.cpu_count()} cores: 1 rank {figures['fps_1_rank']:,.0f} fps, "
          f"2 ranks {figures['fps_2_ranks']:,.0f} fps (ratio "
          f"{figures['fps_2_ranks'] / fps_1:.2f}); all-reduce share of a 2-rank update "
          f"{figures['allreduce_share_2_ranks']:.0%}")  # fmt: skip
    print(f"gloo all-reduce, 2 ranks: 1 float {small * 1e6:.0f} us, {parameters:,} floats "
          f"{large * 1e6:.0f} us; a rollout on 1 rank {rollout_s * 1e3:.0f} ms, "
          f"{allreduces} all-reduces per rollout")  # fmt: skip
    print("estimate (arithmetic), each rank with this machine's tasks and cores:")
    print(f"{'ranks':>6} {'fps, loopback':>15} {'eff.':>6} {'fps, 10 Gbit/s':>15} {'eff.':>6}")
    for near, far in zip(figures["estimate_loopback"], figures["estimate_10gbit"], strict=True):
        print(f"{near['ranks']:>6} {near['fps']:>15,.0f} {near['efficiency']:>6.0%} "
              f"{far['fps']:>15,.0f} {far['efficiency']:>6.0%}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--allreduce-worker":
        _allreduce_worker(int(sys.argv[2]), int(sys.argv[3]))
    else:
        main()
