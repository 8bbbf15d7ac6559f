"""An environment that only the experiment file registers exists in the sampler workers too."""

import pytest

from stagerl.engine.checkpoint import load_checkpoint
from stagerl.engine.trainer import Trainer
from stagerl.experiment import load_experiment
from tests.variants import fixture_variant


@pytest.mark.timeout(120)
def test_env_registered_by_the_experiment_file_trains_in_spawned_workers(tmp_path):
    register = (
        "import gymnasium\n\n"
        'gymnasium.register("StagerlTest-OwnEmpty-v0", entry_point="minigrid.envs:EmptyEnv",'
        ' kwargs={"size": 6})\n'
    )
    config = fixture_variant(
        tmp_path,
        "tiny_ppo.py",
        {
            "from torch import optim\n": register + "from torch import optim\n",
            'ENV_ID = "MiniGrid-Empty-Random-5x5-v0"': 'ENV_ID = "StagerlTest-OwnEmpty-v0"',
        },
    )
    experiment = load_experiment(config)
    assert "StagerlTest-OwnEmpty-v0" in [spec.id for spec in experiment.registered_envs]
    final = Trainer(experiment, run_dir=tmp_path / "run", seed=0).train(stop_after_steps=64)
    assert load_checkpoint(final)["state"]["total_steps"] == 64
