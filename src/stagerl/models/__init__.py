"""Actor-critic model contract and reusable recurrent pieces."""

from stagerl.models.base import ActorCriticModel, ActorCriticOutput, run_recurrent

__all__ = ["ActorCriticModel", "ActorCriticOutput", "run_recurrent"]
