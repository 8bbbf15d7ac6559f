"""run_recurrent's episode stretches equal the step-by-step definition, values and gradients."""

import pytest
import torch
from torch import nn

from stagerl.models.base import memory_unused, run_recurrent, run_recurrent_stepwise


@pytest.mark.parametrize("all_reset_late", [False, True])
@pytest.mark.parametrize(
    "rnn_class, layers, bias",
    [(nn.LSTM, 1, True), (nn.LSTM, 1, False), (nn.LSTM, 2, True), (nn.GRU, 1, True)],
)
def test_episode_stretches_equal_stepping_one_step_at_a_time(
    rnn_class, layers, bias, all_reset_late
):
    torch.manual_seed(0)
    rnn = rnn_class(6, 5, num_layers=layers, bias=bias)  # a 2-layer LSTM takes the packed path
    steps, tasks = 12, 4
    masks = torch.ones(steps, tasks)
    masks[0, 1] = 0  # starts an episode at once: its given memory is dropped
    masks[[3, 4, 9], 2] = 0  # episodes of 3, 1, 5 and 3 steps
    masks[5:, 3] = 0  # one-step episodes only
    if all_reset_late:  # then no step before the 7th can matter to the final memory
        masks[7, 0] = masks[8, 1] = 0
    inputs = torch.randn(steps, tasks, 6, requires_grad=True)
    memory = torch.randn(layers, tasks, 10 if rnn_class is nn.LSTM else 5, requires_grad=True)
    results = [
        f(rnn, inputs, memory=memory, masks=masks) for f in (run_recurrent, run_recurrent_stepwise)
    ]
    (fast, fast_memory), (stepped, stepped_memory) = results
    torch.testing.assert_close(fast, stepped)
    torch.testing.assert_close(fast_memory, stepped_memory)
    gradients = [
        torch.autograd.grad((out**2).sum() + (mem**2).sum(), [inputs, memory, *rnn.parameters()])
        for out, mem in results
    ]
    for fast_grad, stepped_grad in zip(*gradients, strict=True):
        torch.testing.assert_close(fast_grad, stepped_grad)
    assert (gradients[0][1][:, 1] == 0).all()  # task 1's given memory did not matter


def test_with_memory_unused_an_lstm_gives_the_same_outputs_and_a_nan_cell_state():
    torch.manual_seed(0)
    lstm = nn.LSTM(6, 5)
    inputs, memory = torch.randn(8, 3, 6, requires_grad=True), torch.randn(1, 3, 10)
    masks = torch.ones(8, 3)
    masks[[2, 6], 1] = 0
    out, full = run_recurrent(lstm, inputs, memory=memory, masks=masks)
    with memory_unused():
        skipped_out, skipped = run_recurrent(lstm, inputs, memory=memory, masks=masks)
    assert torch.equal(skipped_out, out)
    assert torch.equal(skipped[..., :5], full[..., :5])  # h is the last output either way
    assert skipped[..., 5:].isnan().all()  # the cell state was not rebuilt: a read shows
    assert not run_recurrent(lstm, inputs, memory=memory, masks=masks)[1].isnan().any()
    with memory_unused(), pytest.raises(ValueError, match="memory_unused"):  # chunked BPTT
        run_recurrent(lstm, inputs, memory=skipped, masks=masks)


@pytest.mark.parametrize("steps", [1, 5])  # one step: while acting; several: in updates
def test_a_batch_first_rnn_gives_what_the_same_rnn_time_first_gives(steps):
    torch.manual_seed(0)
    time_first = nn.GRU(6, 5, num_layers=2)  # two layers: not the one-layer cell path
    batch_first = nn.GRU(6, 5, num_layers=2, batch_first=True)
    batch_first.load_state_dict(time_first.state_dict())
    inputs, memory = torch.randn(steps, 3, 6), torch.randn(2, 3, 5)
    masks = torch.ones(steps, 3)
    masks[-1, 1] = 0
    expected = run_recurrent(time_first, inputs, memory=memory, masks=masks)
    for got, want in zip(
        run_recurrent(batch_first, inputs, memory=memory, masks=masks), expected, strict=True
    ):
        torch.testing.assert_close(got, want)


def test_an_lstm_with_projections_is_refused():
    lstm = nn.LSTM(6, 5, proj_size=3)
    with pytest.raises(ValueError, match="proj_size"):
        run_recurrent(
            lstm, torch.randn(1, 2, 6), memory=torch.zeros(1, 2, 8), masks=torch.ones(1, 2)
        )
