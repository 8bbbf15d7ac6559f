"""Learning curves from runs' `metrics.jsonl` files, drawn with matplotlib (`stagerl plot`)."""

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stagerl.errors import ConfigError

X_AXES = {"step": ("step", "steps"), "time": ("time", "training seconds")}


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of a run's `metrics.jsonl`, in step order (a row cut short by a kill is skipped)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a run directory: it has no metrics.jsonl")
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return sorted(rows, key=lambda row: row["step"])


def curve(
    rows: Sequence[Mapping[str, Any]], metric: str, *, x: str = "step"
) -> tuple[list[float], list[float]]:
    """`(xs, values)` of the rows that logged `metric`; x is the row's `step` or `time`."""
    key = X_AXES[x][0]
    points = [(row[key], row[metric]) for row in rows if metric in row and key in row]
    return [point for point, _ in points], [value for _, value in points]


def stage_switches(rows: Sequence[Mapping[str, Any]], x: str = "step") -> list[float]:
    """Where each stage after the first began: the x of the previous stage's last row."""
    key = X_AXES[x][0]
    return [
        before[key]
        for before, after in zip(rows, rows[1:], strict=False)
        if after.get("stage_index") != before.get("stage_index") and key in before
    ]


def _band(curves: list[tuple[list[float], list[float]]]) -> tuple[np.ndarray, ...]:
    """Median, min and max of several runs on the union of their xs; each run counts only
    within its own range (linear in between its rows)."""
    grid = np.unique(np.concatenate([np.asarray(xs, dtype=float) for xs, _ in curves]))
    stacked = np.array([np.interp(grid, xs, ys, left=np.nan, right=np.nan) for xs, ys in curves])
    return grid, np.nanmedian(stacked, 0), np.nanmin(stacked, 0), np.nanmax(stacked, 0)


def _series(run_dir: Path) -> tuple[Path, str]:
    """Which curve a run joins: the runs of one experiment (by the whole parent path: two
    outputs may hold one tag) form one; a branch (a resume from an older checkpoint, with a
    `branch.json`) is drawn apart, as it repeats its original's rows up to where it branched."""
    resolved = run_dir.resolve()
    branch = (resolved / "branch.json").is_file()
    return resolved.parent, f" (branch {resolved.name})" if branch else ""


def output_image(path: Path) -> Path:
    """The image file `-o PATH` names, checked before any run is read: an image format
    matplotlib writes (`.png` added where there is no suffix, as matplotlib would), in a folder
    that exists and can be written; not a folder itself."""
    from matplotlib.backend_bases import FigureCanvasBase

    if path.is_dir():
        raise ConfigError(f"{path}: a folder; name the image file (e.g. {path / 'curves.png'})")
    formats = FigureCanvasBase.get_supported_filetypes()
    suffix = path.suffix.lstrip(".").lower()
    if suffix and suffix not in formats:
        raise ConfigError(
            f"{path}: {suffix!r} is not an image format; use one of {sorted(formats)}"
        )
    if not path.parent.is_dir():
        raise ConfigError(f"{path}: the folder {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise ConfigError(f"{path}: the folder {path.parent} cannot be written")
    return path if suffix else path.with_name(path.name + ".png")


def plot_runs(
    run_dirs: Sequence[Path],
    path: Path,
    *,
    metric: str = "train/success",
    x: str = "step",
    title: str = "",
    threshold: float | None = None,
) -> Any:
    """Save a PNG of `metric` against `x` and return the figure. Runs of one experiment (the
    same parent directory, `OUTPUT/<tag>/`) share a colour: one run is a line, several (seeds)
    their median with a min-max band. Dotted lines mark the first run's stage switches."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    from matplotlib import pyplot as plt

    path = output_image(path)
    experiments: dict[tuple[Path, str], list[list[dict[str, Any]]]] = {}
    for run_dir in run_dirs:
        rows = read_metrics(run_dir)
        if not curve(rows, metric, x=x)[0]:
            raise ConfigError(f"{run_dir}: no rows with {metric!r} and {x!r}")
        experiments.setdefault(_series(run_dir), []).append(rows)
    parents = {parent for parent, _ in experiments}
    figure, axis = plt.subplots(figsize=(7, 4))
    for index, ((parent, branch), runs) in enumerate(experiments.items()):
        clash = sum(other.name == parent.name for other in parents) > 1
        name = (f"{parent.parent.name}/{parent.name}" if clash else parent.name) + branch
        colour = f"C{index % 10}"
        curves = [curve(rows, metric, x=x) for rows in runs]
        if len(curves) == 1:
            axis.plot(*curves[0], color=colour, label=name, linewidth=1.2)
        else:
            grid, median, low, high = _band(curves)
            axis.plot(grid, median, color=colour, label=f"{name} (median of {len(curves)})")
            axis.fill_between(grid, low, high, color=colour, alpha=0.2, linewidth=0)
        for switch in stage_switches(runs[0], x):
            axis.axvline(switch, color=colour, linestyle=":", linewidth=1.0)
    if threshold is not None:
        axis.axhline(threshold, color="grey", linestyle="--", linewidth=0.8)
    axis.set_xlabel(X_AXES[x][1])
    axis.set_ylabel(metric)
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize="small")
    figure.tight_layout()
    try:
        figure.savefig(path, dpi=100)
    except OSError as error:
        raise ConfigError(f"{path}: cannot write the image ({error.strerror})") from None
    finally:
        plt.close(figure)
    return figure
