"""Actions drawn by the Gumbel-max trick follow the policy's distribution."""

import torch
from torch.distributions import Categorical

from stagerl.engine.rollout import sample_actions

LOGITS = torch.tensor([0.0, 1.0, 2.0, -1.0])


def test_actions_are_drawn_with_the_policys_probabilities():
    torch.manual_seed(0)
    draws = 200_000
    policy = Categorical(logits=LOGITS.expand(draws, 4))
    counts = torch.bincount(sample_actions(policy), minlength=4)
    # softmax of the logits: 0.087, 0.237, 0.644, 0.032; standard errors are under 0.0011
    torch.testing.assert_close(counts / draws, LOGITS.softmax(0), atol=0.005, rtol=0)


def test_a_zero_noise_draw_does_not_override_the_probabilities(monkeypatch):
    # Exponential draws of exactly 0 (float rounding) would give -log(0) = +inf to every
    # action, and the first action would win; kept finite, the likeliest one does.
    monkeypatch.setattr(torch.Tensor, "exponential_", lambda self: self.zero_())
    policy = Categorical(logits=LOGITS.expand(3, 4))
    assert sample_actions(policy).tolist() == [2, 2, 2]
