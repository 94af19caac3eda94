"""Figures of evaluation results, written as PNG: per-class IoU bars and the normalised
confusion matrix (:func:`write_metric_plots`); plus what the other figure modules share:
atomic PNG writing, class colours, palette label PNGs.

Shapes: K classes; H, W an image's height and width.

Everything draws on a ``matplotlib.figure.Figure`` (Agg canvas) built directly, never through
pyplot: no global figure registry to leak, no GUI backend, safe in any process or thread.
Each ``*_figure`` function returns the Figure (tests inspect its axes and labels); each
``plot_*`` / ``save_*`` function writes the PNG atomically (a temporary file in the same
folder, then ``os.replace``: seg_plugins.utils.file_io) and clears the figure. Overlays are in
:mod:`seg_plugins.evaluation.visualizer`, training curves in :mod:`.curves`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize, PowerNorm
from matplotlib.figure import Figure
from PIL import Image

from ..utils.file_io import atomic_open

__all__ = [
    "class_colors",
    "confusion_matrix_figure",
    "default_palette",
    "normalize_confusion",
    "per_class_iou_figure",
    "plot_confusion_matrix",
    "plot_per_class_iou",
    "save_figure",
    "save_label_png",
    "write_metric_plots",
]

logger = logging.getLogger(__name__)

DPI = 100
# Confusion matrices up to this many classes get their cells annotated with percentages.
ANNOTATE_MAX_CLASSES = 30
_BAR_COLOR = "#4878a8"
_TEXT_BOX = {"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1.0}


# ----------------------------------------------------------------------------- writing
def save_figure(fig: Figure, path: str, dpi: int = DPI) -> str:
    """Write ``fig`` as a PNG to ``path`` atomically, then clear it; return ``path``."""
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    try:
        with atomic_open(path, "wb") as f:
            fig.savefig(f, format="png", dpi=dpi)
    finally:
        fig.clear()
    return path


def _save_pil(image: Image.Image, path: str) -> str:
    with atomic_open(path, "wb") as f:
        image.save(f, format="PNG")
    return path


# ----------------------------------------------------------------------------- colours
def default_palette(num_colors: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map: (num_colors, 3) uint8, distinct colours, index 0 black.

    Colour i spreads the bits of i over the high bits of R, G and B (VOC devkit's
    ``labelcolormap``), so neighbouring indices get clearly different colours.
    """
    palette = np.zeros((num_colors, 3), dtype=np.uint8)
    for i in range(num_colors):
        c, r, g, b = i, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette[i] = (r, g, b)
    return palette


def class_colors(num_classes: int, stuff_colors: Sequence | None = None) -> np.ndarray:
    """(K, 3) uint8 colours: the dataset's ``stuff_colors`` when it gives one per class,
    else :func:`default_palette` (so ground truth and prediction always share colours;
    detectron2's Visualizer would pick random ones per call)."""
    if stuff_colors is not None and len(stuff_colors) >= num_classes:
        colors = np.asarray(stuff_colors[:num_classes], dtype=np.int64)
        if colors.shape == (num_classes, 3) and ((colors >= 0) & (colors <= 255)).all():
            return colors.astype(np.uint8)
        logger.warning("stuff_colors are not K RGB triples in 0..255; using a fixed palette")
    return default_palette(max(num_classes, 1))[:num_classes]


# ----------------------------------------------------------------------------- label PNGs
def save_label_png(label: np.ndarray, path: str, colors: np.ndarray | None = None) -> str:
    """Write a label map (H, W) of class indices as a PNG, atomically.

    Indices < 256: a palette ("P" mode) PNG whose pixel values are the class indices and
    whose palette shows ``colors`` ((K, 3) uint8; the rest of the 256 entries follow
    :func:`default_palette`). ``seg_plugins.data.io.read_label`` reads the indices back.
    Larger indices: a 16-bit grayscale PNG (palettes hold 256 entries), no colours.
    """
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"{path}: a label map must have shape (H, W), got {label.shape}")
    if label.size and (label.min() < 0 or label.max() > 65535):
        raise ValueError(
            f"{path}: label values must be in 0..65535, got {label.min()}..{label.max()}"
        )
    if label.size and label.max() > 255:
        return _save_pil(Image.fromarray(label.astype(np.uint16)), path)
    palette = default_palette(256)
    if colors is not None:
        colors = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)[:256]
        palette[: len(colors)] = colors
    image = Image.fromarray(label.astype(np.uint8))
    image.putpalette(palette.ravel().tolist())  # "L" -> "P", pixel values unchanged
    return _save_pil(image, path)


# ----------------------------------------------------------------------------- per-class IoU
def _iou_values(per_class_iou, class_names) -> tuple[list[str], np.ndarray]:
    if isinstance(per_class_iou, Mapping):
        names = list(class_names) if class_names is not None else list(per_class_iou)
        missing = [n for n in names if n not in per_class_iou]
        if missing:
            raise KeyError(f"per_class_iou has no value for classes {missing[:5]}")
        values = [per_class_iou[n] for n in names]
    else:
        values = list(per_class_iou)
        if class_names is None or len(class_names) != len(values):
            raise ValueError(
                f"per_class_iou has {len(values)} values; pass class_names with as many names"
            )
        names = list(class_names)
    values = np.asarray([math.nan if v is None else float(v) for v in values], dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size and (finite.min() < 0 or finite.max() > 100):
        raise ValueError(
            f"per-class IoU must be in percent (0..100), got {finite.min():.3g}..{finite.max():.3g}"
        )
    return [str(n) for n in names], values


def per_class_iou_figure(
    per_class_iou: Mapping[str, float] | Sequence[float],
    class_names: Sequence[str] | None = None,
    *,
    title: str = "Per-class IoU",
    sort: bool = False,
    colors: np.ndarray | None = None,
    miou: float | None = None,
) -> Figure:
    """Horizontal bars of IoU (percent) per class, the value at each bar's end and a dashed
    line at the mIoU.

    Args:
        per_class_iou: {class name: IoU %} or K values in the order of ``class_names``;
            NaN (a class without IoU, e.g. absent from ground truth and prediction) is
            drawn as "n/a".
        class_names: K names; for a mapping, the classes to show and their order.
        sort: lowest IoU at the top instead of class order.
        colors: optional (K, 3) uint8 bar colours (the dataset's stuff_colors).
        miou: where the mIoU line goes: pass the evaluator's ``mIoU`` (its absent-class
            convention may count a NaN class as 0); default the mean of the non-NaN values.
    """
    names, values = _iou_values(per_class_iou, class_names)
    order = np.arange(len(names))
    if sort:
        order = np.argsort(np.nan_to_num(values, nan=-1.0), kind="stable")
    k = len(names)
    fig = Figure(figsize=(7.5, min(max(0.32 * k + 1.5, 3.0), 40.0)), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ys = np.arange(k)
    shown = np.nan_to_num(values[order], nan=0.0)
    bar_colors = _BAR_COLOR if colors is None else np.asarray(colors)[order] / 255.0
    ax.barh(ys, shown, color=bar_colors, edgecolor="black", linewidth=0.5, height=0.7)
    font = float(np.clip(300 / max(k, 1), 5, 9))
    for y, v in zip(ys, values[order]):
        text = "n/a" if math.isnan(v) else f"{v:.1f}"
        x = (0 if math.isnan(v) else v) + 1
        ax.text(x, y, text, va="center", fontsize=font, bbox=_TEXT_BOX)  # box: over the mIoU line
    ax.set_yticks(ys, [names[i] for i in order], fontsize=font + 1)
    ax.set_ylim(k - 0.4, -0.6)  # first class at the top, no empty band
    ax.set_xlim(0, 110)
    ax.set_xticks(range(0, 101, 20))
    ax.set_xlabel("IoU (%)")
    ax.set_ylabel("class")
    if miou is None and np.isfinite(values).any():
        miou = float(np.nanmean(values))
    if miou is not None and math.isfinite(miou):
        ax.axvline(miou, color="#c03030", linestyle="--", linewidth=1.2, label=f"mIoU {miou:.1f}")
        # Above the axes, right of the title: never over a bar or its value.
        ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=9, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    ax.set_title(title, loc="left")
    return fig


def plot_per_class_iou(
    per_class_iou: Mapping[str, float] | Sequence[float],
    class_names: Sequence[str] | None,
    path: str,
    title: str = "Per-class IoU",
    **kwargs,
) -> str:
    """:func:`per_class_iou_figure` written to ``path`` (PNG); returns ``path``."""
    return save_figure(
        per_class_iou_figure(per_class_iou, class_names, title=title, **kwargs), path
    )


# ----------------------------------------------------------------------------- confusion
# normalize -> (subtitle, colour-bar label)
_NORMALIZE_TEXT = {
    "true": (
        "rows normalised: where each ground-truth class went (recall on the diagonal)",
        "% of the row's ground-truth pixels",
    ),
    "pred": (
        "columns normalised: what each predicted class was (precision on the diagonal)",
        "% of the column's predicted pixels",
    ),
    "all": ("normalised by all counted pixels", "% of all counted pixels"),
    None: ("pixel counts", "pixels"),
}


def normalize_confusion(conf: np.ndarray, normalize: str | None = "true") -> np.ndarray:
    """A (K, K) confusion matrix (rows = ground truth, columns = prediction) as float64:
    "true" divides each row by its sum, "pred" each column, "all" by the total, None keeps
    counts (sklearn's ``normalize`` argument). A row / column with no pixel becomes NaN."""
    conf = np.asarray(conf)
    if conf.ndim != 2 or conf.shape[0] != conf.shape[1]:
        raise ValueError(f"a confusion matrix must have shape (K, K), got {conf.shape}")
    if normalize not in _NORMALIZE_TEXT:
        raise ValueError(f"normalize must be 'true', 'pred', 'all' or None, got {normalize!r}")
    conf = conf.astype(np.float64)
    if normalize is None:
        return conf
    if normalize == "all":
        total = conf.sum()
        return conf / total if total > 0 else np.full_like(conf, np.nan)
    axis = 1 if normalize == "true" else 0
    sums = conf.sum(axis=axis, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sums > 0, conf / np.where(sums > 0, sums, 1.0), np.nan)


def confusion_matrix_figure(
    conf: np.ndarray,
    class_names: Sequence[str],
    *,
    normalize: str | None = "true",
    title: str = "Confusion matrix",
) -> tuple[Figure, np.ndarray]:
    """Heatmap of the confusion matrix ``conf`` (K, K) int64, rows = ground truth.

    Cells hold percentages when K <= ANNOTATE_MAX_CLASSES (one decimal up to 10 classes;
    blank where no pixel; "<1" / "<0.1" for non-zero shares that would round to 0). The
    figure grows with K up to 24 inches and the tick labels shrink, so K = 150 still shows
    every class name. Rows of classes absent from the ground truth are grey.

    Returns:
        (figure, the (K, K) matrix drawn: :func:`normalize_confusion` of ``conf``).
    """
    matrix = normalize_confusion(conf, normalize)
    k = matrix.shape[0]
    if len(class_names) != k:
        raise ValueError(f"confusion matrix is {k}x{k} but {len(class_names)} class names given")
    side = float(np.clip(0.5 * k + 3.0, 5.5, 24.0))
    cell_pt = (side - 2.5) * 72 / k
    fig = Figure(figsize=(side + 1.2, side), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    cmap = _matrix_cmap()
    shown = matrix * 100 if normalize is not None else matrix
    vmax = 100.0 if normalize is not None else max(float(np.nanmax(shown, initial=0.0)), 1.0)
    annotate = k <= ANNOTATE_MAX_CLASSES
    # Without numbers in the cells, a square-root colour scale keeps 1-5% confusions visible.
    norm = Normalize(0.0, vmax) if annotate else PowerNorm(0.5, 0.0, vmax)
    image = ax.imshow(shown, cmap=cmap, norm=norm, interpolation="nearest")
    tick_font = float(np.clip(cell_pt * 0.7, 4, 10))
    ax.set_xticks(
        range(k),
        [str(n) for n in class_names],
        rotation=90 if k > 6 else 30,
        ha="center" if k > 6 else "right",
        fontsize=tick_font,
    )
    ax.set_yticks(range(k), [str(n) for n in class_names], fontsize=tick_font)
    label_font = 10 if k <= ANNOTATE_MAX_CLASSES else 16
    ax.set_xlabel("prediction", fontsize=label_font)
    ax.set_ylabel("ground truth", fontsize=label_font)
    subtitle, bar_label = _NORMALIZE_TEXT[normalize]
    ax.set_title(f"{title}\n{subtitle}", fontsize=label_font + 1)
    bar = fig.colorbar(image, ax=ax, shrink=0.8)
    bar.set_label(bar_label + ("" if annotate else " (square-root scale)"), fontsize=label_font)
    bar.ax.tick_params(labelsize=label_font - 1)
    if annotate:
        font = float(np.clip(cell_pt * 0.4, 5, 10))
        digits = 1 if k <= 10 else 0  # "99.6" where cells are wide, "100" where not
        _annotate_cells(ax, shown, np.asarray(conf), vmax, font, normalize is not None, digits)
    return fig, matrix


def _matrix_cmap():
    return colormaps["Blues"].with_extremes(bad="#d9d9d9")  # NaN: absent from the ground truth


def _annotate_cells(ax, shown, counts, vmax, font, percent, digits) -> None:
    """Write each non-empty cell's value; "<0.1" / "<1" for non-zero shares that would
    round to 0, nothing for cells without a pixel."""
    smallest = 0.5 * 10.0**-digits
    for (g, p), value in np.ndenumerate(shown):
        if math.isnan(value) or counts[g, p] == 0:
            continue
        if percent:
            text = f"<{2 * smallest:g}" if value < smallest else f"{value:.{digits}f}"
        else:
            text = f"{int(counts[g, p])}"
        color = "white" if value > 0.55 * vmax else "black"
        ax.text(p, g, text, ha="center", va="center", fontsize=font, color=color)


def plot_confusion_matrix(
    conf: np.ndarray,
    class_names: Sequence[str],
    path: str,
    normalize: str | None = "true",
    title: str = "Confusion matrix",
) -> np.ndarray:
    """:func:`confusion_matrix_figure` written to ``path`` (PNG); returns the matrix drawn."""
    fig, matrix = confusion_matrix_figure(conf, class_names, normalize=normalize, title=title)
    save_figure(fig, path)
    return matrix


# ----------------------------------------------------------------------------- evaluator hook
def write_metric_plots(
    conf: np.ndarray,
    class_names: Sequence[str],
    per_class_iou: Mapping[str, float] | Sequence[float] | None,
    output_dir: str,
    *,
    dataset_name: str = "",
    colors: np.ndarray | None = None,
    miou: float | None = None,
) -> dict[str, str]:
    """Write ``per_class_iou.png`` and ``confusion_matrix.png`` (row-normalised) into
    ``output_dir``; return {"per_class_iou": path, "confusion_matrix": path}.

    Args:
        conf: (K, K) int64 confusion matrix, rows = ground truth (SemSegMetricsEvaluator's).
        class_names: K names.
        per_class_iou: IoU per class in percent ({name: value} or K values); None computes
            it from ``conf`` (TP / (TP + FP + FN); NaN for a class with an empty union).
        dataset_name: shown in the titles.
        colors: optional (K, 3) uint8 class colours for the bars.
        miou: the mIoU line (the evaluator's ``mIoU``); default the mean of the bars.
    """
    conf = np.asarray(conf)
    if per_class_iou is None:
        per_class_iou = _iou_from_confusion(conf)
    suffix = f" on {dataset_name}" if dataset_name else ""
    paths = {
        "per_class_iou": plot_per_class_iou(
            per_class_iou,
            class_names,
            os.path.join(output_dir, "per_class_iou.png"),
            title=f"Per-class IoU{suffix}",
            colors=colors,
            miou=miou,
        ),
        "confusion_matrix": os.path.join(output_dir, "confusion_matrix.png"),
    }
    plot_confusion_matrix(
        conf, class_names, paths["confusion_matrix"], title=f"Confusion matrix{suffix}"
    )
    logger.info("Wrote %s and %s", paths["per_class_iou"], paths["confusion_matrix"])
    return paths


def _iou_from_confusion(conf: np.ndarray) -> np.ndarray:
    conf = conf.astype(np.float64)
    tp = np.diag(conf)
    union = conf.sum(axis=0) + conf.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1.0) * 100, np.nan)
