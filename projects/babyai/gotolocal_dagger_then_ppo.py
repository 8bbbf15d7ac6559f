"""The seed's second pipeline shape on BabyAI-GoToLocal: DAgger (imitating the BabyAI bot while
it drives with decaying probability), then PPO. Sized to finish in minutes on 2 CPU cores."""

from torch import optim
from torch.optim.lr_scheduler import LambdaLR

from stagerl import (
    PPO,
    Builder,
    ExpertActionSensor,
    Imitation,
    LinearDecay,
    MultiLinearDecay,
    PipelineStage,
    PPOConfig,
    TrainingPipeline,
)
from stagerl.pipeline import DatasetAggregation, Validation
from stagerl.plugins.minigrid import (
    EgocentricMiniGridSensor,
    MiniGridActorCritic,
    MiniGridExperimentConfig,
    MiniGridMissionSensor,
)


class BabyAIGoToLocalDaggerThenPPO(MiniGridExperimentConfig):
    ENV_ID = "BabyAI-GoToLocal-v0"
    SENSORS = [
        EgocentricMiniGridSensor(view_channels=3),
        MiniGridMissionSensor(instr_len=8),
        ExpertActionSensor(nactions=7),
    ]

    @classmethod
    def tag(cls) -> str:
        return "BabyAIGoToLocalDaggerThenPPO"

    MODEL = MiniGridActorCritic

    @classmethod
    def create_model(cls, **kwargs):
        # FiLM lets the mission pick "the red ball" out of the distractors
        return super().create_model(film=True, **kwargs)

    @classmethod
    def training_pipeline(cls, **kwargs):
        dagger_steps = 100_000
        ppo_steps = 50_000
        return TrainingPipeline(
            save_interval=25_000,
            metric_accumulate_interval=10_000,
            optimizer_builder=Builder(optim.Adam, dict(lr=1e-3)),
            num_mini_batch=2,
            update_repeats=4,
            max_grad_norm=0.5,
            num_steps=32,
            named_losses={
                "ppo_loss": PPO(clip_decay=LinearDecay(ppo_steps), **PPOConfig),
                "imitation_loss": Imitation(),
            },
            gamma=0.99,
            use_gae=True,
            gae_lambda=0.99,
            pipeline_stages=[
                PipelineStage(
                    loss_names=["imitation_loss"],
                    teacher_forcing=LinearDecay(startp=1.0, endp=0.0, steps=dagger_steps // 2),
                    max_stage_steps=dagger_steps,
                    # true DAgger: also train on samples of every earlier rollout (~30 MiB)
                    dataset_aggregation=DatasetAggregation(
                        max_sequences=4096, sequences_per_minibatch=8
                    ),
                ),
                PipelineStage(loss_names=["ppo_loss"], max_stage_steps=ppo_steps),
            ],
            # A quarter of the learning rate for PPO, whose critic starts untrained: at full
            # rate its first, noisy advantages undo part of what imitation learnt.
            lr_scheduler_builder=Builder(
                LambdaLR,
                {
                    "lr_lambda": MultiLinearDecay(
                        [LinearDecay(dagger_steps, 1.0, 1.0), LinearDecay(ppo_steps, 0.25, 0.0)]
                    )
                },
            ),
            # every checkpoint (each 25,000 steps and each stage's end) on 200 validation episodes
            validation=Validation(episodes=200),
        )
