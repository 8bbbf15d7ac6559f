"""A bad pipeline raises an error naming the field and the value."""

import re

import numpy as np
import pytest
from torch import optim

from stagerl import (
    A2C,
    PPO,
    A2CConfig,
    Builder,
    ConfigError,
    Imitation,
    OffPolicyPipelineComponent,
    PipelineStage,
    PPOConfig,
    TrainingPipeline,
    TrainingSettings,
    Validation,
)
from stagerl.plugins.minigrid import MiniGridOffPolicyExpertCELoss


def _pipeline(**overrides):
    settings = dict(
        named_losses={"ppo_loss": PPO(**PPOConfig), "a2c": A2C(**A2CConfig)},
        pipeline_stages=[PipelineStage(loss_names=["ppo_loss"], max_stage_steps=1000)],
        optimizer_builder=Builder(optim.Adam, dict(lr=1e-3)),
        num_steps=16,
        num_mini_batch=2,
        update_repeats=2,
    )
    settings.update(overrides)
    return TrainingPipeline(**settings)


def test_unknown_loss_name_is_named():
    with pytest.raises(ConfigError, match=r"'nope'.*not in named_losses"):
        _pipeline(pipeline_stages=[PipelineStage(loss_names=["nope"], max_stage_steps=10)])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("num_steps", 0),
        ("num_steps", 128.0),  # a count must be an integer: torch would fail on it later
        ("metric_accumulate_interval", -5),
        ("save_interval", "often"),
        ("save_interval", 2.5),
        ("max_grad_norm", 0.0),
        ("gamma", 1.5),
        ("gamma", "0.99"),
        ("gae_lambda", -0.1),
        ("num_mini_batch", 0),
        ("num_mini_batch", 4.0),
        ("update_repeats", 0),
        ("advance_scene_rollout_period", 0),
        ("bootstrap_time_limit", "yes"),
        ("validation", 100),
        ("lr_scheduler_builder", 5),
        ("named_losses", ["ppo_loss"]),  # a list of names, not a dict of losses
        ("pipeline_stages", None),
        ("pipeline_stages", PipelineStage(loss_names=["ppo_loss"], max_stage_steps=10)),
    ],
)
def test_out_of_range_settings_name_field_and_value(field, value):
    with pytest.raises(ConfigError, match=re.escape(f"{field}={value!r}")):
        _pipeline(**{field: value})


@pytest.mark.parametrize(
    ("settings", "named"),
    [({"episodes": 0}, "Validation.episodes=0"), ({"interval": -1}, "Validation.interval=-1")],
)
def test_bad_validation_settings_are_named(settings, named):
    with pytest.raises(ConfigError, match=named):
        Validation(**settings)


def test_empty_stage_list_is_rejected():
    with pytest.raises(ConfigError, match="pipeline_stages"):
        _pipeline(pipeline_stages=[])


@pytest.mark.parametrize("steps", [0, 0.5])  # 0.5 would be a stage of int(0.5) = 0 steps
def test_stage_steps_under_one_are_rejected(steps):
    with pytest.raises(ConfigError, match=rf"max_stage_steps={steps}"):
        PipelineStage(loss_names=["ppo_loss"], max_stage_steps=steps)


@pytest.mark.parametrize("weights", [[1.0], ["x", None], [1.0, float("nan")]])
def test_loss_weights_must_be_a_finite_number_per_loss_name(weights):
    with pytest.raises(ConfigError, match=r"PipelineStage.loss_weights=.*one finite number per"):
        PipelineStage(loss_names=["a", "b"], max_stage_steps=10, loss_weights=weights)


@pytest.mark.parametrize(
    ("names", "expected"),
    [(["ppo", "ppo"], "each loss name once"), ([["ppo"]], "a list of loss names (strings)")],
    ids=["repeated", "not-a-name"],
)
def test_stage_loss_names_must_be_names_given_once(names, expected):
    named = re.escape(f"PipelineStage.loss_names={names!r}") + ".*" + re.escape(expected)
    with pytest.raises(ConfigError, match=named):
        PipelineStage(loss_names=names, max_stage_steps=10)


def test_dataset_aggregation_must_be_a_dataset_aggregation():
    with pytest.raises(ConfigError, match=r"PipelineStage.dataset_aggregation=True"):
        PipelineStage(loss_names=["a"], max_stage_steps=10, dataset_aggregation=True)


def test_more_minibatches_than_tasks_is_rejected():
    pipeline = _pipeline(num_mini_batch=8)
    pipeline.check_task_count(8)
    with pytest.raises(ConfigError, match=r"num_mini_batch=8.*at most the number of tasks \(4\)"):
        pipeline.check_task_count(4)


def test_feed_forward_models_may_have_more_minibatches_than_tasks_but_not_than_steps():
    pipeline = _pipeline(num_mini_batch=64)  # 16 steps
    pipeline.check_task_count(4, recurrent=False)
    with pytest.raises(ConfigError, match=r"num_mini_batch=64.*at most num_steps x tasks \(16 x 2"):
        pipeline.check_task_count(2, recurrent=False)


def test_minibatches_are_checked_against_the_tasks_of_the_rank_with_fewest():
    pipeline = _pipeline(num_mini_batch=2)
    pipeline.check_rank_task_counts((2, 2))
    split = re.escape("(the tasks of one trainer rank: the 3 task samplers split 2 + 1 over 2")
    with pytest.raises(ConfigError, match=r"at most the number of tasks \(1\).*" + split):
        pipeline.check_rank_task_counts((2, 1))


def test_onpolicy_stages_that_set_their_own_minibatches_allow_zero_in_the_pipeline():
    own = TrainingSettings(num_mini_batch=2, update_repeats=4)
    stages = [PipelineStage(loss_names=["ppo_loss"], max_stage_steps=100, training_settings=own)]
    pipeline = _pipeline(num_mini_batch=0, update_repeats=0, pipeline_stages=stages)
    assert pipeline.setting(stages[0], "num_mini_batch") == 2
    stages.append(PipelineStage(loss_names=["ppo_loss"], max_stage_steps=100))  # uses the 0
    with pytest.raises(ConfigError, match=r"TrainingPipeline.num_mini_batch=0"):
        _pipeline(num_mini_batch=0, update_repeats=0, pipeline_stages=stages)


def test_stage_without_onpolicy_losses_allows_zero_minibatches():
    stages = [PipelineStage(loss_names=[], max_stage_steps=100)]
    pipeline = _pipeline(num_mini_batch=0, update_repeats=0, pipeline_stages=stages)
    pipeline.check_task_count(1)  # no minibatch to fill
    assert pipeline.setting(stages[0], "num_mini_batch") == 0
    with pytest.raises(ConfigError, match="num_mini_batch=0"):  # a stage with a loss needs one
        _pipeline(num_mini_batch=0)


def test_named_losses_must_be_losses():
    with pytest.raises(ConfigError, match=r"named_losses\['bad'\]"):
        _pipeline(named_losses={"bad": "ppo"})


def test_misspelt_setting_is_a_type_error_not_silently_ignored():
    with pytest.raises(TypeError, match="num_mini_batches"):
        _pipeline(num_mini_batches=2)


def test_valid_multi_stage_pipeline_builds():
    pipeline = _pipeline(
        named_losses={"ppo_loss": PPO(**PPOConfig), "imitation_loss": Imitation()},
        pipeline_stages=[
            PipelineStage(loss_names=["imitation_loss"], max_stage_steps=100),
            PipelineStage(loss_names=["ppo_loss"], max_stage_steps=200),
        ],
    )
    assert pipeline.total_steps == 300
    assert pipeline.stage_names == ["0:imitation_loss", "1:ppo_loss"]


def test_aggregation_buffer_must_hold_one_rollout():
    from stagerl.pipeline import DatasetAggregation

    pipeline = _pipeline(
        named_losses={"imitation_loss": Imitation()},
        pipeline_stages=[
            PipelineStage(
                loss_names=["imitation_loss"],
                max_stage_steps=100,
                dataset_aggregation=DatasetAggregation(max_sequences=8),
            )
        ],
    )
    pipeline.check_task_count(8)
    with pytest.raises(ConfigError, match=r"dataset_aggregation.max_sequences=8"):
        pipeline.check_task_count(16)
    # each rank adds its own tasks' sequences to its own buffer: the most tasks must fit
    with pytest.raises(ConfigError, match=r"max_sequences=8.*\(9\).*split 9 \+ 8 over 2"):
        pipeline.check_rank_task_counts((9, 8))


def _offpolicy_stage(**component):
    settings = dict(data_iterator_builder=lambda **kwargs: None, loss_names=["bc"], updates=2)
    settings.update(component)
    return PipelineStage(
        loss_names=[],
        max_stage_steps=100,
        offpolicy_component=OffPolicyPipelineComponent(**settings),
    )


def test_seed_offpolicy_stage_without_onpolicy_training_builds():
    pipeline = _pipeline(
        named_losses={"bc": MiniGridOffPolicyExpertCELoss()},
        pipeline_stages=[_offpolicy_stage()],
        num_mini_batch=0,
        update_repeats=0,
    )
    assert pipeline.pipeline_stages[0].offpolicy_component.updates == 2


@pytest.mark.parametrize(
    ("component", "losses", "stage_losses", "named"),
    [
        ({"loss_names": ["nope"]}, {}, [], r"offpolicy_component.loss_names contains 'nope'"),
        ({"updates": 0}, {}, [], r"OffPolicyPipelineComponent.updates=0"),
        ({"loss_names": []}, {}, [], r"OffPolicyPipelineComponent.loss_names=\[\]"),
        ({"loss_names": ["bc", "bc"]}, {}, [], r"loss_names=\['bc', 'bc'\].*loss name once"),
        ({"data_iterator_builder": "data.hdf5"}, {}, [], r"data_iterator_builder='data.hdf5'"),
        ({"loss_names": ["ppo_loss"]}, {}, [], r"'ppo_loss' \(PPO\), which is not an off-policy"),
        ({}, {}, ["bc"], r"loss_names contains 'bc'.*belong in offpolicy_component"),
    ],
    ids=[
        "unknown-loss",
        "no-updates",
        "no-losses",
        "repeated-loss",
        "not-callable",
        "onpolicy-loss",
        "misplaced",
    ],
)
def test_bad_offpolicy_component_is_named(component, losses, stage_losses, named):
    named_losses = {"bc": MiniGridOffPolicyExpertCELoss(), "ppo_loss": PPO(**PPOConfig)}
    with pytest.raises(ConfigError, match=named):
        stage = _offpolicy_stage(**component)
        stage.loss_names = stage_losses
        _pipeline(named_losses=named_losses, pipeline_stages=[stage])


@pytest.mark.parametrize(
    ("normalize", "num_steps", "tasks", "num_mini_batch", "named"),
    [
        ("rollout", 1, 1, 1, "TrainingPipeline.num_steps=1"),
        ("minibatch", 1, 2, 2, "TrainingPipeline.num_mini_batch=2"),
    ],
)
def test_advantages_standardised_over_one_sample_are_rejected_when_built(
    normalize, num_steps, tasks, num_mini_batch, named
):
    pipeline = _pipeline(
        named_losses={"ppo_loss": PPO(**PPOConfig, normalize_advantage=normalize)},
        num_steps=num_steps,
        num_mini_batch=num_mini_batch,
    )
    with pytest.raises(ConfigError, match=named + r".*at least 2 samples"):
        pipeline.check_task_count(tasks)
    _pipeline(
        named_losses={"ppo_loss": PPO(**PPOConfig, normalize_advantage=False)},
        num_steps=num_steps,
        num_mini_batch=num_mini_batch,
    ).check_task_count(tasks)  # without standardising, one sample is fine


def test_stage_training_settings_override_the_pipelines_and_are_checked():
    stage = PipelineStage(
        loss_names=["ppo_loss"], max_stage_steps=100, training_settings=TrainingSettings(gamma=0.9)
    )
    pipeline = _pipeline(
        pipeline_stages=[
            stage,
            PipelineStage(loss_names=["ppo_loss"], max_stage_steps=1, update_repeats=7),
        ]
    )
    assert (
        pipeline.setting(stage, "gamma") == 0.9 and pipeline.setting(stage, "update_repeats") == 2
    )
    assert pipeline.setting(pipeline.pipeline_stages[1], "update_repeats") == 7
    with pytest.raises(ConfigError, match=r"PipelineStage.num_mini_batch=0"):
        PipelineStage(loss_names=[], max_stage_steps=1, num_mini_batch=0)
    # a pipeline-wide setting may be restated on a stage (AllenAct allows it), not changed
    restating = PipelineStage(loss_names=["ppo_loss"], max_stage_steps=1, num_steps=16)
    _pipeline(pipeline_stages=[restating])
    changing = PipelineStage(loss_names=["ppo_loss"], max_stage_steps=1, num_steps=8)
    with pytest.raises(
        ConfigError, match=r"num_steps=8 differs from TrainingPipeline.num_steps=16"
    ):
        _pipeline(pipeline_stages=[changing])
    with pytest.raises(ConfigError, match=r"unexpected keyword arguments \['nmu_steps'\]"):
        PipelineStage(loss_names=[], max_stage_steps=1, nmu_steps=8)


def test_whole_save_intervals_of_any_number_type_are_taken_and_rechecked_after_changes():
    assert _pipeline(save_interval=1e4).save_interval == 10_000
    assert _pipeline(save_interval=np.int64(1000)).save_interval == 1000
    pipeline = _pipeline(save_interval=1000)
    pipeline.save_interval = -1  # as AllenAct-style configs change settings after building
    pipeline.check()
    assert pipeline.save_interval is None  # at stage ends only


def test_pipeline_settings_given_as_training_settings_or_keywords_not_both():
    settings = TrainingSettings(num_steps=8, num_mini_batch=4, gamma=0.9)
    pipeline = _pipeline(
        num_steps=None, num_mini_batch=1, update_repeats=4, training_settings=settings
    )  # the defaults: as if only training_settings were given
    assert (pipeline.num_steps, pipeline.num_mini_batch, pipeline.gamma) == (8, 4, 0.9)
    with pytest.raises(ConfigError, match=r"training_settings or settings as keyword arguments"):
        _pipeline(num_steps=16, training_settings=settings)


def test_a_criterion_is_asked_by_keyword_where_it_takes_allenacts_names_else_by_position():
    from stagerl.components import ask_criterion

    seen = []

    def swapped(*, total_steps, stage_steps, training_metrics):  # AllenAct's names, any order
        seen.append((stage_steps, total_steps, training_metrics))
        return False

    def own_names(steps, total, metrics):
        seen.append((steps, total, metrics))
        return True

    asked = dict(stage_steps=5, total_steps=9, metrics="m")
    assert ask_criterion("c", swapped, **asked) is False
    assert ask_criterion("c", own_names, **asked) is True
    assert seen == [(5, 9, "m"), (5, 9, "m")]


def test_stage_overrides_changed_after_building_are_checked_again():
    pipeline = _pipeline()
    pipeline.pipeline_stages[0].settings["num_mini_batch"] = 0
    with pytest.raises(ConfigError, match=r"pipeline_stages\[0\].num_mini_batch=0"):
        pipeline.check()


def test_allenact_05_storage_arguments_are_taken_as_none_only():
    # AllenAct 0.5.4's BabyAI configs pass named_storages=None, annotated with its type
    from stagerl import ExperienceStorage  # noqa: F401

    assert _pipeline(named_storages=None, rollout_storage_uuid=None).num_steps == 16
    with pytest.raises(
        ConfigError, match=r"TrainingPipeline.named_storages=\{'gru': 1\}.*one rollout"
    ):
        _pipeline(named_storages={"gru": 1})
