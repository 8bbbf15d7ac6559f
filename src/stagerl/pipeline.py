"""TrainingPipeline and PipelineStage: the seed's pipeline API, validated when built.

These are plain settings; what a stage may add lives in `stagerl.components` (re-exported here).
Progress through them (stage index, step counts) lives in the trainer and in checkpoints.
"""

from collections.abc import Mapping, Sequence
from dataclasses import InitVar, dataclass, field, fields
from typing import Any

from stagerl.builder import Builder
from stagerl.components import (  # noqa: F401
    DatasetAggregation,
    EarlyStoppingCriterion,
    NeverEarlyStoppingCriterion,
    OffPolicyPipelineComponent,
    Validation,
)
from stagerl.errors import (
    ConfigError,
    require,
    require_bool,
    user_call,
)
from stagerl.losses.base import Loss
from stagerl.losses.imitation import Imitation
from stagerl.losses.offpolicy import OffPolicyLoss
from stagerl.stage import (  # noqa: F401  (PipelineStage, TrainingSettings: re-exported)
    PIPELINE_ONLY_SETTINGS,
    STAGE_SETTINGS,
    PipelineStage,
    TrainingSettings,
    check_update_settings,
    checked_save_interval,
    require_setting,
    settings_of,
)


@dataclass(kw_only=True)
class TrainingPipeline:
    """Everything about how to train, shared by all stages (see the seed document).

    `bootstrap_time_limit`: an episode cut off by its step limit (gymnasium's `truncated`) is
    worth V(its last observation) after its last step (True, gymnasium's convention), or
    nothing, like a real end (False, as AllenAct 0.5.4 treats it).
    `save_interval`: a checkpoint every that many steps, and always at the end of each stage;
    None or <= 0 saves at stage ends only (AllenAct's None saves nothing: stagerl always keeps
    the final model).
    `advance_scene_rollout_period`: every that many rollouts each training sampler moves to its
    next scene; episodes under way finish first (AllenAct abandons them).
    `should_log`: False leaves out TensorBoard and the console's metric lines (metrics.jsonl is
    still written).
    `validation`: `Validation(episodes=K)` evaluates every saved checkpoint on K validation
    episodes (None: no validation during training).
    `named_losses` values may be losses or Builders of them (built here).
    `training_settings=TrainingSettings(...)` (AllenAct's other form) gives the settings instead
    of keyword arguments; not both.
    """

    named_losses: dict[str, Loss | Builder]
    pipeline_stages: Sequence[PipelineStage]
    optimizer_builder: Builder
    num_steps: int = None  # type: ignore[assignment]  # required, here or in training_settings
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
    should_log: bool = True
    validation: Validation | None = None
    stage_names: list[str] = field(init=False)
    training_settings: InitVar[TrainingSettings | None] = None
    named_storages: InitVar[Any] = None  # AllenAct 0.5's, taken only as None (its default)
    rollout_storage_uuid: InitVar[Any] = None

    def __post_init__(
        self, training_settings: TrainingSettings | None, named_storages: Any, storage_uuid: Any
    ) -> None:
        for name, value in (
            ("named_storages", named_storages),
            ("rollout_storage_uuid", storage_uuid),
        ):
            require(value is None, f"TrainingPipeline.{name}", value=value,
                    expected="None: stagerl keeps one rollout storage (AllenAct 0.5's experience "
                    "storages are not supported); recorded data goes in "
                    "PipelineStage(offpolicy_component=...)")  # fmt: skip
        if training_settings is not None:
            self._take_settings(training_settings)
        self.check()

    def _take_settings(self, training_settings: TrainingSettings) -> None:
        settings = settings_of("TrainingPipeline", training_settings)
        names = STAGE_SETTINGS + PIPELINE_ONLY_SETTINGS
        given = [
            f.name for f in fields(self) if f.name in names and getattr(self, f.name) != f.default
        ]
        if given:
            raise ConfigError(
                f"TrainingPipeline: give training_settings or settings as keyword arguments "
                f"({given}), not both"
            )
        for name, value in settings.items():
            setattr(self, name, value)

    def check(self) -> None:
        """Check every setting, and build the losses given as Builders. Run when built, and
        again before training: AllenAct-style configs change settings after building."""
        require(
            isinstance(self.pipeline_stages, list | tuple) and len(self.pipeline_stages) > 0,
            "TrainingPipeline.pipeline_stages",
            value=self.pipeline_stages,
            expected="a non-empty list of PipelineStage(...)",
        )
        self.pipeline_stages = list(self.pipeline_stages)
        require(
            isinstance(self.named_losses, Mapping)
            and all(isinstance(name, str) for name in self.named_losses),
            "TrainingPipeline.named_losses",
            value=self.named_losses,
            expected="a dict of loss name -> loss such as PPO(...), or a Builder of one",
        )
        self.named_losses = {
            name: self._build_loss(name, loss) for name, loss in self.named_losses.items()
        }
        for index, stage in enumerate(self.pipeline_stages):
            self._check_stage(index, stage)
        self._check_settings()
        for index, stage in enumerate(self.pipeline_stages):
            self._check_restated(index, stage)
        self.stage_names = [
            f"{index}:{'+'.join(self.stage_loss_names(stage)) or 'none'}"
            for index, stage in enumerate(self.pipeline_stages)
        ]

    def _check_settings(self) -> None:
        """Every pipeline-wide setting in range; `save_interval <= 0` becomes None."""
        require_setting("num_steps", self.num_steps, whole=True)
        require_setting("metric_accumulate_interval", self.metric_accumulate_interval)
        self.save_interval = checked_save_interval("TrainingPipeline", self.save_interval)
        require_setting(
            "advance_scene_rollout_period", self.advance_scene_rollout_period, True, whole=True
        )
        check_update_settings(
            "TrainingPipeline",
            {
                name: getattr(self, name)
                for name in ("max_grad_norm", "gamma", "gae_lambda", "use_gae")
            },
        )
        require_bool("TrainingPipeline.bootstrap_time_limit", self.bootstrap_time_limit)
        require_bool("TrainingPipeline.should_log", self.should_log)
        stages = self.pipeline_stages
        for name in ("num_mini_batch", "update_repeats"):  # where an on-policy stage uses it
            if any(stage.loss_names and name not in stage.settings for stage in stages):
                check_update_settings("TrainingPipeline", {name: getattr(self, name)})
        require(
            self.validation is None or isinstance(self.validation, Validation),
            "TrainingPipeline.validation",
            value=self.validation,
            expected="Validation(episodes=...) or None",
        )
        require(
            callable(self.optimizer_builder),
            "TrainingPipeline.optimizer_builder",
            value=self.optimizer_builder,
            expected="a Builder(optim.X, dict(...))",
        )
        require(
            self.lr_scheduler_builder is None or callable(self.lr_scheduler_builder),
            "TrainingPipeline.lr_scheduler_builder",
            value=self.lr_scheduler_builder,
            expected="None or a Builder(LambdaLR, {'lr_lambda': LinearDecay(...)})",
        )

    @staticmethod
    def _build_loss(name: str, loss: Any) -> Loss:
        where = f"TrainingPipeline.named_losses[{name!r}]"
        if isinstance(loss, Builder):
            loss = user_call(f"{where} ({loss!r})", loss)
        require(
            isinstance(loss, Loss),
            where,
            value=loss,
            expected="a Loss such as PPO(...), or a Builder of one",
        )
        return loss

    def setting(self, stage: PipelineStage, name: str) -> Any:
        """The stage's value of an update setting: its own override, else the pipeline's."""
        return stage.settings.get(name, getattr(self, name))

    def _check_stage(self, index: int, stage: PipelineStage) -> None:
        require(
            isinstance(stage, PipelineStage),
            f"TrainingPipeline.pipeline_stages[{index}]",
            value=stage,
            expected="a PipelineStage",
        )
        check_update_settings(f"pipeline_stages[{index}]", stage.settings)  # changed since?
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

    def _check_restated(self, index: int, stage: PipelineStage) -> None:
        """A pipeline-wide setting given on a stage (AllenAct allows it) equals the pipeline's."""
        for name, value in stage.pipeline_settings.items():
            own, restated = getattr(self, name), value
            if name == "save_interval":
                restated = checked_save_interval(f"pipeline_stages[{index}]", value)
            if restated != own:
                raise ConfigError(
                    f"pipeline_stages[{index}].{name}={value!r} differs from "
                    f"TrainingPipeline.{name}={own!r}: it cannot change from stage to stage in "
                    "stagerl; set it on TrainingPipeline"
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

    def check_rank_task_counts(self, counts: Sequence[int], *, recurrent: bool = True) -> None:
        """`check_task_count` for every trainer rank's tasks (`counts`): the minibatches against
        the rank with the fewest, the DAgger buffer against the one with the most; under
        several ranks, an error names how the tasks split over them."""
        try:
            self._check_minibatch_counts(min(counts), recurrent)
            self._check_aggregation(max(counts))
        except ConfigError as error:
            if len(counts) == 1:
                raise
            raise ConfigError(
                f"{error} (the tasks of one trainer rank: the {sum(counts)} task samplers split "
                f"{' + '.join(map(str, counts))} over {len(counts)} ranks)"
            ) from None

    def check_task_count(self, num_tasks: int, *, recurrent: bool = True) -> None:
        """Checks that need the number of tasks (and whether the model is `recurrent`), done
        before any worker starts."""
        self.check_rank_task_counts([num_tasks], recurrent=recurrent)

    def _check_minibatch_counts(self, num_tasks: int, recurrent: bool) -> None:
        for index, stage in enumerate(self.pipeline_stages):
            if stage.loss_names:
                self._check_minibatches(index, stage, num_tasks, recurrent)

    def _check_aggregation(self, num_tasks: int) -> None:
        """A rollout adds one sequence per task to the DAgger buffer: it must hold them all."""
        for index, stage in enumerate(self.pipeline_stages):
            aggregation = stage.dataset_aggregation
            if aggregation is not None:
                require(
                    aggregation.max_sequences >= num_tasks,
                    f"pipeline_stages[{index}].dataset_aggregation.max_sequences",
                    value=aggregation.max_sequences,
                    expected=f"at least the number of tasks ({num_tasks})",
                )

    def _check_minibatches(
        self, index: int, stage: PipelineStage, num_tasks: int, recurrent: bool
    ) -> None:
        """A recurrent model's minibatches are whole task sequences, a feed-forward model's
        single steps; a loss that standardises advantages needs at least two samples in what
        it standardises over (one gives a NaN standard deviation)."""
        own = "num_mini_batch" in stage.settings
        where = f"pipeline_stages[{index}]" if own else "TrainingPipeline"
        num_mini_batch = self.setting(stage, "num_mini_batch")
        samples = num_tasks if recurrent else num_tasks * self.num_steps  # what minibatches split
        require(
            num_mini_batch <= samples,
            f"{where}.num_mini_batch",
            value=num_mini_batch,
            expected=(
                f"at most the number of tasks ({num_tasks}), since a recurrent model's "
                "minibatches are made of whole task sequences"
                if recurrent
                else f"at most num_steps x tasks ({self.num_steps} x {num_tasks} steps)"
            ),
        )
        for name in stage.loss_names:
            over = getattr(self.named_losses[name], "normalize_advantage", "none")
            if over == "none":
                continue
            per = samples // num_mini_batch if over == "minibatch" else samples
            steps = per * self.num_steps if recurrent else per
            field_name, value = (
                (f"{where}.num_mini_batch", num_mini_batch)
                if over == "minibatch"
                else ("TrainingPipeline.num_steps", self.num_steps)
            )
            require(
                steps >= 2,
                field_name,
                value=value,
                expected=(
                    f"at least 2 samples per {over}: {name!r} standardises advantages over "
                    f"each {over}, which would hold one step"
                ),
            )

    @staticmethod
    def stage_loss_names(stage: PipelineStage) -> list[str]:
        """Every loss the stage trains, its off-policy component's included."""
        component = stage.offpolicy_component
        return stage.loss_names + (component.loss_names if component else [])

    def imitation_losses(self, stage: PipelineStage) -> list[str]:
        """The stage's Imitation losses (what DatasetAggregation trains)."""
        return [n for n in stage.loss_names if isinstance(self.named_losses[n], Imitation)]

    def reads_expert(self, stage: PipelineStage) -> bool:
        """Whether the stage uses the tasks' expert: teacher forcing, or a loss that reads
        expert actions (`Loss.reads_expert_actions`)."""
        reading = [self.named_losses[name].reads_expert_actions for name in stage.loss_names]
        return stage.teacher_forcing is not None or any(reading)

    def named_imitation_losses(self) -> dict[str, Imitation]:
        """Every Imitation loss of the pipeline by name (each is bound to an expert sensor)."""
        return {n: loss for n, loss in self.named_losses.items() if isinstance(loss, Imitation)}

    @property
    def total_steps(self) -> int:
        """Environment steps over all stages."""
        return sum(stage.max_stage_steps for stage in self.pipeline_stages)
