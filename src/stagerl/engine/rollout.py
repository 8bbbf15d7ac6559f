"""collect_rollout: fill the storage with `num_steps` steps of every task.

The model acts on all tasks at once in the trainer; workers step the environments. With teacher
forcing, each task executes the expert's action with probability p where that action is valid,
and the storage keeps the action that was actually executed.
"""

from dataclasses import dataclass, field

import torch

from stagerl.engine.storage import RolloutStorage
from stagerl.models.base import ActorCriticModel
from stagerl.tasks.vector import StepBatch, VectorSampler


@dataclass
class TeacherForcing:
    """This rollout's probability of executing the expert's action, and where to read it."""

    probability: float
    expert_uuid: str
    generator: torch.Generator


@dataclass
class RolloutResult:
    """Metrics of the episodes a rollout finished, and how many steps the expert acted."""

    episodes: list[dict[str, float]] = field(default_factory=list)
    expert_steps: int = 0


def _act(
    distribution: torch.distributions.Categorical,
    observations: dict[str, torch.Tensor],
    teacher: TeacherForcing | None,
) -> tuple[torch.Tensor, int]:
    actions = distribution.sample()[0]
    if teacher is None or teacher.probability <= 0:
        return actions, 0
    expert = observations[teacher.expert_uuid][0]
    coin = torch.rand(actions.shape, generator=teacher.generator) < teacher.probability
    use_expert = coin.to(actions.device) & expert[:, 1].bool()
    return torch.where(use_expert, expert[:, 0], actions), int(use_expert.sum())


@torch.no_grad()
def _bootstrap_values(
    model: ActorCriticModel, sampler_step: StepBatch, memory: torch.Tensor, actions: torch.Tensor
) -> torch.Tensor:
    """V(true last observation) of tasks cut off by a step limit; zero elsewhere."""
    device = actions.device
    values = torch.zeros(actions.shape[0], device=device)
    cut = sampler_step.truncated.nonzero()[0]
    if len(cut) == 0:
        return values
    final = {
        k: torch.from_numpy(v[cut])[None].to(device)
        for k, v in sampler_step.final_observations.items()
    }
    cut = torch.from_numpy(cut).to(device)
    ones = torch.ones(1, len(cut), device=device)
    output, _ = model(final, memory[:, cut], actions[cut][None], ones)
    values[cut] = output.values[0]
    return values


@torch.no_grad()
def collect_rollout(
    *,
    model: ActorCriticModel,
    sampler: VectorSampler,
    storage: RolloutStorage,
    teacher: TeacherForcing | None = None,
) -> RolloutResult:
    """Run `storage.num_steps` steps from `storage`'s row 0; leaves memory for the next rollout."""
    result = RolloutResult()
    memory = storage.memory
    for t in range(storage.num_steps):
        observations = storage.observations_at(t)
        output, next_memory = model(
            observations, memory, storage.prev_actions[t : t + 1], storage.masks[t : t + 1]
        )
        actions, expert_steps = _act(output.distributions, observations, teacher)
        result.expert_steps += expert_steps
        step = sampler.step(actions.cpu().numpy())
        storage.insert(
            t,
            actions=actions,
            log_probs=output.distributions.log_prob(actions[None])[0],
            values=output.values[0],
            rewards=step.rewards,
            terminated=step.terminated,
            truncated=step.truncated,
            bootstrap_values=_bootstrap_values(model, step, next_memory, actions),
            next_observations=step.observations,
        )
        result.episodes.extend(metrics for _, metrics in step.finished)
        memory = next_memory
    storage.final_memory = memory
    return result


@torch.no_grad()
def last_values(model: ActorCriticModel, storage: RolloutStorage) -> torch.Tensor:
    """V of the observation after the rollout's last step, to bootstrap the returns."""
    row = storage.num_steps
    output, _ = model(
        storage.observations_at(row),
        storage.final_memory,
        storage.prev_actions[row : row + 1],
        storage.masks[row : row + 1],
    )
    return output.values[0]
