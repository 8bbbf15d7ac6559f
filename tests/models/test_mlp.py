"""MLPActorCritic: SB3's MlpPolicy layout over flattened observations."""

import numpy as np
import torch
from gymnasium import spaces

from stagerl import MLPActorCritic


def test_flattens_every_observation_and_starts_near_uniform_with_sb3s_layer_sizes():
    space = spaces.Dict(
        {"grid": spaces.Box(0, 255, (7, 7, 3), np.uint8), "extra": spaces.Box(0, 1, (4,))}
    )
    torch.manual_seed(0)
    model = MLPActorCritic(spaces.Discrete(7), space)
    shapes = [tuple(p.shape) for p in model.policy_net.parameters()]
    assert shapes == [(64, 151), (64,), (64, 64), (64,)]  # 147 + 4 inputs
    observations = {
        "grid": torch.randint(0, 11, (5, 3, 7, 7, 3), dtype=torch.uint8),
        "extra": torch.rand(5, 3, 4),
    }
    memory = model.initial_memory(3)
    output, after = model(
        observations, memory, torch.zeros(5, 3, dtype=torch.long), torch.ones(5, 3)
    )
    assert output.values.shape == (5, 3) and output.distributions.probs.shape == (5, 3, 7)
    assert after is memory and memory.numel() == 0
    assert torch.allclose(output.distributions.probs, torch.full((5, 3, 7), 1 / 7), atol=0.05)
