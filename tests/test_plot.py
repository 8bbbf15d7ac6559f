"""`stagerl plot`: runs of one experiment as median and range, experiments apart, stage
switches marked; checked on the matplotlib objects, not on pixels."""

import json

import numpy as np
import pytest
from matplotlib.collections import PolyCollection

from stagerl.cli import main
from stagerl.plotting import plot_runs


def _run(root, experiment, name, rows):
    run_dir = root / experiment / name
    run_dir.mkdir(parents=True)
    lines = [json.dumps({"stage": f"{r['stage_index']}:x", **r}) for r in rows]
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return run_dir


def _rows(successes, stages=(0, 0, 1)):
    return [
        {"step": 100 * (i + 1), "time": 2.0 * (i + 1), "train/success": value, "stage_index": s}
        for i, (value, s) in enumerate(zip(successes, stages, strict=True))
    ]


def test_plot_draws_seeds_as_median_and_range_and_marks_stage_switches(tmp_path):
    seeds = [
        _run(tmp_path, "DaggerThenPPO", "seed1", _rows([0.1, 0.4, 0.9])),
        _run(tmp_path, "DaggerThenPPO", "seed2", _rows([0.3, 0.6, 0.7])),
    ]
    other = _run(tmp_path, "PPO", "seed1", _rows([0.0, 0.2, 0.5], stages=(0, 0, 0)))
    png = tmp_path / "curves.png"
    assert main(["plot", *map(str, seeds), str(other), "-o", str(png)]) == 0
    assert png.stat().st_size > 0

    figure = plot_runs([*seeds, other], tmp_path / "again.png")
    (axis,) = figure.axes
    curves = {line.get_label(): line for line in axis.lines if not line.get_label().startswith("_")}
    assert set(curves) == {"DaggerThenPPO (median of 2)", "PPO"}
    median = curves["DaggerThenPPO (median of 2)"]
    assert median.get_xdata().tolist() == [100, 200, 300]
    np.testing.assert_allclose(median.get_ydata(), [0.2, 0.5, 0.8])
    np.testing.assert_allclose(curves["PPO"].get_ydata(), [0.0, 0.2, 0.5])
    (band,) = [c for c in axis.collections if isinstance(c, PolyCollection)]
    corners = band.get_paths()[0].vertices
    assert corners[:, 1].min() == 0.1 and corners[:, 1].max() == 0.9  # min and max of the seeds
    switches = [line.get_xdata()[0] for line in axis.lines if line.get_linestyle() == ":"]
    assert switches == [200]  # the second stage began after the row at step 200
    assert axis.get_xlabel() == "steps" and axis.get_ylabel() == "train/success"

    by_time = plot_runs([other], tmp_path / "time.png", x="time").axes[0]
    assert by_time.lines[0].get_xdata().tolist() == [2.0, 4.0, 6.0]


def test_runs_of_one_tag_in_two_outputs_are_two_curves(tmp_path):
    old = _run(tmp_path / "old", "PPO", "seed1", _rows([0.0, 0.2, 0.5]))
    new = _run(tmp_path / "new", "PPO", "seed1", _rows([0.1, 0.4, 0.9]))
    (axis,) = plot_runs([old, new], tmp_path / "versions.png").axes
    labels = [line.get_label() for line in axis.lines if not line.get_label().startswith("_")]
    assert labels == ["old/PPO", "new/PPO"]


def test_a_branch_is_a_curve_of_its_own_not_another_seed(tmp_path):
    # a branch repeats its original's rows up to where it branched: as a second seed it
    # would count them twice
    original = _run(tmp_path, "PPO", "first", _rows([0.0, 0.2, 0.5]))
    branch = _run(tmp_path, "PPO", "second", _rows([0.0, 0.2, 0.3]))
    (branch / "branch.json").write_text(json.dumps({"original_run": str(original)}))
    (axis,) = plot_runs([original, branch], tmp_path / "branch.png").axes
    labels = [line.get_label() for line in axis.lines if not line.get_label().startswith("_")]
    assert labels == ["PPO", "PPO (branch second)"]


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("x.png", "{run} is not a run directory"),
        ("gone/x.png", "the folder {tmp}/gone does not exist"),
        ("x.jpgx", "'jpgx' is not an image format"),
        ("run", "{tmp}/run: a folder; name the image file"),
        ("x.png", "{run}: no rows with 'valid/success' and 'step'"),
    ],
    ids=["no-metrics", "no-folder", "no-format", "a-folder", "no-such-metric"],
)
def test_plot_with_a_bad_path_exits_2_naming_it(output, message, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    if not message.endswith("is not a run directory"):
        run = _run(tmp_path, "PPO", "seed1", _rows([0.0, 0.2, 0.5]))
    metric = ["--metric", "valid/success"] if "no rows" in message else []
    assert main(["plot", str(run), "-o", str(tmp_path / output), *metric]) == 2
    assert message.format(run=run, tmp=tmp_path) in capsys.readouterr().err


def test_plot_without_a_suffix_writes_and_names_a_png(tmp_path, capsys):
    run = _run(tmp_path, "PPO", "seed1", _rows([0.0, 0.2, 0.5]))
    assert main(["plot", str(run), "-o", str(tmp_path / "curves")]) == 0
    assert (tmp_path / "curves.png").is_file()
    assert f"drawn in {tmp_path / 'curves.png'}" in capsys.readouterr().err
