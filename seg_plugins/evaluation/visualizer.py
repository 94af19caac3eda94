"""Overlays of predictions and ground truth on their images, drawn by detectron2's
``Visualizer.draw_sem_seg`` with the dataset's ``stuff_classes`` / ``stuff_colors``; and
``SemSegVisualizer``, a DatasetEvaluator that draws the first few evaluation images as
image | ground truth | prediction into ``<output_dir>/overlays/<image stem>.png``.

Shapes: K classes (2 in binary mode); H, W an image's original height and width.

The evaluator computes no metric (``evaluate`` returns ``{}``) and costs almost nothing:
during ``process`` the main process keeps, for its first N images only, the file names and
the predicted class map (H, W) (uint8, or int32 beyond 256 classes) on the CPU; images and
label maps are read back from their files in ``evaluate``. Binary models (one logit channel)
are thresholded like :class:`SemSegMetricsEvaluator` does (sigmoid > BINARY_THRESHOLD,
:func:`seg_plugins.structures.sem_seg_classes`).
Figures are written like those of :mod:`seg_plugins.evaluation.plots` (Agg, atomic).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.visualizer import Visualizer
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ..data.io import read_image, read_label
from ..data.labels import apply_label_transform
from ..structures import check_binary_threshold, sem_seg_classes
from .plots import DPI, class_colors, default_palette, save_figure

__all__ = [
    "SemSegVisualizer",
    "dataset_classes",
    "display_scale",
    "image_for_display",
    "overlay_figure",
    "read_display_image",
    "render_panoptic",
    "render_sem_seg",
    "save_overlay",
]

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- images
def image_for_display(image: np.ndarray) -> np.ndarray:
    """An image of shape (H, W) or (H, W, C) as (H, W, 3) uint8 RGB: 3 / 4 channels as RGB
    (alpha dropped), any other count as the grey of its first channel.

    uint8 is kept (grey repeated, alpha dropped); any other dtype (16-bit microscopy or CT,
    float) is stretched linearly from its 1st to its 99th percentile onto 0..255, so a
    12-bit image in a 16-bit file does not show as black.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] < 1:
        raise ValueError(f"expected an image of shape (H, W[, C]), got {image.shape}")
    if image.shape[2] not in (3, 4):
        image = image[:, :, :1]  # 1, 2 or > 4 channels: the first one, as grey
    image = image[:, :, :3]
    if image.dtype != np.uint8:
        values = image.astype(np.float64)
        finite = values[np.isfinite(values)]
        lo, hi = np.percentile(finite, (1, 99)) if finite.size else (0.0, 1.0)
        if hi <= lo:
            hi = lo + 1.0
        values = np.nan_to_num((values - lo) / (hi - lo), nan=0.0)
        image = np.round(np.clip(values, 0.0, 1.0) * 255).astype(np.uint8)
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image)


def read_display_image(path: str) -> np.ndarray:
    """Read an image file for display: (H, W, 3) uint8 RGB.

    8-bit files are converted to RGB by PIL (grey, palette, RGBA, CMYK); 16-bit and float
    files are read raw and percentile-stretched (:func:`image_for_display`); ``.npy`` arrays
    show 3 channels as RGB and any other count as the grey of the first channel.
    Raises FileNotFoundError / OSError naming ``path`` (seg_plugins.data.io.read_image).
    """
    raw = read_image(path)  # format None: the file's own mode, 16-bit values kept
    is_array = path.lower().endswith(".npy")  # channels without colour meaning
    if is_array and raw.ndim == 3 and raw.shape[2] != 3:
        raw = raw[:, :, :1]  # a 4-channel array is not RGBA
    elif raw.dtype == np.uint8 and not (raw.ndim == 3 and raw.shape[2] == 3) and not is_array:
        raw = read_image(path, format="RGB")
    return image_for_display(raw)


# Class names not written on the overlay (still coloured): the Visualizer puts a name at the
# median pixel of the class' largest region, which for a background surrounding the objects
# lands inside an object (detectron2 marks that heuristic TODO), and the rest is background.
_UNNAMED_ON_OVERLAY = ("background", "_background_", "bg")


def render_sem_seg(
    image_rgb: np.ndarray,
    label: np.ndarray,
    class_names: Sequence[str],
    colors: np.ndarray,
    *,
    alpha: float = 0.6,
    scale: float = 1.0,
) -> np.ndarray:
    """detectron2's ``Visualizer.draw_sem_seg`` of ``label`` (H, W) on ``image_rgb``
    (H, W, 3) uint8: each class filled with its colour and named on the image, except a
    class named "background". Values >= K (the ignore label) are not drawn.

    Returns:
        (round(H * scale), round(W * scale), 3) uint8 RGB.
    """
    if tuple(label.shape) != tuple(image_rgb.shape[:2]):
        raise ValueError(
            f"label map of shape {tuple(label.shape)} does not match the image "
            f"{tuple(image_rgb.shape[:2])}"
        )
    # An empty name draws no text (matplotlib skips empty Text artists).
    names = ["" if str(n).lower() in _UNNAMED_ON_OVERLAY else str(n) for n in class_names]
    meta = Metadata(stuff_classes=names, stuff_colors=np.asarray(colors).tolist())
    visualizer = Visualizer(image_rgb, metadata=meta, scale=scale)
    return visualizer.draw_sem_seg(np.asarray(label), alpha=alpha).get_image()


def render_panoptic(
    image_rgb: np.ndarray,
    panoptic_seg,
    segments_info: Sequence[dict],
    metadata,
    *,
    alpha: float = 0.6,
    scale: float = 1.0,
) -> np.ndarray:
    """detectron2's ``Visualizer.draw_panoptic_seg`` of a Panoptic FPN prediction (``ids``
    (H, W), ``segments_info`` with contiguous ``category_id`` and ``isthing``) on
    ``image_rgb`` (H, W, 3) uint8: every thing in its own colour with its name (and score),
    every stuff region in its class colour. ``metadata``: thing / stuff classes and colours.

    Returns:
        (round(H * scale), round(W * scale), 3) uint8 RGB.
    """
    ids = torch.as_tensor(np.asarray(panoptic_seg))
    if tuple(ids.shape) != tuple(image_rgb.shape[:2]):
        raise ValueError(
            f"panoptic map of shape {tuple(ids.shape)} does not match the image "
            f"{tuple(image_rgb.shape[:2])}"
        )
    visualizer = Visualizer(image_rgb, metadata=metadata, scale=scale)
    return visualizer.draw_panoptic_seg(ids, list(segments_info), alpha=alpha).get_image()


def display_scale(height: int, width: int, target: int = 384) -> float:
    """Visualizer scale that draws the longer side at about ``target`` pixels (so class
    names stay legible on 128-pixel images and large images stay small), within [0.25, 4]."""
    return float(np.clip(target / max(height, width, 1), 0.25, 4.0))


# Overlay figure layout, in inches.
_MARGIN, _GAP, _TOP = 0.1, 0.2, 0.65
_LEGEND_COLUMNS = 6


def overlay_figure(
    image_rgb: np.ndarray,
    prediction: np.ndarray,
    class_names: Sequence[str],
    colors: np.ndarray,
    *,
    ground_truth: np.ndarray | None = None,
    ignore_label: int = 255,
    title: str | None = None,
    alpha: float = 0.6,
) -> Figure:
    """Side by side: image | ground-truth overlay | prediction overlay (the middle panel only
    when ``ground_truth`` is given), a title with the pixel accuracy, and a legend of the
    classes shown.

    Args:
        image_rgb: (H, W, 3) uint8 RGB (see :func:`image_for_display`).
        prediction, ground_truth: (H, W) class indices; ``ignore_label`` pixels of the
            ground truth are not drawn, and are left out of the pixel accuracy.
        class_names, colors: K names and (K, 3) uint8 colours.
        title: e.g. the file name.
    """
    height, width = image_rgb.shape[:2]
    scale = display_scale(height, width)
    panels = [("image", np.asarray(image_rgb))]
    for name, label in (("ground truth", ground_truth), ("prediction", prediction)):
        if label is not None:
            drawn = render_sem_seg(image_rgb, label, class_names, colors, alpha=alpha, scale=scale)
            panels.append((name, drawn))
    handles = _legend_handles(prediction, ground_truth, class_names, colors)
    legend_rows = math.ceil(len(handles) / _LEGEND_COLUMNS)
    bottom = _MARGIN + 0.28 * legend_rows
    panel_w, panel_h = width * scale / DPI, height * scale / DPI
    fig_w = 2 * _MARGIN + len(panels) * panel_w + (len(panels) - 1) * _GAP
    fig_h = bottom + panel_h + _TOP
    fig = Figure(figsize=(fig_w, fig_h), dpi=DPI)
    FigureCanvasAgg(fig)
    for i, (name, array) in enumerate(panels):
        left = _MARGIN + i * (panel_w + _GAP)
        ax = fig.add_axes([left / fig_w, bottom / fig_h, panel_w / fig_w, panel_h / fig_h])
        ax.imshow(array, interpolation="nearest" if scale >= 1 else "antialiased")
        ax.set_title(name, fontsize=11)
        ax.axis("off")
    fig.suptitle(
        _overlay_title(title, prediction, ground_truth, ignore_label),
        fontsize=10,
        y=1.0 - 0.08 / fig_h,
        va="top",
    )
    if handles:
        fig.legend(
            handles=handles,
            loc="lower center",
            ncol=min(len(handles), _LEGEND_COLUMNS),
            fontsize=9,
            frameon=False,
            bbox_to_anchor=(0.5, 0.02 / fig_h),
        )
    return fig


def _overlay_title(title, prediction, ground_truth, ignore_label) -> str:
    parts = [title] if title else []
    if ground_truth is not None:
        labelled = ground_truth != ignore_label
        if labelled.any():
            accuracy = float((prediction[labelled] == ground_truth[labelled]).mean()) * 100
            parts.append(f"pixel accuracy {accuracy:.1f}%")
    return "  |  ".join(parts)


def _legend_handles(prediction, ground_truth, class_names, colors) -> list:
    shown = set(np.unique(prediction).tolist())
    if ground_truth is not None:
        shown |= set(np.unique(ground_truth).tolist())
    return [
        Patch(facecolor=np.asarray(colors[k]) / 255.0, edgecolor="black", label=class_names[k])
        for k in sorted(shown)
        if 0 <= k < len(class_names)
    ]


def save_overlay(path: str, *args, **kwargs) -> str:
    """:func:`overlay_figure` (same arguments) written to ``path`` as a PNG."""
    return save_figure(overlay_figure(*args, **kwargs), path)


# ----------------------------------------------------------------------------- evaluator
def dataset_classes(dataset_name: str | None, num_channels: int) -> tuple[list[str], np.ndarray]:
    """K class names and (K, 3) uint8 colours for a model with ``num_channels`` output
    channels, from the dataset's ``stuff_classes`` / ``stuff_colors`` as
    :class:`SemSegMetricsEvaluator` reads them: one channel = binary = ["background",
    <the dataset's foreground name>]; names "0".."K-1" when the metadata has none that fit;
    colours from :func:`class_colors` (a fixed palette when the metadata has none)."""
    meta = MetadataCatalog.get(dataset_name) if dataset_name else None
    names = [str(n) for n in (getattr(meta, "stuff_classes", None) or [])]
    colors = list(getattr(meta, "stuff_colors", None) or [])
    k = 2 if num_channels == 1 else int(num_channels)
    if k == 2 and len(names) == 1:  # binary dataset naming its foreground only
        names = ["background", names[0] if names[0] != "background" else "foreground"]
        colors = [default_palette(1)[0].tolist(), *colors] if len(colors) == 1 else colors
    if len(names) != k:
        if names:
            logger.warning(
                "dataset %r has %d stuff_classes but the model predicts %d classes; "
                "overlays name them by index",
                dataset_name,
                len(names),
                k,
            )
        names = [str(i) for i in range(k)]
    return names, class_colors(k, colors if len(colors) == k else None)


class SemSegVisualizer(DatasetEvaluator):
    """Overlays of the first ``num_images`` evaluation images; returns no metrics.

    Example::

        evaluator = DatasetEvaluators([
            SemSegMetricsEvaluator("shapes_val", output_dir=out),
            SemSegVisualizer(cfg, "shapes_val", output_dir=out),  # out/overlays/*.png
        ])
        inference_on_dataset(model, data_loader, evaluator)
    """

    @configurable
    def __init__(
        self,
        dataset_name: str,
        *,
        output_dir: str | None,
        num_images: int = 4,
        binary_threshold: float = 0.5,
        ignore_label: int | None = None,
        alpha: float = 0.6,
    ):
        """
        Args:
            dataset_name: a MetadataCatalog name (``stuff_classes``, ``stuff_colors``).
            output_dir: overlays go to ``<output_dir>/overlays``; None = nothing is written.
            num_images: how many images (the first ones the main process sees); 0 = off.
            binary_threshold: for one-channel (binary) predictions.
            ignore_label: ground-truth value left undrawn; default the metadata's (255).
            alpha: opacity of the class colours over the image.
        """
        if num_images < 0:
            raise ValueError(
                f"num_images must be >= 0, got {num_images}; set TEST.SEM_SEG_VIS.NUM_IMAGES "
                "to 0 (off) or a few images"
            )
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._num_images = int(num_images)
        self._threshold = check_binary_threshold(binary_threshold)
        meta = MetadataCatalog.get(dataset_name)
        self._ignore_label = int(
            ignore_label if ignore_label is not None else meta.get("ignore_label", 255)
        )
        self._alpha = float(alpha)
        self._kept: list[dict] = []
        self._num_channels = 0

    @classmethod
    def from_config(cls, cfg, dataset_name: str, output_dir: str | None = None) -> dict:
        vis = cfg.TEST.SEM_SEG_VIS
        if output_dir is None:
            output_dir = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return {
            "dataset_name": dataset_name,
            "output_dir": output_dir,
            "num_images": vis.NUM_IMAGES if vis.ENABLED else 0,
            "binary_threshold": cfg.MODEL.SEM_SEG_HEAD.BINARY_THRESHOLD,
        }

    def reset(self) -> None:
        self._kept = []

    def process(self, inputs: Sequence[dict], outputs: Sequence[dict]) -> None:
        if len(self._kept) >= self._num_images or not comm.is_main_process():
            return
        for inp, out in zip(inputs, outputs):
            if len(self._kept) >= self._num_images:
                return
            if "file_name" not in inp:
                continue  # nothing to read the image back from
            logits = out["sem_seg"]
            self._num_channels = int(logits.shape[0])
            pred = sem_seg_classes(logits, self._threshold)
            dtype = torch.uint8 if self._num_channels <= 256 else torch.int32
            self._kept.append(
                {
                    "file_name": inp["file_name"],
                    "sem_seg_file_name": inp.get("sem_seg_file_name"),
                    "sem_seg_label_transform": inp.get("sem_seg_label_transform"),
                    "pred": pred.to(dtype=dtype, device="cpu").numpy(),
                }
            )

    def evaluate(self) -> dict:
        if not self._kept or not self._output_dir or not comm.is_main_process():
            return {}
        names, colors = dataset_classes(self._dataset_name, self._num_channels)
        folder = os.path.join(self._output_dir, "overlays")
        used: set[str] = set()
        for item in self._kept:
            path = os.path.join(folder, _unique_stem(item["file_name"], used) + ".png")
            self._write(item, path, names, colors)
        logger.info("[%s] wrote %d overlays to %s", self._dataset_name, len(self._kept), folder)
        return {}

    def _write(self, item: dict, path: str, names: list[str], colors: np.ndarray) -> None:
        image = read_display_image(item["file_name"])
        pred = item["pred"]
        if pred.shape != image.shape[:2]:
            raise ValueError(
                f"{item['file_name']}: image is {image.shape[:2]} but its prediction is "
                f"{pred.shape}; the model must output at the original image size"
            )
        gt = None
        if item["sem_seg_file_name"]:
            gt = read_label(item["sem_seg_file_name"])
            gt = apply_label_transform(gt, item.get("sem_seg_label_transform"))
            if gt.shape != pred.shape:
                raise ValueError(
                    f"{item['sem_seg_file_name']}: label map is {gt.shape} but its image "
                    f"{item['file_name']} is {pred.shape}"
                )
        save_overlay(
            path,
            image,
            pred,
            names,
            colors,
            ground_truth=gt,
            ignore_label=self._ignore_label,
            title=os.path.basename(item["file_name"]),
            alpha=self._alpha,
        )


def _unique_stem(file_name: str, used: set[str]) -> str:
    stem = os.path.splitext(os.path.basename(file_name))[0]
    candidate, n = stem, 1
    while candidate in used:
        candidate, n = f"{stem}_{n}", n + 1
    used.add(candidate)
    return candidate
