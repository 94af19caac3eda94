"""Training curves from detectron2's ``metrics.json``: loss, learning rate, evaluation
results against iteration, as one PNG (``tools/plot_metrics.py``).

detectron2's JSONWriter appends one JSON object per logged iteration (every 20); evaluation
results such as "sem_seg/mIoU" share the line of their iteration.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .plots import DPI, save_figure

__all__ = ["plot_training_curves", "read_metrics_json", "training_curves_figure"]

logger = logging.getLogger(__name__)


def read_metrics_json(path: str) -> list[dict]:
    """Records of detectron2's ``metrics.json`` (JSON lines, one dict per logged iteration;
    evaluation results such as "sem_seg/mIoU" share lines with an "iteration").

    A truncated last line (the file of a run still training) is skipped with a warning.
    Raises FileNotFoundError / ValueError naming ``path`` when it is missing, empty or not
    JSON lines.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path}: no such file; detectron2 writes OUTPUT_DIR/metrics.json while training "
            "(pass that file, e.g. output/unet_shapes/metrics.json)"
        )
    with open(path, encoding="utf-8") as f:
        lines = [(n, line) for n, line in enumerate(f, start=1) if line.strip()]
    records = []
    for index, (number, line) in enumerate(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if index == len(lines) - 1 and records:
                logger.warning("%s: line %d is incomplete; skipped", path, number)
                continue
            raise ValueError(
                f"{path}, line {number}: not JSON ({e.msg}); expected detectron2's metrics.json "
                "(one JSON object per line)"
            ) from None
        if isinstance(record, dict) and "iteration" in record:
            records.append(record)
    if not records:
        raise ValueError(
            f"{path}: no metrics (the file is empty or has no line with an 'iteration'); "
            "train for at least 20 iterations (detectron2 logs every 20)"
        )
    return records


# Evaluation results drawn (a key ending with one of these; several test datasets give
# "<dataset>/sem_seg/mIoU"), in legend order.
_EVAL_SUFFIXES = ("sem_seg/mIoU", "sem_seg/mDice", "segm/AP", "bbox/AP")
_PANEL_TEXT = {  # kind -> (title, y label)
    "loss": ("training loss", "loss"),
    "lr": ("learning rate", "learning rate"),
    "eval": ("evaluation", "metric (%)"),
}


def _series(records: Sequence[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(iterations, values) of ``key``, sorted by iteration; a resumed run's repeated
    iterations keep their last value."""
    points = {}
    for record in records:
        value = record.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            points[int(record["iteration"])] = float(value)
    its = np.asarray(sorted(points), dtype=np.int64)
    return its, np.asarray([points[i] for i in its], dtype=np.float64)


def _curve_panels(records: Sequence[dict]) -> list[tuple[str, list[str]]]:
    keys = sorted({k for r in records for k in r})
    losses = (["total_loss"] if "total_loss" in keys else []) + [
        k for k in keys if k.startswith("loss_")
    ]
    evals = [k for suffix in _EVAL_SUFFIXES for k in keys if k.endswith(suffix)]
    panels = [("loss", losses), ("lr", ["lr"] if "lr" in keys else []), ("eval", evals)]
    return [(kind, panel_keys) for kind, panel_keys in panels if panel_keys]


def training_curves_figure(records: Sequence[dict], *, title: str | None = None) -> Figure:
    """Stacked panels against iteration: total_loss and every loss_*, lr and, when present,
    evaluation results (sem_seg/mIoU, sem_seg/mDice, segm/AP, bbox/AP; the last value
    written beside each curve)."""
    panels = _curve_panels(records)
    if not panels:
        raise ValueError("metrics have no total_loss, loss_*, lr or evaluation keys to plot")
    fig = Figure(figsize=(7.5, 2.6 * len(panels) + 0.6), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (kind, panel_keys) in zip(axes, panels):
        _draw_panel(ax, kind, panel_keys, records)
        ax.set_xlabel("iteration")
        ax.tick_params(labelbottom=True)  # sharex hides them on the upper panels
    if title:
        fig.suptitle(title)
    return fig


def _draw_panel(ax, kind: str, keys: Sequence[str], records: Sequence[dict]) -> None:
    all_values = []
    for key in keys:
        its, values = _series(records, key)
        if not len(its):
            continue
        all_values.append(values)
        style = {"marker": "o", "markersize": 4} if kind == "eval" else {}
        width = 1.8 if key == "total_loss" else 1.1
        ax.plot(its, values, label=key, linewidth=width, **style)
        if kind == "eval":
            last = (its[-1], values[-1])
            ax.annotate(
                f"{values[-1]:.1f}",
                last,
                textcoords="offset points",
                xytext=(-4, 6),
                ha="right",
                fontsize=8,
            )
    title, ylabel = _PANEL_TEXT[kind]
    if kind == "loss" and all_values:
        values = np.concatenate(all_values)
        if values.min() > 0 and values.max() / values.min() > 20:
            ax.set_yscale("log")
            ylabel = "loss (log scale)"
    if kind == "lr":
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if kind != "lr":
        ax.legend(fontsize=8, loc="best")


def plot_training_curves(metrics_json: str, path: str) -> str:
    """Read ``metrics_json`` (:func:`read_metrics_json`), draw
    :func:`training_curves_figure` and write it to ``path`` (PNG); returns ``path``."""
    records = read_metrics_json(metrics_json)
    return save_figure(training_curves_figure(records, title=metrics_json), path)
