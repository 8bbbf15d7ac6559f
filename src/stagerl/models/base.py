"""The actor-critic contract every model implements.

Shapes: observations are `[T, N, ...]` (T steps of N tasks); `masks[t, n] == 0` where step t
starts a new episode for task n (memory must be reset there); memory is `[layers, N, hidden]`
like torch's GRU, with `(layers, hidden) == model.memory_shape`.
"""

import contextlib
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
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


_unused = threading.local()  # `_unused.memory`: within `memory_unused()` in this thread


@contextlib.contextmanager
def memory_unused() -> Iterator[None]:
    """Within this block the caller reads no memory that a forward pass returns (the learner's
    update discards it), so `run_recurrent` skips rebuilding a one-layer CPU LSTM's cell state
    after the last step (12% of the GoToObj example's update) and returns that half of the
    memory as NaN, never as a number that looks right. A model whose forward passes one
    `run_recurrent` call's memory to another gets a ValueError naming this block."""
    previous = getattr(_unused, "memory", False)
    _unused.memory = True
    try:
        yield
    finally:
        _unused.memory = previous


def _state(memory: torch.Tensor, lstm: bool) -> torch.Tensor | tuple[torch.Tensor, ...]:
    return tuple(memory.chunk(2, dim=-1)) if lstm else memory


def _memory(state: torch.Tensor | tuple[torch.Tensor, ...], lstm: bool) -> torch.Tensor:
    return torch.cat(state, dim=-1) if lstm else state


def run_recurrent_stepwise(
    rnn: nn.GRU | nn.LSTM, inputs: torch.Tensor, *, memory: torch.Tensor, masks: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """What `run_recurrent` computes, by its definition: one step at a time, the memory
    multiplied by the mask before each step (so zeroed where an episode starts)."""
    lstm = isinstance(rnn, nn.LSTM)
    outputs = []
    for t in range(inputs.shape[0]):
        memory = memory * masks[t].view(1, -1, 1)
        step = inputs[t : t + 1].transpose(0, 1) if rnn.batch_first else inputs[t : t + 1]
        out, state = rnn(step, _state(memory, lstm))
        memory = _memory(state, lstm)
        outputs.append(out.transpose(0, 1) if rnn.batch_first else out)
    return torch.cat(outputs, dim=0), memory


def _plain(rnn: nn.GRU | nn.LSTM) -> bool:
    """One layer, one direction: what the fast paths below handle (`run_recurrent` refuses
    projections first)."""
    return rnn.num_layers == 1 and not rnn.bidirectional


def _one_step(
    rnn: nn.GRU | nn.LSTM, inputs: torch.Tensor, memory: torch.Tensor, masks: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of every task, as the trainer takes while acting. A one-layer RNN runs as its
    cell function on the module's weights: for a batch of tens of tasks the module's call costs
    over twice as much (oneDNN sets up a primitive per call: 137 against 60 us for the GoToObj
    example's LSTM and 16 tasks)."""
    if not _plain(rnn):
        return run_recurrent_stepwise(rnn, inputs, memory=memory, masks=masks)
    state = memory[0] * masks[0, :, None]
    weights = (rnn.weight_ih_l0, rnn.weight_hh_l0)
    biases = (rnn.bias_ih_l0, rnn.bias_hh_l0) if rnn.bias else (None, None)
    if isinstance(rnn, nn.LSTM):
        h, c = torch.lstm_cell(inputs[0], tuple(state.chunk(2, dim=-1)), *weights, *biases)
        return h[None], torch.cat([h, c], dim=-1)[None]
    h = torch.gru_cell(inputs[0], state, *weights, *biases)
    return h[None], h[None]


def _lstm_final_cell(
    rnn: nn.LSTM,
    inputs: torch.Tensor,
    outputs: torch.Tensor,
    memory: torch.Tensor,
    masks: torch.Tensor,
    t0: int,
) -> torch.Tensor:
    """Each task's cell state after the last step, `[N, H]`, from the hidden states the LSTM
    output. With every step's gates known, the recurrence c_t = f_t * m_t * c_(t-1) + i_t * g_t
    unrolls to a sum over steps weighted by products of f_t * m_t, which are zero across an
    episode start: only the steps from `t0`, the earliest of the tasks' last episode starts,
    on count."""
    h0, c0 = memory[0].chunk(2, dim=-1)
    if t0 > 0:  # what came before t0 is cut off by each task's episode start
        h0, c0 = outputs[t0 - 1], torch.zeros_like(c0)
    masks, inputs = masks[t0:, :, None], inputs[t0:]
    previous = torch.cat([h0[None], outputs[t0:-1]]) * masks
    hidden = rnn.hidden_size
    weight_ih, weight_hh = rnn.weight_ih_l0[: 3 * hidden], rnn.weight_hh_l0[: 3 * hidden]
    gates = inputs @ weight_ih.t() + previous @ weight_hh.t()  # input, forget, cell gates
    if rnn.bias:
        gates = gates + rnn.bias_ih_l0[: 3 * hidden] + rnn.bias_hh_l0[: 3 * hidden]
    i, f, g = gates.chunk(3, dim=-1)
    carry = torch.sigmoid(f) * masks  # how much of c_(t-1) reaches c_t
    kept = carry.flip(0).cumprod(0).flip(0)  # from step t to the end
    after = torch.cat([kept[1:], torch.ones_like(kept[:1])])  # from step t + 1 to the end
    return (torch.sigmoid(i) * torch.tanh(g) * after).sum(0) + c0 * kept[0]


@dataclass(frozen=True)
class _Stretches:
    """Every stretch of one task's episode in a `[T, N]` batch (from the task's memory for its
    first, from zeros after an episode start): for each step, flattened, its stretch's id and
    its place in it; each stretch's length; each task's first stretch id and stretch count."""

    stretch: torch.Tensor
    position: torch.Tensor
    lengths: torch.Tensor
    first: torch.Tensor
    count: torch.Tensor

    @classmethod
    def of(cls, masks: torch.Tensor) -> "_Stretches":
        """The stretches `masks` (0 where an episode starts) cut the batch into."""
        steps, tasks = masks.shape
        starts = masks == 0
        starts[0] = True
        in_task = starts.long().cumsum(0) - 1  # each step's stretch, counted within its task
        count = in_task[-1] + 1
        first = count.cumsum(0) - count
        stretch = (in_task + first).flatten()
        time = torch.arange(steps, device=masks.device)[:, None].expand(steps, tasks)
        position = (time - torch.where(starts, time, 0).cummax(0).values).flatten()
        lengths = torch.bincount(stretch, minlength=int(count.sum()))
        return cls(stretch, position, lengths, first, count)

    @property
    def last(self) -> torch.Tensor:
        """Each task's last stretch's id."""
        return self.first + self.count - 1

    def initial(self, memory: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Each stretch's starting memory, `[layers, stretches, hidden]`."""
        initial = memory.new_zeros(memory.shape[0], len(self.lengths), memory.shape[-1])
        initial[:, self.first] = memory * masks[0].view(1, -1, 1)
        return initial


def _packed(
    rnn: nn.GRU | nn.LSTM, inputs: torch.Tensor, memory: torch.Tensor, masks: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """All stretches in one packed call."""
    steps, tasks = masks.shape
    stretches = _Stretches.of(masks)
    lengths = stretches.lengths
    padded = inputs.new_zeros(int(lengths.max()), len(lengths), inputs.shape[-1])
    padded[stretches.position, stretches.stretch] = inputs.reshape(steps * tasks, -1)
    lstm = isinstance(rnn, nn.LSTM)
    packed = pack_padded_sequence(padded, lengths.cpu(), enforce_sorted=False)
    out, state = rnn(packed, _state(stretches.initial(memory, masks), lstm))
    out, _ = pad_packed_sequence(out, total_length=padded.shape[0])
    final = _memory(state, lstm)[:, stretches.last]
    return out[stretches.position, stretches.stretch].view(steps, tasks, -1), final


def _coarse(n: int) -> int:
    """The least of 1, 2, 3, 4, 6, 8, 12, 16, 24, ... (2^k and 3 * 2^k) that is >= n: shapes
    from this short list (at most a third larger) let oneDNN reuse its cached primitives,
    where every new shape would be one more cached for good."""
    power = 1 << max(n - 1, 0).bit_length()  # the least power of two >= n
    return power * 3 // 4 if n <= power * 3 // 4 else power


def _lstm_call_cost(rnn: nn.LSTM, length: int, width: int) -> float:
    """Estimated microseconds of oneDNN's LSTM forward and backward over a `[length, width]`
    call on a CPU: a cost per call, per step and per row, each growing with the weights
    (fitted on 2 cores for 32 to 512 units, 2 threads)."""
    weights = rnn.weight_ih_l0.numel() + rnn.weight_hh_l0.numel()
    per_step = 7 + 3e-5 * weights + width * (0.5 + 2.5e-5 * weights)
    return 300 + 1.5e-3 * weights + length * per_step


def _length_groups(rnn: nn.LSTM, longest: list[int], counts: list[int]) -> list[int]:
    """The call each length class runs in, given the classes' longest stretches and their
    numbers of stretches (shortest class first): neighbouring classes share a call where
    padding them to one shape costs less than another call; the grouping of least estimated
    cost (`_lstm_call_cost`) over all that keep classes in order."""
    least, cut = [0.0], [0]  # over the first k classes: the least cost, and its last call's start
    for end in range(1, len(longest) + 1):
        length = _coarse(longest[end - 1])
        options = [
            (least[start] + _lstm_call_cost(rnn, length, _coarse(sum(counts[start:end]))), start)
            for start in range(end)
        ]
        cost, start = min(options)
        least.append(cost)
        cut.append(start)
    calls, end = [], len(longest)
    while end > 0:
        calls.append(range(cut[end], end))
        end = cut[end]
    return [call for call, classes in enumerate(reversed(calls)) for _ in classes]


def _lstm_by_length(
    rnn: nn.LSTM, inputs: torch.Tensor, memory: torch.Tensor, masks: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The stretches in one dense call per group of length classes (1-4, 5-8, 9-16, ...
    steps; `_length_groups` puts neighbouring classes in one call where that costs less), each
    call right-padded to a `_coarse` shape: oneDNN's LSTM runs it forward and backward in fused
    kernels, for a fixed cost per call plus its padded size. The cell state after the last
    step is not among the outputs: `_lstm_final_cell` rebuilds it (unless `memory_unused`)."""
    steps, tasks = masks.shape
    skip_cell = getattr(_unused, "memory", False)
    if skip_cell and memory.isnan().any():
        raise ValueError(
            "run_recurrent got NaN memory within memory_unused(), where an LSTM's returned cell "
            "state is NaN: the model's forward passes the memory one run_recurrent call "
            "returned to another, which updates cannot skip; compute it outside the block"
        )
    stretches = _Stretches.of(masks)
    rows = inputs.reshape(steps * tasks, -1)
    initial = stretches.initial(memory, masks)
    # 1-4 steps: class 2, 5-8: 3, ...; float rounding could at worst cost padding
    length_class = torch.log2(stretches.lengths.clamp(min=4).float()).ceil().long()
    classes, counts = length_class.unique(return_counts=True)
    longest = torch.zeros(int(classes[-1]) + 1, dtype=stretches.lengths.dtype)
    longest = longest.scatter_reduce(0, length_class, stretches.lengths, "amax")[classes]
    groups = _length_groups(rnn, longest.tolist(), counts.tolist())
    call = torch.tensor(groups, device=classes.device)[torch.searchsorted(classes, length_class)]
    row_call = call[stretches.stretch]
    outputs, order = [], []
    for group in range(groups[-1] + 1):
        members = (call == group).nonzero()[:, 0]
        local = torch.zeros_like(stretches.lengths)
        local[members] = torch.arange(len(members), device=members.device)
        picked = (row_call == group).nonzero()[:, 0]
        slots = (stretches.position[picked], local[stretches.stretch[picked]])
        length, width = _coarse(int(stretches.lengths[members].max())), _coarse(len(members))
        padded = rows.new_zeros(length, width, rows.shape[-1])
        padded[slots] = rows[picked]
        start = initial.new_zeros(1, width, initial.shape[-1])
        start[0, : len(members)] = initial[0, members]
        h0, c0 = start.chunk(2, dim=-1)
        out, _ = rnn(padded, (h0.contiguous(), c0.contiguous()))  # padding's outputs unused
        outputs.append(out[slots])
        order.append(picked)
    out = torch.cat(outputs)[torch.cat(order).argsort()].view(steps, tasks, -1)
    if skip_cell:
        cell = torch.full_like(out[-1], float("nan"))
    else:
        t0 = steps - int(stretches.lengths[stretches.last].max())  # the earliest last start
        cell = _lstm_final_cell(rnn, inputs, out, memory, masks, t0)
    return out, torch.cat([out[-1], cell], dim=-1)[None]


def run_recurrent(
    rnn: nn.GRU | nn.LSTM, inputs: torch.Tensor, *, memory: torch.Tensor, masks: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a GRU or LSTM over `[T, N, F]` inputs, zeroing memory wherever `masks` marks an
    episode start. An LSTM's memory is its `(h, c)` joined on the last dimension.

    Over several steps, every stretch of one task's episode becomes its own sequence (from the
    task's memory for the first, from zeros after an episode start), however often tasks
    reset. On a CPU a one-layer LSTM runs them by length class (`_lstm_by_length`): a packed
    call's CPU backward zero-fills an input-sized gradient per step. Others run them in one
    packed call (torch's dense GRU has no fused CPU kernel to gain from; on a GPU cuDNN runs
    packed calls fused). Equal to `run_recurrent_stepwise` up to float rounding
    (tests/models), faster by benchmarks/recurrent.py.
    """
    if getattr(rnn, "proj_size", 0):
        raise ValueError("run_recurrent: an LSTM with proj_size has h and c of two widths, but "
                         "memory holds them side by side at one width; build it without")  # fmt: skip
    if masks.shape[0] == 1:
        return _one_step(rnn, inputs, memory, masks)
    dense = _plain(rnn) and not rnn.batch_first and inputs.device.type == "cpu"
    if isinstance(rnn, nn.LSTM) and dense:
        return _lstm_by_length(rnn, inputs, memory, masks)
    return _packed(rnn, inputs, memory, masks)
