"""PPO with a 64x64 MLP on MiniGrid-DoorKey-5x5, with RL Zoo's settings for it (its
hyperparams/ppo.yml, in its own names below) and SB3's PPO loss and Adam, as
benchmarks/empty_mlp_ppo.py. `python benchmarks/learning.py benchmarks/doorkey_mlp_ppo.py
--sb3` trains Stable-Baselines3's PPO on the same settings. RL Zoo also normalises observations
and rewards (VecNormalize), which stagerl does not have; both learn without it here, from the
same inputs (the view's raw object, colour and state numbers)."""

from torch import optim

from stagerl import PPO, Builder, MLPActorCritic, PipelineStage, TrainingPipeline
from stagerl.plugins.minigrid import EgocentricMiniGridSensor, MiniGridExperimentConfig

RL_ZOO = dict(
    n_envs=8,
    n_timesteps=100_000,
    n_steps=128,
    batch_size=64,
    gae_lambda=0.95,
    gamma=0.99,
    n_epochs=10,
    ent_coef=0.0,
    learning_rate=2.5e-4,
    clip_range=0.2,
)


class DoorKeyMLPPPO(MiniGridExperimentConfig):
    """RL Zoo's PPO settings for MiniGrid-DoorKey-5x5 (`RL_ZOO`), a 64x64 MLP on the raw view."""

    ENV_ID = "MiniGrid-DoorKey-5x5-v0"
    SENSORS = [EgocentricMiniGridSensor(view_channels=3)]
    MODEL = MLPActorCritic
    NUM_TRAIN_SAMPLERS = RL_ZOO["n_envs"]

    @classmethod
    def tag(cls) -> str:
        """The runs' folder name."""
        return "DoorKeyMLPPPO"

    @classmethod
    def training_pipeline(cls, **kwargs):
        """One PPO stage on these settings."""
        steps, rollout = RL_ZOO["n_timesteps"], RL_ZOO["n_envs"] * RL_ZOO["n_steps"]
        return TrainingPipeline(
            named_losses={
                "ppo_loss": PPO(
                    clip_param=RL_ZOO["clip_range"],
                    value_loss_coef=1.0,  # SB3's 0.5 x the squared error
                    entropy_coef=RL_ZOO["ent_coef"],
                    use_clipped_value_loss=False,
                    normalize_advantage="minibatch",
                )
            },
            pipeline_stages=[PipelineStage(loss_names=["ppo_loss"], max_stage_steps=steps)],
            optimizer_builder=Builder(optim.Adam, dict(lr=RL_ZOO["learning_rate"], eps=1e-5)),
            num_steps=RL_ZOO["n_steps"],
            num_mini_batch=rollout // RL_ZOO["batch_size"],  # minibatches of single steps
            update_repeats=RL_ZOO["n_epochs"],
            max_grad_norm=0.5,
            gamma=RL_ZOO["gamma"],
            gae_lambda=RL_ZOO["gae_lambda"],
            save_interval=steps,
            metric_accumulate_interval=rollout,
        )
