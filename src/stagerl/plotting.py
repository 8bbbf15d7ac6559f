"""Learning curves from runs' `metrics.jsonl` files, drawn with matplotlib."""

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of a run's `metrics.jsonl`, in step order (a row cut short by a kill is skipped)."""
    rows = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return sorted(rows, key=lambda row: row["step"])


def curve(rows: Sequence[Mapping[str, Any]], metric: str) -> tuple[list[int], list[float]]:
    """`(steps, values)` of the rows that logged `metric`."""
    points = [(row["step"], row[metric]) for row in rows if metric in row]
    return [step for step, _ in points], [value for _, value in points]


def plot_curves(
    curves: Mapping[str, tuple[Sequence[int], Sequence[float]]],
    path: Path,
    *,
    metric: str,
    title: str = "",
    threshold: float | None = None,
) -> Any:
    """Draw one line per labelled curve on one axis and save the PNG; returns the figure."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    for label, (steps, values) in curves.items():
        axis.plot(steps, values, label=label, linewidth=1.2)
    if threshold is not None:
        axis.axhline(threshold, color="grey", linestyle="--", linewidth=0.8)
    axis.set_xlabel("steps")
    axis.set_ylabel(metric)
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize="small", ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return figure
