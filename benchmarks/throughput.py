"""Frames per second against the ceiling, against synchronous sampling and against
Stable-Baselines3 (and AllenAct where installed), in one run.

On this machine, one figure after another (never two at once), each the median of several
timed windows after a warm-up:
- `ceiling_sps`: raw BabyAI-GoToObj steps/s with random actions, one process per core;
- `sampling_sps`: stagerl collecting rollouts of projects/babyai/gotoobj_ppo.py (16 tasks)
  with its model acting, no updates, double-buffered as in training; `sampling_sync_sps` the
  same synchronously on one process per core (the path before double buffering);
  `sampling_64_sps` double-buffered with 64 tasks;
- `gotoobj_fps`: `stagerl train projects/babyai/gotoobj_ppo.py` (sampling, inference, updates),
  from its metrics rows after the first; `peak_pss_mib`: the process tree at its peak, in a
  run of its own (reading PSS slows a run);
  `gotoobj_sync_fps`: the same with `MachineParams(double_buffered=False)`;
- `mlp_fps`: `stagerl train benchmarks/empty_mlp_ppo.py` (MiniGrid-Empty-Random-5x5, 64x64
  MLP, 16 tasks x 128 steps, 8 minibatches x 4 epochs) for 40 rollouts, the median of its
  metrics rows after the first;
- `sb3_fps`: Stable-Baselines3 PPO with the same network, envs, rollout, minibatches and epochs
  (DummyVecEnv), the median of its rollouts after the first over the same 40 rollouts (as its
  policy learns, episodes shorten and resets cost more); skipped with a message when
  stable-baselines3 is not installed
  (`pip install -e ".[bench]"`);
- `allenact_fps`: AllenAct's GoToObj PPO config at `-m 2`, only when `ALLENACT_PYTHON` names an
  interpreter that has AllenAct (`ALLENACT_CONFIG` the experiment file, `ALLENACT_PROJECT` the
  directory to run it from); skipped with a message otherwise.
It prints a table with the ratios and writes them all to `--json PATH` if given.

    python benchmarks/throughput.py [--json throughput.json]
"""

import argparse
import json
import multiprocessing as mp
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

GOTOOBJ = ROOT / "projects" / "babyai" / "gotoobj_ppo.py"
EMPTY_MLP = ROOT / "benchmarks" / "empty_mlp_ppo.py"
WINDOWS = 5
MLP_ROLLOUTS = 40  # of stagerl's and SB3's MLP runs, each timed rollout by rollout


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            tree.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    return tree


def tree_pss_mib(root: int) -> float:
    """Proportional set size of `root` and all its descendants (from smaps_rollup), in MiB."""
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
    return total / 1024


def _raw_steps(seconds: float) -> float:
    """Random-action steps/s of one BabyAI-GoToObj env in this process, after a warm-up."""
    import gymnasium as gym
    import minigrid  # noqa: F401

    env = gym.make("BabyAI-GoToObj-v0", disable_env_checker=True).unwrapped
    env.reset(seed=os.getpid())
    for _ in range(200):
        env.step(env.action_space.sample())
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        steps += 1
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


def ceiling_sps(seconds: float = 2.0) -> float:
    """Raw steps/s summed over one process per core: the median window of WINDOWS."""
    from stagerl.cores import usable_cores

    cores = usable_cores()
    with mp.get_context("spawn").Pool(cores) as pool:
        windows = [sum(pool.map(_raw_steps, [seconds] * cores)) for _ in range(WINDOWS)]
    return statistics.median(windows)


def sampling_sps(config: Path, groups: int, rollouts_per_window: int = 4) -> float:
    """stagerl's rollouts of `config` with its model acting, without updates, in `groups`
    sampler groups packed as training packs them."""
    import torch

    from stagerl.engine.rollout import collect_rollout
    from stagerl.engine.setup import build_training_setup, configure_trainer_process
    from stagerl.engine.storage import RolloutStorage
    from stagerl.experiment import load_experiment

    configure_trainer_process()
    setup = build_training_setup(load_experiment(config), seed=0)
    storage = RolloutStorage(
        num_steps=setup.pipeline.num_steps,
        num_tasks=setup.num_tasks,
        observation_space=setup.observation_space,
        memory_shape=setup.model.memory_shape,
    )
    frames = rollouts_per_window * storage.num_steps * storage.num_tasks
    windows = []
    start_sampler = setup.start_sampler if groups == 2 else _synchronous_sampler(setup)
    with start_sampler() as sampler, torch.no_grad():
        storage.set_observations(0, sampler.reset())
        storage.memory = setup.model.initial_memory(setup.num_tasks)
        setup.model.eval()
        for window in range(WINDOWS + 1):  # the first is the warm-up
            start = time.perf_counter()
            for _ in range(rollouts_per_window):
                collect_rollout(model=setup.model, sampler=sampler, storage=storage)
                storage.start_next_rollout()
            if window:
                windows.append(frames / (time.perf_counter() - start))
    return statistics.median(windows)


def _synchronous_sampler(setup):
    from stagerl.engine.setup import start_sampler

    return lambda: start_sampler(setup.experiment, setup.machine, samplers=setup.samplers, groups=1)


def _variant(config: Path, directory: str, body: str) -> Path:
    """A subclass of `config`'s experiment with `body` as its class body, written to a file."""
    path = Path(directory) / f"variant_{abs(hash(body))}.py"
    path.write_text(
        "import dataclasses\nfrom pathlib import Path\n"
        "from stagerl.experiment import load_experiment\n"
        f"Base = load_experiment(Path({str(config)!r})).config\n\n\n"
        f"class Variant(Base):\n{body}"
    )
    return path


SYNCHRONOUS = """    @classmethod
    def machine_params(cls, mode="train", **kwargs):
        params = super().machine_params(mode, **kwargs)
        return dataclasses.replace(params, double_buffered=False)
"""


def run_training(
    config: Path, output: str, *, ranks: int = 1, checkout: Path = ROOT, memory: bool = False
) -> tuple[float, float | None]:
    """`stagerl train config -o output` in a subprocess (under torchrun with `ranks` > 1), with
    stagerl imported from `checkout` (another commit's work tree, to compare against): its wall
    seconds from the start (start-up included) and, with `memory`, its process tree's peak PSS
    in MiB, read every 0.1 s (else None). Reading a 400 MiB process's smaps takes ~10 ms: a
    tenth of a core, which slowed the GoToObj example by ~1.2 s of 20 on 2 cores, so a timed run
    reads none. Its stderr goes to a file: a pipe fills up on a long run and stalls it."""
    command = [sys.executable, "-m", "stagerl", "train", str(config), "-o", output]
    if ranks > 1:
        launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"]
        command = [sys.executable, *launcher, *command[1:]]
    if not (checkout / "src" / "stagerl").is_dir():  # else this stagerl would run unnoticed
        sys.exit(f"{checkout}: no src/stagerl there; give the root of a stagerl work tree")
    source = os.pathsep.join(filter(None, [str(checkout / "src"), os.environ.get("PYTHONPATH")]))
    with (Path(output) / "stderr.log").open("w+") as log:
        start = time.perf_counter()
        process = subprocess.Popen(
            command,
            cwd=checkout,
            env={**os.environ, "PYTHONPATH": source},
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        peak = 0.0 if memory else None
        while process.poll() is None:
            if memory:
                peak = max(peak, tree_pss_mib(process.pid))
            time.sleep(0.1)
        wall = time.perf_counter() - start
        if process.returncode != 0:
            log.seek(0)
            sys.exit(f"{config}: training failed:\n{log.read()[-3000:]}")
    return wall, peak


def metrics_rows(output: str) -> list[dict[str, Any]]:
    """A finished run's metrics rows that report fps, after the first (which holds start-up)."""
    (metrics,) = Path(output).glob("*/*/metrics.jsonl")
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    return [row for row in rows if "fps" in row][1:]


def median_fps(output: str) -> float:
    """The median fps of `metrics_rows`."""
    return statistics.median(row["fps"] for row in metrics_rows(output))


def stagerl_training(config: Path) -> float:
    """`stagerl train` (`run_training`): `median_fps`."""
    with tempfile.TemporaryDirectory() as output:
        run_training(config, output)
        return median_fps(output)


def peak_pss_mib(config: Path) -> float:
    """The peak PSS of `stagerl train`'s process tree, in a run of its own (`run_training`)."""
    with tempfile.TemporaryDirectory() as output:
        return run_training(config, output, memory=True)[1]


def allenact_fps() -> float | None:
    """AllenAct's GoToObj PPO at `-m 2` in its own interpreter: the median of the fps it
    logs after its first row. None, with a message, unless ALLENACT_PYTHON is set."""
    python = os.environ.get("ALLENACT_PYTHON")
    if not python:
        print("ALLENACT_PYTHON is not set: allenact_fps skipped", file=sys.stderr)
        return None
    config = os.environ.get(
        "ALLENACT_CONFIG", "projects/babyai_baselines/experiments/go_to_obj/ppo.py"
    )
    project = os.environ.get("ALLENACT_PROJECT", ".")
    with tempfile.TemporaryDirectory() as output:
        command = [python, "-m", "allenact.main", config, "-o", output, "-m", "2", "-s", "0"]
        done = subprocess.run(command, cwd=project, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"AllenAct failed: allenact_fps skipped\n{done.stderr[-2000:]}", file=sys.stderr)
            return None
        fps = [float(x) for x in re.findall(r"fps[^0-9]{1,3}([0-9.]+)", done.stdout + done.stderr)]
    return statistics.median(fps[1:]) if len(fps) > 1 else None


def sb3_fps() -> float | None:
    """Stable-Baselines3 PPO with benchmarks/empty_mlp_ppo.py's settings, or None if absent."""
    try:
        import gymnasium as gym
        import minigrid  # noqa: F401
        from minigrid.wrappers import ImgObsWrapper
        from stable_baselines3 import PPO
        from stable_baselines3.common.vec_env import DummyVecEnv
    except ImportError:
        print("stable-baselines3 is not installed: sb3_fps skipped", file=sys.stderr)
        return None
    envs = DummyVecEnv([lambda: ImgObsWrapper(gym.make("MiniGrid-Empty-Random-5x5-v0"))] * 16)
    # The raw object indices, as stagerl's MLP sees them: SB3 divides uint8 images by 255 by
    # default, and learnt so much slower that its episodes still took ~30 steps at the 40th
    # rollout against stagerl's ~4, and a frame with fewer resets costs less.
    model = PPO(
        "MlpPolicy", envs, n_steps=128, batch_size=256, n_epochs=4, learning_rate=3e-4,
        gamma=0.99, gae_lambda=0.95, clip_range=0.2, ent_coef=0.0, seed=0, verbose=0,
        policy_kwargs=dict(normalize_images=False),
    )  # fmt: skip
    rollout = 16 * 128
    model.learn(rollout)  # warm-up, as stagerl's first metrics row is left out
    windows = []
    for _ in range(MLP_ROLLOUTS - 1):  # as long as stagerl's run: episodes shorten as it learns
        start = time.perf_counter()
        model.learn(rollout, reset_num_timesteps=False)
        windows.append(rollout / (time.perf_counter() - start))
    return statistics.median(windows)


def main() -> None:
    """The command line the module's docstring describes."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    results: dict[str, float | None] = {"ceiling_sps": ceiling_sps(), "sb3_fps": sb3_fps()}
    with tempfile.TemporaryDirectory() as variants:
        sync = _variant(GOTOOBJ, variants, SYNCHRONOUS)
        wide = _variant(GOTOOBJ, variants, "    NUM_TRAIN_SAMPLERS = 64\n")
        short_mlp = _variant(EMPTY_MLP, variants, f"    STEPS = {16 * 128 * MLP_ROLLOUTS}\n")
        results["sampling_sps"] = sampling_sps(GOTOOBJ, groups=2)
        results["sampling_sync_sps"] = sampling_sps(GOTOOBJ, groups=1)
        results["sampling_64_sps"] = sampling_sps(wide, groups=2)
        results["gotoobj_fps"] = stagerl_training(GOTOOBJ)
        results["gotoobj_sync_fps"] = stagerl_training(sync)
        results["mlp_fps"] = stagerl_training(short_mlp)
        results["peak_pss_mib"] = peak_pss_mib(GOTOOBJ)
    results["allenact_fps"] = allenact_fps()
    ceiling, sb3, allenact = results["ceiling_sps"], results["sb3_fps"], results["allenact_fps"]
    results["sampling_over_ceiling"] = results["sampling_sps"] / ceiling
    results["sampling_sync_over_ceiling"] = results["sampling_sync_sps"] / ceiling
    results["sampling_64_over_ceiling"] = results["sampling_64_sps"] / ceiling
    results["gotoobj_over_sync"] = results["gotoobj_fps"] / results["gotoobj_sync_fps"]
    results["mlp_over_sb3"] = results["mlp_fps"] / sb3 if sb3 else None
    results["gotoobj_over_allenact"] = results["gotoobj_fps"] / allenact if allenact else None
    for key, value in results.items():
        shown = "-" if value is None else f"{value:,.2f}" if value < 10 else f"{value:,.0f}"
        print(f"{key:>27}: {shown}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
