"""PipelineStage and TrainingSettings: one stage's losses, budget and overrides of the
pipeline's update settings, validated when built (the pipeline checks the rest)."""

import math
from collections.abc import Callable, Sequence
from typing import Any

from stagerl.components import (
    DatasetAggregation,
    OffPolicyPipelineComponent,
    checked_loss_names,
    checked_loss_weights,
)
from stagerl.errors import ConfigError, is_number, require, require_bool, require_positive

# Settings a stage may override (AllenAct's per-stage TrainingSettings); the rest are fixed for
# the whole pipeline because they shape the storage, the sampler or the logs.
STAGE_SETTINGS = (
    "num_mini_batch",
    "update_repeats",
    "max_grad_norm",
    "gamma",
    "use_gae",
    "gae_lambda",
)
PIPELINE_ONLY_SETTINGS = (
    "num_steps",
    "advance_scene_rollout_period",
    "save_interval",
    "metric_accumulate_interval",
)


class TrainingSettings:
    """AllenAct's bundle of training settings; on a `PipelineStage` it overrides the pipeline's
    `num_mini_batch`, `update_repeats`, `max_grad_norm`, `gamma`, `use_gae` and `gae_lambda`
    for that stage (None keeps the pipeline's)."""

    def __init__(self, **settings: Any) -> None:
        known = STAGE_SETTINGS + PIPELINE_ONLY_SETTINGS
        unknown = sorted(set(settings) - set(known))
        if unknown:
            raise ConfigError(
                f"TrainingSettings: unknown settings {unknown} (known: {list(known)})"
            )
        self.settings = {key: value for key, value in settings.items() if value is not None}

    def __repr__(self) -> str:
        return f"TrainingSettings({self.settings})"


class PipelineStage:
    """A stage trains `loss_names` (weighted by `loss_weights`) for `max_stage_steps` frames.

    `teacher_forcing(stage_steps)` is the probability that the expert's action is executed instead
    of the agent's (needs an ExpertActionSensor). `dataset_aggregation` turns on true DAgger.
    `offpolicy_component` also trains on recorded data after every rollout; `max_stage_steps`
    counts the rollouts' environment steps only. `early_stopping_criterion` may end the stage
    sooner. `training_settings=TrainingSettings(...)`, or the same settings as keyword arguments
    (`num_mini_batch=...`), override the pipeline's update settings for this stage.
    """

    def __init__(
        self,
        *,
        loss_names: Sequence[str],
        max_stage_steps: int | float,
        loss_weights: Sequence[float] | None = None,
        teacher_forcing: Callable[[int], float] | None = None,
        dataset_aggregation: DatasetAggregation | None = None,
        offpolicy_component: OffPolicyPipelineComponent | None = None,
        early_stopping_criterion: Callable[..., bool] | None = None,
        training_settings: TrainingSettings | None = None,
        **settings: Any,
    ) -> None:
        self.loss_names = checked_loss_names("PipelineStage.loss_names", loss_names, empty=True)
        require(
            is_number(max_stage_steps) and 1 <= max_stage_steps < math.inf,
            "PipelineStage.max_stage_steps",
            value=max_stage_steps,
            expected="a finite step count of at least 1",
        )
        self.max_stage_steps = int(max_stage_steps)
        self.loss_weights = checked_loss_weights(
            "PipelineStage.loss_weights", loss_weights, names=self.loss_names
        )
        for name, value in (
            ("teacher_forcing", teacher_forcing),
            ("early_stopping_criterion", early_stopping_criterion),
        ):
            require(
                value is None or callable(value),
                f"PipelineStage.{name}",
                value=value,
                expected="a callable or None",
            )
        self.teacher_forcing = teacher_forcing
        self.early_stopping_criterion = early_stopping_criterion
        require(
            dataset_aggregation is None or isinstance(dataset_aggregation, DatasetAggregation),
            "PipelineStage.dataset_aggregation",
            value=dataset_aggregation,
            expected="a DatasetAggregation(...) or None",
        )
        self.dataset_aggregation = dataset_aggregation
        require(
            offpolicy_component is None
            or isinstance(offpolicy_component, OffPolicyPipelineComponent),
            "PipelineStage.offpolicy_component",
            value=offpolicy_component,
            expected="an OffPolicyPipelineComponent(...) or None",
        )
        self.offpolicy_component = offpolicy_component
        self.settings = stage_settings(training_settings, settings)
        fixed = [key for key in PIPELINE_ONLY_SETTINGS if key in self.settings]
        self.pipeline_settings = {key: self.settings.pop(key) for key in fixed}  # only restated

    def __repr__(self) -> str:
        return (
            f"PipelineStage(loss_names={self.loss_names}, max_stage_steps={self.max_stage_steps})"
        )


def stage_settings(training_settings: TrainingSettings | None, settings: dict[str, Any]) -> dict:
    """A stage's overrides, from `training_settings` or keyword arguments (not both)."""
    if training_settings is not None and settings:
        raise ConfigError(
            f"PipelineStage: give training_settings or settings as keyword arguments "
            f"({sorted(settings)}), not both"
        )
    if training_settings is not None:
        settings = settings_of("PipelineStage", training_settings)
    unknown = sorted(set(settings) - set(STAGE_SETTINGS) - set(PIPELINE_ONLY_SETTINGS))
    if unknown:
        raise ConfigError(f"PipelineStage got unexpected keyword arguments {unknown}")
    overrides = {key: value for key, value in settings.items() if value is not None}
    check_update_settings("PipelineStage", overrides)
    return overrides


def check_update_settings(owner: str, settings: dict[str, Any]) -> None:
    """Ranges of the settings that shape an update, for whichever of them are given."""
    for name in ("num_mini_batch", "update_repeats", "max_grad_norm"):
        if name in settings:
            require_setting(name, settings[name], owner=owner, whole=name != "max_grad_norm")
    for name in ("gamma", "gae_lambda"):
        if name in settings:
            value = settings[name]
            ok = is_number(value) and 0 <= value <= 1
            require(ok, f"{owner}.{name}", value=value, expected="a number in [0, 1]")
    if "use_gae" in settings:
        require_bool(f"{owner}.use_gae", settings["use_gae"])


def settings_of(owner: str, training_settings: Any) -> dict[str, Any]:
    """What a `training_settings=` argument sets, checked to be a TrainingSettings."""
    require(
        isinstance(training_settings, TrainingSettings),
        f"{owner}.training_settings",
        value=training_settings,
        expected="TrainingSettings(...) or None",
    )
    return training_settings.settings


def checked_save_interval(owner: str, value: Any) -> int | None:
    """A whole step count (`1e4` and numpy integers too), or None for None or <= 0."""
    require(
        value is None or (is_number(value) and math.isfinite(value) and value == int(value)),
        f"{owner}.save_interval",
        value=value,
        expected="a whole step count (None or <= 0: at stage ends only)",
    )
    return int(value) if value is not None and value > 0 else None


def require_setting(
    name: str,
    value: Any,
    allow_none: bool = False,
    owner: str = "TrainingPipeline",
    whole: bool = False,
) -> None:
    """`owner.name` is a positive number (whole if asked), or None where allowed."""
    require_positive(f"{owner}.{name}", value, whole=whole, allow_none=allow_none)
