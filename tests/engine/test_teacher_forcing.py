"""Teacher forcing executes the expert's valid actions with probability p, and the storage keeps
the action that was executed."""

import math

import pytest
import torch
from gymnasium import spaces
from torch.distributions import Categorical

from stagerl import ExpertActionSensor, Imitation
from stagerl.engine.rollout import TeacherForcing, collect_rollout
from stagerl.engine.storage import RolloutStorage
from stagerl.errors import ConfigError
from stagerl.losses.base import RolloutBatch
from stagerl.models.base import ActorCriticModel, ActorCriticOutput
from stagerl.tasks.vector import VectorSampler
from tests.tasks.faulty import CounterSensor, CountingSampler

pytestmark = pytest.mark.timeout(60)


class AlwaysZero(ActorCriticModel):
    """A policy that (all but surely) picks action 0; the expert always says 2."""

    def forward(self, observations, memory, prev_actions, masks):
        steps, tasks = masks.shape
        logits = torch.tensor([30.0, 0.0, 0.0]).expand(steps, tasks, 3)
        return ActorCriticOutput(Categorical(logits=logits), torch.zeros(steps, tasks)), memory


def _rollout(schedule):
    """A 10-step rollout of 4 counting tasks; `schedule` gives p at the stage's frames (a float:
    p throughout)."""
    if not callable(schedule):
        schedule = (lambda p: lambda frames: p)(schedule)
    sensors = [CounterSensor(), ExpertActionSensor(nactions=3)]
    samplers = [CountingSampler(slot, length=5, sensors=sensors) for slot in range(4)]
    with VectorSampler(samplers, num_workers=1) as sampler:
        space = samplers[0].observation_space
        model = AlwaysZero(spaces.Discrete(3), space)
        storage = RolloutStorage(
            num_steps=10, num_tasks=4, observation_space=space, memory_shape=(0, 0)
        )
        storage.set_observations(0, sampler.reset())
        teacher = TeacherForcing(
            schedule, 0, 4, ExpertActionSensor.UUID, torch.Generator().manual_seed(0)
        )
        result = collect_rollout(model=model, sampler=sampler, storage=storage, teacher=teacher)
    expert = storage.observations[ExpertActionSensor.UUID][:10]
    return storage, expert[..., 1].bool(), result


@pytest.mark.parametrize("p", [1.0, 1.5], ids=["1", "above-1-counts-as-1"])
def test_teacher_forcing_at_p1_executes_every_valid_expert_action(p):
    storage, valid, result = _rollout(p)
    assert valid.any() and (~valid).any()
    assert (storage.actions[valid] == 2).all()  # expert's action wherever it is valid
    assert (storage.actions[~valid] == 0).all()  # the policy's where it is not
    # CountingTask's reward is the executed action: the storage holds what was executed
    assert torch.equal(storage.rewards, storage.actions.float())
    assert result.expert_steps == int(valid.sum())


def test_teacher_forcing_at_p0_executes_no_expert_action():
    storage, _, result = _rollout(0.0)
    assert (storage.actions == 0).all() and result.expert_steps == 0


def test_teacher_forcing_at_half_mixes():
    storage, valid, _ = _rollout(0.5)
    expert_taken = (storage.actions[valid] == 2).float().mean().item()
    assert 0.2 < expert_taken < 0.8


def test_the_probability_follows_the_schedule_step_by_step_within_a_rollout():
    # 4 tasks: step t of the rollout is at stage frame 4t; p = 1 up to frame 16, then 0
    storage, valid, result = _rollout(lambda frames: 1.0 if frames < 20 else 0.0)
    assert result.teacher_forcing == [1.0] * 5 + [0.0] * 5
    assert (storage.actions[:5][valid[:5]] == 2).all() and valid[:5].any()
    assert (storage.actions[5:] == 0).all()


def test_stored_log_prob_is_of_the_executed_action():
    storage, valid, _ = _rollout(1.0)
    executed_expert = valid & (storage.actions == 2)
    assert (storage.log_probs[executed_expert] < -20).all()  # improbable under the policy
    assert (storage.log_probs[~valid] > -1e-6).all()


def _expert_batch(expert: torch.Tensor) -> RolloutBatch:
    """One step of `expert.shape[1]` tasks whose expert readings are `expert`, zeros else."""
    zeros = torch.zeros(1, expert.shape[1])
    return RolloutBatch(
        observations={ExpertActionSensor.UUID: expert},
        memory=torch.zeros(0, expert.shape[1], 0),
        prev_actions=zeros.long(),
        masks=torch.ones_like(zeros),
        actions=zeros.long(),
        old_log_probs=zeros,
        old_values=zeros,
        returns=zeros,
        advantages=zeros,
    )


def test_imitation_loss_averages_over_valid_steps_only():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [1 / 3, 1 / 3, 1 / 3]]]))
    expert = torch.tensor([[[0, 1], [1, 1], [2, 0]]])  # third step invalid
    batch = _expert_batch(expert)
    output = ActorCriticOutput(Categorical(logits=logits), torch.zeros(1, 3))
    loss, info = Imitation().loss(0, batch, output)
    assert loss.item() == pytest.approx(-(math.log(0.5) + math.log(0.8)) / 2)
    assert info["expert_valid_fraction"] == pytest.approx(2 / 3)
    batch.observations[ExpertActionSensor.UUID] = expert * torch.tensor([1, 0])  # none valid
    loss, info = Imitation().loss(0, batch, output)
    assert (loss.item(), info["expert_valid_fraction"]) == (0.0, 0.0)  # no NaN from 0 / 0
    assert "imitation_loss" not in info  # a minibatch without any leaves the average alone


def test_imitation_loss_ignores_steps_without_an_expert_action_that_the_policy_rules_out():
    # the step without an expert action carries action 0, which the policy gives log p = -inf
    logits = torch.tensor([[[0.0, 0.0], [-math.inf, 0.0]]], requires_grad=True)
    batch = _expert_batch(torch.tensor([[[1, 1], [0, 0]]]))
    loss, info = Imitation().loss(0, batch, ActorCriticOutput(Categorical(logits=logits), None))
    loss.backward()
    assert loss.item() == pytest.approx(math.log(2))  # the valid step's -log(1/2) alone
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        (lambda frames: float("nan"), r"PipelineStage.teacher_forcing\(0\)=nan is invalid"),
        (lambda frames, total: 1.0, r"PipelineStage.teacher_forcing raised TypeError"),
    ],
)
def test_a_schedule_that_gives_no_probability_is_an_error_naming_it(schedule, message):
    with pytest.raises(ConfigError, match=message):
        _rollout(schedule)
