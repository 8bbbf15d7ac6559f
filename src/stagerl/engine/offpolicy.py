"""The off-policy step of a stage: `updates` dataset batches through the component's losses.

Each stream of the dataset iterator keeps its recurrent memory from one chunk to the next
(detached after every backward: truncated BPTT) and starts from zero at a new epoch. Samples
are counted apart from the stage's environment steps.
"""

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from stagerl.engine.distributed import Ranks
from stagerl.engine.learner import UpdateResult, WeightedLoss, optimizer_step, weighted_loss
from stagerl.errors import ConfigError, user_call
from stagerl.losses.offpolicy import OffPolicyBatch
from stagerl.models.base import ActorCriticModel
from stagerl.offpolicy.iterator import OffPolicyArrays
from stagerl.pipeline import OffPolicyPipelineComponent

ITERATOR_METHODS = ("__next__", "state_dict", "load_state_dict")


def build_iterator(
    component: OffPolicyPipelineComponent,
    where: str,
    *,
    context: dict[str, Any],
    tasks_per_rank: Sequence[int],
    shared_seed: int,
) -> Any:
    """The component's data iterator: its builder called with the `context` arguments it takes
    and what `data_iterator_kwargs_generator` adds; an error naming the stage if it fails or
    does not return an iterator."""
    builder = component.data_iterator_builder
    kwargs = _arguments_taken(builder, context)
    generator = component.data_iterator_kwargs_generator
    if generator is not None:
        what = f"{where}.data_iterator_kwargs_generator"
        extra = user_call(what, generator, context["rank"], list(tasks_per_rank), shared_seed)
        if not isinstance(extra, dict):
            raise ConfigError(f"{what} returned {type(extra).__name__}, not a dict of arguments")
        kwargs.update(extra)
    elif context["world_size"] > 1 and "rank" not in kwargs:
        raise ConfigError(
            f"{where}.data_iterator_builder takes no `rank` or `**kwargs` and there is no "
            f"data_iterator_kwargs_generator: each of the {context['world_size']} trainer ranks "
            "would read the same batches; let it take `**kwargs` and pass them on to "
            "create_minigrid_offpolicy_data_iterator"
        )
    iterator = user_call(f"{where}.data_iterator_builder", builder, **kwargs)
    missing = [name for name in ITERATOR_METHODS if not hasattr(iterator, name)]
    if missing:
        raise ConfigError(
            f"{where}.data_iterator_builder returned {type(iterator).__name__}, which lacks "
            f"{missing}; return e.g. create_minigrid_offpolicy_data_iterator(...)"
        )
    return iterator


def _arguments_taken(function: Callable[..., Any], arguments: dict[str, Any]) -> dict[str, Any]:
    """Those of `arguments` that `function` accepts by name (all of them given `**kwargs`), so
    that a builder taking none, as AllenAct passes none by default, works unchanged; never one
    a `functools.partial` already binds (the user's value stands)."""
    bound = function.keywords if isinstance(function, functools.partial) else {}
    arguments = {name: value for name, value in arguments.items() if name not in bound}
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # no signature to read (some builtins): pass everything
        return arguments
    if any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters):
        return arguments
    by_name = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    names = {parameter.name for parameter in parameters if parameter.kind in by_name}
    return {name: value for name, value in arguments.items() if name in names}


class OffPolicyLearner:
    """One stage's dataset iterator, its streams' memory and its sample count."""

    def __init__(
        self,
        component: OffPolicyPipelineComponent,
        iterator: Any,
        *,
        losses: list[WeightedLoss],
        device: torch.device | str = "cpu",
        ranks: Ranks | None = None,
        where: str = "offpolicy_component",
    ) -> None:
        self.where = where  # the component's field, for errors
        self.device = torch.device(device)
        self.ranks = ranks or Ranks()
        self.updates = component.updates
        self.iterator = iterator
        self.losses = losses
        self.memory: torch.Tensor | None = None  # [layers, nrollouts, hidden] after the last batch
        self.samples = 0
        self.epoch = 0

    def _next_arrays(self) -> OffPolicyArrays:
        """The iterator's next batch; an error naming the component if it ends or gives
        something else (the iterator must start each new epoch itself)."""
        what = f"{self.where}.data_iterator_builder's iterator"
        try:
            arrays = next(self.iterator)
        except StopIteration:
            raise ConfigError(
                f"{what} ended; an off-policy iterator never ends: it starts a new epoch itself"
            ) from None
        if not isinstance(arrays, OffPolicyArrays):
            raise ConfigError(f"{what} gave a {type(arrays).__name__}, not OffPolicyArrays")
        return arrays

    def _batch(self, arrays: OffPolicyArrays, model: ActorCriticModel) -> OffPolicyBatch:
        streams = arrays.actions.shape[1]
        if self.memory is None or arrays.new_epoch:
            self.memory = model.initial_memory(streams)
        tensor = lambda array: torch.from_numpy(array).to(self.device)  # noqa: E731
        return OffPolicyBatch(
            observations={key: tensor(v) for key, v in arrays.observations.items()},
            memory=self.memory,
            prev_actions=tensor(arrays.prev_actions),
            masks=tensor(arrays.masks),
            actions=tensor(arrays.actions),
            epoch=arrays.epoch,
            episodes_begun=arrays.episodes_begun,  # of this rank's share, as AllenAct counts
        )

    def update(
        self,
        *,
        model: ActorCriticModel,
        optimizer: torch.optim.Optimizer,
        stage_steps: int,
        max_grad_norm: float,
    ) -> UpdateResult:
        """Train on `updates` batches; the info is averaged over the applied ones."""
        infos: list[dict[str, float]] = []  # of the applied batches
        parameters = [p for p in model.parameters() if p.requires_grad]
        skips: list[bool] = []
        for _ in range(self.updates):
            batch = self._batch(self._next_arrays(), model)
            info: dict[str, float] = {}
            total, memory = weighted_loss(
                model, batch, losses=self.losses, stage_steps=stage_steps, info=info
            )
            grad_norm = optimizer_step(
                optimizer,
                parameters,
                total=total,
                max_grad_norm=max_grad_norm,
                ranks=self.ranks,
                samples=batch.actions.numel(),
            )
            self.memory = memory.detach()
            # over all ranks: each reads batches of the same shape from its share of the data
            self.samples += batch.actions.numel() * self.ranks.world_size
            self.epoch = batch.epoch
            skips.append(grad_norm is None)
            if grad_norm is None:
                continue
            infos.append({**info, "total_loss": total.item(), "grad_norm": grad_norm})
        return UpdateResult.averaged(infos, skips)

    def state_dict(self) -> dict[str, Any]:
        """The iterator's place, the streams' memory and the counts, for checkpoints."""
        return {
            "iterator": self.iterator.state_dict(),
            "memory": None if self.memory is None else self.memory.clone(),
            "samples": self.samples,
            "epoch": self.epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a `state_dict()` (one without the iterator's place restarts it)."""
        if state["iterator"] is not None:
            self.iterator.load_state_dict(state["iterator"])
        memory = state["memory"]
        self.memory = None if memory is None else memory.to(self.device)
        self.samples, self.epoch = state["samples"], state["epoch"]

    def close(self) -> None:
        """Stop the iterator's background work, if it has any."""
        close = getattr(self.iterator, "close", None)
        if close is not None:
            close()


def iterator_seed(seed: int, stage_index: int, *, rank: int) -> int:
    """A seed for one stage's off-policy iterator on one rank; rank 0's is also the seed all
    ranks share (the one `data_iterator_kwargs_generator` gets)."""
    return int(np.random.SeedSequence([seed, stage_index, rank]).generate_state(1)[0])
