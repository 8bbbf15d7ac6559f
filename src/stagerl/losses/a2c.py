"""Advantage actor-critic (Mnih et al. 2016): policy gradient + value regression - entropy."""

import torch

from stagerl.losses.base import Loss, RolloutBatch, require_coefficients
from stagerl.models.base import ActorCriticOutput

A2CConfig = dict(value_loss_coef=0.5, entropy_coef=0.01)


class A2C(Loss):
    """The unclipped on-policy actor-critic loss; use with `update_repeats=1`."""

    reads_expert_actions = False

    def __init__(self, value_loss_coef: float, entropy_coef: float) -> None:
        require_coefficients("A2C", value_loss_coef=value_loss_coef, entropy_coef=entropy_coef)
        self.value_loss_coef = value_loss_coef
        self.entropy_coef = entropy_coef

    def loss(
        self, step_count: int, batch: RolloutBatch, actor_critic_output: ActorCriticOutput
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Policy gradient with the advantages, value regression to the returns, entropy bonus."""
        dist = actor_critic_output.distributions
        action_loss = -(dist.log_prob(batch.actions) * batch.advantages).mean()
        value_loss = 0.5 * (actor_critic_output.values - batch.returns).pow(2).mean()
        entropy = dist.entropy().mean()
        total = action_loss + self.value_loss_coef * value_loss - self.entropy_coef * entropy
        info = {
            "action_loss": action_loss.item(),
            "value_loss": value_loss.item(),
            "entropy": entropy.item(),
        }
        return total, info
