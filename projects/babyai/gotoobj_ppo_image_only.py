"""The GoToObj PPO example observing the egocentric grid only, as AllenAct's baseline does.

GoToObj's room holds one object, so the mission adds nothing the grid does not show; this
variant checks that learning does not lean on it.
"""

from pathlib import Path

from stagerl.experiment import load_experiment
from stagerl.plugins.minigrid import EgocentricMiniGridSensor

GoToObjPPO = load_experiment(Path(__file__).with_name("gotoobj_ppo.py")).config


class BabyAIGoToObjPPOImageOnly(GoToObjPPO):
    SENSORS = [EgocentricMiniGridSensor(view_channels=3)]

    @classmethod
    def tag(cls) -> str:
        return "BabyAIGoToObjPPOImageOnly"
