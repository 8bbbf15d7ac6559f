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
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


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


def _state(memory: torch.Tensor, lstm: bool) -> torch.Tensor | tuple[torch.Tensor, ...]:
    return tuple(memory.chunk(2, dim=-1)) if lstm else memory


def _memory(state: torch.Tensor | tuple[torch.Tensor, ...], lstm: bool) -> torch.Tensor:
    return torch.cat(state, dim=-1) if lstm else state


def run_recurrent_stepwise(
    rnn: nn.GRU | nn.LSTM, inputs: torch.Tensor, memory: torch.Tensor, masks: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """What `run_recurrent` computes, by its definition: one step at a time, the memory
    multiplied by the mask before each step (so zeroed where an episode starts)."""
    lstm = isinstance(rnn, nn.LSTM)
    outputs = []
    for t in range(inputs.shape[0]):
        memory = memory * masks[t].view(1, -1, 1)
        out, state = rnn(inputs[t : t + 1], _state(memory, lstm))
        memory = _memory(state, lstm)
        outputs.append(out)
    return torch.cat(outputs, dim=0), memory


def _one_step(
    rnn: nn.GRU | nn.LSTM, inputs: torch.Tensor, memory: torch.Tensor, masks: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of every task, as the trainer takes while acting. A one-layer RNN runs as its
    cell function on the module's weights: for a batch of tens of tasks the module's call costs
    over twice as much (oneDNN sets up a primitive per call: 137 against 60 us for the GoToObj
    example's LSTM and 16 tasks)."""
    plain = rnn.num_layers == 1 and not rnn.bidirectional and not getattr(rnn, "proj_size", 0)
    if not plain:
        return run_recurrent_stepwise(rnn, inputs, memory, masks)
    state = memory[0] * masks[0, :, None]
    weights = (rnn.weight_ih_l0, rnn.weight_hh_l0)
    biases = (rnn.bias_ih_l0, rnn.bias_hh_l0) if rnn.bias else (None, None)
    if isinstance(rnn, nn.LSTM):
        h, c = torch.lstm_cell(inputs[0], tuple(state.chunk(2, dim=-1)), *weights, *biases)
        return h[None], torch.cat([h, c], dim=-1)[None]
    h = torch.gru_cell(inputs[0], state, *weights, *biases)
    return h[None], h[None]


def run_recurrent(
    rnn: nn.GRU | nn.LSTM, inputs: torch.Tensor, memory: torch.Tensor, masks: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a GRU or LSTM over `[T, N, F]` inputs, zeroing memory wherever `masks` marks an
    episode start. An LSTM's memory is its `(h, c)` joined on the last dimension.

    Over several steps, every stretch of one task's episode becomes its own sequence (from the
    task's memory for the first, from zeros after an episode start) and all of them run in one
    packed call, however often tasks reset; equal to `run_recurrent_stepwise` up to float
    rounding (tests/models), faster by benchmarks/recurrent.py.
    """
    steps, tasks = masks.shape
    if steps == 1:
        return _one_step(rnn, inputs, memory, masks)
    starts = masks == 0
    starts[0] = True
    in_task = starts.long().cumsum(0) - 1  # each step's stretch, counted within its task
    count = in_task[-1] + 1  # stretches per task
    first = count.cumsum(0) - count  # the id of each task's first stretch
    stretch = (in_task + first).flatten()
    time = torch.arange(steps, device=masks.device)[:, None].expand(steps, tasks)
    position = (time - torch.where(starts, time, 0).cummax(0).values).flatten()
    lengths = torch.bincount(stretch, minlength=int(count.sum()))
    padded = inputs.new_zeros(int(lengths.max()), len(lengths), inputs.shape[-1])
    padded[position, stretch] = inputs.reshape(steps * tasks, -1)
    initial = memory.new_zeros(memory.shape[0], len(lengths), memory.shape[-1])
    initial[:, first] = memory * masks[0].view(1, -1, 1)
    lstm = isinstance(rnn, nn.LSTM)
    packed = pack_padded_sequence(padded, lengths.cpu(), enforce_sorted=False)
    out, state = rnn(packed, _state(initial, lstm))
    out, _ = pad_packed_sequence(out, total_length=padded.shape[0])
    final = _memory(state, lstm)[:, first + count - 1]  # each task's last stretch
    return out[position, stretch].view(steps, tasks, -1), final
