"""The PPO loss on a hand-made batch, in and out of the clip range."""

import math
import warnings

import pytest
import torch
from torch.distributions import Categorical

from stagerl import PPO, ConfigError, LinearDecay, PPOConfig
from stagerl.losses.base import RolloutBatch, standardize
from stagerl.models.base import ActorCriticOutput


def _batch(logits, ratios, advantages, values, old_values, returns):
    dist = Categorical(logits=logits)
    actions = torch.zeros(1, len(ratios), dtype=torch.long)
    old_log_probs = dist.log_prob(actions).detach() - torch.log(torch.tensor([ratios]))
    batch = RolloutBatch(
        observations={},
        memory=torch.zeros(0, 2, 0),
        prev_actions=actions,
        masks=torch.ones(1, 2),
        actions=actions,
        old_log_probs=old_log_probs,
        old_values=torch.tensor([old_values]),
        returns=torch.tensor([returns]),
        advantages=torch.tensor([advantages]),
    )
    return batch, ActorCriticOutput(distributions=dist, values=torch.tensor([values]))


def test_ppo_loss_matches_hand_computed_value_in_and_out_of_clip_range():
    logits = torch.zeros(1, 2, 3, requires_grad=True)
    # sample 0: ratio 1.5 > 1 + 0.2 with A=+1 -> clipped to 1.2
    # sample 1: ratio 0.9 inside [0.8, 1.2] with A=-2 -> -1.8
    batch, output = _batch(
        logits,
        [1.5, 0.9],
        [1.0, -2.0],
        values=[1.0, 0.0],
        old_values=[0.5, 0.0],
        returns=[2.0, 1.0],
    )
    # clip_param 0.4 halved by the decay at step 50 of 100 -> clip 0.2
    ppo = PPO(
        clip_param=0.4,
        value_loss_coef=0.5,
        entropy_coef=0.0,
        use_clipped_value_loss=True,
        clip_decay=LinearDecay(100, startp=1.0, endp=0.0),
        normalize_advantage=False,
    )
    loss, info = ppo.loss(50, batch, output)
    assert info["clip"] == pytest.approx(0.2)
    assert info["action_loss"] == pytest.approx(-(1.2 - 1.8) / 2)
    # value 0: unclipped (1-2)^2 = 1, clipped (0.5+0.2-2)^2 = 1.69 -> 1.69; value 1: 1
    assert info["value_loss"] == pytest.approx(0.5 * (1.69 + 1.0) / 2)
    assert loss.item() == pytest.approx(0.3 + 0.5 * 0.6725)
    assert info["clip_fraction"] == pytest.approx(0.5)

    loss.backward()
    # the clipped sample gives the policy no gradient; the unclipped one does
    assert torch.count_nonzero(logits.grad[0, 0]) == 0
    assert torch.count_nonzero(logits.grad[0, 1]) > 0


def test_ppo_entropy_bonus_lowers_the_loss():
    logits = torch.zeros(1, 2, 3)
    batch, output = _batch(logits, [1.0, 1.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0])
    ppo = PPO(clip_param=0.1, value_loss_coef=0.5, entropy_coef=0.01, normalize_advantage=False)
    loss, info = ppo.loss(0, batch, output)
    assert info["entropy"] == pytest.approx(math.log(3))
    assert loss.item() == pytest.approx(-0.01 * math.log(3))


class _NaNEntropyCategorical(Categorical):
    def nan_entropy(self):
        return torch.full(self.batch_shape, float("nan"))


@pytest.mark.parametrize(("entropy_coef", "finite"), [(0.0, True), (0.01, False)])
def test_an_entropy_weighted_zero_is_logged_but_left_out_of_the_loss(entropy_coef, finite):
    logits = torch.zeros(1, 2, 3, requires_grad=True)
    batch, output = _batch(logits, [1.0, 1.0], [1.0, -1.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0])
    output.distributions = _NaNEntropyCategorical(logits=logits)
    ppo = PPO(
        clip_param=0.1,
        value_loss_coef=0.5,
        entropy_coef=entropy_coef,
        normalize_advantage=False,
        entropy_method_name="nan_entropy",
    )
    loss, info = ppo.loss(0, batch, output)
    assert math.isnan(info["entropy"])
    assert math.isfinite(loss.item()) == finite  # a NaN term weighted 0 does not poison it
    assert loss.requires_grad


@pytest.mark.parametrize(
    ("setting", "expected_action_loss"),
    [
        ("rollout", -1.0),  # the rollout-wide standardised values, as given: -(0.5 + 1.5) / 2
        (True, -1.0),  # AllenAct's meaning of True
        ("minibatch", 0.0),  # standardised within the minibatch: mean 0
        ("none", -4.0),  # raw: -(3 + 5) / 2
        (False, -4.0),
    ],
)
def test_ppo_advantage_normalisation_scopes(setting, expected_action_loss):
    logits = torch.zeros(1, 2, 3)
    batch, output = _batch(logits, [1.0, 1.0], [3.0, 5.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0])
    batch.normalized_advantages = torch.tensor([[0.5, 1.5]])
    ppo = PPO(clip_param=0.1, value_loss_coef=0.0, entropy_coef=0.0, normalize_advantage=setting)
    _, info = ppo.loss(0, batch, output)
    assert info["action_loss"] == pytest.approx(expected_action_loss, abs=1e-5)


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"normalize_advantage": "batch"}, "PPO.normalize_advantage='batch'"),
        ({"clip_param": "0.1"}, "PPO.clip_param='0.1'"),
        ({"entropy_coef": None}, "PPO.entropy_coef=None"),
        ({"entropy_coef": float("nan")}, "PPO.entropy_coef=nan"),
        ({"value_loss_coef": float("inf")}, "PPO.value_loss_coef=inf"),
        ({"use_clipped_value_loss": "no"}, "PPO.use_clipped_value_loss='no'"),
        ({"entropy_method_name": 3}, "PPO.entropy_method_name=3"),
        ({"show_ratios": 1}, "PPO.show_ratios=1"),
    ],
)
def test_bad_ppo_settings_name_the_field(settings, named):
    with pytest.raises(ConfigError, match=named):
        PPO(**{"clip_param": 0.1, "value_loss_coef": 0.5, "entropy_coef": 0.01, **settings})


def test_a_clip_decay_past_zero_clips_at_zero_and_one_giving_no_number_is_named():
    batch, output = _batch(
        torch.zeros(1, 2, 3), [2.0, 0.5], [1.0, -1.0], [1.0] * 2, [0.0] * 2, [0.0] * 2
    )

    def loss_at(decay: float) -> dict:
        ppo = PPO(**PPOConfig, clip_decay=lambda steps: decay, normalize_advantage=False)
        return ppo.loss(0, batch, output)[1]

    assert loss_at(-0.5) == loss_at(0.0)  # a hand-written 1 - steps / N after N steps
    assert loss_at(-0.5)["action_loss"] != loss_at(1.0)["action_loss"]
    with pytest.raises(ConfigError, match=r"PPO.clip_decay\(0\)=None is invalid"):
        loss_at(None)


def test_ppo_config_takes_keyword_overrides_as_in_allenact():
    ppo = PPO(use_clipped_value_loss=False, normalize_advantage=False, **PPOConfig)
    assert (ppo.clip_param, ppo.use_clipped_value_loss, ppo.normalize_advantage) == (
        0.1,
        False,
        "none",
    )


def test_one_advantage_standardises_to_zero_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns on the std of one value
        assert standardize(torch.tensor([[2.5]])).tolist() == [[0.0]]


def test_allenacts_entropy_method_name_and_show_ratios():
    # ratios 1.5 and 0.9; the entropy of the uniform 3-way policy, log 3, is read through the
    # method named (here a stand-in giving twice it)
    batch, output = _batch(
        torch.zeros(1, 2, 3), [1.5, 0.9], [0.0] * 2, [0.0] * 2, [0.0] * 2, [0.0] * 2
    )
    output.distributions.doubled_entropy = lambda: 2 * output.distributions.entropy()
    ppo = PPO(
        **PPOConfig,
        normalize_advantage=False,
        entropy_method_name="doubled_entropy",
        show_ratios=True,
    )
    info = ppo.loss(0, batch, output)[1]
    assert info["entropy"] == pytest.approx(2 * math.log(3))
    assert (info["ratio_min"], info["ratio_mean"], info["ratio_max"]) == pytest.approx(
        (0.9, 1.2, 1.5)
    )
    with pytest.raises(
        ConfigError, match="PPO.entropy_method_name='nope': the model's Categorical"
    ):
        PPO(**PPOConfig, normalize_advantage=False, entropy_method_name="nope").loss(
            0, batch, output
        )
