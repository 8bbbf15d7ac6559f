"""Schedules at chosen steps, and LambdaLR driven by the total step count."""

import pytest
import torch
from torch.optim.lr_scheduler import LambdaLR

from stagerl import Builder, ConfigError, ConstantSchedule, LinearDecay, MultiLinearDecay
from stagerl.engine.learner import step_lr_scheduler


def test_linear_decay_at_chosen_steps():
    decay = LinearDecay(steps=1000)
    assert [decay(s) for s in (0, 250, 500, 1000, 5000)] == pytest.approx([1, 0.75, 0.5, 0, 0])
    teacher = LinearDecay(startp=1.0, endp=0.2, steps=100)
    assert [teacher(s) for s in (0, 50, 100, 200)] == pytest.approx([1.0, 0.6, 0.2, 0.2])


def test_multi_linear_decay_chains_segments():
    decay = MultiLinearDecay(stages=[LinearDecay(10, 1.0, 0.5), LinearDecay(10, 0.5, 0.0)])
    assert [decay(s) for s in (0, 5, 10, 15, 20, 99)] == pytest.approx(
        [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    )
    assert ConstantSchedule(0.3)(12345) == 0.3


def test_linear_decay_over_no_or_negative_steps_and_non_numbers_are_rejected():
    assert LinearDecay(steps=0)(0) == 0.0
    assert LinearDecay(-1, startp=1.0, endp=0.3)(5) == 1.0  # AllenAct: no decay at all
    with pytest.raises(ConfigError, match="LinearDecay.steps"):
        LinearDecay(steps="50k")


def test_lambda_lr_factor_follows_total_steps():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([parameter], lr=1e-3)
    scheduler = Builder(LambdaLR, {"lr_lambda": LinearDecay(steps=10_000)})(optimizer)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
    for total_steps, factor in [(512, 0.9488), (2_500, 0.75), (7_500, 0.25), (12_000, 0.0)]:
        optimizer.step()
        step_lr_scheduler(scheduler, total_steps)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * factor)


def test_builder_merges_default_kwargs_and_call_arguments_in_that_order():
    builder = Builder(dict, {"a": 1, "nested": {"y": 2}}, default={"a": 0, "nested": {"x": 1}})
    assert builder(b=2) == {"a": 1, "nested": {"x": 1, "y": 2}, "b": 2}
    first, second = builder(), builder()
    first["nested"]["x"] = 99
    assert second["nested"]["x"] == 1 and builder.default["nested"]["x"] == 1  # copies


def test_closed_form_schedulers_are_evaluated_at_total_steps():
    from torch.optim.lr_scheduler import StepLR

    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    scheduler = StepLR(optimizer, step_size=10_000, gamma=0.5)
    for total_steps in range(2048, 100_000, 2048):  # rollouts of 2048 frames
        step_lr_scheduler(scheduler, total_steps)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5 ** (98_304 // 10_000))
