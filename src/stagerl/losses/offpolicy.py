"""Off-policy losses: they learn from batches of recorded data instead of the rollout."""

from abc import abstractmethod
from dataclasses import dataclass

import torch

from stagerl.errors import require_positive
from stagerl.losses.base import Loss
from stagerl.models.base import ActorCriticOutput


@dataclass
class OffPolicyBatch:
    """`[T, n]` chunks of n dataset streams (see `offpolicy/iterator.py`), as torch tensors."""

    observations: dict[str, torch.Tensor]
    memory: torch.Tensor  # [layers, n, hidden]: each stream's memory at the chunk's first step
    prev_actions: torch.Tensor  # [T, n]
    masks: torch.Tensor  # [T, n], 0 where an episode starts
    actions: torch.Tensor  # [T, n] the dataset's actions
    epoch: int
    episodes_begun: int  # begun in this epoch so far by this rank, this batch's included


class OffPolicyLoss(Loss):
    """A loss for an `OffPolicyPipelineComponent`: its batch is an `OffPolicyBatch`."""

    @abstractmethod
    def loss(  # type: ignore[override]
        self, step_count: int, batch: OffPolicyBatch, actor_critic_output: ActorCriticOutput
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Return a scalar loss to minimise and floats to log."""


class ExpertCELoss(OffPolicyLoss):
    """Behaviour cloning: the policy's cross-entropy on the dataset's actions (the critic gets
    no gradient). With `total_episodes_in_epoch`, also logs `epoch_progress`, the fraction of
    an epoch's episodes begun so far. As in AllenAct, the count is per trainer rank: on W ranks
    give each rank's share of the dataset (AllenAct's distributed config passes 1e6 // W)."""

    def __init__(self, total_episodes_in_epoch: int | None = None) -> None:
        require_positive(
            f"{type(self).__name__}.total_episodes_in_epoch",
            total_episodes_in_epoch,
            whole=True,
            allow_none=True,
        )
        self.total_episodes_in_epoch = total_episodes_in_epoch

    def loss(  # type: ignore[override]
        self, step_count: int, batch: OffPolicyBatch, actor_critic_output: ActorCriticOutput
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean negative log-likelihood of the dataset's actions over the `[T, n]` chunk."""
        log_probs = actor_critic_output.distributions.log_prob(batch.actions)
        loss = -log_probs.mean()
        info = {"expert_ce": loss.item()}
        if self.total_episodes_in_epoch:
            info["epoch_progress"] = batch.episodes_begun / self.total_episodes_in_epoch
        return loss, info
