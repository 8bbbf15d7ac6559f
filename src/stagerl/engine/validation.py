"""Validation during training: the current model on a fixed set of validation episodes."""

import torch

from stagerl.engine.evaluator import episode_sampler, mean_metrics, run_episodes
from stagerl.experiment import LoadedExperiment, MachineParams
from stagerl.models.base import ActorCriticModel
from stagerl.pipeline import Validation
from stagerl.tasks.base import TaskSampler
from stagerl.tasks.vector import VectorSampler


class Validator:
    """Runs `settings.episodes` validation episodes on demand, in the trainer process.

    Its worker processes (torch-free, like the training ones) start once and idle between
    rounds; every round replays the same validation seeds with the same action-sampling seed,
    so successive numbers differ only because the model did.
    """

    def __init__(
        self,
        experiment: LoadedExperiment,
        settings: Validation,
        *,
        machine: MachineParams,
        samplers: list[TaskSampler],
        seed: int,
    ) -> None:
        self.settings = settings
        self.seed = seed
        self.sampler: VectorSampler = episode_sampler(
            experiment, machine, samplers=samplers, episodes=settings.episodes
        )

    def episodes(self, model: ActorCriticModel) -> list[dict[str, float]]:
        """Every validation episode's metrics, the model in eval mode."""
        was_training = model.training
        model.eval()
        generator = torch.Generator().manual_seed(self.seed)
        try:
            return run_episodes(model, self.sampler, deterministic=False, generator=generator)
        finally:
            model.train(was_training)

    def run(self, model: ActorCriticModel) -> dict[str, float]:
        """`valid/<metric>` means over the validation episodes (and `valid/episodes`)."""
        return {f"valid/{k}": v for k, v in mean_metrics(self.episodes(model)).items()}

    def __enter__(self) -> "Validator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.sampler.close(graceful=exc[0] is None)
