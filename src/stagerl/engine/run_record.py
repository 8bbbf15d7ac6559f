"""`run.json`: how a run was started, so that it can be reproduced: the command, the trainer
ranks (host, process, device, tasks and their seeds), the seed, the versions of the stack and the
git commit of the experiment file. A resume adds an entry under `resumes`."""

import json
import os
import platform
import shlex
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from stagerl.engine.distributed import Ranks
from stagerl.engine.files import write_atomically
from stagerl.engine.setup import TrainingSetup, sampler_seeds

PACKAGES = ("stagerl", "torch", "gymnasium", "minigrid", "numpy")


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def git_commit(directory: Path) -> dict[str, Any] | None:
    """The commit checked out where `directory` is, and whether tracked files differ from it;
    None outside a git work tree (or without git)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(directory), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def _launcher() -> dict[str, Any]:
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return {"name": "stagerl"}
    return {
        "name": "torchrun",
        "nodes": int(os.environ.get("GROUP_WORLD_SIZE", "1")),
        "processes_per_node": int(os.environ.get("LOCAL_WORLD_SIZE", "1")),
        "run_id": os.environ["TORCHELASTIC_RUN_ID"],
    }


def record_run(
    run_dir: Path | None, setup: TrainingSetup, *, ranks: Ranks, seed: int, config: Path
) -> Path | None:
    """Write (rank 0) or extend `run_dir/run.json`; every rank must call it, since each
    describes itself."""
    me = {
        "rank": ranks.rank,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "device": str(setup.device),
        "first_task": setup.first_task,
        "tasks": setup.num_tasks,
    }
    described = ranks.gather(me, "the run record")
    if described is None or run_dir is None:
        return None
    seeds = sampler_seeds(seed, setup.total_tasks)
    for rank in described:
        first = rank["first_task"]
        rank["sampler_seeds"] = seeds[first : first + rank["tasks"]]
    start = {
        "command": shlex.join(getattr(sys, "orig_argv", sys.argv)),
        "launcher": _launcher(),
        "world_size": ranks.world_size,
        "ranks": described,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": _versions(),
        "git": git_commit(config.resolve().parent),
    }
    path = run_dir / "run.json"
    if path.exists():
        record = json.loads(path.read_text())
        record.setdefault("resumes", []).append(start)
    else:
        record = {
            **start,
            "experiment": setup.experiment.name,
            "config": str(config),
            "seed": seed,
            "total_tasks": setup.total_tasks,
        }
    text = json.dumps(record, indent=2) + "\n"
    write_atomically(path, lambda file: file.write(text.encode()))
    return path
