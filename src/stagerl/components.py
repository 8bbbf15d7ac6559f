"""What a stage or a pipeline may add to plain on-policy training: an early stopping criterion,
DAgger's dataset of expert sequences, validation during training, and an off-policy component."""

import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from stagerl.errors import is_number, require, require_positive, user_call


class EarlyStoppingCriterion(ABC):
    """`criterion(stage_steps=..., total_steps=..., training_metrics=...) -> bool`, asked (by
    keyword, as AllenAct asks) after every rollout; True ends the stage. `training_metrics`
    (`means()`, `sums()`, `counts()`) holds the episode metrics of the
    `metric_accumulate_interval` window the rollout closed, else none."""

    @abstractmethod
    def __call__(self, stage_steps: int, total_steps: int, training_metrics: Any) -> bool: ...


def ask_criterion(
    where: str, criterion: Callable[..., Any], *, stage_steps: int, total_steps: int, metrics: Any
) -> bool:
    """The criterion's answer: asked by keyword where its parameters take AllenAct's names (so
    they may come in any order), else by position (any names)."""
    asked = dict(stage_steps=stage_steps, total_steps=total_steps, training_metrics=metrics)
    try:
        inspect.signature(criterion).bind(**asked)
    except (TypeError, ValueError):  # other names; or no signature to read
        return bool(user_call(where, criterion, *asked.values()))
    return bool(user_call(where, criterion, **asked))


class NeverEarlyStoppingCriterion(EarlyStoppingCriterion):
    """Never stops a stage early."""

    def __call__(self, stage_steps: int, total_steps: int, training_metrics: Any) -> bool:
        return False


def checked_loss_names(field: str, names: Any, *, empty: bool) -> list[str]:
    """A list (or tuple) of loss names, none twice (AllenAct computes each named loss once per
    update), empty only where `empty` allows."""
    require(
        isinstance(names, list | tuple)
        and (empty or len(names) > 0)
        and all(isinstance(name, str) for name in names),
        field,
        value=names,
        expected=(
            "a list of loss names (strings)"
            if empty
            else "a non-empty list of loss names (strings)"
        ),
    )
    require(
        len(set(names)) == len(names),
        field,
        value=names,
        expected="each loss name once: a named loss is computed once per update (weight it in "
        "loss_weights instead)",
    )
    return list(names)


def checked_loss_weights(
    field: str, weights: Sequence[float] | None, *, names: list[str]
) -> list[float]:
    """The weights of the named losses (1 each when None), checked: one real number per name."""
    if weights is None:
        return [1.0] * len(names)
    require(
        isinstance(weights, list | tuple)
        and len(weights) == len(names)
        and all(is_number(weight) and math.isfinite(weight) for weight in weights),
        field,
        value=weights,
        expected=f"one finite number per loss name ({len(names)})",
    )
    return list(weights)


@dataclass(frozen=True)
class DatasetAggregation:
    """True DAgger (Ross et al. 2011) for a stage with an Imitation loss.

    Every rollout's (observation sequence, expert action) data goes into a FIFO buffer of
    `max_sequences` task sequences (each `num_steps` long); each minibatch update also trains
    the stage's imitation losses on `sequences_per_minibatch` sequences sampled from it. Memory:
    `max_sequences x num_steps x` (bytes of one step's observations + 16), e.g. about 75 MB for
    10,000 GoToObj sequences of 32 steps.
    """

    max_sequences: int = 4096
    sequences_per_minibatch: int = 8

    def __post_init__(self) -> None:
        for name in ("max_sequences", "sequences_per_minibatch"):
            require_positive(f"DatasetAggregation.{name}", getattr(self, name), whole=True)


@dataclass(frozen=True)
class Validation:
    """Evaluate the model on `episodes` episodes of the experiment's validation tasks whenever a
    checkpoint is saved, and also every `interval` steps if given; logged as `valid/*`.

    The episodes run in the trainer process on worker processes of their own (started once,
    idle in between), with the same validation seeds every time, so the numbers compare.
    """

    episodes: int = 100
    interval: int | None = None

    def __post_init__(self) -> None:
        require(
            isinstance(self.episodes, int) and self.episodes > 0,
            "Validation.episodes",
            value=self.episodes,
            expected="a positive number of episodes",
        )
        require(
            self.interval is None or (isinstance(self.interval, int) and self.interval > 0),
            "Validation.interval",
            value=self.interval,
            expected="a positive step count or None (validate at checkpoints only)",
        )


@dataclass
class OffPolicyPipelineComponent:
    """Train `loss_names` (off-policy losses) on `updates` batches from a dataset after every
    rollout of the stage.

    `data_iterator_builder(**kwargs)` makes the stage's batch iterator. The trainer calls it
    once, before any worker starts, with those of `rank`, `world_size`, `seed`,
    `observation_space` (the experiment's sensors) and `env_ids` (the training tasks'
    environments where their sampler names them) that its signature takes, so that an iterator
    can check the dataset fits and ranks can split it. As in AllenAct,
    `data_iterator_kwargs_generator(rank, tasks_per_rank, seed)` (`seed` the same on every rank)
    may return more keyword arguments for the builder; they win over the trainer's.
    """

    data_iterator_builder: Callable[..., Any]
    loss_names: list[str]
    updates: int = 1
    loss_weights: list[float] | None = None
    data_iterator_kwargs_generator: Callable[[int, Sequence[int], int | None], dict] | None = None

    def __post_init__(self) -> None:
        require(
            callable(self.data_iterator_builder),
            "OffPolicyPipelineComponent.data_iterator_builder",
            value=self.data_iterator_builder,
            expected="a callable returning a batch iterator",
        )
        self.loss_names = checked_loss_names(
            "OffPolicyPipelineComponent.loss_names", self.loss_names, empty=False
        )
        require(
            isinstance(self.updates, int)
            and not isinstance(self.updates, bool)
            and self.updates >= 1,
            "OffPolicyPipelineComponent.updates",
            value=self.updates,
            expected="a positive number of batches per rollout",
        )
        self.loss_weights = checked_loss_weights(
            "OffPolicyPipelineComponent.loss_weights", self.loss_weights, names=self.loss_names
        )
        require(
            self.data_iterator_kwargs_generator is None
            or callable(self.data_iterator_kwargs_generator),
            "OffPolicyPipelineComponent.data_iterator_kwargs_generator",
            value=self.data_iterator_kwargs_generator,
            expected="None or a callable (rank, tasks_per_rank, seed) -> dict of builder arguments",
        )
