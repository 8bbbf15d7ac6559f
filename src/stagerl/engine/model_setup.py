"""The experiment's model, built and checked against the observations its tasks give, so that
a model that does not fit fails before any worker starts, naming the field."""

import numpy as np
import torch
from gymnasium import spaces

from stagerl.errors import ConfigError, user_call
from stagerl.experiment import LoadedExperiment
from stagerl.models.base import ActorCriticModel


def build_model(
    experiment: LoadedExperiment,
    action_space: spaces.Discrete,
    *,
    device: torch.device | str = "cpu",
    observation_space: spaces.Dict | None = None,
    training: bool = True,
) -> ActorCriticModel:
    """`create_model()`, checked against the tasks' actions (and, given them, the tasks'
    observations) and moved to `device`."""
    model = experiment.call("create_model")
    where = f"{experiment.name}.create_model()"
    if not isinstance(model, ActorCriticModel):
        raise ConfigError(f"{where} returned {type(model).__name__}, expected an ActorCriticModel")
    if model.action_space.n != action_space.n:
        raise ConfigError(
            f"{where}: the model has {model.action_space.n} actions but the tasks have "
            f"{action_space.n}; build the model with the tasks' action space"
        )
    if observation_space is not None:
        _check_observations(where, model, observation_space, training=training)
    model = model.to(device)
    if observation_space is not None:
        check_outputs(where, model, observation_space, torch.device(device))
    return model


def check_outputs(
    where: str, model: ActorCriticModel, tasks: spaces.Dict, device: torch.device
) -> None:
    """One forward pass, in eval mode, over one step of two tasks as `tasks` observe them
    (evaluation tasks give no expert readings): the outputs have the contract's shapes, else
    the first rollout fails deep in the storage (AllenAct's models give values shaped
    [T, N, 1], stagerl's contract [T, N])."""
    observations = {
        uuid: torch.as_tensor(
            np.clip(np.zeros((1, 2, *box.shape), box.dtype), box.low, box.high)
        ).to(device)
        for uuid, box in tasks.spaces.items()
    }
    memory = model.initial_memory(2)
    actions = torch.zeros(1, 2, dtype=torch.long, device=device)
    training = model.training
    model.eval()
    masks = torch.ones(1, 2, device=device)
    with torch.no_grad():
        returned = user_call(
            f"{where}: its model's forward", model, observations, memory, actions, masks
        )
    model.train(training)
    if not (isinstance(returned, tuple) and len(returned) == 2):
        raise ConfigError(
            f"{where}: the model's forward returned {type(returned).__name__}, expected "
            "(ActorCriticOutput, memory)"
        )
    output, new_memory = returned
    shapes = {
        "values": (tuple(output.values.shape), (1, 2)),
        "distributions.logits": (
            tuple(output.distributions.logits.shape),
            (1, 2, int(model.action_space.n)),
        ),
        "memory": (tuple(new_memory.shape), tuple(memory.shape)),
    }
    for name, (got, expected) in shapes.items():
        if got != expected:
            hint = " ([T, N]; AllenAct's [T, N, 1] values: squeeze them)" * (name == "values")
            raise ConfigError(
                f"{where}: for one step of 2 tasks the model's {name} are shaped {got}, "
                f"expected {expected}{hint}"
            )


def _check_observations(
    where: str, model: ActorCriticModel, tasks: spaces.Dict, *, training: bool
) -> None:
    """The model was built for the observations the tasks' sensors give, in the same shapes
    (else the first forward pass fails deep in torch). Evaluation tasks lack the training
    tasks' expert sensor, which a model may have been built with: there, only shapes count."""
    for uuid, space in getattr(model.observation_space, "spaces", {}).items():
        given = tasks.spaces.get(uuid)
        if (given is None and training) or (given is not None and given.shape != space.shape):
            gives = "no such observation" if given is None else f"it shaped {given.shape}"
            raise ConfigError(
                f"{where}: the model was built for {uuid!r} shaped {space.shape}, but the "
                f"tasks' sensors give {gives}; build it from the experiment's sensors"
            )
