"""PPO with a 64x64 MLP on MiniGrid-Empty-Random-5x5's flattened view, with the settings
benchmarks/throughput.py gives Stable-Baselines3 too: 16 tasks x 128 steps, 8 minibatches
(256 samples each) x 4 epochs, and SB3's PPO loss and Adam: an unclipped value loss weighted
0.5 (stagerl's value loss is half the squared error, so its coefficient is 1), advantages
standardised per minibatch, Adam's eps 1e-5. For measuring throughput, not a tuned learner."""

from torch import optim

from stagerl import PPO, Builder, MLPActorCritic, PipelineStage, TrainingPipeline
from stagerl.plugins.minigrid import EgocentricMiniGridSensor, MiniGridExperimentConfig


class EmptyMLPPPO(MiniGridExperimentConfig):
    """PPO with a 64x64 MLP on MiniGrid-Empty-Random-5x5, as throughput.py times it against SB3."""

    ENV_ID = "MiniGrid-Empty-Random-5x5-v0"
    SENSORS = [EgocentricMiniGridSensor(view_channels=3)]
    NUM_TRAIN_SAMPLERS = 16
    MODEL = MLPActorCritic
    NUM_STEPS = 128
    NUM_MINI_BATCH = 8
    UPDATE_REPEATS = 4
    STEPS = 1_000_000

    @classmethod
    def tag(cls) -> str:
        """The runs' folder name."""
        return "EmptyMLPPPO"

    @classmethod
    def training_pipeline(cls, **kwargs):
        """One PPO stage on these settings."""
        return TrainingPipeline(
            named_losses={
                "ppo_loss": PPO(
                    clip_param=0.2,
                    value_loss_coef=1.0,
                    entropy_coef=0.0,
                    use_clipped_value_loss=False,
                    normalize_advantage="minibatch",
                )
            },
            pipeline_stages=[PipelineStage(loss_names=["ppo_loss"], max_stage_steps=cls.STEPS)],
            optimizer_builder=Builder(optim.Adam, dict(lr=3e-4, eps=1e-5, fused=True)),
            num_steps=cls.NUM_STEPS,
            num_mini_batch=cls.NUM_MINI_BATCH,
            update_repeats=cls.UPDATE_REPEATS,
            gamma=0.99,
            gae_lambda=0.95,
            metric_accumulate_interval=cls.NUM_TRAIN_SAMPLERS * cls.NUM_STEPS,
        )
