"""The actor-critic contract every model implements.

Shapes: observations are `[T, N, ...]` (T steps of N tasks); `masks[t, n] == 0` where step t
starts a new episode for task n (memory must be reset there); memory is `[layers, N, hidden]`
like torch's GRU, with `(layers, hidden) == model.memory_shape`.
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch
from gymnasium import spaces
from torch import nn
from torch.distributions import Categorical


@dataclass
class ActorCriticOutput:
    """What a model returns for a `[T, N]` batch: the policy, `values [T, N]` and extras."""

    distributions: Categorical
    values: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


class ActorCriticModel(nn.Module, ABC):
    """A policy and value function over a dict of observations, with optional recurrent memory."""

    def __init__(self, action_space: spaces.Discrete, observation_space: spaces.Dict) -> None:
        super().__init__()
        if not isinstance(action_space, spaces.Discrete):
            raise TypeError(f"only Discrete action spaces are supported, got {action_space}")
        self.action_space = action_space
        self.observation_space = observation_space

    @property
    def memory_shape(self) -> tuple[int, int]:
        """`(layers, hidden)` of the recurrent state per task; `(0, 0)` for feed-forward models."""
        return (0, 0)

    def initial_memory(self, num_tasks: int) -> torch.Tensor:
        """Zero memory for `num_tasks` tasks, on the model's device."""
        layers, hidden = self.memory_shape
        device = next(self.parameters(), torch.empty(0)).device
        return torch.zeros(layers, num_tasks, hidden, device=device)

    @abstractmethod
    def forward(
        self,
        observations: dict[str, torch.Tensor],
        memory: torch.Tensor,
        prev_actions: torch.Tensor,
        masks: torch.Tensor,
    ) -> tuple[ActorCriticOutput, torch.Tensor]:
        """Act on `[T, N]` observations starting from `memory`; return outputs and new memory."""


def run_recurrent(
    rnn: nn.GRU | nn.LSTM, inputs: torch.Tensor, memory: torch.Tensor, masks: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a GRU or LSTM over `[T, N, F]` inputs, zeroing memory wherever `masks` marks an
    episode start. An LSTM's memory is its `(h, c)` joined on the last dimension.

    The sequence is cut only at steps where some task resets, so most of it runs as one fused
    call instead of T single steps.
    """
    steps = inputs.shape[0]
    reset_steps = (masks[1:] == 0).any(dim=1).nonzero().flatten().add(1).tolist()
    bounds = [0, *reset_steps, steps]
    lstm = isinstance(rnn, nn.LSTM)
    outputs = []
    for start, end in zip(bounds[:-1], bounds[1:], strict=False):
        memory = memory * masks[start].view(1, -1, 1)
        state = tuple(memory.chunk(2, dim=-1)) if lstm else memory
        out, state = rnn(inputs[start:end], state)
        memory = torch.cat(state, dim=-1) if lstm else state
        outputs.append(out)
    return torch.cat(outputs, dim=0), memory
