"""`stagerl eval`: its paths checked before evaluating, a run directory's newest checkpoint,
results kept per settings and written whole, through a symlink or to a device."""

import json
from pathlib import Path

import pytest

from stagerl import cli

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize(
    ("checkpoint", "options", "message"),
    [
        ("gone/ckpt.pt", [], "gone/ckpt.pt: no such checkpoint file"),
        ("empty", [], "empty: no checkpoint there"),
        ("ckpt.pt", ["--output-json", "gone/results.json"], "gone/results.json: cannot write"),
        ("ckpt.pt", ["--output-json", "empty"], "--output-json {tmp}/empty: expected a file"),
        ("ckpt.pt", ["--video", "ckpt.pt"], "--video {tmp}/ckpt.pt: expected a folder"),
        ("ckpt.pt", ["--video", "empty"], "{tmp}/empty: it holds videos of an earlier evaluation"),
        ("ckpt.pt", ["--video-episodes=2"], "--video-episodes needs --video DIR"),
    ],
    ids=["missing-checkpoint", "run-without-checkpoints", "results-folder", "results-a-folder",
         "video-a-file", "video-folder-with-videos", "video-episodes-without-video"],
)  # fmt: skip
def test_eval_checks_its_paths_before_evaluating(
    checkpoint, options, message, tmp_path, monkeypatch, capsys
):
    from stagerl.engine import evaluator

    monkeypatch.setattr(evaluator, "evaluate", lambda *a, **k: pytest.fail("it evaluated"))
    (tmp_path / "ckpt.pt").write_bytes(b"")
    (tmp_path / "empty").mkdir()
    if "earlier evaluation" in message:
        (tmp_path / "empty" / "episode000_seed0_failure.gif").write_bytes(b"")
    options = [str(tmp_path / o) if not o.startswith("--") else o for o in options]
    arguments = ["eval", str(FIXTURES / "tiny_ppo.py"), "-c", str(tmp_path / checkpoint)]
    assert cli.main([*arguments, *options]) == 2
    assert message.format(tmp=tmp_path) in capsys.readouterr().err


def test_eval_of_a_run_directory_takes_its_newest_checkpoint_and_keeps_each_settings_results(
    tmp_path, capsys
):
    from stagerl.engine.trainer import Trainer
    from stagerl.experiment import load_experiment

    config, run_dir = FIXTURES / "tiny_ppo.py", tmp_path / "run"
    Trainer(load_experiment(config), run_dir=run_dir, seed=0).train(stop_after_steps=512)
    newest = run_dir / "checkpoints" / "ckpt_000000000512.pt"
    for options in (["-s", "3"], ["-s", "3", "--deterministic"]):
        assert cli.main(["eval", str(config), "-c", str(run_dir), "--episodes", "2", *options]) == 0
        assert f"evaluating {newest}" in capsys.readouterr().err
    sampled = json.loads(newest.with_suffix(".eval_seed3_sampled_2episodes.json").read_text())
    chosen = json.loads(newest.with_suffix(".eval_seed3_deterministic_2episodes.json").read_text())
    assert sampled["episodes"] == chosen["episodes"] == 2
    assert (sampled["deterministic"], chosen["deterministic"]) == (False, True)
    assert sampled["checkpoint"] == str(newest.resolve()) and sampled["seed"] == 3


def test_eval_results_go_to_a_device_or_through_a_symlink_as_they_are(tmp_path):
    import stat

    from stagerl.eval_command import _require_writable, _write_results

    _require_writable(Path("/dev/null"), "--output-json")  # a device (or a pipe): written to
    _write_results(Path("/dev/null"), "{}\n")
    assert stat.S_ISCHR(Path("/dev/null").stat().st_mode)  # not replaced by a file
    (tmp_path / "target.json").write_text("old")
    (tmp_path / "link.json").symlink_to(tmp_path / "target.json")
    _write_results(tmp_path / "link.json", "new")
    assert (tmp_path / "link.json").is_symlink() and (tmp_path / "target.json").read_text() == "new"


def test_eval_of_a_model_that_reads_the_expert_is_an_error_naming_it(tmp_path, capsys):
    # trained with its tasks' expert readings as an input, which test tasks do not give
    from stagerl.engine.trainer import Trainer
    from stagerl.experiment import load_experiment
    from tests.test_cli import EXPERT_READING_MODEL
    from tests.variants import fixture_variant

    config = fixture_variant(
        tmp_path,
        "tiny_dagger_ppo.py",
        {"return super().create_model(memory_dim=32, **kwargs)": EXPERT_READING_MODEL},
    )
    Trainer(load_experiment(config), run_dir=tmp_path / "run", seed=0).train(stop_after_steps=64)
    assert cli.main(["eval", str(config), "-c", str(tmp_path / "run"), "--episodes", "1"]) == 2
    assert "its model's forward raised KeyError: 'expert_action'" in capsys.readouterr().err
