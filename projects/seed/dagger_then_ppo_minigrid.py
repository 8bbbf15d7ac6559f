"""The seed document's second example (DAgger, then PPO): its `training_pipeline` pasted
unchanged; only the imports and the class's environment settings are ours, among them
`ExpertActionSensor(nactions=7)`: MiniGrid's 7 actions (the seed's ObjectNav has 6)."""

import torch
from torch import optim
from torch.optim.lr_scheduler import LambdaLR

from stagerl import (
    PPO,
    Builder,
    ExpertActionSensor,
    Imitation,
    LinearDecay,
    PipelineStage,
    PPOConfig,
    TrainingPipeline,
)
from stagerl.plugins.minigrid import (
    EgocentricMiniGridSensor,
    MiniGridExperimentConfig,
    MiniGridMissionSensor,
)


class ObjectNavThorDaggerThenPPOExperimentConfig(MiniGridExperimentConfig):
    ENV_ID = "BabyAI-GoToLocal-v0"
    MAX_STEPS = 64
    ADVANCE_SCENE_ROLLOUT_PERIOD = None
    SENSORS = [
        EgocentricMiniGridSensor(view_channels=3),
        MiniGridMissionSensor(instr_len=8),
        ExpertActionSensor(nactions=7), # Notice that we have added
                                        # an expert action sensor.
    ]

    @classmethod
    def tag(cls):
        return "SeedDaggerThenPPOMiniGrid"

    @classmethod
    def training_pipeline(cls, **kwargs):
        dagger_steps = int(1e4) # Much smaller number of steps as we're using imitation learning
        ppo_steps = int(1e6)
        lr = 2.5e-4
        num_mini_batch = 1 if not torch.cuda.is_available() else 6
        update_repeats = 4
        num_steps = 128
        metric_accumulate_interval = cls.MAX_STEPS * 10  # Log every 10 max length tasks
        save_interval = 10000
        gamma = 0.99
        use_gae = True
        gae_lambda = 1.0
        max_grad_norm = 0.5

        return TrainingPipeline(
            save_interval=save_interval,
            metric_accumulate_interval=metric_accumulate_interval,
            optimizer_builder=Builder(optim.Adam, dict(lr=lr)),
            num_mini_batch=num_mini_batch,
            update_repeats=update_repeats,
            max_grad_norm=max_grad_norm,
            num_steps=num_steps,
            named_losses={
                "ppo_loss": PPO(clip_decay=LinearDecay(ppo_steps), **PPOConfig),
                "imitation_loss": Imitation(), # We add an imitation loss.
            },
            gamma=gamma,
            use_gae=use_gae,
            gae_lambda=gae_lambda,
            advance_scene_rollout_period=cls.ADVANCE_SCENE_ROLLOUT_PERIOD,
            pipeline_stages=[ # The pipeline now has two stages, in the first
                              # we use DAgger (imitation loss + teacher forcing).
                              # In the second stage we no longer use teacher
                              # forcing and add in the ppo loss.
                PipelineStage(
                    loss_names=["imitation_loss"],
                    teacher_forcing=LinearDecay(
                        startp=1.0, endp=0.0, steps=dagger_steps,
                    ),
                    max_stage_steps=dagger_steps,
                ),
                PipelineStage(loss_names=["ppo_loss"], max_stage_steps=ppo_steps,),
            ],
            lr_scheduler_builder=Builder(
                LambdaLR, {"lr_lambda": LinearDecay(steps=ppo_steps)}
            ),
        )
