"""Resuming: in place or in a branch, never deleting, replacing or retraining over an earlier
run's checkpoints; a run held by another trainer, an edited or moved experiment file, a model
that no longer fits."""

import json
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from stagerl import cli
from stagerl.engine.checkpoint import list_checkpoints, load_checkpoint
from stagerl.engine.resume import plan_resume
from stagerl.engine.run_lock import hold_run_dir
from stagerl.engine.trainer import Trainer
from stagerl.experiment import load_experiment
from tests.variants import fixture_variant

ROOT = Path(__file__).parents[1]
FIXTURES = ROOT / "tests" / "fixtures"

pytestmark = pytest.mark.timeout(240)  # each trains in worker processes


def _fingerprints(run_dir: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in (run_dir / "checkpoints").iterdir()}


def test_a_run_resumed_in_place_never_deletes_or_replaces_an_earlier_runs_checkpoints(tmp_path):
    config, run_dir = FIXTURES / "tiny_ppo.py", tmp_path / "TinyPPO" / "run"
    Trainer(load_experiment(config), run_dir=run_dir, seed=0).train(stop_after_steps=512)
    earlier = _fingerprints(run_dir)  # 256 and 512 steps
    resume = ["train", str(config), "-o", str(tmp_path), "--resume", "latest"]
    assert cli.main([*resume, "--keep-checkpoints", "1"]) == 0
    assert [p.name for p in list_checkpoints(run_dir)] == [
        "ckpt_000000001024.pt",  # the resumed run's 768 went: it keeps 1 of its own
        "ckpt_000000000512.pt",
        "ckpt_000000000256.pt",
    ]
    assert {name: _fingerprints(run_dir)[name] for name in earlier} == earlier
    # resumed once finished, with an edited config: nothing to train, and its final checkpoint
    # (which holds the config it was trained with) stays as it is
    edited = tmp_path / "tiny_ppo.py"
    edited.write_text(config.read_text().replace("lr=1e-3", "lr=5e-4"))
    finished = _fingerprints(run_dir)
    again = ["train", str(edited), "-o", str(tmp_path), "--resume", "latest"]
    assert cli.main([*again, "--allow-config-change"]) == 0
    assert _fingerprints(run_dir) == finished


def test_a_finished_run_resumed_with_a_larger_step_budget_trains_on_to_it(tmp_path):
    config = tmp_path / "tiny.py"
    config.write_text((FIXTURES / "tiny_ppo.py").read_text())
    run_dir = tmp_path / "TinyPPO" / "run"
    Trainer(load_experiment(config), run_dir=run_dir, seed=0).train()  # 1,024 steps
    config.write_text(config.read_text().replace("STEPS = 1024", "STEPS = 1280"))
    resume = ["train", str(config), "-o", str(tmp_path), "--resume", "latest"]
    assert cli.main([*resume, "--allow-config-change"]) == 0
    assert list_checkpoints(run_dir)[0].name == "ckpt_000000001280.pt"
    state = load_checkpoint(list_checkpoints(run_dir)[0])["state"]
    assert (state["stage_index"], state["stage_steps"]) == (0, 1280)


def test_resuming_a_run_another_process_trains_in_fails_at_once_touching_nothing(tmp_path, capsys):
    config, run_dir = tmp_path / "tiny.py", tmp_path / "TinyPPO" / "run"
    config.write_text((FIXTURES / "tiny_ppo.py").read_text())
    Trainer(load_experiment(config), run_dir=run_dir, seed=0).train(stop_after_steps=64)
    config.write_text(config.read_text().replace("lr=1e-3", "lr=5e-4"))  # no diff file either
    resume = ["train", str(config), "-o", str(tmp_path), "--resume", "latest"]
    with hold_run_dir(run_dir):  # as the process still training there does
        before = {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()}
        code = cli.main([*resume, "--allow-config-change"])
        after = {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()}
    assert code == 2
    assert f"{run_dir}: another process is training" in capsys.readouterr().err
    assert after == before  # metrics, checkpoints and records as the running process left them


def test_resuming_an_older_checkpoint_branches_and_never_touches_the_original(tmp_path, capsys):
    config, output = FIXTURES / "tiny_ppo.py", tmp_path / "runs"
    assert cli.main(["train", str(config), "-o", str(output)]) == 0
    (original,) = (output / "TinyPPO").iterdir()
    before = _fingerprints(original)
    oldest = list_checkpoints(original)[-1]  # 256 steps; the run went on to 1,024
    time.sleep(1.1)  # run directories are named by the second
    assert cli.main(["train", str(config), "-o", str(output), "--resume", str(oldest)]) == 0
    assert _fingerprints(original) == before  # every file of the original as it was
    (branch,) = [d for d in (output / "TinyPPO").iterdir() if d != original]
    record = json.loads((branch / "branch.json").read_text())
    assert record["resumed_from_checkpoint"] == str(oldest) and record["total_steps"] == 256
    assert [p.name for p in list_checkpoints(branch)][0] == "ckpt_000000001024.pt"
    steps = [json.loads(row)["step"] for row in (branch / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 1024  # no step twice
    board = EventAccumulator(str(branch / "tensorboard")).Reload()
    assert [event.step for event in board.Scalars("time")] == steps  # its history there too
    capsys.readouterr()
    assert cli.main(["train", str(config), "-o", str(output), "--resume", "latest"]) == 0
    assert f"resuming {branch} from ckpt_000000001024.pt" in capsys.readouterr().err


def test_a_branch_that_fails_to_start_leaves_no_run_directory(tmp_path, capsys):
    config, output = FIXTURES / "tiny_ppo.py", tmp_path / "runs"
    Trainer(load_experiment(config), run_dir=output / "TinyPPO" / "run", seed=0).train()
    oldest = list_checkpoints(output / "TinyPPO" / "run")[-1]
    edited = fixture_variant(
        tmp_path, "tiny_ppo.py", {"NUM_TRAIN_SAMPLERS = 4": "NUM_TRAIN_SAMPLERS = 2"}
    )
    resume = ["train", str(edited), "-o", str(output), "--resume", str(oldest)]
    assert cli.main([*resume, "--allow-config-change"]) == 2  # 4 tasks saved, 2 now
    assert "continuing in a new run directory" in capsys.readouterr().err
    assert [p.name for p in (output / "TinyPPO").iterdir()] == ["run"]  # the branch went


def test_resume_latest_with_a_seed_continues_that_seeds_newest_run(tmp_path, capsys):
    config, output = FIXTURES / "tiny_ppo.py", tmp_path / "runs"
    for seed in ("1", "2"):  # seed 2's run is the newer
        assert cli.main(["train", str(config), "-o", str(output), "-s", seed]) == 0
        time.sleep(1.1)  # run directories are named by the second
    first, second = sorted((output / "TinyPPO").iterdir())
    capsys.readouterr()
    resume = ["train", str(config), "-o", str(output), "--resume"]
    assert cli.main([*resume, "latest", "-s", "1"]) == 0
    assert f"resuming {first} from" in capsys.readouterr().err
    assert cli.main([*resume, "latest", "-s", "3"]) == 2
    assert "no run of seed 3 to resume" in capsys.readouterr().err
    assert cli.main([*resume, str(second), "-s", "1"]) == 2
    assert "was trained with seed 2, not 1" in capsys.readouterr().err


def test_a_checkpoint_outside_a_run_continues_in_a_new_run_directory(tmp_path, capsys):
    config, output = FIXTURES / "tiny_ppo.py", tmp_path / "runs"
    assert cli.main(["train", str(config), "-o", str(output)]) == 0
    (run,) = (output / "TinyPPO").iterdir()
    loose = tmp_path / "downloads" / "ckpt.pt"
    loose.parent.mkdir()
    loose.write_bytes(list_checkpoints(run)[-1].read_bytes())  # 256 steps
    time.sleep(1.1)  # run directories are named by the second
    assert cli.main(["train", str(config), "-o", str(output), "--resume", str(loose)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["downloads", "runs"]
    assert [p.name for p in loose.parent.iterdir()] == ["ckpt.pt"]  # nothing written beside it
    (new,) = [d for d in (output / "TinyPPO").iterdir() if d != run]
    assert json.loads((new / "branch.json").read_text())["original_run"] is None
    assert list_checkpoints(new)[0].name == "ckpt_000000001024.pt"


def _edited_later(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of tiny_ppo.py (to edit) and the checkpoint of its run in `r`, cut at 256 steps."""
    config = tmp_path / "tiny.py"
    config.write_text((FIXTURES / "tiny_ppo.py").read_text())
    run = Trainer(load_experiment(config), run_dir=tmp_path / "r", seed=0)
    return config, run.train(stop_after_steps=256)


def test_resume_refuses_an_edited_config_unless_allowed_and_records_the_change(tmp_path, capsys):
    config, final = _edited_later(tmp_path)
    config.write_text(config.read_text().replace("lr=1e-3", "lr=5e-4"))
    assert cli.main(["train", str(config), "--resume", str(final)]) == 2
    err = capsys.readouterr().err
    assert "-            optimizer_builder=Builder(optim.Adam, dict(lr=1e-3))," in err
    assert "+            optimizer_builder=Builder(optim.Adam, dict(lr=5e-4))," in err
    assert "--allow-config-change" in err
    assert cli.main(["train", str(config), "--resume", str(final), "--allow-config-change"]) == 0
    diff = (tmp_path / "r" / "config_change_at_256.diff").read_text()
    assert "+            optimizer_builder=Builder(optim.Adam, dict(lr=5e-4))," in diff
    # the edited learning rate took effect: halfway, the linear decay gives 5e-4 / 2, not 1e-3 / 2
    halfway = tmp_path / "r" / "checkpoints" / "ckpt_000000000512.pt"
    assert load_checkpoint(halfway)["optimizer"]["param_groups"][0]["lr"] == pytest.approx(2.5e-4)


def test_eval_with_an_edited_experiment_file_says_so_with_the_diff(tmp_path, capsys):
    config, final = _edited_later(tmp_path)
    config.write_text(config.read_text().replace("lr=1e-3", "lr=5e-4"))
    assert cli.main(["eval", str(config), "-c", str(final), "--episodes", "1"]) == 0
    err = capsys.readouterr().err
    assert f"warning: {config} differs from the config saved in {final}" in err
    assert "+            optimizer_builder=Builder(optim.Adam, dict(lr=5e-4))," in err


def test_a_run_resumes_after_its_experiment_file_moved(tmp_path):
    # the samplers' snapshots pickle a class of the experiment file, loaded as a module named
    # after the file's path; resumed from another path, that class is the moved file's
    project = tmp_path / "project"
    project.mkdir()
    for name in ("tiny_ppo.py", "seed_reporting.py"):
        (project / name).write_text((FIXTURES / name).read_text())
    cut = Trainer(load_experiment(project / "seed_reporting.py"), run_dir=tmp_path / "r", seed=0)
    final = cut.train(stop_after_steps=512)
    project.rename(tmp_path / "moved")
    config = tmp_path / "moved" / "seed_reporting.py"
    assert cli.main(["train", str(config), "--resume", str(final)]) == 0
    assert list_checkpoints(tmp_path / "r")[0].name == "ckpt_000000001024.pt"


def test_resume_refuses_an_edit_of_an_experiment_file_the_config_loads(tmp_path, capsys):
    for name in ("tiny_ppo.py", "seed_reporting.py"):  # the latter loads the former
        (tmp_path / name).write_text((FIXTURES / name).read_text())
    config = tmp_path / "seed_reporting.py"
    final = Trainer(load_experiment(config), run_dir=tmp_path / "r", seed=0).train(256)
    # a checkpoint written before the loaded files were saved: taken as unedited
    older, payload = tmp_path / "older.pt", load_checkpoint(final)
    del payload["loaded_sources"]
    torch.save(payload, older)
    plan = plan_resume(
        str(older), output=tmp_path / "o", experiment=load_experiment(config),
        allow_config_change=False, warn=pytest.fail,
    )  # fmt: skip
    assert plan.config_change == []
    loaded = tmp_path / "tiny_ppo.py"
    loaded.write_text(loaded.read_text().replace("lr=1e-3", "lr=5e-4"))
    assert cli.main(["train", str(config), "--resume", str(final)]) == 2
    err = capsys.readouterr().err
    assert "+            optimizer_builder=Builder(optim.Adam, dict(lr=5e-4))," in err, err


def test_a_checkpoint_whose_model_no_longer_fits_is_named_not_a_traceback(tmp_path, capsys):
    config, final = _edited_later(tmp_path)
    config.write_text(config.read_text().replace("memory_dim=32", "memory_dim=16"))
    resume = ["train", str(config), "--resume", str(final), "--allow-config-change"]
    assert cli.main(resume) == 2
    assert "the checkpoint resumed from: its model does not fit" in capsys.readouterr().err
    assert cli.main(["eval", str(config), "-c", str(final), "--episodes", "1"]) == 2
    assert f"{final}: its model does not fit" in capsys.readouterr().err
