"""The seed document's third example: behaviour cloning on BabyAI-GoToLocal from a recorded
expert dataset only, with truncated BPTT, while on-policy tasks run to report how the agent does.

Its `training_pipeline` is the seed's, with two kinds of change:
- `DATASET_PATH`: a dataset recorded here, since AllenAct's 4 GB pickle is gone from its host;
- the step counts: `TOTAL_TRAIN_STEPS` (the seed's 1e7 take days on 2 CPU cores) and
  `total_episodes_in_epoch` (this dataset's size, not the seed's 1M), moved to class attributes
  so that tests can shrink them.

    stagerl record-dataset --env BabyAI-GoToLocal-v0 --episodes 30000 --out datasets/gotolocal-30k-v0
    stagerl train projects/babyai/gotolocal_offpolicy_bc.py

`STAGERL_DATASET` points the experiment at another dataset directory.
"""

import os

from torch import optim

from stagerl import Builder, OffPolicyPipelineComponent, PipelineStage, TrainingPipeline
from stagerl.plugins.minigrid import (
    EgocentricMiniGridSensor,
    MiniGridActorCritic,
    MiniGridExperimentConfig,
    MiniGridMissionSensor,
    MiniGridOffPolicyExpertCELoss,
    create_minigrid_offpolicy_data_iterator,
)

DATASET_PATH = os.environ.get("STAGERL_DATASET", "datasets/gotolocal-30k-v0")


class BCOffPolicyBabyAIGoToLocalExperimentConfig(MiniGridExperimentConfig):
    ENV_ID = "BabyAI-GoToLocal-v0"
    SENSORS = [EgocentricMiniGridSensor(view_channels=3), MiniGridMissionSensor(instr_len=5)]
    MODEL = MiniGridActorCritic
    TOTAL_TRAIN_STEPS = 10_240
    NUM_STEPS = 128
    EPISODES_IN_DATASET = 30_000

    @classmethod
    def create_model(cls, **kwargs):
        # FiLM lets the mission pick "the red ball" out of the distractors
        return super().create_model(film=True, **kwargs)

    @classmethod
    def training_pipeline(cls, **kwargs):
        total_train_steps = cls.TOTAL_TRAIN_STEPS
        num_steps = cls.NUM_STEPS
        return TrainingPipeline(
            save_interval=10000,  # Save every 10000 steps (approximately)
            metric_accumulate_interval=1,
            optimizer_builder=Builder(optim.Adam, dict(lr=2.5e-4)),
            num_mini_batch=0,  # no on-policy training
            update_repeats=0,  # no on-policy training
            num_steps=num_steps // 4,  # rollouts from environment tasks
            named_losses={
                "offpolicy_expert_ce_loss": MiniGridOffPolicyExpertCELoss(
                    total_episodes_in_epoch=cls.EPISODES_IN_DATASET
                ),
            },
            gamma=0.99,
            use_gae=True,
            gae_lambda=1.0,
            max_grad_norm=0.5,
            advance_scene_rollout_period=None,
            pipeline_stages=[
                PipelineStage(
                    loss_names=[],  # no on-policy losses
                    max_stage_steps=total_train_steps,
                    # We only train from off-policy data:
                    offpolicy_component=OffPolicyPipelineComponent(
                        data_iterator_builder=lambda **kwargs: (
                            create_minigrid_offpolicy_data_iterator(
                                path=DATASET_PATH,  # external dataset
                                nrollouts=128,  # per trainer batch size
                                rollout_len=num_steps,  # For truncated-BPTT
                                instr_len=5,
                                **kwargs,
                            )
                        ),
                        loss_names=["offpolicy_expert_ce_loss"],  # off-policy losses
                        updates=16,  # 16 batches per rollout
                    ),
                ),
            ],
        )
