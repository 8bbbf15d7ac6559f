"""The examples learn: train from the command line, evaluate on 50 test episodes, as a user would.

These are the slowest tests (about a minute each on 2 cores); training is deterministic for a
seed, so the thresholds hold run to run on the same machine kind.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]

pytestmark = pytest.mark.timeout(600)


def _train_and_evaluate(config: str, tmp_path: Path, seed: int) -> dict:
    command = [sys.executable, "-m", "stagerl"]
    subprocess.run(
        [*command, "train", config, "-s", str(seed), "-o", str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    checkpoint = sorted(tmp_path.glob("*/*/checkpoints/ckpt_*.pt"))[-1]
    results = tmp_path / "eval.json"
    subprocess.run(
        [
            *command,
            "eval",
            config,
            "-c",
            str(checkpoint),
            "--episodes",
            "50",
            "--output-json",
            str(results),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return json.loads(results.read_text())


def test_gotoobj_ppo_reaches_95_percent_test_success(tmp_path):
    results = _train_and_evaluate("projects/babyai/gotoobj_ppo.py", tmp_path, seed=7)
    assert results["episodes"] == 50
    assert results["success"] > 0.95


def test_gotoobj_dagger_reaches_95_percent_test_success(tmp_path):
    results = _train_and_evaluate("projects/babyai/gotoobj_dagger.py", tmp_path, seed=7)
    assert results["success"] > 0.95
