"""What a dataset holds, counted from its records: class pixel frequencies, ignored and
out-of-range label values and image sizes (semantic label maps); instances per class, crowd
regions and object sizes (instance annotations); and loss class weights suggested from the
frequencies (``MODEL.SEM_SEG_HEAD.CLASS_WEIGHTS``). ``tools/dataset_stats.py`` prints them.

Shapes: K classes; a label map (H, W) of class indices, ``ignore_label`` = not labelled.

Label maps are read as the loaders read them: :func:`seg_plugins.data.read_label` (raw
indices; palette and 16-bit PNGs intact), then the record's ``sem_seg_label_transform`` if it
has one (e.g. ADE20K's reduce-zero-label), so the counts are those of the classes the model
is trained on.

Example::

    import seg_plugins
    from detectron2.data import DatasetCatalog
    from seg_plugins.data.statistics import sem_seg_statistics, suggest_class_weights

    stats = sem_seg_statistics(DatasetCatalog.get("shapes_val"), num_classes=4)
    stats["pixel_freq"]  # 4 shares of the labelled pixels (background ~0.75), summing to 1
    suggest_class_weights(stats["freq_in_present_images"], "median_frequency")
    # [0.22, 1.20, 1.35, 1.23]
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence

import numpy as np
from detectron2.structures import BoxMode
from pycocotools import mask as mask_util

from .io import read_label
from .labels import apply_label_transform

__all__ = [
    "CLASS_WEIGHT_METHODS",
    "CLASS_WEIGHTS_KEY",
    "instance_statistics",
    "select_records",
    "sem_seg_statistics",
    "suggest_class_weights",
]

logger = logging.getLogger(__name__)

CLASS_WEIGHTS_KEY = "MODEL.SEM_SEG_HEAD.CLASS_WEIGHTS"
CLASS_WEIGHT_METHODS = ("median_frequency", "inverse_log")
# ENet's c in w = 1 / ln(c + p): bounds the weights to [1 / ln(c + 1), 1 / ln(c)] = [1.4, 50.5]
ENET_C = 1.02
_LOG_EVERY_S = 10.0


def select_records(records: Sequence[dict], max_images: int | None) -> list[dict]:
    """``max_images`` records spread evenly over ``records`` (all when None or larger): the
    first N of a dataset sorted by city or sequence would not represent it."""
    records = list(records)
    if max_images is None or max_images >= len(records):
        return records
    if max_images < 1:
        raise ValueError(f"max_images must be >= 1 or None, got {max_images}")
    index = np.unique(np.linspace(0, len(records) - 1, max_images).round().astype(int))
    return [records[i] for i in index]


class _Progress:
    """Logs "<what>: i/n images" every _LOG_EVERY_S seconds and at the end."""

    def __init__(self, what: str, total: int):
        self.what, self.total = what, total
        self.start = self.last = time.perf_counter()

    def step(self, done: int) -> None:
        now = time.perf_counter()
        if now - self.last >= _LOG_EVERY_S or done == self.total:
            self.last = now
            logger.info("%s: %d/%d images, %.1f s", self.what, done, self.total, now - self.start)


# ----------------------------------------------------------------------------- semantic
def _histogram(label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values, pixel counts) of the values present in ``label``."""
    if label.dtype == np.uint8:  # one bincount; np.unique would sort all pixels
        counts = np.bincount(label.ravel(), minlength=256)
        values = np.flatnonzero(counts)
        return values, counts[values]
    return np.unique(label, return_counts=True)


def _size_histogram(sizes: Counter) -> list[dict]:
    return [
        {"height": h, "width": w, "count": n}
        for (h, w), n in sorted(sizes.items(), key=lambda item: (-item[1], item[0]))
    ]


def sem_seg_statistics(
    records: Sequence[dict],
    num_classes: int,
    ignore_label: int = 255,
    max_images: int | None = None,
) -> dict:
    """Count the label maps (``sem_seg_file_name``) of ``records``.

    Args:
        records: detectron2 dataset dicts; those without ``sem_seg_file_name`` are skipped.
        num_classes: K; values 0..K-1 are classes. A binary task has K = 2.
        ignore_label: the value of unlabelled pixels.
        max_images: read at most this many records, spread evenly (:func:`select_records`).

    Returns:
        A dict (JSON-serialisable; integer keys become strings in JSON):

        - ``num_images``: label maps read; ``num_records``: records given;
        - ``total_pixels``; ``labelled_pixels`` (values 0..K-1); ``ignore_pixels`` and
          ``ignore_fraction`` (of all pixels);
        - ``pixel_counts`` (K ints) and ``pixel_freq`` (K floats: share of the labelled
          pixels, summing to 1);
        - ``image_presence`` (K ints: images holding the class);
        - ``freq_in_present_images`` (K floats): pixels of the class / labelled pixels of
          the images that hold it: Eigen & Fergus' freq(c) behind median-frequency balancing
          (0 for an absent class);
        - ``absent_classes``: indices with no pixel;
        - ``out_of_range``: {value: pixels} of values that are neither a class nor the ignore
          label (a dataset bug, or a wrong num_classes); ``out_of_range_pixels``,
          ``images_with_out_of_range``;
        - ``image_sizes``: [{"height", "width", "count"}] of the label maps, most frequent first.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    k = int(num_classes)
    chosen = [r for r in select_records(records, max_images) if r.get("sem_seg_file_name")]
    counts = np.zeros(k, dtype=np.int64)
    presence = np.zeros(k, dtype=np.int64)
    present_denominator = np.zeros(k, dtype=np.int64)
    out_of_range: Counter = Counter()
    sizes: Counter = Counter()
    total = ignored = images_out_of_range = 0
    progress = _Progress("sem_seg statistics", len(chosen))
    for done, record in enumerate(chosen, start=1):
        label = read_label(record["sem_seg_file_name"])
        label = apply_label_transform(label, record.get("sem_seg_label_transform"))
        sizes[label.shape] += 1
        total += label.size
        values, pixels = _histogram(label)
        is_class = (values >= 0) & (values < k)
        is_ignore = values == ignore_label
        counts[values[is_class]] += pixels[is_class]
        presence[values[is_class]] += 1
        present_denominator[values[is_class]] += int(pixels[is_class].sum())
        ignored += int(pixels[is_ignore].sum())
        other = ~(is_class | is_ignore)
        out_of_range.update(dict(zip(values[other].tolist(), pixels[other].tolist())))
        images_out_of_range += int(other.any())
        progress.step(done)
    labelled = int(counts.sum())
    freq = counts / labelled if labelled else np.zeros(k)
    with np.errstate(invalid="ignore", divide="ignore"):
        freq_present = np.where(present_denominator > 0, counts / present_denominator, 0.0)
    return {
        "num_images": len(chosen),
        "num_records": len(records),
        "num_classes": k,
        "ignore_label": int(ignore_label),
        "total_pixels": int(total),
        "labelled_pixels": labelled,
        "ignore_pixels": int(ignored),
        "ignore_fraction": ignored / total if total else 0.0,
        "pixel_counts": counts.tolist(),
        "pixel_freq": freq.tolist(),
        "image_presence": presence.tolist(),
        "freq_in_present_images": freq_present.tolist(),
        "absent_classes": np.flatnonzero(counts == 0).tolist(),
        "out_of_range": dict(sorted(out_of_range.items())),
        "out_of_range_pixels": int(sum(out_of_range.values())),
        "images_with_out_of_range": images_out_of_range,
        "image_sizes": _size_histogram(sizes),
    }


def suggest_class_weights(
    pixel_freq: Sequence[float], method: str = "median_frequency"
) -> list[float]:
    """Loss weights for K classes from their pixel frequencies, for
    ``MODEL.SEM_SEG_HEAD.CLASS_WEIGHTS``.

    - ``"median_frequency"`` (Eigen & Fergus 2015, used by SegNet, Badrinarayanan et al.
      2017): w_c = median(f) / f_c, the median over the classes present. Eigen & Fergus
      define f_c over the images that hold c: pass ``freq_in_present_images`` of
      :func:`sem_seg_statistics` for their definition, ``pixel_freq`` for plain frequencies.
    - ``"inverse_log"`` (ENet, Paszke et al. 2016): w_c = 1 / ln(1.02 + p_c), p_c the
      class' share of all labelled pixels (``pixel_freq``).

    A class with frequency 0 gets weight 0 (its loss term never occurs; a warning names it).
    The weights are scaled so that their mean over the present classes is 1, which keeps the
    loss (and so the learning rate) on the scale of the unweighted one.

    Returns:
        K floats.
    """
    freq = np.asarray(pixel_freq, dtype=np.float64)
    if freq.ndim != 1 or freq.size == 0 or not np.isfinite(freq).all() or (freq < 0).any():
        raise ValueError(f"pixel_freq must be K finite frequencies >= 0, got {pixel_freq!r}")
    if method not in CLASS_WEIGHT_METHODS:
        raise ValueError(f"method must be one of {CLASS_WEIGHT_METHODS}, got {method!r}")
    present = freq > 0
    if not present.any():
        raise ValueError("no class has a pixel: no weights can be derived (is the dataset empty?)")
    f = freq[present]
    raw = np.median(f) / f if method == "median_frequency" else 1.0 / np.log(ENET_C + f)
    weights = np.zeros_like(freq)
    weights[present] = raw / raw.mean()
    if not present.all():
        logger.warning(
            "classes %s have no pixel: weight 0 (check num_classes and the labels)",
            np.flatnonzero(~present).tolist(),
        )
    return weights.tolist()


# ----------------------------------------------------------------------------- instances
def _mask_area(segmentation, height: int | None, width: int | None) -> float | None:
    """Pixel area of a COCO segmentation (polygons or RLE); None when it cannot be told."""
    if isinstance(segmentation, dict):  # RLE; "counts" a list when uncompressed
        rle = segmentation
        if isinstance(rle.get("counts"), list):
            rle = mask_util.frPyObjects(rle, *rle["size"])
        return float(mask_util.area(rle))
    if isinstance(segmentation, list) and segmentation:
        polygons = [np.asarray(p, dtype=np.float64) for p in segmentation if len(p) >= 6]
        if not polygons:
            return 0.0
        if height and width:  # rasterised, as the mask the model is trained on
            rles = mask_util.frPyObjects([p.tolist() for p in polygons], height, width)
            return float(mask_util.area(mask_util.merge(rles)))
        return float(sum(_polygon_area(p) for p in polygons))  # no size in the record
    return None


def _polygon_area(polygon: np.ndarray) -> float:
    """Area of a polygon [x0, y0, x1, y1, ...] (shoelace formula)."""
    x, y = polygon[0::2], polygon[1::2]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def _box_area(annotation: dict) -> float:
    x0, y0, x1, y1 = BoxMode.convert(annotation["bbox"], annotation["bbox_mode"], BoxMode.XYXY_ABS)
    return max(x1 - x0, 0.0) * max(y1 - y0, 0.0)


def _quartiles(values: list[float]) -> dict | None:
    if not values:
        return None
    q = np.percentile(np.asarray(values, dtype=np.float64), [0, 25, 50, 75, 100])
    return dict(zip(("min", "q1", "median", "q3", "max"), (float(v) for v in q)))


def instance_statistics(
    records: Sequence[dict], num_classes: int, max_images: int | None = None
) -> dict:
    """Count the instance annotations (``annotations``, detectron2's contiguous
    ``category_id`` 0..K-1) of ``records``.

    Returns:
        A dict: ``num_images``, ``images_without_annotations``, ``num_instances`` (crowd
        regions included), ``instances_per_class`` and ``crowd_per_class`` (K ints),
        ``num_crowd``, ``out_of_range_categories`` ({category_id: count}), and the
        quartiles ({min, q1, median, q3, max}, None when there is none) of
        ``mask_area`` (pixels, from the polygons / RLE, rasterised at the record's size),
        ``bbox_area`` (pixels) and ``instances_per_image``; crowd regions are left out of
        the areas.
    """
    k = int(num_classes)
    chosen = select_records(records, max_images)
    per_class = np.zeros(k, dtype=np.int64)
    crowd = np.zeros(k, dtype=np.int64)
    other: Counter = Counter()
    mask_areas, box_areas, per_image = [], [], []
    empty = 0
    for record in chosen:
        annotations = record.get("annotations") or []
        empty += not annotations
        per_image.append(len(annotations))
        for ann in annotations:
            c = int(ann["category_id"])
            is_crowd = bool(ann.get("iscrowd", 0))
            if 0 <= c < k:
                (crowd if is_crowd else per_class)[c] += 1
            else:
                other[c] += 1
            if is_crowd:
                continue
            if "bbox" in ann:
                box_areas.append(_box_area(ann))
            if "segmentation" in ann:
                area = _mask_area(ann["segmentation"], record.get("height"), record.get("width"))
                if area is not None:
                    mask_areas.append(area)
    return {
        "num_images": len(chosen),
        "images_without_annotations": empty,
        "num_instances": int(per_class.sum() + crowd.sum() + sum(other.values())),
        "instances_per_class": per_class.tolist(),
        "crowd_per_class": crowd.tolist(),
        "num_crowd": int(crowd.sum()),
        "out_of_range_categories": dict(sorted(other.items())),
        "mask_area": _quartiles(mask_areas),
        "bbox_area": _quartiles(box_areas),
        "instances_per_image": _quartiles(per_image),
    }
