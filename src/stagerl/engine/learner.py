"""update: `update_repeats` epochs of `num_mini_batch` minibatches over one rollout."""

import warnings
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from stagerl.engine.aggregation import ExpertDataBuffer
from stagerl.engine.distributed import Ranks
from stagerl.engine.storage import RolloutStorage
from stagerl.losses.base import Loss, RolloutBatch
from stagerl.losses.offpolicy import OffPolicyBatch
from stagerl.models.base import memory_unused


@dataclass(frozen=True)
class WeightedLoss:
    """A named loss of a stage and its weight in the stage's sum."""

    name: str
    loss: Loss
    weight: float


@dataclass(frozen=True)
class AggregatedData:
    """DAgger: extra sequences from the aggregated dataset per minibatch, for these losses."""

    buffer: ExpertDataBuffer
    sequences_per_minibatch: int
    losses: list[WeightedLoss]


@dataclass
class UpdateResult:
    """What one update did: averaged numbers, and which of its minibatches it skipped."""

    info: dict[str, float]  # each averaged over the applied minibatches that gave it
    skips: list[bool]  # per minibatch, in order: True where its loss or gradient was not finite

    @classmethod
    def averaged(cls, infos: list[dict[str, float]], skips: list[bool]) -> "UpdateResult":
        """The applied minibatches' numbers (`infos`), each averaged over the minibatches that
        gave it: a loss may have none for a minibatch (Imitation without an expert action)."""
        sums: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)
        for info in infos:
            for key, number in info.items():
                sums[key] += number
                counts[key] += 1
        return cls({key: total / counts[key] for key, total in sums.items()}, skips)

    @property
    def attempted(self) -> int:
        """Minibatches tried."""
        return len(self.skips)

    @property
    def skipped(self) -> int:
        """Minibatches skipped for a NaN/inf loss or gradient."""
        return sum(self.skips)


def weighted_loss(
    model: nn.Module,
    batch: RolloutBatch | OffPolicyBatch,
    *,
    losses: list[WeightedLoss],
    stage_steps: int,
    info: dict[str, float],
    prefix: str = "",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the model over the batch; return Σ weight·loss and the memory after the batch
    (an LSTM's cell state NaN within `memory_unused`), and put each loss's numbers in `info`
    as `<prefix><loss name>/<key>`."""
    output, memory = model(batch.observations, batch.memory, batch.prev_actions, batch.masks)
    total = torch.zeros((), device=output.values.device)
    for item in losses:
        value, loss_info = item.loss.loss(stage_steps, batch, output)
        total = total + item.weight * value
        for key, number in loss_info.items():
            info[f"{prefix}{item.name}/{key}"] = number
    return total, memory


def optimizer_step(
    optimizer: torch.optim.Optimizer,
    parameters: list[nn.Parameter],
    *,
    total: torch.Tensor,
    max_grad_norm: float,
    ranks: Ranks | None = None,
    samples: int = 1,
) -> float | None:
    """Backward, average the gradient over the trainer ranks (weighted by the `samples` each
    rank's loss averaged over), clip its norm, step; return the norm, or None (and no step)
    when the loss or the gradient is not finite, so one bad batch cannot poison the
    parameters. All ranks see the same mean loss and gradient, so they skip or step together."""
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    if ranks is not None:
        total = ranks.average_gradients(parameters, total, samples=samples)
    grad_norm = nn.utils.clip_grad_norm_(parameters, max_grad_norm)
    if not (torch.isfinite(total) and torch.isfinite(grad_norm)):
        return None
    optimizer.step()
    return grad_norm.item()


def update(
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    storage: RolloutStorage,
    losses: list[WeightedLoss],
    stage_steps: int,
    num_mini_batch: int,
    update_repeats: int,
    max_grad_norm: float,
    generator: torch.Generator,
    aggregated: AggregatedData | None = None,
    ranks: Ranks | None = None,
) -> UpdateResult:
    """Minimise the weighted sum of the stage's losses; clip the gradient norm at max_grad_norm.

    A minibatch whose loss or gradient is NaN/inf is skipped; the caller decides when too many
    skips in a row mean the run is broken.
    """
    infos: list[dict[str, float]] = []  # of the applied minibatches
    skips: list[bool] = []
    parameters = [p for p in model.parameters() if p.requires_grad]
    for _ in range(update_repeats):
        for batch in storage.minibatches(num_mini_batch, generator):
            info: dict[str, float] = {}
            with memory_unused():  # each minibatch starts from its own stored memory
                total, _ = weighted_loss(
                    model, batch, losses=losses, stage_steps=stage_steps, info=info
                )
                if aggregated is not None and aggregated.buffer.size > 0:
                    old = aggregated.buffer.sample(aggregated.sequences_per_minibatch, generator)
                    extra, _ = weighted_loss(
                        model,
                        old,
                        losses=aggregated.losses,
                        stage_steps=stage_steps,
                        info=info,
                        prefix="aggregated/",
                    )
                    total = total + extra
            grad_norm = optimizer_step(
                optimizer,
                parameters,
                total=total,
                max_grad_norm=max_grad_norm,
                ranks=ranks,
                samples=batch.masks.numel(),
            )
            skips.append(grad_norm is None)
            if grad_norm is None:
                continue  # its numbers are not logged either, so averages stay finite
            infos.append({**info, "total_loss": total.item(), "grad_norm": grad_norm})
    return UpdateResult.averaged(infos, skips)


def step_lr_scheduler(scheduler: Any, total_steps: int) -> None:
    """Evaluate the schedule at the total step count (frames), not at a count of updates.

    `step(epoch)` uses each scheduler's closed form where it has one (StepLR, ExponentialLR,
    CosineAnnealingLR, ...) and `lr_lambda(epoch)` for LambdaLR; torch deprecates the argument
    and warns when a stage has no update before it, neither of which applies here.
    """
    if scheduler is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            scheduler.step(total_steps)
