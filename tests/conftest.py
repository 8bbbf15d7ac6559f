"""Fixtures shared across test folders."""

from pathlib import Path

import pytest

from stagerl.plugins.minigrid.recording import record_dataset


@pytest.fixture(scope="session")
def empty_dataset(tmp_path_factory) -> Path:
    """40 expert episodes of MiniGrid-Empty-Random-5x5 (the tiny fixtures' env), recorded once."""
    out = tmp_path_factory.mktemp("datasets") / "empty-5x5-v0"
    return record_dataset(
        env_id="MiniGrid-Empty-Random-5x5-v0", episodes=40, out=out, seed=0, workers=1
    )
