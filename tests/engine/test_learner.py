"""One optimizer step: the gradient clipped to max_grad_norm, a non-finite one skipped, each
loss scaled by its weight; skipped steps counted in a row."""

import pytest
import torch
from torch import nn

from stagerl.engine.learner import UpdateResult, WeightedLoss, optimizer_step, weighted_loss
from stagerl.engine.progress import NonFiniteLossError, TrainingState


def _step(loss_of, max_grad_norm: float) -> tuple[nn.Parameter, float | None]:
    parameter = nn.Parameter(torch.tensor([3.0, 4.0]))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    norm = optimizer_step(
        optimizer, [parameter], total=loss_of(parameter), max_grad_norm=max_grad_norm
    )
    return parameter, norm


def test_the_gradient_is_clipped_to_max_grad_norm():
    # loss = 10 * (p . [3, 4]): gradient [30, 40], norm 50, clipped to norm 5: [3, 4]
    parameter, norm = _step(lambda p: 10 * (p * torch.tensor([3.0, 4.0])).sum(), 5.0)
    assert norm == 50.0
    assert parameter.tolist() == pytest.approx([0.0, 0.0], abs=1e-5)  # [3, 4] - 1.0 * [3, 4]


def test_a_non_finite_gradient_skips_the_step_even_with_a_finite_loss():
    # sqrt at 0: the loss is 0, its gradient inf
    parameter, norm = _step(lambda p: (p - torch.tensor([3.0, 0.0])).abs().sqrt().sum(), 5.0)
    assert norm is None and parameter.tolist() == [3.0, 4.0]


class _Constant:
    """A loss whose value is the batch's number, for checking the weights."""

    def __init__(self, value: float) -> None:
        self.value = value

    def loss(self, step_count, batch, output):
        return torch.tensor(self.value), {"value": self.value}


class _Model(nn.Module):
    def forward(self, observations, memory, prev_actions, masks):
        output = type("Output", (), {"values": torch.zeros(1)})()
        return output, memory


def test_each_loss_is_scaled_by_its_weight():
    batch = type("Batch", (), dict(observations={}, memory=None, prev_actions=None, masks=None))
    losses = [WeightedLoss("a", _Constant(2.0), 0.5), WeightedLoss("b", _Constant(3.0), 2.0)]
    info: dict[str, float] = {}
    total, _ = weighted_loss(_Model(), batch, losses=losses, stage_steps=0, info=info)
    assert total.item() == 0.5 * 2.0 + 2.0 * 3.0
    assert info == {"a/value": 2.0, "b/value": 3.0}


def test_skipped_updates_count_in_a_row_across_update_phases_and_within_one():
    state, limit = TrainingState(), 10
    state.count_nonfinite(UpdateResult({}, [False] * 3 + [True] * 5), offpolicy=False, limit=limit)
    assert state.nonfinite_in_a_row == 5  # the phase's trailing skips carry on
    with pytest.raises(NonFiniteLossError, match="10 updates in a row"):  # 5 + 5
        state.count_nonfinite(UpdateResult({}, [True] * 5 + [False]), offpolicy=False, limit=limit)
    state = TrainingState()
    inside = [False] + [True] * 10 + [False]  # a run within one phase, good updates around it
    with pytest.raises(NonFiniteLossError):
        state.count_nonfinite(UpdateResult({}, inside), offpolicy=False, limit=limit)
    state = TrainingState()
    state.count_nonfinite(UpdateResult({}, [True] * 9 + [False]), offpolicy=False, limit=limit)
    assert state.nonfinite_in_a_row == 0


def test_an_update_averages_each_number_over_the_minibatches_that_gave_it():
    # the second minibatch had no expert action, so no imitation loss to average in
    infos = [{"imitation_loss": 3.0, "grad_norm": 1.0}, {"grad_norm": 2.0}]
    result = UpdateResult.averaged(infos, [False, False, True])
    assert result.info == {"imitation_loss": 3.0, "grad_norm": 1.5}
