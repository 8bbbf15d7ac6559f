"""Proximal Policy Optimisation (Schulman et al. 2017) with clip decay and a clipped value loss."""

from collections.abc import Callable
from typing import Literal

import torch

from stagerl.errors import require, require_bool, require_positive, user_number
from stagerl.losses.base import (
    Loss,
    RolloutBatch,
    entropy_by_name,
    require_coefficients,
    require_entropy_method,
    standardize,
)
from stagerl.models.base import ActorCriticOutput

# AllenAct's PPOConfig: only the three coefficients, so `PPO(**PPOConfig, normalize_advantage=...)`
# and `PPO(use_clipped_value_loss=False, **PPOConfig)` work as they do there.
PPOConfig = dict(clip_param=0.1, value_loss_coef=0.5, entropy_coef=0.01)

AdvantageNormalization = Literal["rollout", "minibatch", "none"]
_NORMALIZATIONS = {True: "rollout", False: "none", "rollout": "rollout"}
_NORMALIZATIONS |= {"minibatch": "minibatch", "none": "none"}


class PPO(Loss):
    """Clipped surrogate + (clipped) value loss - entropy bonus.

    The clip range is `clip_param * clip_decay(stage_steps)`; the value loss is clipped to the same
    range around the value predicted at collection time.

    `normalize_advantage` standardises the advantages to mean 0, std 1 over the whole rollout
    (`"rollout"` or `True`, AllenAct's meaning and the default), over each minibatch
    (`"minibatch"`, SB3's and CleanRL's), or not at all (`"none"` or `False`). Over 8 seeds of
    the GoToObj example the rollout gave the better worst seed (benchmarks/LEARNING.md).

    As in AllenAct, `entropy_method_name` names the distribution's method that gives the
    entropy bonus, and `show_ratios` also logs the probability ratios' min, mean and max.
    """

    reads_expert_actions = False

    def __init__(
        self,
        clip_param: float,
        value_loss_coef: float,
        entropy_coef: float,
        use_clipped_value_loss: bool = True,
        clip_decay: Callable[[int], float] | None = None,
        normalize_advantage: AdvantageNormalization | bool = "rollout",
        entropy_method_name: str = "entropy",
        show_ratios: bool = False,
    ) -> None:
        require_positive("PPO.clip_param", clip_param)
        require_coefficients("PPO", value_loss_coef=value_loss_coef, entropy_coef=entropy_coef)
        require(
            callable(clip_decay) or clip_decay is None,
            "PPO.clip_decay",
            value=clip_decay,
            expected="a schedule (callable of the step count) or None",
        )
        self.clip_param = clip_param
        self.value_loss_coef = value_loss_coef
        self.entropy_coef = entropy_coef
        require_bool("PPO.use_clipped_value_loss", use_clipped_value_loss)
        self.use_clipped_value_loss = use_clipped_value_loss
        self.clip_decay = clip_decay or (lambda _: 1.0)
        require(
            isinstance(normalize_advantage, bool | str) and normalize_advantage in _NORMALIZATIONS,
            "PPO.normalize_advantage",
            value=normalize_advantage,
            expected="'rollout' (or True), 'minibatch' or 'none' (or False)",
        )
        self.normalize_advantage: AdvantageNormalization = _NORMALIZATIONS[normalize_advantage]
        require_entropy_method("PPO", entropy_method_name)
        self.entropy_method_name = entropy_method_name
        require_bool("PPO.show_ratios", show_ratios)
        self.show_ratios = show_ratios

    def _advantages(self, batch: RolloutBatch) -> torch.Tensor:
        if self.normalize_advantage == "rollout":
            if batch.normalized_advantages is None:
                raise ValueError("PPO(normalize_advantage='rollout') got a batch without them")
            return batch.normalized_advantages
        if self.normalize_advantage == "minibatch":
            return standardize(batch.advantages)
        return batch.advantages

    def loss(
        self, step_count: int, batch: RolloutBatch, actor_critic_output: ActorCriticOutput
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The clipped surrogate, the (optionally clipped) value loss and the entropy bonus."""
        decay = user_number(
            "PPO.clip_decay", self.clip_decay, steps=step_count, expected="a number"
        )
        clip = self.clip_param * max(decay, 0.0)  # a decay past its end clips at 0
        advantages = self._advantages(batch)

        dist = actor_critic_output.distributions
        ratio = torch.exp(dist.log_prob(batch.actions) - batch.old_log_probs)
        surrogate = torch.min(ratio * advantages, ratio.clamp(1 - clip, 1 + clip) * advantages)
        action_loss = -surrogate.mean()

        values = actor_critic_output.values
        value_loss = (values - batch.returns).pow(2)
        if self.use_clipped_value_loss:
            clipped = batch.old_values + (values - batch.old_values).clamp(-clip, clip)
            value_loss = torch.max(value_loss, (clipped - batch.returns).pow(2))
        value_loss = 0.5 * value_loss.mean()

        total = action_loss + self.value_loss_coef * value_loss
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.entropy_coef != 0):
            # logged even where it is not a term
            entropy = entropy_by_name("PPO", self.entropy_method_name, dist).mean()
        if self.entropy_coef != 0:
            total = total - self.entropy_coef * entropy
        info = {
            "action_loss": action_loss.item(),
            "value_loss": value_loss.item(),
            "entropy": entropy.item(),
            "clip": clip,
            "clip_fraction": ((ratio - 1).abs() > clip).float().mean().item(),
        }
        if self.show_ratios:
            info |= {
                f"ratio_{name}": getattr(ratio, name)().item() for name in ("min", "mean", "max")
            }
        return total, info
