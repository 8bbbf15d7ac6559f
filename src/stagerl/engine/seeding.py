"""The trainer's random streams: seeding them, and their state for checkpoints."""

import random
from typing import Any

import numpy as np
import torch


def rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    """Every random stream of the trainer; CUDA's too, where actions are sampled on a GPU."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
        **{name: g.get_state() for name, g in generators.items()},
    }


def set_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    """Put back every random stream `rng_state` took."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, generator in generators.items():
        generator.set_state(state[name])


def rank_seed(seed: int, *, rank: int, total_steps: int) -> int:
    """The seed of a rank's random streams, other than rank 0's at the start (which is `seed`)."""
    return int(np.random.SeedSequence([seed, rank, total_steps]).generate_state(1)[0])


def seed_everything(seed: int) -> dict[str, torch.Generator]:
    """Seed python, numpy and torch; return the trainer's own generators (minibatches, teacher)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return {
        "minibatch_rng": torch.Generator().manual_seed(seed + 1),
        "teacher_rng": torch.Generator().manual_seed(seed + 2),
    }
