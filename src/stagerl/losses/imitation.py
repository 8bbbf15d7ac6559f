"""Imitation: cross-entropy of the policy on the expert's action, over valid steps only."""

import torch

from stagerl.errors import ConfigError
from stagerl.losses.base import Loss, RolloutBatch
from stagerl.models.base import ActorCriticOutput
from stagerl.tasks.sensors import ExpertActionSensor


class Imitation(Loss):
    """Reads the expert's actions from `expert_sensor` (an `ExpertActionSensor`) or, by default,
    from the experiment's only ExpertActionSensor; which one is settled, and checked against the
    experiment's sensors, before training starts."""

    def __init__(self, expert_sensor: ExpertActionSensor | None = None) -> None:
        if expert_sensor is not None and not isinstance(expert_sensor, ExpertActionSensor):
            raise ConfigError(
                f"Imitation.expert_sensor={expert_sensor!r} is invalid: expected an "
                "ExpertActionSensor or None"
            )
        self.expert_sensor = expert_sensor
        self.expert_uuid = expert_sensor.uuid if expert_sensor else ExpertActionSensor.UUID

    def bind(self, expert_uuids: list[str], where: str) -> None:
        """Settle the sensor uuid to read among the experiment's ExpertActionSensors."""
        if self.expert_sensor is not None:
            if self.expert_uuid not in expert_uuids:
                raise ConfigError(
                    f"{where}: Imitation(expert_sensor=...) reads uuid {self.expert_uuid!r}, "
                    f"but the tasks' ExpertActionSensors are {expert_uuids}"
                )
        elif len(expert_uuids) > 1:
            raise ConfigError(
                f"{where}: the tasks have several ExpertActionSensors {expert_uuids}; say which "
                "one with Imitation(expert_sensor=...)"
            )
        elif expert_uuids:
            self.expert_uuid = expert_uuids[0]

    def loss(
        self, step_count: int, batch: RolloutBatch, actor_critic_output: ActorCriticOutput
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Cross-entropy of the policy against the expert's actions, where they are valid."""
        expert = batch.observations[self.expert_uuid]
        actions, valid = expert[..., 0].long(), expert[..., 1].bool()
        log_probs = actor_critic_output.distributions.log_prob(actions)
        # where, not a product with the mask: a policy that rules action 0 out (log p = -inf)
        # would make -inf x 0 = NaN at the steps without an expert action (they carry 0)
        num_valid = valid.sum()
        loss = -torch.where(valid, log_probs, 0.0).sum() / num_valid.clamp(min=1)
        info = {"expert_valid_fraction": valid.float().mean().item()}
        if num_valid > 0:  # else no number to average in (as AllenAct leaves it out)
            info["imitation_loss"] = loss.item()
        return loss, info
