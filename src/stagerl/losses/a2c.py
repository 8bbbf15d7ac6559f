"""Advantage actor-critic (Mnih et al. 2016): policy gradient + value regression - entropy."""

import torch

from stagerl.losses.base import (
    Loss,
    RolloutBatch,
    entropy_by_name,
    require_coefficients,
    require_entropy_method,
)
from stagerl.models.base import ActorCriticOutput

A2CConfig = dict(value_loss_coef=0.5, entropy_coef=0.01)


class A2C(Loss):
    """The unclipped on-policy actor-critic loss; use with `update_repeats=1`. As in AllenAct,
    `entropy_method_name` names the distribution's method that gives the entropy bonus."""

    reads_expert_actions = False

    def __init__(
        self, value_loss_coef: float, entropy_coef: float, entropy_method_name: str = "entropy"
    ) -> None:
        require_coefficients("A2C", value_loss_coef=value_loss_coef, entropy_coef=entropy_coef)
        require_entropy_method("A2C", entropy_method_name)
        self.value_loss_coef = value_loss_coef
        self.entropy_coef = entropy_coef
        self.entropy_method_name = entropy_method_name

    def loss(
        self, step_count: int, batch: RolloutBatch, actor_critic_output: ActorCriticOutput
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Policy gradient with the advantages, value regression to the returns, entropy bonus."""
        dist = actor_critic_output.distributions
        action_loss = -(dist.log_prob(batch.actions) * batch.advantages).mean()
        value_loss = 0.5 * (actor_critic_output.values - batch.returns).pow(2).mean()
        entropy = entropy_by_name("A2C", self.entropy_method_name, dist).mean()
        total = action_loss + self.value_loss_coef * value_loss - self.entropy_coef * entropy
        info = {
            "action_loss": action_loss.item(),
            "value_loss": value_loss.item(),
            "entropy": entropy.item(),
        }
        return total, info
