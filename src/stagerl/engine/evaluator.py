"""Evaluation: run the test episodes with a trained model and average their metrics."""

import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from stagerl.engine.checkpoint import load_checkpoint
from stagerl.engine.model_setup import build_model
from stagerl.engine.resume import config_diff, diff_summary, load_saved_state, saved_config
from stagerl.engine.setup import (
    build_samplers,
    configure_trainer_process,
    start_sampler,
    trainer_device,
)
from stagerl.errors import CheckpointError
from stagerl.experiment import LoadedExperiment, MachineParams
from stagerl.models.base import ActorCriticModel
from stagerl.tasks.base import TaskSampler
from stagerl.tasks.vector import VectorSampler

DEFAULT_EPISODES = 100  # when the samplers are endless and no count is asked for


def _episodes_per_slot(episodes: int, slots: int) -> list[int]:
    """Split N episodes over the slots so that every episode is counted, none twice."""
    return [episodes // slots + (1 if i < episodes % slots else 0) for i in range(slots)]


def choose_actions(
    distribution: torch.distributions.Categorical,
    *,
    deterministic: bool,
    generator: torch.Generator,
) -> torch.Tensor:
    """A `[1, N]` policy's actions on the CPU: the most likely, or sampled from `generator`."""
    probs = distribution.probs[0].cpu()
    if deterministic:
        return probs.argmax(-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


@torch.no_grad()
def run_episodes(
    model: ActorCriticModel,
    sampler: VectorSampler,
    *,
    deterministic: bool,
    generator: torch.Generator,
) -> list[dict[str, float]]:
    """Step until every slot has run its episodes; inactive slots are ignored. Actions are
    sampled from `generator` (on the CPU), so evaluating never moves the training run's random
    streams and gives the same episodes on any device."""
    device = next(model.parameters()).device
    observations = sampler.reset()
    n = sampler.num_tasks
    memory = model.initial_memory(n)
    masks = torch.zeros(1, n, device=device)
    prev_actions = torch.zeros(1, n, dtype=torch.long, device=device)
    finished: list[dict[str, float]] = []
    while sampler.active.any():
        obs = {k: torch.from_numpy(v.copy())[None].to(device) for k, v in observations.items()}
        output, memory = model(obs, memory, prev_actions, masks)
        actions = choose_actions(
            output.distributions, deterministic=deterministic, generator=generator
        )
        step = sampler.step(actions.numpy())
        finished.extend(metrics for _, metrics in step.finished)
        done = torch.from_numpy(step.terminated | step.truncated)
        masks = (~done).float()[None].to(device)
        prev_actions = actions[None].to(device)
        observations = step.observations
    return finished


def success_interval(successes: int, episodes: int, *, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a success rate (95% for z = 1.96): unlike mean ± 1.96 SE,
    it stays inside [0, 1] and is not empty at 0 or N successes."""
    if episodes == 0:
        return 0.0, 1.0
    rate = successes / episodes
    centre = (rate + z * z / (2 * episodes)) / (1 + z * z / episodes)
    half = z * math.sqrt(rate * (1 - rate) / episodes + z * z / (4 * episodes**2))
    half /= 1 + z * z / episodes
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_metrics(finished: list[dict[str, float]]) -> dict[str, float]:
    """`episodes`, the mean of every metric over the finished episodes and, where episodes
    report `success`, its 95% confidence interval (`success_ci95_low`, `success_ci95_high`)."""
    totals: dict[str, list[float]] = defaultdict(list)
    for metrics in finished:
        for key, value in metrics.items():
            totals[key].append(value)
    results = {"episodes": len(finished), **{k: float(np.mean(v)) for k, v in totals.items()}}
    if "success" in totals:
        low, high = success_interval(int(sum(totals["success"])), len(totals["success"]))
        results |= {"success_ci95_low": low, "success_ci95_high": high}
    return results


def episode_sampler(
    experiment: LoadedExperiment,
    machine: MachineParams,
    *,
    samplers: list[TaskSampler],
    episodes: int | None,
) -> VectorSampler:
    """Workers that run the given (valid/test) samplers' episodes per `reset()`: `episodes`
    of them spread over the slots, or, for `None`, every task of samplers that end (their
    `max_tasks` / seed lists), else DEFAULT_EPISODES. Every reset starts the same episodes."""
    finite = all(math.isfinite(sampler.length) for sampler in samplers)
    if episodes is None and finite:
        return start_sampler(
            experiment, machine, samplers=samplers, max_tasks=[None] * len(samplers)
        )
    episodes = episodes or DEFAULT_EPISODES
    samplers = samplers[:episodes]
    return start_sampler(
        experiment,
        machine,
        samplers=samplers,
        max_tasks=_episodes_per_slot(episodes, len(samplers)),
    )


def _warn_if_edited(experiment: LoadedExperiment, checkpoint: Path, payload: dict) -> None:
    """The test tasks are built from the experiment file as it is now: say so when it is not
    the file the checkpoint was trained with (an edited step limit changes the episodes)."""
    if "config_source" not in payload:
        return
    diff = config_diff(
        saved_config(payload, experiment),
        experiment.full_source,
        saved_name=f"{checkpoint.name}:config.py",
        current_name=str(experiment.path),
    )
    if diff:
        print(
            f"stagerl: warning: {experiment.path} differs from the config saved in {checkpoint}; "
            f"the test tasks and model come from the file as it is now:\n{diff_summary(diff)}",
            file=sys.stderr,
        )


def trained_model(
    experiment: LoadedExperiment,
    checkpoint: Path,
    *,
    seed: int,
    max_sampler_processes: int | None = None,
) -> tuple[MachineParams, list[TaskSampler], ActorCriticModel]:
    """The test samplers (seeded by `seed`) and the checkpoint's model, in eval mode."""
    payload = load_checkpoint(checkpoint)
    if payload.get("experiment") != experiment.name:
        raise CheckpointError(
            f"{checkpoint}: saved by experiment {payload.get('experiment')}, not {experiment.name}"
        )
    _warn_if_edited(experiment, checkpoint, payload)
    configure_trainer_process()
    machine, samplers = build_samplers(
        experiment, "test", seed=seed, max_sampler_processes=max_sampler_processes
    )
    first = samplers[0]
    device = trainer_device(machine)
    space = first.observation_space
    model = build_model(
        experiment, first.action_space, device=device, observation_space=space, training=False
    )
    load_saved_state("model", model, state=payload["model"], source=str(checkpoint))
    model.eval()
    return machine, samplers, model


def evaluate(
    experiment: LoadedExperiment,
    checkpoint: Path,
    *,
    episodes: int | None = None,
    deterministic: bool = False,
    seed: int = 0,
    max_sampler_processes: int | None = None,
) -> dict[str, float]:
    """Mean of every episode metric over the test episodes (reproducible for a seed, which
    seeds the test samplers and the sampling of actions)."""
    machine, samplers, model = trained_model(
        experiment, checkpoint, seed=seed, max_sampler_processes=max_sampler_processes
    )
    generator = torch.Generator().manual_seed(seed)
    with episode_sampler(experiment, machine, samplers=samplers, episodes=episodes) as sampler:
        finished = run_episodes(model, sampler, deterministic=deterministic, generator=generator)
    return mean_metrics(finished)
