"""Workers stay light: nothing they import (tasks, samplers, the MiniGrid and MiniWorld plugins)
imports torch."""

import subprocess
import sys


def test_worker_import_path_does_not_import_torch():
    code = (
        "import sys, pickle\n"
        "import stagerl.tasks.worker\n"
        "from stagerl.plugins.minigrid import MiniGridTaskSampler, EgocentricMiniGridSensor\n"
        "from stagerl import ExpertActionSensor\n"
        "sampler = MiniGridTaskSampler(env_ids='BabyAI-GoToObj-v0',\n"
        "    sensors=[EgocentricMiniGridSensor(view_channels=3), ExpertActionSensor(7)])\n"
        "pickle.loads(pickle.dumps(sampler)).next_task().get_observations()\n"
        "from stagerl.plugins.miniworld import ObjectNavTaskSampler, RGBSensor\n"
        "sampler = ObjectNavTaskSampler(scenes=[5000], sensors=[RGBSensor(), ExpertActionSensor(6)])\n"
        "pickle.loads(pickle.dumps(sampler)).next_task().get_observations()\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "False"
