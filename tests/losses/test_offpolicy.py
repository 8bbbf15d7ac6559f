"""The behaviour-cloning loss against hand-computed numbers; a bad argument is named."""

import math

import pytest
import torch
from torch.distributions import Categorical

from stagerl.errors import ConfigError
from stagerl.losses.offpolicy import OffPolicyBatch
from stagerl.models.base import ActorCriticOutput
from stagerl.plugins.minigrid import MiniGridOffPolicyExpertCELoss


def test_expert_ce_is_the_mean_negative_log_likelihood_of_the_dataset_actions():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]]))  # [T=1, n=2, 3]
    batch = OffPolicyBatch(
        observations={},
        memory=torch.zeros(0, 2, 0),
        prev_actions=torch.zeros(1, 2, dtype=torch.long),
        masks=torch.ones(1, 2),
        actions=torch.tensor([[0, 2]]),
        epoch=0,
        episodes_begun=30,
    )
    output = ActorCriticOutput(distributions=Categorical(logits=logits), values=torch.zeros(1, 2))
    loss, info = MiniGridOffPolicyExpertCELoss(total_episodes_in_epoch=120).loss(0, batch, output)
    expected = -(math.log(0.5) + math.log(0.8)) / 2
    assert math.isclose(loss.item(), expected, rel_tol=1e-6)
    assert info == {"expert_ce": loss.item(), "epoch_progress": 0.25}


@pytest.mark.parametrize("episodes", ["x", -5, 0, 2.5])
def test_total_episodes_in_epoch_must_be_a_positive_count(episodes):
    with pytest.raises(
        ConfigError,
        match=rf"MiniGridOffPolicyExpertCELoss.total_episodes_in_epoch={episodes!r} is invalid",
    ):
        MiniGridOffPolicyExpertCELoss(total_episodes_in_epoch=episodes)
