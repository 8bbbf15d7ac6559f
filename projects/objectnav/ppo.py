"""The seed document's first example, ObjectNav with PPO, on MiniWorld: its `training_pipeline`
pasted unchanged but for the step count (1e6 in the seed; 200,000 here, about 11 minutes on 2 CPU
cores; the seed's AI2-THOR scenes are MiniWorld rooms). 2 samplers: of the sampler counts
tried (16, 8, 4, 2), the fewest gives the most updates per frame (the seed's CPU settings make
a fixed number of updates per rollout, 4 epochs of 2 minibatches here, whatever its size).
With CUDA available the seed asks for 6 minibatches, and a minibatch is made of whole task
sequences, so there are 6 samplers then (the fewest that fill them)."""

import torch
from torch import optim
from torch.optim.lr_scheduler import LambdaLR

from stagerl import PPO, Builder, LinearDecay, PipelineStage, PPOConfig, TrainingPipeline
from stagerl.plugins.miniworld import (
    GoalObjectTypeSensor,
    MiniWorldObjectNavExperimentConfig,
    RGBSensor,
)


class ObjectNavMiniWorldPPOExperimentConfig(MiniWorldObjectNavExperimentConfig):
    SENSORS = [RGBSensor(width=80, height=60), GoalObjectTypeSensor()]
    MAX_STEPS = 100
    NUM_TRAIN_SAMPLERS = 2 if not torch.cuda.is_available() else 6  # >= num_mini_batch
    ADVANCE_SCENE_ROLLOUT_PERIOD = 1

    @classmethod
    def tag(cls):
        return "ObjectNavMiniWorldPPO"

    @classmethod
    def training_pipeline(cls, **kwargs):
        ppo_steps = int(2e5)  # the seed: int(1e6)
        lr = 2.5e-4
        num_mini_batch = 2 if not torch.cuda.is_available() else 6
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
            },
            gamma=gamma,
            use_gae=use_gae,
            gae_lambda=gae_lambda,
            advance_scene_rollout_period=cls.ADVANCE_SCENE_ROLLOUT_PERIOD,
            pipeline_stages=[
                PipelineStage(loss_names=["ppo_loss"], max_stage_steps=ppo_steps,),
            ],
            lr_scheduler_builder=Builder(
                LambdaLR, {"lr_lambda": LinearDecay(steps=ppo_steps)}
            ),
        )
