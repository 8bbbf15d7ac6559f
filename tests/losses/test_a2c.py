"""A2C's loss on a hand-made batch, and an A2C pipeline that trains."""

import math

import pytest
import torch
from torch.distributions import Categorical

from stagerl import A2C, A2CConfig
from stagerl.losses.base import RolloutBatch
from stagerl.models.base import ActorCriticOutput


def test_a2c_loss_matches_hand_computed_value():
    probs = torch.tensor([[[0.5, 0.5], [0.2, 0.8]]])
    batch = RolloutBatch(
        observations={},
        memory=torch.zeros(0, 2, 0),
        prev_actions=torch.zeros(1, 2).long(),
        masks=torch.ones(1, 2),
        actions=torch.tensor([[0, 1]]),
        old_log_probs=torch.zeros(1, 2),
        old_values=torch.zeros(1, 2),
        returns=torch.tensor([[1.0, 0.0]]),
        advantages=torch.tensor([[2.0, -1.0]]),
    )
    output = ActorCriticOutput(Categorical(probs=probs), torch.tensor([[0.5, 0.5]]))
    # AllenAct's entropy_method_name: the bonus read through the method it names
    output.distributions.my_entropy = output.distributions.entropy
    loss, info = A2C(**A2CConfig, entropy_method_name="my_entropy").loss(0, batch, output)
    action_loss = -(math.log(0.5) * 2.0 + math.log(0.8) * -1.0) / 2
    value_loss = 0.5 * (0.25 + 0.25) / 2
    entropy = (math.log(2) - (0.2 * math.log(0.2) + 0.8 * math.log(0.8))) / 2
    assert info["action_loss"] == pytest.approx(action_loss)
    assert info["value_loss"] == pytest.approx(value_loss)
    assert info["entropy"] == pytest.approx(entropy)
    assert loss.item() == pytest.approx(action_loss + 0.5 * value_loss - 0.01 * entropy)
