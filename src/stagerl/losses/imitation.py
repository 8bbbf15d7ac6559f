"""Imitation: cross-entropy of the policy on the expert's action, over valid steps only."""

import torch

from stagerl.losses.base import Loss, RolloutBatch
from stagerl.models.base import ActorCriticOutput
from stagerl.tasks.sensors import ExpertActionSensor


class Imitation(Loss):
    """Needs an `ExpertActionSensor` among the experiment's sensors (checked when training starts)."""

    def __init__(self, expert_sensor_uuid: str = ExpertActionSensor.UUID) -> None:
        self.expert_sensor_uuid = expert_sensor_uuid

    def loss(
        self, step_count: int, batch: RolloutBatch, actor_critic_output: ActorCriticOutput
    ) -> tuple[torch.Tensor, dict[str, float]]:
        expert = batch.observations[self.expert_sensor_uuid]
        actions, valid = expert[..., 0].long(), expert[..., 1].float()
        log_probs = actor_critic_output.distributions.log_prob(actions)
        num_valid = valid.sum()
        loss = -(log_probs * valid).sum() / num_valid.clamp(min=1.0)
        return loss, {"imitation_loss": loss.item(), "expert_valid_fraction": valid.mean().item()}
