"""`stagerl train|eval|show|plot|record-dataset`: the command line.

Heavy imports happen inside the commands, so that `--help` is instant and spawned workers
(which re-import the main module) stay torch-free."""

import argparse
import atexit
import contextlib
import gc
import os
import shlex
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

from stagerl.errors import StagerlError, StoppedOutsideTraining
from stagerl.eval_command import evaluate as evaluate_command


def _whole(text: str, low: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"{value} is not {what}")
    return value


def _positive_int(text: str) -> int:
    return _whole(text, 1, "a positive integer")


def _seed(text: str) -> int:
    return _whole(text, 0, "a seed: seeds are 0 or more")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stagerl", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    _add_train_parser(commands)
    evaluate = commands.add_parser("eval", help="evaluate a checkpoint on the test tasks")
    evaluate.add_argument("config", type=Path, help="experiment file")
    evaluate.add_argument(
        "-c",
        "--checkpoint",
        type=Path,
        required=True,
        help="a ckpt_N.pt file, or a run directory (its newest checkpoint)",
    )
    evaluate.add_argument(
        "--episodes",
        type=_positive_int,
        help="test episodes (default: every task of test samplers that end, else 100)",
    )
    evaluate.add_argument(
        "-s", "--seed", type=_seed, default=0, help="seeds test samplers and actions (default: 0)"
    )
    _add_processes_argument(evaluate)
    evaluate.add_argument(
        "--deterministic",
        action="store_true",
        help="take the most likely action instead of sampling",
    )
    evaluate.add_argument(
        "--output-json",
        type=Path,
        help="where to write the results (default: next to the checkpoint, named by seed, "
        "sampled or deterministic actions, and episodes)",
    )
    evaluate.add_argument(
        "--video", type=Path, metavar="DIR", help="also write test episodes' videos here"
    )
    evaluate.add_argument(
        "--video-episodes", type=_positive_int, metavar="N", help="with --video: how many (4)"
    )
    _add_record_parser(commands)
    _add_plot_parser(commands)
    show = commands.add_parser(
        "show", help="check an experiment and print its training plan, starting no worker"
    )
    show.add_argument("config", type=Path, help="experiment file")
    _add_processes_argument(show)
    return parser


def _add_plot_parser(commands: argparse._SubParsersAction) -> None:
    plot = commands.add_parser(
        "plot",
        help="learning curves of runs: one colour per experiment, seeds as median and range",
    )
    plot.add_argument("runs", type=Path, nargs="+", metavar="RUN_DIR", help="run directories")
    plot.add_argument(
        "--metric", default="train/success", help="a metrics.jsonl column (default: train/success)"
    )
    plot.add_argument(
        "--x", choices=["step", "time"], default="step", help="steps or training seconds"
    )
    plot.add_argument("-o", "--output", type=Path, required=True, metavar="FILE.png")


def _add_train_parser(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser("train", help="train an experiment")
    train.add_argument("config", type=Path, help="experiment file (one ExperimentConfig)")
    train.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("runs"),
        help="runs go to OUTPUT/<tag>/<timestamp>/ (default: runs)",
    )
    train.add_argument(
        "-s",
        "--seed",
        type=_seed,
        help="random seed (default: 0); with --resume, the run's own, and `latest` picks the "
        "newest run of this seed when one is given",
    )
    _add_processes_argument(train)
    train.add_argument(
        "--resume",
        metavar="latest|PATH",
        help="continue the newest run of this tag, or a run dir / checkpoint (an older "
        "checkpoint than its run's newest continues in a new run dir)",
    )
    train.add_argument(
        "--allow-config-change",
        action="store_true",
        help="resume even though the experiment file changed (the diff is kept in the run dir)",
    )
    train.add_argument(
        "--keep-checkpoints",
        type=_positive_int,
        default=5,
        metavar="K",
        help="of the checkpoints this run writes, keep the newest K and every stage's final "
        "one (default: 5); checkpoints written before a resume are never deleted",
    )
    train.add_argument(
        "--max-nonfinite-updates",
        type=_positive_int,
        default=10,
        metavar="N",
        help="stop after N updates in a row with a NaN/inf loss (default: 10)",
    )


def _add_processes_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-m",
        "--max-sampler-processes",
        type=_positive_int,
        metavar="K",
        help="at most K sampler processes share the task samplers, as AllenAct's -m "
        "(default: MachineParams.max_sampler_processes, else one per CPU core)",
    )


def _add_record_parser(commands: argparse._SubParsersAction) -> None:
    record = commands.add_parser(
        "record-dataset", help="record expert episodes as a Minari dataset"
    )
    record.add_argument("--env", required=True, metavar="ENV_ID", help="a MiniGrid/BabyAI env id")
    record.add_argument("--episodes", type=_positive_int, required=True, metavar="N")
    record.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="the dataset directory to create"
    )
    record.add_argument("--seed", type=_seed, default=0, help="episode seeds (default: 0)")
    record.add_argument(
        "--workers", type=_positive_int, default=2, metavar="W", help="processes (default: 2)"
    )


def _make_run_dir(output: Path, tag: str) -> Path:
    from stagerl.engine.checkpoint import new_run_dir

    try:
        return new_run_dir(output / tag)
    except OSError as error:
        raise StagerlError(
            f"output directory {output}: cannot create a run there ({error})"
        ) from None


def _plan_run(args: argparse.Namespace, experiment: Any) -> tuple[Path, Any]:
    """The run directory, and the resume plan when `--resume` asks for one."""
    from stagerl.engine.resume import plan_resume

    if not args.resume:
        return _make_run_dir(args.output, experiment.tag()), None
    plan = plan_resume(
        args.resume,
        output=args.output,
        experiment=experiment,
        allow_config_change=args.allow_config_change,
        warn=lambda message: print(f"stagerl: {message}", file=sys.stderr),
        seed=args.seed,
    )
    message = f"resuming {plan.run_dir} from {plan.checkpoint.name}"
    if plan.branched_from:
        message = (
            f"{plan.checkpoint} is older than its run's newest checkpoint: continuing in "
            f"a new run directory {plan.run_dir} (its branch.json says from where)"
        )
    print(f"stagerl: {message}", file=sys.stderr)
    return plan.run_dir, plan


def _plan_and_hold_run(
    args: argparse.Namespace, experiment: Any, held: contextlib.ExitStack
) -> tuple[Path, dict | None, bool]:
    """`_plan_run`, then the run directory held by this process until `held` closes: no other
    trainer may write there meanwhile. With the checkpoint's payload, and whether the
    directory is new (a new run or a branch)."""
    from stagerl.engine.run_lock import hold_run_dir

    run_dir, plan = _plan_run(args, experiment)
    held.enter_context(hold_run_dir(run_dir))
    if plan is None:
        return run_dir, None, True
    plan.confirm_in_held_run()
    return run_dir, plan.payload, not plan.in_place


def _join_ranks(experiment: Any) -> Any:
    """This process's trainer rank: the process group joined when torchrun started several."""
    from stagerl.engine.distributed import Ranks
    from stagerl.engine.setup import trainer_device

    ranks = Ranks.from_environment()
    if ranks.distributed:
        machine = experiment.machine_params("train")
        ranks.start(trainer_device(machine), machine.rank_timeout)
    return ranks


def train(args: argparse.Namespace) -> int:
    """`stagerl train`: a new run, or a resumed one; under torchrun, one rank of it."""
    # Start-up builds ~320k objects that live as long as the run (torch's modules among them),
    # and the cyclic collector scanned them all six times while they came: 0.3 s of the GoToObj
    # example's 1.9 s to its first step. They hold next to no garbage, so it waits until then.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _train(args, collecting)
    finally:
        if collecting:
            gc.enable()


def _train(args: argparse.Namespace, collecting: bool) -> int:
    from stagerl.engine.progress import sigterm_raises
    from stagerl.engine.run_lock import remove_unstarted
    from stagerl.experiment import load_experiment

    experiment = load_experiment(args.config)
    ranks = _join_ranks(experiment)
    held = contextlib.ExitStack()  # rank 0's hold on the run directory: only it writes there
    # outside training, which handles signals itself: so that a new run's directory is removed
    held.enter_context(sigterm_raises())
    try:
        run_dir, resume, fresh = ranks.from_main(
            lambda: _plan_and_hold_run(args, experiment, held), "planning the run"
        )
        trainer = None
        try:
            trainer = _start_trainer(args, experiment, run_dir, resume, ranks)
            if collecting:
                gc.enable()  # start-up is over
            final = _run_trainer(trainer, experiment, run_dir, ranks)
        except BaseException:  # rank 0 may be waiting in record_run for a rank that failed
            # a new run or branch that took no step (its rows would say why it failed): no trace
            trained = trainer and trainer.state.total_steps > max(trainer.resumed_steps, 0)
            if ranks.is_main and fresh and not trained:
                held.close()
                with contextlib.suppress(OSError):
                    remove_unstarted(run_dir)
            raise
    finally:
        ranks.close()
        held.close()
    if ranks.is_main:
        _print_next_commands(args.config, run_dir, final)
    return 0


def _start_trainer(
    args: argparse.Namespace, experiment: Any, run_dir: Path, resume: dict | None, ranks: Any
) -> Any:
    """The Trainer of this rank, with the run's record written (by rank 0, of every rank)."""
    from stagerl.engine.run_record import record_run
    from stagerl.engine.trainer import Trainer

    trainer = Trainer(
        experiment,
        run_dir=run_dir,
        seed=0 if args.seed is None else args.seed,
        resume=resume,
        keep_checkpoints=args.keep_checkpoints,
        max_nonfinite_updates=args.max_nonfinite_updates,
        max_sampler_processes=args.max_sampler_processes,
        ranks=ranks,
    )
    mine = run_dir if ranks.is_main else None
    record_run(mine, trainer.setup, ranks=ranks, seed=trainer.seed, config=args.config)
    return trainer


def _run_trainer(trainer: Any, experiment: Any, run_dir: Path, ranks: Any) -> Path | None:
    """Train to the end; rank 0 says where and keeps the config beside the run."""
    if not ranks.is_main:
        return trainer.train()
    for note in trainer.share.notes if trainer.share else []:
        print(f"stagerl: {note}", file=sys.stderr)
    if not (run_dir / "config.py").exists():
        shutil.copy(experiment.path, run_dir / "config.py")
    world = f" on {ranks.world_size} trainer ranks" if ranks.distributed else ""
    print(f"stagerl: training {experiment.tag()} in {run_dir}{world}", file=sys.stderr)
    return trainer.train()


def _print_next_commands(config_path: Path, run_dir: Path, final: Path) -> None:
    print(f"stagerl: done; run directory {run_dir}", file=sys.stderr)
    config, run = shlex.quote(str(config_path)), shlex.quote(str(run_dir))
    for what, command in (
        ("evaluate", f"stagerl eval {config} -c {shlex.quote(str(final))}"),
        ("plot", f"stagerl plot {run} -o {run}/curves.png"),
        ("watch", f"tensorboard --logdir {shlex.quote(str(run_dir / 'tensorboard'))}"),
    ):
        print(f"  {what:>8}: {command}", file=sys.stderr)


def record_dataset(args: argparse.Namespace) -> int:
    """`stagerl record-dataset`: the expert's episodes as a Minari dataset."""
    from stagerl.plugins.minigrid.recording import record_dataset as record

    start = time.monotonic()
    path = record(
        env_id=args.env, episodes=args.episodes, out=args.out, seed=args.seed, workers=args.workers
    )
    seconds = time.monotonic() - start
    print(
        f"stagerl: {args.episodes} episodes in {seconds:.1f} s written to {path}", file=sys.stderr
    )
    return 0


def plot(args: argparse.Namespace) -> int:
    """`stagerl plot`: runs' curves of one metric into a PNG."""
    from stagerl.plotting import output_image, plot_runs

    output = output_image(args.output)
    plot_runs(args.runs, output, metric=args.metric, x=args.x)
    print(f"stagerl: {args.metric} of {len(args.runs)} runs drawn in {output}", file=sys.stderr)
    return 0


def show(args: argparse.Namespace) -> int:
    """`stagerl show`: the experiment checked and its plan printed."""
    from stagerl.experiment import load_experiment
    from stagerl.show import show as show_plan

    show_plan(load_experiment(args.config), args.max_sampler_processes)
    return 0


COMMANDS = {
    "train": train,
    "eval": evaluate_command,
    "record-dataset": record_dataset,
    "plot": plot,
    "show": show,
}


def main(argv: list[str] | None = None) -> int:
    """Run one command; errors stagerl expects exit with their code and a one-line message."""
    return _run_command(_parser().parse_args(argv))


def run() -> None:
    """The `stagerl` command (and `python -m stagerl`): `main`'s exit code, and after a
    successful `stagerl train` an exit that skips the interpreter's teardown. Training has
    closed everything it opened by then (workers joined, checkpoint and metrics written, the
    TensorBoard writer closed, the run's lock released), and the exit handlers still run (an
    experiment's logger may flush in one); tearing torch's modules down took 0.8 s more, 4% of
    the GoToObj example's wall time. A thread of the experiment's that is no daemon and still
    runs is waited for, by the ordinary exit."""
    args = _parser().parse_args()
    code = _run_command(args)
    others = [t for t in threading.enumerate() if t is not threading.main_thread()]
    if code == 0 and args.command == "train" and all(t.daemon for t in others):
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    sys.exit(code)


def _run_command(args: argparse.Namespace) -> int:
    try:
        return COMMANDS[args.command](args)
    except (StagerlError, StoppedOutsideTraining) as error:
        print(f"stagerl: error: {error}", file=sys.stderr)
        return getattr(error, "exit_code", 2)
    except KeyboardInterrupt:
        print("stagerl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    run()
