"""The seed document's second example, ObjectNav with DAgger then PPO, on MiniWorld: its
`training_pipeline` pasted unchanged but for the step counts (1e4 + 1e6 in the seed; 40,000 +
160,000 here, the same 200,000 steps as ppo.py, about 16 minutes on 2 CPU cores: the expert
plans every step of the first stage). Note the seed's learning rate decays to 0 at `ppo_steps`
of the total count: here over the last 40,000 steps it is 0. The expert is the shortest-path
expert of stagerl.plugins.miniworld. 2 samplers, as ppo.py; with CUDA available the seed asks
for 6 minibatches of whole task sequences, so there are 6 samplers then."""

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
from stagerl.plugins.miniworld import (
    GoalObjectTypeSensor,
    MiniWorldObjectNavExperimentConfig,
    RGBSensor,
)


class ObjectNavMiniWorldDaggerThenPPOExperimentConfig(MiniWorldObjectNavExperimentConfig):
    MAX_STEPS = 100
    NUM_TRAIN_SAMPLERS = 2 if not torch.cuda.is_available() else 6  # >= num_mini_batch
    ADVANCE_SCENE_ROLLOUT_PERIOD = 1
    SENSORS = [
        RGBSensor(width=80, height=60),
        GoalObjectTypeSensor(),
        ExpertActionSensor(nactions=6), # Notice that we have added
                                        # an expert action sensor.
    ]

    @classmethod
    def tag(cls):
        return "ObjectNavMiniWorldDaggerThenPPO"

    @classmethod
    def training_pipeline(cls, **kwargs):
        dagger_steps = int(4e4) # Much smaller number of steps as we're using imitation learning
        ppo_steps = int(1.6e5)  # the seed: 1e4 and 1e6; here 200,000 in all, as ppo.py
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
