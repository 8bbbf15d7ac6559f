"""DAgger on BabyAI-GoToObj: imitate the BabyAI bot while it drives with decaying probability."""

from torch import optim
from torch.optim.lr_scheduler import LambdaLR

from stagerl import (
    Builder,
    ExpertActionSensor,
    Imitation,
    LinearDecay,
    PipelineStage,
    TrainingPipeline,
)
from stagerl.plugins.minigrid import (
    EgocentricMiniGridSensor,
    MiniGridExperimentConfig,
    MiniGridMissionSensor,
)


class BabyAIGoToObjDAgger(MiniGridExperimentConfig):
    ENV_ID = "BabyAI-GoToObj-v0"
    SENSORS = [
        EgocentricMiniGridSensor(view_channels=3),
        MiniGridMissionSensor(instr_len=8),
        ExpertActionSensor(nactions=7),
    ]

    @classmethod
    def tag(cls) -> str:
        return "BabyAIGoToObjDAgger"

    @classmethod
    def create_model(cls, **kwargs):
        # AllenAct's GoToObj model (go_to_obj/base.py): the default model, 8-wide instructions
        return super().create_model(instr_dim=8, **kwargs)

    @classmethod
    def training_pipeline(cls, **kwargs):
        dagger_steps = 20_000
        return TrainingPipeline(
            save_interval=10_000,
            metric_accumulate_interval=2_048,
            optimizer_builder=Builder(optim.Adam, dict(lr=1e-3)),
            num_mini_batch=2,
            update_repeats=4,
            max_grad_norm=0.5,
            num_steps=32,
            named_losses={"imitation_loss": Imitation()},
            gamma=0.99,
            use_gae=True,
            gae_lambda=0.99,
            pipeline_stages=[
                PipelineStage(
                    loss_names=["imitation_loss"],
                    teacher_forcing=LinearDecay(startp=1.0, endp=0.0, steps=dagger_steps // 2),
                    max_stage_steps=dagger_steps,
                )
            ],
            lr_scheduler_builder=Builder(LambdaLR, {"lr_lambda": LinearDecay(steps=dagger_steps)}),
        )
