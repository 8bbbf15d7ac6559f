"""collect_rollout: fill the storage with `num_steps` steps of every task.

The model acts on all tasks of a sampler group at once in the trainer; workers step the
environments. With two groups (double buffering) the workers step one group while the model
acts for the other; with one, acting and stepping take turns. With teacher forcing, each task
executes the expert's action with probability p where that action is valid, and the storage
keeps the action that was actually executed.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from stagerl.engine.storage import RolloutStorage
from stagerl.errors import user_number
from stagerl.models.base import ActorCriticModel
from stagerl.tasks.vector import StepBatch, VectorSampler


@dataclass
class TeacherForcing:
    """The stage's schedule of the probability of executing the expert's action, and where
    to read that action. As in AllenAct, the schedule is evaluated at every step, at the
    stage's frames so far: `stage_steps` when the rollout starts, plus `frames_per_step` (the
    tasks of all ranks) for each step taken since."""

    schedule: Callable[[int], float]
    stage_steps: int
    frames_per_step: int
    expert_uuid: str
    generator: torch.Generator
    where: str = "PipelineStage.teacher_forcing"  # the setting, for errors

    def probability(self, t: int) -> float:
        """The probability at step `t` of the rollout, clipped to [0, 1] (a hand-written decay
        may pass 0 in a stage's last rollout); an error naming the setting if the schedule
        fails or gives no number."""
        steps = self.stage_steps + t * self.frames_per_step
        value = user_number(self.where, self.schedule, steps=steps, expected="a probability")
        return min(max(value, 0.0), 1.0)


@dataclass
class RolloutResult:
    """Metrics of the episodes a rollout finished, how many steps the expert acted, and the
    teacher-forcing probability of each step."""

    episodes: list[dict[str, float]] = field(default_factory=list)
    expert_steps: int = 0
    teacher_forcing: list[float] = field(default_factory=list)


@dataclass
class _Acted:
    """What the model decided for one group at one step, until the step's outcome arrives."""

    actions: torch.Tensor
    log_probs: torch.Tensor
    values: torch.Tensor
    memory: torch.Tensor  # after this step


def sample_actions(distribution: torch.distributions.Categorical) -> torch.Tensor:
    """One action per task, by the Gumbel-max trick on the (normalised) logits: the same
    distribution as `distribution.sample()`, at a third of its cost for a batch of tens. A
    draw of exactly 0 (float rounding) is raised to the least normal float, whose log is
    finite: -log(0) would make its action win whatever its probability."""
    noise = torch.empty_like(distribution.logits).exponential_()
    noise = noise.clamp_min_(torch.finfo(noise.dtype).tiny).log_()
    return (distribution.logits - noise).argmax(-1)


def _teacher_forced(
    actions: torch.Tensor,
    observations: dict[str, torch.Tensor],
    teacher: TeacherForcing | None,
    probability: float,
) -> tuple[torch.Tensor, int]:
    if teacher is None or probability <= 0:
        return actions, 0
    expert = observations[teacher.expert_uuid][0]
    coin = torch.rand(actions.shape, generator=teacher.generator) < probability
    use_expert = coin.to(actions.device) & expert[:, 1].bool()
    return torch.where(use_expert, expert[:, 0], actions), int(use_expert.sum())


@dataclass
class _TimeLimitCuts:
    """Tasks cut off by a step limit during a rollout, with what V(true last observation)
    needs; valued in one forward pass at the end of the rollout instead of one per step."""

    rows: list[torch.Tensor] = field(default_factory=list)
    tasks: list[torch.Tensor] = field(default_factory=list)
    observations: list[dict[str, torch.Tensor]] = field(default_factory=list)
    memory: list[torch.Tensor] = field(default_factory=list)
    actions: list[torch.Tensor] = field(default_factory=list)

    def add(self, t: int, tasks: slice, step: StepBatch, acted: _Acted) -> None:
        """Keep what bootstrapping the tasks cut off by a time limit at step `t` needs."""
        cut = step.truncated.nonzero()[0]
        if len(cut) == 0:
            return
        device = acted.actions.device
        self.observations.append(
            {k: torch.from_numpy(v[cut]).to(device) for k, v in step.final_observations.items()}
        )
        cut = torch.from_numpy(cut).to(device)
        self.rows.append(torch.full_like(cut, t))
        self.tasks.append(cut + (tasks.start or 0))
        self.memory.append(acted.memory[:, cut])
        self.actions.append(acted.actions[cut])

    def write_values(self, model: ActorCriticModel, storage: RolloutStorage) -> None:
        """`storage.bootstrap_values` at every cut (zero elsewhere, as `insert` left them)."""
        if not self.rows:
            return
        final = {
            k: torch.cat([o[k] for o in self.observations])[None] for k in self.observations[0]
        }
        actions = torch.cat(self.actions)
        ones = torch.ones(1, len(actions), device=actions.device)
        output, _ = model(final, torch.cat(self.memory, dim=1), actions[None], ones)
        storage.bootstrap_values[torch.cat(self.rows), torch.cat(self.tasks)] = output.values[0]


def _act(
    model: ActorCriticModel,
    storage: RolloutStorage,
    t: int,
    tasks: slice,
    memory: torch.Tensor,
    teacher: TeacherForcing | None,
    probability: float,
    result: RolloutResult,
) -> _Acted:
    observations = storage.observations_at(t, tasks)
    output, next_memory = model(
        observations,
        memory[:, tasks],
        storage.prev_actions[t : t + 1, tasks],
        storage.masks[t : t + 1, tasks],
    )
    actions = sample_actions(output.distributions)[0]
    actions, expert_steps = _teacher_forced(actions, observations, teacher, probability)
    result.expert_steps += expert_steps
    log_probs = output.distributions.logits[0].gather(-1, actions[:, None])[:, 0]
    return _Acted(actions, log_probs, output.values[0], next_memory)


def _record(
    storage: RolloutStorage,
    t: int,
    tasks: slice,
    acted: _Acted,
    step: StepBatch,
    result: RolloutResult,
    cuts: _TimeLimitCuts,
) -> None:
    cuts.add(t, tasks, step, acted)
    storage.insert(
        t,
        actions=acted.actions,
        log_probs=acted.log_probs,
        values=acted.values,
        rewards=step.rewards,
        terminated=step.terminated,
        truncated=step.truncated,
        next_observations=step.observations,
        tasks=tasks,
    )
    result.episodes.extend(metrics for _, metrics in step.finished)


@torch.no_grad()
def collect_rollout(
    *,
    model: ActorCriticModel,
    sampler: VectorSampler,
    storage: RolloutStorage,
    teacher: TeacherForcing | None = None,
) -> RolloutResult:
    """Run `storage.num_steps` steps from `storage`'s row 0; leaves memory for the next rollout.

    Each step, group by group: wait for the group's previous step, record it, act, and send
    the actions; the other group's workers are stepping meanwhile. The random streams are
    drawn in the same order every time, so a seed gives the same rollout."""
    result = RolloutResult()
    memory = storage.memory.clone()  # row 0's memory stays for the update to replay from
    acted: dict[int, _Acted] = {}  # per group, the decision its workers are stepping
    cuts = _TimeLimitCuts()
    for t in range(storage.num_steps):
        probability = 0.0
        if teacher is not None:
            probability = teacher.probability(t)
            result.teacher_forcing.append(probability)
        for g, tasks in enumerate(sampler.groups):
            if t > 0:
                step = sampler.receive_step(g)
                _record(storage, t - 1, tasks, acted[g], step, result, cuts)
            acted[g] = _act(model, storage, t, tasks, memory, teacher, probability, result)
            memory[:, tasks] = acted[g].memory
            sampler.send_step(g, acted[g].actions.cpu().numpy())
    for g, tasks in enumerate(sampler.groups):
        step = sampler.receive_step(g)
        _record(storage, storage.num_steps - 1, tasks, acted[g], step, result, cuts)
    sampler.balance()
    cuts.write_values(model, storage)
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
