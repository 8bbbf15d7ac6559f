"""Evaluation: run exactly N test episodes with a trained model and average their metrics."""

from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from stagerl.engine.checkpoint import load_checkpoint
from stagerl.engine.setup import build_model, build_samplers, configure_trainer_process
from stagerl.errors import CheckpointError
from stagerl.experiment import LoadedExperiment, MachineParams
from stagerl.models.base import ActorCriticModel
from stagerl.tasks.base import TaskSampler
from stagerl.tasks.vector import VectorSampler


def _episodes_per_slot(episodes: int, slots: int) -> list[int]:
    """Split N episodes over the slots so that every episode is counted, none twice."""
    return [episodes // slots + (1 if i < episodes % slots else 0) for i in range(slots)]


@torch.no_grad()
def run_episodes(
    model: ActorCriticModel,
    sampler: VectorSampler,
    *,
    deterministic: bool,
    generator: torch.Generator,
) -> list[dict[str, float]]:
    """Step until every slot has run its episodes; inactive slots are ignored. Actions are
    sampled from `generator`, so evaluating never moves the training run's random streams."""
    observations = sampler.reset()
    n = sampler.num_tasks
    memory = model.initial_memory(n)
    masks = torch.zeros(1, n)
    prev_actions = torch.zeros(1, n, dtype=torch.long)
    finished: list[dict[str, float]] = []
    while sampler.active.any():
        obs = {k: torch.from_numpy(v.copy())[None] for k, v in observations.items()}
        output, memory = model(obs, memory, prev_actions, masks)
        probs = output.distributions.probs[0]
        if deterministic:
            actions = probs.argmax(-1)
        else:
            actions = torch.multinomial(probs, 1, generator=generator)[:, 0]
        step = sampler.step(actions.numpy())
        finished.extend(metrics for _, metrics in step.finished)
        done = torch.from_numpy(step.terminated | step.truncated)
        masks = (~done).float()[None]
        prev_actions = (actions * masks[0].long())[None]
        observations = step.observations
    return finished


def mean_metrics(finished: list[dict[str, float]]) -> dict[str, float]:
    """`episodes` and the mean of every metric over the finished episodes."""
    totals: dict[str, list[float]] = defaultdict(list)
    for metrics in finished:
        for key, value in metrics.items():
            totals[key].append(value)
    return {"episodes": len(finished), **{k: float(np.mean(v)) for k, v in totals.items()}}


def episode_sampler(
    experiment: LoadedExperiment,
    machine: MachineParams,
    samplers: list[TaskSampler],
    *,
    episodes: int,
) -> VectorSampler:
    """Workers that run exactly `episodes` episodes of the given (valid/test) samplers per
    `reset()`, spread over the slots; every reset starts the same episodes again."""
    samplers = samplers[:episodes]
    return VectorSampler(
        samplers,
        num_workers=min(machine.num_workers, len(samplers)),
        timeout=machine.worker_timeout,
        max_tasks=_episodes_per_slot(episodes, len(samplers)),
        experiment=(experiment.module_name, str(experiment.path)),
    )


def evaluate(
    experiment: LoadedExperiment,
    checkpoint: Path,
    *,
    episodes: int,
    deterministic: bool = False,
    seed: int = 0,
) -> dict[str, float]:
    """Mean of every episode metric over `episodes` test episodes (reproducible for a seed)."""
    payload = load_checkpoint(checkpoint)
    config = experiment.config
    if payload.get("experiment") != config.__name__:
        raise CheckpointError(
            f"{checkpoint}: saved by experiment {payload.get('experiment')}, not {config.__name__}"
        )
    configure_trainer_process()
    machine, samplers = build_samplers(experiment, "test", seed)
    model = build_model(config, samplers[0].action_space)
    model.load_state_dict(payload["model"])
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    with episode_sampler(experiment, machine, samplers, episodes=episodes) as sampler:
        finished = run_episodes(model, sampler, deterministic=deterministic, generator=generator)
    return mean_metrics(finished)
