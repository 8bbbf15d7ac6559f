"""A feed-forward actor-critic over flattened observations: SB3's `MlpPolicy` layout."""

import numpy as np
import torch
from gymnasium import spaces
from torch import nn
from torch.distributions import Categorical

from stagerl.models.base import ActorCriticModel, ActorCriticOutput


def _tanh_mlp(inputs: int, hidden: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(inputs, width), nn.Tanh()]
        inputs = width
    return nn.Sequential(*layers)


class MLPActorCritic(ActorCriticModel):
    """Every observation flattened to floats and joined, then separate tanh MLPs (`hidden`,
    64 x 64 by default) for the policy and the value, with orthogonal initialisation (gain
    sqrt(2) inside, 0.01 for the policy's output, 1 for the value's), as Stable-Baselines3's
    `MlpPolicy`. Memoryless; a baseline for benchmarks and for tasks that need no memory."""

    def __init__(
        self,
        action_space: spaces.Discrete,
        observation_space: spaces.Dict,
        *,
        hidden: tuple[int, ...] = (64, 64),
    ) -> None:
        super().__init__(action_space, observation_space)
        self.uuids = list(observation_space.spaces)
        inputs = sum(int(np.prod(box.shape)) for box in observation_space.spaces.values())
        self.policy_net = _tanh_mlp(inputs, hidden)
        self.value_net = _tanh_mlp(inputs, hidden)
        self.action_head = nn.Linear(hidden[-1] if hidden else inputs, action_space.n)
        self.value_head = nn.Linear(hidden[-1] if hidden else inputs, 1)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.orthogonal_(module.weight, gain=2**0.5)
                nn.init.zeros_(module.bias)
        nn.init.orthogonal_(self.action_head.weight, gain=0.01)
        nn.init.orthogonal_(self.value_head.weight, gain=1.0)

    def forward(
        self,
        observations: dict[str, torch.Tensor],
        memory: torch.Tensor,
        prev_actions: torch.Tensor,
        masks: torch.Tensor,
    ) -> tuple[ActorCriticOutput, torch.Tensor]:
        """Act on `[T, N]` observations; memory passes through unchanged (there is none)."""
        steps, tasks = masks.shape
        parts = [observations[uuid].reshape(steps, tasks, -1).float() for uuid in self.uuids]
        flat = torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]
        logits = self.action_head(self.policy_net(flat))
        values = self.value_head(self.value_net(flat)).squeeze(-1)
        output = ActorCriticOutput(Categorical(logits=logits, validate_args=False), values)
        return output, memory
