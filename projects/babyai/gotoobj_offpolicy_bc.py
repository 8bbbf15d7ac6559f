"""Behaviour cloning on BabyAI-GoToObj from a recorded dataset only: the seed's off-policy
pipeline shape, sized for a couple of minutes on 2 CPU cores.

Record the dataset first (about 10 s), then train:

    stagerl record-dataset --env BabyAI-GoToObj-v0 --episodes 1000 --out datasets/gotoobj-1000-v0
    stagerl train projects/babyai/gotoobj_offpolicy_bc.py

`STAGERL_DATASET` points the experiment at another dataset directory.
"""

import os

from torch import optim

from stagerl import Builder, OffPolicyPipelineComponent, PipelineStage, TrainingPipeline
from stagerl.plugins.minigrid import (
    EgocentricMiniGridSensor,
    MiniGridExperimentConfig,
    MiniGridMissionSensor,
    MiniGridOffPolicyExpertCELoss,
    create_minigrid_offpolicy_data_iterator,
)

DATASET_PATH = os.environ.get("STAGERL_DATASET", "datasets/gotoobj-1000-v0")


class BCOffPolicyBabyAIGoToObj(MiniGridExperimentConfig):
    ENV_ID = "BabyAI-GoToObj-v0"
    # missions as long as the dataset iterator's instr_len below (GoToObj's have 5 words)
    SENSORS = [EgocentricMiniGridSensor(view_channels=3), MiniGridMissionSensor(instr_len=5)]
    NUM_TRAIN_SAMPLERS = 8  # the on-policy tasks only report how the agent does
    STEPS = 8_192  # steps of those tasks: 128 rollouts of 8 steps on 8 tasks, 256 batches

    @classmethod
    def training_pipeline(cls, **kwargs):
        num_steps = 32
        return TrainingPipeline(
            save_interval=10_000,
            metric_accumulate_interval=1_024,
            optimizer_builder=Builder(optim.Adam, dict(lr=1e-3)),
            num_mini_batch=0,  # no on-policy training
            update_repeats=0,
            num_steps=num_steps // 4,
            named_losses={"offpolicy_expert_ce_loss": MiniGridOffPolicyExpertCELoss()},
            max_grad_norm=0.5,
            pipeline_stages=[
                PipelineStage(
                    loss_names=[],
                    max_stage_steps=cls.STEPS,
                    offpolicy_component=OffPolicyPipelineComponent(
                        data_iterator_builder=lambda **kwargs: (
                            create_minigrid_offpolicy_data_iterator(
                                path=DATASET_PATH,
                                nrollouts=32,
                                rollout_len=num_steps,
                                instr_len=5,
                                **kwargs,
                            )
                        ),
                        loss_names=["offpolicy_expert_ce_loss"],
                        updates=2,
                    ),
                ),
            ],
        )
