"""AllenAct-style experiment files (tests/fixtures/allenact_style, written as AllenAct users
write theirs, imports rewritten by the README's table) train a few rollouts and evaluate every
test task their samplers hold."""

import ast
import importlib
import re
from pathlib import Path

import pytest

from stagerl.engine import trainer as trainer_module
from stagerl.engine.checkpoint import list_checkpoints, load_checkpoint
from stagerl.engine.evaluator import evaluate
from stagerl.engine.trainer import Trainer
from stagerl.experiment import load_experiment

ROOT = Path(__file__).parents[1]
STYLE = ROOT / "tests" / "fixtures" / "allenact_style"
TWO_ROLLOUTS = 2 * 16 * 32  # 16 samplers x 32 steps

pytestmark = pytest.mark.timeout(300)


def _train(name: str, tmp_path: Path, monkeypatch) -> tuple[object, Path]:
    monkeypatch.chdir(ROOT)  # the files import tests.fixtures..., as AllenAct's import projects.*
    experiment = load_experiment(STYLE / name)
    final = Trainer(experiment, run_dir=tmp_path, seed=0).train(stop_after_steps=TWO_ROLLOUTS)
    state = load_checkpoint(final)["state"]
    assert (state["total_steps"], state["rollout_count"]) == (TWO_ROLLOUTS, 2)
    return experiment, final


@pytest.mark.parametrize("name", ["ppo.py", "a2c.py", "ppo_overrides.py"])
def test_allenact_style_config_trains_and_evaluates_all_50_test_tasks(name, tmp_path, monkeypatch):
    experiment, final = _train(name, tmp_path, monkeypatch)
    results = evaluate(experiment, final)  # no count: until every test sampler is exhausted
    assert results["episodes"] == 50
    assert 0 <= results["success_ci95_low"] <= results["success"] <= results["success_ci95_high"]
    if name == "ppo_overrides.py":  # save_interval=-1: no checkpoint before the stage ends
        assert list_checkpoints(tmp_path) == [final]


def test_teacher_forced_imitation_reads_the_sensor_it_names_and_should_log_false(
    tmp_path, monkeypatch
):
    experiment, final = _train("bc_teacher_forcing.py", tmp_path, monkeypatch)
    rows = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert rows and '"expert_action_fraction": 1.0' in rows[-1]  # every action the expert's
    assert not (tmp_path / "tensorboard").exists()
    # its model was built with the expert sensor, which test tasks do not have (as in AllenAct)
    assert evaluate(experiment, final, episodes=2)["episodes"] == 2


def test_stage_training_settings_and_dict_machine_params(tmp_path, monkeypatch):
    calls = []
    real_update = trainer_module.update

    def recording_update(**kwargs):
        calls.append((kwargs["num_mini_batch"], kwargs["update_repeats"]))
        return real_update(**kwargs)

    monkeypatch.setattr(trainer_module, "update", recording_update)
    _train("dagger.py", tmp_path, monkeypatch)
    assert calls == [(4, 2), (4, 2)]  # the stage's TrainingSettings, not the pipeline's (2, 1)


def _readme_import_table() -> dict[str, str]:
    """name -> stagerl module, from the README's table of AllenAct imports."""
    table = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`allenact"):
            for name in re.findall(r"`(\w+)`", cells[1]):
                table[name] = cells[2].strip("`")
    return table


def test_readme_import_table_covers_every_name_the_configs_import_and_each_resolves():
    table = _readme_import_table()
    imported = set()
    for path in STYLE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module.startswith("stagerl"):
                imported |= {alias.name for alias in node.names}
    assert imported and imported <= set(table), sorted(imported - set(table))
    for name, module in table.items():
        assert hasattr(importlib.import_module(module), name), (module, name)


def test_samplers_whose_arguments_give_no_seed_are_seeded_apart(monkeypatch):
    # AllenAct seeds such samplers apart (at random); one seed for all would repeat one
    # sequence of episodes in every slot.
    from stagerl.engine.setup import build_samplers

    monkeypatch.chdir(ROOT)
    experiment = load_experiment(STYLE / "ppo.py")
    with_seed = experiment.config.train_task_sampler_args

    def without_seed(self, *args, **kwargs):
        return {k: v for k, v in with_seed(self, *args, **kwargs).items() if k != "seed"}

    monkeypatch.setattr(experiment.config, "train_task_sampler_args", without_seed)
    _, samplers = build_samplers(experiment, "train", seed=0)
    first_episodes = [sampler.next_task().seed for sampler in samplers]
    assert len(set(first_episodes)) == len(samplers) == 16


def test_an_experiment_imports_its_neighbours_relatively_in_the_workers_too(tmp_path, monkeypatch):
    # AllenAct imports projects/x/exp.py as the module projects.x.exp: `from .base import`;
    # a sensor class defined in the file is unpickled in the sampler workers, which load it too
    folder = tmp_path / "projects" / "demo"
    folder.mkdir(parents=True)
    (folder / "base.py").write_text((ROOT / "tests" / "fixtures" / "tiny_ppo.py").read_text())
    (folder / "exp.py").write_text(
        "from stagerl.plugins.minigrid import EgocentricMiniGridSensor\n\n"
        "from .base import TinyPPO\n\n\n"
        "class ViewSensor(EgocentricMiniGridSensor):\n    pass\n\n\n"
        "class RelativeTinyPPO(TinyPPO):\n    SENSORS = [ViewSensor(view_channels=3)]\n"
    )
    monkeypatch.chdir(tmp_path)
    experiment = load_experiment(folder / "exp.py")
    assert experiment.config.__name__ == "RelativeTinyPPO"
    final = Trainer(experiment, run_dir=tmp_path / "run", seed=0).train(stop_after_steps=64)
    assert load_checkpoint(final)["state"]["total_steps"] == 64
