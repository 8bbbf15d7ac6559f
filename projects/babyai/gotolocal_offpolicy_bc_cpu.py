"""Behaviour cloning on BabyAI-GoToLocal from a recorded dataset, sized for 2 CPU cores.

The seed's pipeline (`gotolocal_offpolicy_bc.py`) takes batches of 128 x 128 steps at a
learning rate of 2.5e-4, for 1e7 environment steps: about 300,000 updates, each 3.3 s here.
This one takes 8 batches of 32 steps x 64 streams (0.3-0.4 s each) per rollout at 1e-3, so it
makes thousands of updates in minutes; the experiment is otherwise the same.

    stagerl record-dataset --env BabyAI-GoToLocal-v0 --episodes 30000 --out datasets/gotolocal-30k-v0
    stagerl train projects/babyai/gotolocal_offpolicy_bc_cpu.py
"""

import sys
from pathlib import Path

from torch import optim

from stagerl import Builder, OffPolicyPipelineComponent, PipelineStage, TrainingPipeline
from stagerl.experiment import load_experiment
from stagerl.plugins.minigrid import (
    MiniGridOffPolicyExpertCELoss,
    create_minigrid_offpolicy_data_iterator,
)

seed_example = load_experiment(Path(__file__).with_name("gotolocal_offpolicy_bc.py"))


class BCOffPolicyBabyAIGoToLocalCPU(seed_example.config):
    TOTAL_TRAIN_STEPS = 16_384  # 128 rollouts of 8 steps on 16 tasks, 1,024 batches

    @classmethod
    def tag(cls) -> str:
        return "BCOffPolicyBabyAIGoToLocalCPU"

    @classmethod
    def training_pipeline(cls, **kwargs):
        dataset = sys.modules[seed_example.module_name].DATASET_PATH  # STAGERL_DATASET
        return TrainingPipeline(
            save_interval=8_192,
            metric_accumulate_interval=1_024,
            optimizer_builder=Builder(optim.Adam, dict(lr=1e-3)),
            num_mini_batch=0,  # no on-policy training
            update_repeats=0,
            num_steps=8,  # the tasks only report how the agent does
            named_losses={
                "offpolicy_expert_ce_loss": MiniGridOffPolicyExpertCELoss(
                    total_episodes_in_epoch=cls.EPISODES_IN_DATASET
                )
            },
            max_grad_norm=0.5,
            pipeline_stages=[
                PipelineStage(
                    loss_names=[],
                    max_stage_steps=cls.TOTAL_TRAIN_STEPS,
                    offpolicy_component=OffPolicyPipelineComponent(
                        data_iterator_builder=lambda **kwargs: (
                            create_minigrid_offpolicy_data_iterator(
                                path=dataset, nrollouts=64, rollout_len=32, instr_len=5, **kwargs
                            )
                        ),
                        loss_names=["offpolicy_expert_ce_loss"],
                        updates=8,
                    ),
                )
            ],
        )
