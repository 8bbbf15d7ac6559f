"""The loss contract and the batch every loss consumes."""

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch

from stagerl.errors import ConfigError, is_number, require
from stagerl.models.base import ActorCriticOutput


@dataclass
class RolloutBatch:
    """A minibatch of the storage: whole `[T, n]` sequences of n tasks from one rollout for a
    recurrent model, `[1, n]` single steps for a feed-forward one."""

    observations: dict[str, torch.Tensor]
    memory: torch.Tensor  # [layers, n, hidden] at the first step
    prev_actions: torch.Tensor  # [T, n]
    masks: torch.Tensor  # [T, n], 0 where an episode starts
    actions: torch.Tensor  # [T, n] executed actions
    old_log_probs: torch.Tensor  # [T, n] log-prob of the executed action when collected
    old_values: torch.Tensor  # [T, n]
    returns: torch.Tensor  # [T, n]
    advantages: torch.Tensor  # [T, n]
    # [T, n], standardised over the whole rollout the minibatch came from (None where unknown)
    normalized_advantages: torch.Tensor | None = None


def require_coefficients(owner: str, *, value_loss_coef: Any, entropy_coef: Any) -> None:
    """An actor-critic loss's weights: the value loss's a finite number >= 0, the entropy's a
    finite number (NaN or infinity would make every loss NaN)."""
    ok = is_number(value_loss_coef) and 0 <= value_loss_coef < math.inf
    require(ok, f"{owner}.value_loss_coef", value=value_loss_coef, expected="a finite number >= 0")
    ok = is_number(entropy_coef) and math.isfinite(entropy_coef)
    require(ok, f"{owner}.entropy_coef", value=entropy_coef, expected="a finite number")


def require_entropy_method(owner: str, name: Any) -> None:
    """AllenAct's `entropy_method_name`: a name, of the distribution's entropy method."""
    ok = isinstance(name, str) and name.isidentifier()
    expected = "the name of the distribution's entropy method, e.g. 'entropy'"
    require(ok, f"{owner}.entropy_method_name", value=name, expected=expected)


def entropy_by_name(
    owner: str, name: str, distribution: torch.distributions.Distribution
) -> torch.Tensor:
    """The distribution's entropy by the method `name`; a ConfigError if it has none."""
    method = getattr(distribution, name, None)
    if not callable(method):
        raise ConfigError(
            f"{owner}.entropy_method_name={name!r}: the model's {type(distribution).__name__} "
            "has no such method"
        )
    return method()


def standardize(values: torch.Tensor) -> torch.Tensor:
    """Mean 0, standard deviation 1 (advantages, before a policy-gradient loss uses them); one
    value has no spread and becomes 0 (a loss that standardises one sample is refused when the
    pipeline is built; this keeps torch's warning out of the others' rollouts)."""
    if values.numel() < 2:
        return torch.zeros_like(values)
    return (values - values.mean()) / (values.std() + 1e-5)


class Loss(ABC):
    """`loss(step_count, batch, actor_critic_output) -> (loss, info)`.

    `step_count` is the stage's own step count, so schedules inside a loss restart per stage.
    `reads_expert_actions` says whether it reads the tasks' `ExpertActionSensor`: stages whose
    losses do not (and that have no teacher forcing) turn the tasks' experts off. Every class
    says so in its own body or is taken to read them, a subclass of PPO included (it may add
    a term that does).
    """

    reads_expert_actions: bool = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.reads_expert_actions = cls.__dict__.get("reads_expert_actions", True)

    @abstractmethod
    def loss(
        self, step_count: int, batch: RolloutBatch, actor_critic_output: ActorCriticOutput
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Return a scalar loss to minimise and floats to log."""
