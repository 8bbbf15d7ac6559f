"""The off-policy step: stream memory carries from chunk to chunk and restarts at an epoch;
building a stage's iterator the AllenAct way and ours."""

import functools
import gc
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch import nn
from torch.distributions import Categorical

from stagerl.engine.distributed import Ranks
from stagerl.engine.learner import WeightedLoss
from stagerl.engine.offpolicy import OffPolicyLearner, build_iterator
from stagerl.errors import ConfigError
from stagerl.losses.offpolicy import ExpertCELoss
from stagerl.models.base import ActorCriticModel, ActorCriticOutput
from stagerl.offpolicy.dataset import EpisodeArrays
from stagerl.offpolicy.iterator import TruncatedBPTTIterator
from stagerl.pipeline import OffPolicyPipelineComponent


class CountingModel(ActorCriticModel):
    """Memory counts the chunks a stream has been through; records the memory it is given."""

    def __init__(self) -> None:
        super().__init__(spaces.Discrete(3), spaces.Dict({}))
        self.logits = nn.Parameter(torch.zeros(3))
        self.memory_seen: list[torch.Tensor] = []

    @property
    def memory_shape(self) -> tuple[int, int]:
        return (1, 1)

    def forward(self, observations, memory, prev_actions, masks):
        self.memory_seen.append(memory.clone())
        logits = self.logits.expand(*masks.shape, 3)
        values = torch.zeros(masks.shape)
        return ActorCriticOutput(Categorical(logits=logits), values), memory + 1 + self.logits[0]


def test_stream_memory_carries_between_chunks_and_resets_at_a_new_epoch():
    lengths = np.array([4, 4, 4, 4])  # two streams, chunks of 2: an epoch is 4 batches
    episodes = EpisodeArrays(
        observations={},
        actions=np.zeros(16, np.int64),
        starts=np.array([0, 4, 8, 12]),
        lengths=lengths,
        source=Path("hand-made"),
    )
    iterator = TruncatedBPTTIterator(episodes, nrollouts=2, rollout_len=2, seed=0)
    component = OffPolicyPipelineComponent(lambda **kwargs: iterator, ["ce"], updates=5)
    learner = OffPolicyLearner(
        component, iterator, losses=[WeightedLoss("ce", ExpertCELoss(), 1.0)]
    )
    model = CountingModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # memory stays an exact count
    result = learner.update(model=model, optimizer=optimizer, stage_steps=0, max_grad_norm=1.0)

    seen = [memory.flatten().tolist() for memory in model.memory_seen]
    assert seen == [[0, 0], [1, 1], [2, 2], [3, 3], [0, 0]]  # batch 5 starts epoch 1
    assert not model.memory_seen[1].requires_grad  # detached: truncated BPTT
    assert (learner.samples, learner.epoch, result.attempted) == (20, 1, 5)
    iterator.close()


def test_each_rank_counts_the_episodes_it_begun_as_allenact_does():
    # A rank reads every second episode; its epoch_progress is over its share (AllenAct's
    # distributed config gives each worker total_episodes_in_epoch = 1e6 // workers)
    lengths = np.array([2, 2, 2])
    episodes = EpisodeArrays({}, np.zeros(6, np.int64), np.array([0, 2, 4]), lengths, Path("e"))
    iterator = TruncatedBPTTIterator(episodes, nrollouts=1, rollout_len=2, seed=0)
    component = OffPolicyPipelineComponent(lambda **kwargs: iterator, ["ce"])
    learner = OffPolicyLearner(component, iterator, losses=[], ranks=Ranks(rank=1, world_size=2))
    batch = learner._batch(next(iterator), CountingModel())
    assert batch.episodes_begun == 1
    iterator.close()


class ReadyIterator:
    """An iterator with nothing to give: what a builder returns here only has to be one."""

    def __init__(self, **arguments) -> None:
        self.arguments = arguments

    def __next__(self):
        raise StopIteration

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


CONTEXT = {"rank": 1, "world_size": 2, "seed": 7, "observation_space": None, "env_ids": None}


def test_builders_get_the_context_they_take_and_what_the_kwargs_generator_adds():
    calls = []

    def generator(rank, tasks_per_rank, seed):
        calls.append((rank, tasks_per_rank, seed))
        return {"part": f"{rank} of {len(tasks_per_rank)}", "seed": seed}

    def allenact_style(part, seed):  # takes none of the context but `seed`
        return ReadyIterator(part=part, seed=seed)

    def build(builder, kwargs_generator=None):
        component = OffPolicyPipelineComponent(
            builder, ["bc"], data_iterator_kwargs_generator=kwargs_generator
        )
        return build_iterator(
            component, "stage", context=CONTEXT, tasks_per_rank=[3, 2], shared_seed=99
        ).arguments

    assert build(lambda **kwargs: ReadyIterator(**kwargs)) == CONTEXT
    assert build(lambda rank: ReadyIterator(rank=rank)) == {"rank": 1}
    assert build(functools.partial(allenact_style, seed=3), lambda *_: {"part": "p"}) == {
        "part": "p",
        "seed": 3,  # what the partial binds stands
    }
    assert build(allenact_style, generator) == {"part": "1 of 2", "seed": 99}
    assert calls == [(1, [3, 2], 99)]
    with pytest.raises(ConfigError, match=r"stage.data_iterator_kwargs_generator returned list"):
        build(allenact_style, lambda rank, tasks_per_rank, seed: [rank])


def test_a_builder_that_cannot_be_told_its_rank_is_refused_on_several_ranks():
    # it would give every rank the same batches: gradients averaged over identical copies
    component = OffPolicyPipelineComponent(lambda: ReadyIterator(), ["bc"])
    one_rank = {**CONTEXT, "rank": 0, "world_size": 1}
    build_iterator(component, "stage", context=one_rank, tasks_per_rank=[5], shared_seed=0)
    with pytest.raises(ConfigError, match=r"stage.data_iterator_builder takes no `rank`.* 2 "):
        build_iterator(component, "stage", context=CONTEXT, tasks_per_rank=[3, 2], shared_seed=0)


class DictIterator(ReadyIterator):
    """AllenAct's iterators give dicts of tensors."""

    def __next__(self):
        return {"actions": torch.zeros(2, 1)}


@pytest.mark.parametrize(
    ("iterator", "message"),
    [
        (ReadyIterator(), r"stage.offpolicy_component.data_iterator_builder's iterator ended;"),
        (DictIterator(), r"stage.offpolicy_component.data_iterator_builder's iterator gave a dict"),
    ],
    ids=["ended", "a-dict"],
)
def test_an_iterator_that_ends_or_gives_no_batch_stops_naming_the_stage(iterator, message):
    component = OffPolicyPipelineComponent(lambda **kwargs: iterator, ["ce"])
    learner = OffPolicyLearner(component, iterator, losses=[], where="stage.offpolicy_component")
    model = CountingModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    with pytest.raises(ConfigError, match=message):
        learner.update(model=model, optimizer=optimizer, stage_steps=0, max_grad_norm=1.0)


@pytest.mark.timeout(240)
def test_a_stages_offpolicy_iterator_is_closed_when_the_stage_ends(
    tmp_path, monkeypatch, empty_dataset
):
    # two off-policy stages of 256 steps: the first's prefetching thread and dataset go when
    # it ends, not when training does
    from stagerl.engine.trainer import Trainer
    from stagerl.experiment import load_experiment
    from tests.variants import fixture_variant

    monkeypatch.setenv("STAGERL_DATASET", str(empty_dataset))
    config = fixture_variant(
        tmp_path,
        "tiny_offpolicy_bc.py",
        {
            "STEPS = 1024": "STEPS = 256",
            "            ],\n        )": "            ] * 2,\n        )",
        },
    )
    trainer = Trainer(load_experiment(config), run_dir=tmp_path / "run", seed=0)
    closed = []
    close = OffPolicyLearner.close
    monkeypatch.setattr(
        OffPolicyLearner,
        "close",
        lambda learner: (
            closed.append((learner.where, trainer.state.total_steps)),
            iterators.append(weakref.ref(learner.iterator)),
            close(learner),
        ),
    )
    iterators = []
    trainer.train()
    gc.collect()
    assert iterators[0]() is None  # its dataset and batches freed with it
    assert closed == [
        ("pipeline_stages[0].offpolicy_component", 256),
        ("pipeline_stages[1].offpolicy_component", 512),
    ]
