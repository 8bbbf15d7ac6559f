"""TrainingPipeline and PipelineStage: the seed's pipeline API, validated when built.

These are plain settings. Progress through them (stage index, step counts) lives in the trainer
and in checkpoints, never here.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from stagerl.builder import Builder
from stagerl.errors import ConfigError, require
from stagerl.losses.base import Loss
from stagerl.losses.imitation import Imitation
from stagerl.losses.offpolicy import OffPolicyLoss


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
        require(
            self.max_sequences > 0,
            "DatasetAggregation.max_sequences",
            self.max_sequences,
            "a positive number of sequences",
        )
        require(
            self.sequences_per_minibatch > 0,
            "DatasetAggregation.sequences_per_minibatch",
            self.sequences_per_minibatch,
            "a positive number of sequences",
        )


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
            self.episodes,
            "a positive number of episodes",
        )
        require(
            self.interval is None or (isinstance(self.interval, int) and self.interval > 0),
            "Validation.interval",
            self.interval,
            "a positive step count or None (validate at checkpoints only)",
        )


@dataclass
class OffPolicyPipelineComponent:
    """Train `loss_names` (off-policy losses) on `updates` batches from a dataset after every
    rollout of the stage.

    `data_iterator_builder(**kwargs)` makes the stage's batch iterator. The trainer calls it
    once, before any worker starts, with `rank`, `world_size`, `seed`, `observation_space`
    (the experiment's sensors) and `env_ids` (the training tasks' environments where their
    sampler names them), so that an iterator can check the dataset fits and ranks can split it.
    """

    data_iterator_builder: Callable[..., Any]
    loss_names: list[str]
    updates: int = 1
    loss_weights: list[float] | None = None

    def __post_init__(self) -> None:
        require(
            callable(self.data_iterator_builder),
            "OffPolicyPipelineComponent.data_iterator_builder",
            self.data_iterator_builder,
            "a callable returning a batch iterator",
        )
        require(
            isinstance(self.loss_names, list | tuple) and len(self.loss_names) > 0,
            "OffPolicyPipelineComponent.loss_names",
            self.loss_names,
            "a non-empty list of off-policy loss names",
        )
        self.loss_names = list(self.loss_names)
        require(
            isinstance(self.updates, int)
            and not isinstance(self.updates, bool)
            and self.updates >= 1,
            "OffPolicyPipelineComponent.updates",
            self.updates,
            "a positive number of batches per rollout",
        )
        if self.loss_weights is None:
            self.loss_weights = [1.0] * len(self.loss_names)
        require(
            len(self.loss_weights) == len(self.loss_names),
            "OffPolicyPipelineComponent.loss_weights",
            self.loss_weights,
            f"one weight per loss name ({len(self.loss_names)})",
        )


@dataclass
class PipelineStage:
    """A stage trains `loss_names` (weighted by `loss_weights`) for `max_stage_steps` frames.

    `teacher_forcing(stage_steps)` is the probability that the expert's action is executed instead
    of the agent's (needs an ExpertActionSensor). `dataset_aggregation` turns on true DAgger.
    `offpolicy_component` also trains on recorded data after every rollout; `max_stage_steps`
    counts the rollouts' environment steps only.
    """

    loss_names: list[str]
    max_stage_steps: int
    loss_weights: list[float] | None = None
    teacher_forcing: Callable[[int], float] | None = None
    dataset_aggregation: DatasetAggregation | None = None
    offpolicy_component: OffPolicyPipelineComponent | None = None

    def __post_init__(self) -> None:
        require(
            isinstance(self.loss_names, list | tuple),
            "PipelineStage.loss_names",
            self.loss_names,
            "a list of loss names",
        )
        self.loss_names = list(self.loss_names)
        require(
            isinstance(self.max_stage_steps, int | float) and self.max_stage_steps > 0,
            "PipelineStage.max_stage_steps",
            self.max_stage_steps,
            "a positive step count",
        )
        self.max_stage_steps = int(self.max_stage_steps)
        if self.loss_weights is None:
            self.loss_weights = [1.0] * len(self.loss_names)
        require(
            len(self.loss_weights) == len(self.loss_names),
            "PipelineStage.loss_weights",
            self.loss_weights,
            f"one weight per loss name ({len(self.loss_names)})",
        )
        require(
            self.teacher_forcing is None or callable(self.teacher_forcing),
            "PipelineStage.teacher_forcing",
            self.teacher_forcing,
            "a schedule such as LinearDecay(...) or None",
        )
        require(
            self.offpolicy_component is None
            or isinstance(self.offpolicy_component, OffPolicyPipelineComponent),
            "PipelineStage.offpolicy_component",
            self.offpolicy_component,
            "an OffPolicyPipelineComponent(...) or None",
        )


def _positive(name: str, value: Any, allow_none: bool = False) -> None:
    ok = (value is None and allow_none) or (
        isinstance(value, int | float) and not isinstance(value, bool) and value > 0
    )
    require(ok, f"TrainingPipeline.{name}", value, "a positive number" + (" or None" * allow_none))


@dataclass(kw_only=True)
class TrainingPipeline:
    """Everything about how to train, shared by all stages (see the seed document).

    `bootstrap_time_limit`: an episode cut off by its step limit (gymnasium's `truncated`) is
    worth V(its last observation) after its last step (True, gymnasium's convention), or
    nothing, like a real end (False, as AllenAct 0.5.4 treats it).
    `validation`: `Validation(episodes=K)` evaluates every saved checkpoint on K validation
    episodes (None: no validation during training).
    """

    named_losses: dict[str, Loss]
    pipeline_stages: Sequence[PipelineStage]
    optimizer_builder: Builder
    num_steps: int
    num_mini_batch: int = 1
    update_repeats: int = 4
    max_grad_norm: float = 0.5
    gamma: float = 0.99
    use_gae: bool = True
    gae_lambda: float = 1.0
    bootstrap_time_limit: bool = True
    save_interval: int | None = None
    metric_accumulate_interval: int = 10_000
    advance_scene_rollout_period: int | None = None
    lr_scheduler_builder: Builder | None = None
    validation: Validation | None = None
    stage_names: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.pipeline_stages = list(self.pipeline_stages)
        require(
            len(self.pipeline_stages) > 0,
            "TrainingPipeline.pipeline_stages",
            self.pipeline_stages,
            "at least one PipelineStage",
        )
        for name, loss in self.named_losses.items():
            require(
                isinstance(loss, Loss),
                f"TrainingPipeline.named_losses[{name!r}]",
                loss,
                "a Loss instance such as PPO(...) or Imitation()",
            )
        for index, stage in enumerate(self.pipeline_stages):
            self._check_stage(index, stage)
        _positive("num_steps", self.num_steps)
        _positive("metric_accumulate_interval", self.metric_accumulate_interval)
        _positive("save_interval", self.save_interval, allow_none=True)
        _positive("advance_scene_rollout_period", self.advance_scene_rollout_period, True)
        _positive("max_grad_norm", self.max_grad_norm)
        require(0 < self.gamma <= 1, "TrainingPipeline.gamma", self.gamma, "in (0, 1]")
        require(
            0 <= self.gae_lambda <= 1, "TrainingPipeline.gae_lambda", self.gae_lambda, "in [0, 1]"
        )
        require(
            isinstance(self.bootstrap_time_limit, bool),
            "TrainingPipeline.bootstrap_time_limit",
            self.bootstrap_time_limit,
            "True or False",
        )
        if any(stage.loss_names for stage in self.pipeline_stages):
            _positive("num_mini_batch", self.num_mini_batch)
            _positive("update_repeats", self.update_repeats)
        require(
            self.validation is None or isinstance(self.validation, Validation),
            "TrainingPipeline.validation",
            self.validation,
            "Validation(episodes=...) or None",
        )
        require(
            callable(self.optimizer_builder),
            "TrainingPipeline.optimizer_builder",
            self.optimizer_builder,
            "a Builder(optim.X, dict(...))",
        )
        self.stage_names = [
            f"{index}:{'+'.join(self.stage_loss_names(stage)) or 'none'}"
            for index, stage in enumerate(self.pipeline_stages)
        ]

    def _check_stage(self, index: int, stage: PipelineStage) -> None:
        require(
            isinstance(stage, PipelineStage),
            f"TrainingPipeline.pipeline_stages[{index}]",
            stage,
            "a PipelineStage",
        )
        self._check_loss_names(f"pipeline_stages[{index}].loss_names", stage.loss_names, False)
        if stage.offpolicy_component is not None:
            self._check_loss_names(
                f"pipeline_stages[{index}].offpolicy_component.loss_names",
                stage.offpolicy_component.loss_names,
                True,
            )
        if stage.dataset_aggregation is not None and not self.imitation_losses(stage):
            raise ConfigError(
                f"pipeline_stages[{index}].dataset_aggregation needs an Imitation loss in "
                f"its loss_names, got {stage.loss_names}"
            )

    def _check_loss_names(self, where: str, names: list[str], offpolicy: bool) -> None:
        """Every name is in named_losses, and off-policy losses go exactly to components."""
        for name in names:
            if name not in self.named_losses:
                raise ConfigError(
                    f"{where} contains {name!r}, which is not in named_losses "
                    f"(known: {sorted(self.named_losses)})"
                )
            if isinstance(self.named_losses[name], OffPolicyLoss) != offpolicy:
                expected = (
                    "an off-policy loss (trained on dataset batches), such as "
                    "MiniGridOffPolicyExpertCELoss"
                    if offpolicy
                    else "an on-policy loss; off-policy losses belong in offpolicy_component"
                )
                raise ConfigError(
                    f"{where} contains {name!r} ({type(self.named_losses[name]).__name__}), "
                    f"which is not {expected}"
                )

    def check_task_count(self, num_tasks: int) -> None:
        """Checks that need the number of tasks, done before any worker starts."""
        if any(stage.loss_names for stage in self.pipeline_stages):
            require(
                self.num_mini_batch <= num_tasks,
                "TrainingPipeline.num_mini_batch",
                self.num_mini_batch,
                f"at most the number of tasks ({num_tasks}), since "
                "minibatches are made of whole task sequences",
            )
        for index, stage in enumerate(self.pipeline_stages):
            aggregation = stage.dataset_aggregation
            if aggregation is not None:
                require(
                    aggregation.max_sequences >= num_tasks,
                    f"pipeline_stages[{index}].dataset_aggregation.max_sequences",
                    aggregation.max_sequences,
                    f"at least the number of tasks ({num_tasks})",
                )

    @staticmethod
    def stage_loss_names(stage: PipelineStage) -> list[str]:
        """Every loss the stage trains, its off-policy component's included."""
        component = stage.offpolicy_component
        return stage.loss_names + (component.loss_names if component else [])

    def imitation_losses(self, stage: PipelineStage) -> list[str]:
        """The stage's Imitation losses (what DatasetAggregation trains)."""
        return [n for n in stage.loss_names if isinstance(self.named_losses[n], Imitation)]

    @property
    def total_steps(self) -> int:
        """Environment steps over all stages."""
        return sum(stage.max_stage_steps for stage in self.pipeline_stages)
