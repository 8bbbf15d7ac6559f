"""Double-buffered sampling (two sampler groups taking turns) gives the rollouts synchronous
sampling gives, and the same rollout again from the same seed; the processes poll for each
other only where each has a core."""

import pytest
import torch
from torch import nn
from torch.distributions import Categorical

from stagerl.engine.rollout import collect_rollout
from stagerl.engine.setup import build_training_setup, start_sampler
from stagerl.engine.storage import RolloutStorage
from stagerl.experiment import MachineParams, load_experiment
from stagerl.models.base import ActorCriticModel, ActorCriticOutput
from stagerl.tasks.worker import SPIN_SECONDS
from tests.variants import fixture_variant

pytestmark = pytest.mark.timeout(120)

STORED = ("actions", "log_probs", "values", "rewards", "terminated", "truncated", "masks")


class ObservationPolicy(ActorCriticModel):
    """Certainly takes action (sum of the view) mod 3; its value is the number of steps of the
    episode so far, counted in its memory, so memory and masks must be kept per task."""

    def __init__(self, action_space, observation_space):
        super().__init__(action_space, observation_space)
        self.unused = nn.Parameter(torch.zeros(()))

    @property
    def memory_shape(self):
        return (1, 1)

    def forward(self, observations, memory, prev_actions, masks):
        steps, tasks = masks.shape
        view = observations["minigrid_ego_image"].reshape(steps, tasks, -1).long()
        actions = view.sum(-1) % 3
        logits = nn.functional.one_hot(actions, self.action_space.n).float() * 1e4
        counts = []
        for t in range(steps):
            memory = memory * masks[t].view(1, -1, 1) + 1
            counts.append(memory[0, :, 0])
        return ActorCriticOutput(Categorical(logits=logits), torch.stack(counts)), memory


def _rollouts(config, groups, model=None, rollouts=3):
    """Storage tensors of `rollouts` consecutive rollouts, from torch seed 0."""
    setup = build_training_setup(load_experiment(config), seed=0)
    model = model or setup.model
    storage = RolloutStorage(
        num_steps=10,
        num_tasks=setup.num_tasks,
        observation_space=setup.observation_space,
        memory_shape=model.memory_shape,
    )
    torch.manual_seed(0)
    kept = []
    with start_sampler(
        setup.experiment, setup.machine, samplers=setup.samplers, groups=groups
    ) as sampler:
        assert len(sampler.groups) == groups
        storage.set_observations(0, sampler.reset())
        storage.memory = model.initial_memory(setup.num_tasks)
        for _ in range(rollouts):
            episodes = collect_rollout(model=model, sampler=sampler, storage=storage).episodes
            tensors = {name: getattr(storage, name).clone() for name in STORED}
            tensors["bootstrap_values"] = storage.bootstrap_values.clone()
            tensors["view"] = storage.observations["minigrid_ego_image"].clone()
            kept.append((tensors, sorted(e["ep_length"] for e in episodes)))
            storage.start_next_rollout()
    return kept


@pytest.fixture
def config(tmp_path):
    # 6 tasks in 2 processes: groups of 3, split 2 + 1 and 1 + 2 between the processes;
    # episodes cut at 4 steps, so rollouts hold time-limit cuts to bootstrap
    return fixture_variant(
        tmp_path,
        "tiny_ppo.py",
        {
            "MAX_SAMPLER_PROCESSES = 1": "MAX_SAMPLER_PROCESSES = 2",
            "NUM_TRAIN_SAMPLERS = 4": "NUM_TRAIN_SAMPLERS = 6\n    MAX_STEPS = 4",
        },
    )


def test_double_buffered_rollouts_equal_synchronous_ones_for_a_certain_policy(config):
    setup = build_training_setup(load_experiment(config), seed=0)
    model = ObservationPolicy(setup.samplers[0].action_space, setup.observation_space)
    synchronous = _rollouts(config, groups=1, model=model)
    double = _rollouts(config, groups=2, model=model)
    for (sync_tensors, sync_episodes), (double_tensors, double_episodes) in zip(
        synchronous, double, strict=True
    ):
        assert sync_episodes == double_episodes
        for name, tensor in sync_tensors.items():
            torch.testing.assert_close(double_tensors[name], tensor, msg=name)
    truncated = torch.stack([tensors["truncated"] for tensors, _ in double])
    assert truncated.any()  # the cuts were there to be bootstrapped
    values = torch.stack([tensors["bootstrap_values"] for tensors, _ in double])
    assert (values[truncated] == 5).all()  # V(final observation) = its step count, 4 + 1


def test_double_buffered_rollouts_repeat_from_the_same_seed(config):
    first, second = _rollouts(config, groups=2), _rollouts(config, groups=2)
    for (tensors, episodes), (again, episodes_again) in zip(first, second, strict=True):
        assert episodes == episodes_again
        for name, tensor in tensors.items():
            assert torch.equal(again[name], tensor), name


@pytest.mark.parametrize(("cores", "spins"), [(2, False), (3, True)])
def test_processes_poll_for_each_other_only_where_each_has_a_core(
    config, monkeypatch, cores, spins
):
    # two workers, and the trainer: polling on two cores would take a core from another
    monkeypatch.setattr(MachineParams, "cores", staticmethod(lambda: cores))
    setup = build_training_setup(load_experiment(config), seed=0)
    with start_sampler(setup.experiment, setup.machine, samplers=setup.samplers) as sampler:
        assert sampler.num_workers == 2
        assert sampler.spin == (SPIN_SECONDS if spins else 0.0)
