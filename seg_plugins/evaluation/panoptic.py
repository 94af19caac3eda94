"""Panoptic Quality (PQ), Segmentation Quality (SQ) and Recognition Quality (RQ), without
panopticapi.

Shapes: H, W an image's height and width; K the segments listed for one image.

Definition: Kirillov et al., "Panoptic Segmentation", CVPR 2019, as panopticapi's
``pq_compute`` evaluates COCO panoptic (docs/metrics.md, "Panoptic quality"):

- a predicted and a ground-truth segment of the same category match when their IoU > 0.5;
  the union leaves out the prediction's pixels on ground-truth VOID (id 0);
- ground-truth crowd segments (``iscrowd`` 1) match nothing and are never false negatives;
- an unmatched prediction lying for more than half of its area on VOID plus the crowd
  regions of its own category is not a false positive;
- per category, PQ = sum IoU / (TP + FP/2 + FN/2), SQ = sum IoU / TP (0 without TP),
  RQ = TP / (TP + FP/2 + FN/2); All / Things / Stuff average the categories that have any
  TP, FP or FN (the others are NaN per category and left out).

Everything is reported in percent and checked against [0, 100] before it is returned.

Two layers:

- a NumPy core: :func:`image_stats` turns one image's id maps into :class:`PQStats`
  (per-category TP, FP, FN, IoU sum), which add up over images and processes, and
  :func:`pq_tables` turns the sum into the All / Things / Stuff / per-category tables;
- :class:`PanopticQualityEvaluator`, a detectron2 ``DatasetEvaluator`` for
  ``outputs[i]["panoptic_seg"]`` (Panoptic FPN's output).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

import numpy as np
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager
from tabulate import tabulate

from ..data.io import read_panoptic_ids
from ..utils.file_io import atomic_write_text

__all__ = [
    "COCOPanopticOfficialEvaluator",
    "CategoryStats",
    "PQStats",
    "PanopticQualityEvaluator",
    "coco_panoptic_prediction",
    "image_stats",
    "pq_tables",
]

logger = logging.getLogger(__name__)

VOID = 0  # the id of unlabelled pixels in a COCO panoptic id map
_GROUPS = (("All", None), ("Things", True), ("Stuff", False))
_SUFFIX = {"All": "", "Things": "_th", "Stuff": "_st"}


# ------------------------------------------------------------------------------ the core


class CategoryStats(NamedTuple):
    """One category's counts; ``iou`` is the sum of the IoUs of its matched (TP) pairs."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    iou: float = 0.0

    def __add__(self, other: CategoryStats) -> CategoryStats:  # type: ignore[override]
        return CategoryStats(
            self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.iou + other.iou
        )


class PQStats:
    """Per-category :class:`CategoryStats` keyed by the dataset's category id; ``a + b``
    sums two (images, processes). Picklable, for ``detectron2.utils.comm.gather``."""

    def __init__(self, per_category: Mapping[int, CategoryStats] | None = None):
        self.per_category: dict[int, CategoryStats] = {
            int(k): CategoryStats(*v) for k, v in (per_category or {}).items()
        }

    def __getitem__(self, category_id: int) -> CategoryStats:
        return self.per_category.get(category_id, CategoryStats())

    def add(self, category_id: int, tp: int = 0, fp: int = 0, fn: int = 0, iou: float = 0.0):
        self.per_category[category_id] = self[category_id] + CategoryStats(tp, fp, fn, iou)

    def __add__(self, other: PQStats) -> PQStats:
        out = PQStats(self.per_category)
        out += other
        return out

    def __iadd__(self, other: PQStats) -> PQStats:
        for category_id, stats in other.per_category.items():
            self.per_category[category_id] = self[category_id] + stats
        return self

    @classmethod
    def sum(cls, parts: Iterable[PQStats]) -> PQStats:
        out = cls()
        for part in parts:
            out += part
        return out

    def __eq__(self, other) -> bool:
        return isinstance(other, PQStats) and self.per_category == other.per_category

    def __repr__(self) -> str:
        return f"PQStats({dict(sorted(self.per_category.items()))})"


def _pixel_index(ids: np.ndarray, segment_ids: Iterable[int], side: str, image: str):
    """(keys, index): keys = [VOID] + the sorted segment ids; index (H*W,) = each pixel's
    position in keys. Ids of the map that are not listed are an error."""
    listed = sorted(int(i) for i in segment_ids)
    if any(i <= VOID for i in listed):
        raise ValueError(
            f"{image}: {side} segments_info lists segment id(s) "
            f"{[i for i in listed if i <= VOID]}; ids must be > 0 (0 is VOID)"
        )
    keys = np.array([VOID] + listed, dtype=np.int64)
    flat = np.asarray(ids).reshape(-1).astype(np.int64, copy=False)
    index = np.minimum(np.searchsorted(keys, flat), len(keys) - 1)
    unknown = keys[index] != flat
    if unknown.any():
        raise ValueError(
            f"{image}: the {side} id map has segment ids {np.unique(flat[unknown])[:10].tolist()} "
            f"that its segments_info does not list (listed: {listed[:20]})"
        )
    return keys, index


def image_stats(
    gt_ids: np.ndarray,
    gt_segments: Mapping[int, tuple[int, bool]],
    pred_ids: np.ndarray,
    pred_segments: Mapping[int, int],
    *,
    image: str = "image",
) -> PQStats:
    """One image's per-category TP, FP, FN and IoU sum (module docstring).

    Args:
        gt_ids: ground-truth segment ids of shape (H, W); 0 = VOID.
        gt_segments: {segment id: (category id, iscrowd)} for every id of ``gt_ids`` but 0.
        pred_ids: predicted segment ids of shape (H, W); 0 = VOID (no prediction).
        pred_segments: {segment id: category id} for every id of ``pred_ids`` but 0.
        image: names the image in error messages.

    Raises:
        ValueError: shapes differ; an id map holds ids its segments do not list; a listed
            segment has no pixel, or id <= 0.
    """
    if np.shape(gt_ids) != np.shape(pred_ids):
        raise ValueError(
            f"{image}: the ground truth is {np.shape(gt_ids)} but the prediction is "
            f"{np.shape(pred_ids)}; predict at the original image size"
        )
    gt_keys, gt_index = _pixel_index(gt_ids, gt_segments, "ground-truth", image)
    pred_keys, pred_index = _pixel_index(pred_ids, pred_segments, "predicted", image)
    n_pred = len(pred_keys)
    inter = np.bincount(gt_index * n_pred + pred_index, minlength=len(gt_keys) * n_pred)
    inter = inter.reshape(len(gt_keys), n_pred)  # inter[g, p]: pixels in both; row/col 0: VOID
    gt_area, pred_area = inter.sum(1), inter.sum(0)
    for side, keys, area in (
        ("ground-truth", gt_keys, gt_area),
        ("predicted", pred_keys, pred_area),
    ):
        if (area[1:] == 0).any():
            raise ValueError(
                f"{image}: {side} segments {keys[1:][area[1:] == 0].tolist()} are listed but "
                "have no pixel"
            )
    gt_cat = np.array([-1] + [int(gt_segments[k][0]) for k in gt_keys[1:]], dtype=np.int64)
    crowd = np.array([False] + [bool(gt_segments[k][1]) for k in gt_keys[1:]])
    pred_cat = np.array([-2] + [int(pred_segments[k]) for k in pred_keys[1:]], dtype=np.int64)

    stats = PQStats()
    # matching: same category, not crowd, IoU > 0.5 (unique: see docs/metrics.md)
    g, p = np.nonzero(inter[1:, 1:])
    g, p = g + 1, p + 1
    keep = (gt_cat[g] == pred_cat[p]) & ~crowd[g]
    g, p = g[keep], p[keep]
    union = pred_area[p] + gt_area[g] - inter[g, p] - inter[VOID, p]
    hit = 2 * inter[g, p] > union
    for gi, n, u in zip(g[hit], inter[g[hit], p[hit]], union[hit]):
        stats.add(int(gt_cat[gi]), tp=1, iou=float(n / u))
    gt_matched = np.zeros(len(gt_keys), dtype=bool)
    gt_matched[g[hit]] = True
    pred_matched = np.zeros(n_pred, dtype=bool)
    pred_matched[p[hit]] = True

    for gi in np.nonzero(~gt_matched[1:] & ~crowd[1:])[0] + 1:
        stats.add(int(gt_cat[gi]), fn=1)
    for pi in np.nonzero(~pred_matched[1:])[0] + 1:
        # pixels on VOID plus on the crowd regions of the prediction's own category
        ignored = inter[VOID, pi] + inter[crowd & (gt_cat == pred_cat[pi]), pi].sum()
        if 2 * ignored <= pred_area[pi]:
            stats.add(int(pred_cat[pi]), fp=1)
    return stats


def _check_stats(category: Mapping, stats: CategoryStats, source: str) -> None:
    """Counts are non-negative integers; the IoU sum lies in [TP/2, TP]."""
    tp, fp, fn, iou = stats
    ok = all(float(x).is_integer() and x >= 0 for x in (tp, fp, fn))
    ok = ok and math.isfinite(iou) and 0.5 * tp <= iou <= tp * (1 + 1e-9)
    if not ok:
        raise ValueError(
            f"{source}: invalid panoptic counts for category {category['id']} "
            f"'{category['name']}': tp={tp} fp={fp} fn={fn} iou_sum={iou} (counts must be "
            "non-negative integers and the IoU sum of tp matches lie in [tp/2, tp])"
        )


def _category_row(category: Mapping, stats: CategoryStats) -> dict:
    tp, fp, fn, iou = stats
    row = {"id": category["id"], "name": category["name"], "isthing": category["isthing"]}
    row.update({"TP": int(tp), "FP": int(fp), "FN": int(fn), "IoU_sum": float(iou)})
    if tp + fp + fn == 0:  # absent from both sides: undefined, left out of the means
        row.update(PQ=math.nan, SQ=math.nan, RQ=math.nan)
        return row
    with np.errstate(divide="ignore", invalid="ignore"):
        denominator = np.float64(tp) + 0.5 * fp + 0.5 * fn
        row["PQ"] = float(100 * iou / denominator)
        row["SQ"] = float(100 * iou / tp) if tp else 0.0
        row["RQ"] = float(100 * tp / denominator)
    return row


def _out_of_bounds(value: float, allow_nan: bool) -> bool:
    if math.isnan(value):
        return not allow_nan
    return not 0.0 <= value <= 100.0


def pq_tables(
    stats: PQStats, categories: Sequence[Mapping], *, source: str = "panoptic quality"
) -> dict:
    """PQ, SQ and RQ in percent, per category and averaged (module docstring).

    Args:
        stats: counts summed over the dataset.
        categories: every category of the dataset, each a mapping with ``id``, ``name`` and
            ``isthing`` (as the ``categories`` of a COCO panoptic JSON).
        source: names the inputs (dataset, images) in error messages.

    Returns:
        ``{"All" | "Things" | "Stuff": {"PQ", "SQ", "RQ", "n"}, "per_class": [row, ...]}``,
        one row per category in the order given: ``id``, ``name``, ``isthing``, ``PQ``,
        ``SQ``, ``RQ`` (NaN without TP, FP and FN), ``TP``, ``FP``, ``FN``, ``IoU_sum``.
        A group's figures are NaN when none of its categories has TP, FP or FN (``n`` = 0;
        panopticapi raises ZeroDivisionError there).

    Raises:
        ValueError: counts of a category not in ``categories``; invalid counts; a figure
            outside [0, 100]. The message names the category, its counts and ``source``.
    """
    cats = [
        {"id": int(c["id"]), "name": str(c["name"]), "isthing": bool(c["isthing"])}
        for c in categories
    ]
    known = {c["id"] for c in cats}
    if len(known) != len(cats):
        raise ValueError(f"{source}: duplicate category ids in {[c['id'] for c in cats]}")
    unknown = sorted(set(stats.per_category) - known)
    if unknown:
        raise ValueError(
            f"{source}: counts for category ids {unknown}, which are not among the dataset's "
            f"categories {sorted(known)}"
        )
    rows = []
    for cat in cats:
        _check_stats(cat, stats[cat["id"]], source)
        row = _category_row(cat, stats[cat["id"]])
        for key in ("PQ", "SQ", "RQ"):
            if _out_of_bounds(row[key], allow_nan=row["TP"] + row["FP"] + row["FN"] == 0):
                raise ValueError(
                    f"{source}: {key} of category {cat['id']} '{cat['name']}' is {row[key]}, "
                    f"outside [0, 100]; from tp={row['TP']} fp={row['FP']} fn={row['FN']} "
                    f"iou_sum={row['IoU_sum']}"
                )
        rows.append(row)
    tables: dict = {}
    for group, isthing in _GROUPS:
        counted = [
            r
            for r in rows
            if (isthing is None or r["isthing"] == isthing) and not math.isnan(r["PQ"])
        ]
        table = {
            k: float(np.mean([r[k] for r in counted])) if counted else math.nan
            for k in ("PQ", "SQ", "RQ")
        }
        table["n"] = len(counted)
        for key in ("PQ", "SQ", "RQ"):
            if _out_of_bounds(table[key], allow_nan=not counted):
                raise ValueError(
                    f"{source}: {group} {key} is {table[key]}, outside [0, 100], the mean over "
                    f"categories {[r['id'] for r in counted]}"
                )
        tables[group] = table
    tables["per_class"] = rows
    return tables


# ------------------------------------------------------------------------ file formats


def _unique_names(categories: list[dict]) -> dict[int, str]:
    """Category id -> a name for the result keys; a repeated name gets its id appended."""
    counts: dict[str, int] = {}
    for c in categories:
        counts[c["name"]] = counts.get(c["name"], 0) + 1
    return {
        c["id"]: c["name"] if counts[c["name"]] == 1 else f"{c['name']}({c['id']})"
        for c in categories
    }


def _inverse(meta, key: str, dataset_name: str) -> dict[int, int]:
    """contiguous id -> dataset id, from the metadata's ``key`` (dataset id -> contiguous)."""
    forward = dict(getattr(meta, key, None) or {})
    inverse = {int(c): int(d) for d, c in forward.items()}
    if len(inverse) != len(forward):
        raise ValueError(
            f"dataset '{dataset_name}': {key} maps several dataset ids to one contiguous id "
            f"({forward}); the prediction's category could not be told"
        )
    return inverse


def _metadata_categories(meta, things: dict[int, int], stuff: dict[int, int]) -> list[dict]:
    """The evaluated categories: every thing, then every stuff category except dataset id 0
    (VOID in the COCO panoptic format; Panoptic FPN's merged "things" class of its semantic
    branch maps there, see detectron2's ``_get_coco_panoptic_separated_meta``)."""

    def name(classes, contiguous: int, dataset_id: int) -> str:
        classes = list(classes or [])
        return str(classes[contiguous]) if 0 <= contiguous < len(classes) else str(dataset_id)

    thing_classes = getattr(meta, "thing_classes", None)
    stuff_classes = getattr(meta, "stuff_classes", None)
    out = [{"id": d, "name": name(thing_classes, c, d), "isthing": True} for c, d in things.items()]
    thing_ids = set(things.values())
    out += [
        {"id": d, "name": name(stuff_classes, c, d), "isthing": False}
        for c, d in stuff.items()
        if d != VOID and d not in thing_ids
    ]
    return out


def coco_panoptic_prediction(
    panoptic_seg, segments_info, dataset_name: str | None
) -> tuple[np.ndarray, list[dict], list[dict]]:
    """A Panoptic FPN prediction (``ids`` (H, W), ``segments_info`` with contiguous
    ``category_id`` and ``isthing``) in the COCO panoptic format: ``(rgb, segments,
    categories)``, the PNG's pixels (H, W, 3) uint8 (id = R + 256 G + 256^2 B, 0 VOID), each
    segment's ``{"id", "category_id", "isthing", "area"}`` with the dataset's category id
    (the inverse of its metadata's ``thing_dataset_id_to_contiguous_id`` /
    ``stuff_dataset_id_to_contiguous_id``), and the categories. A segment of the merged
    "things" stuff class (dataset id 0) becomes VOID. Without those metadata (no dataset,
    or one without panoptic metadata) the contiguous ids are kept, things first."""
    from ..data.io import id2rgb

    ids = panoptic_seg.detach().cpu().numpy() if hasattr(panoptic_seg, "detach") else panoptic_seg
    ids = np.asarray(ids, dtype=np.int64).copy()
    meta = MetadataCatalog.get(dataset_name) if dataset_name else None
    things = _inverse(meta, "thing_dataset_id_to_contiguous_id", dataset_name) if meta else {}
    stuff = _inverse(meta, "stuff_dataset_id_to_contiguous_id", dataset_name) if meta else {}
    if not things and not stuff:  # no panoptic metadata: contiguous ids, stuff after things
        n_things = len(getattr(meta, "thing_classes", None) or []) if meta else 0
        things = {c: c for c in range(n_things)}
        n_stuff = len(getattr(meta, "stuff_classes", None) or []) if meta else 0
        stuff = {c: n_things + c for c in range(n_stuff)}
    segments = []
    for s in segments_info or []:
        sid, contiguous, isthing = int(s["id"]), int(s["category_id"]), bool(s["isthing"])
        table = things if isthing else stuff
        category = table.get(contiguous, contiguous)
        if not isthing and category == VOID:
            ids[ids == sid] = VOID
            continue
        area = int((ids == sid).sum())
        segments.append({"id": sid, "category_id": category, "isthing": isthing, "area": area})
    ids[~np.isin(ids, [s["id"] for s in segments])] = VOID
    categories = _metadata_categories(meta, things, stuff)
    return id2rgb(ids), segments, categories


class PanopticQualityEvaluator(DatasetEvaluator):
    """PQ, SQ and RQ (COCO panoptic definition, docs/metrics.md) of Panoptic FPN's
    ``outputs[i]["panoptic_seg"]``, without panopticapi.

    Predictions: ``(panoptic_seg, segments_info)``: ids of shape (H, W) (0 = nothing) and
    ``[{"id", "category_id", "isthing"}, ...]`` where ``category_id`` is contiguous among the
    things (``isthing`` True) or among the stuff classes; mapped back to the dataset's ids
    with the inverse of the metadata's ``thing_dataset_id_to_contiguous_id`` /
    ``stuff_dataset_id_to_contiguous_id``, as detectron2's ``COCOPanopticEvaluator`` does.
    Without ``isthing`` the id is taken as the dataset's own; a stuff class that maps to
    dataset id 0 (Panoptic FPN's merged "things" class) counts as VOID. With
    ``segments_info`` None, ids are ``contiguous category * label_divisor + instance`` and -1
    is VOID (Panoptic-DeepLab; the metadata's ``label_divisor``).

    Ground truth, per input record: its ``pan_seg_file_name`` (COCO panoptic PNG) and
    ``segments_info`` (detectron2's ``load_coco_panoptic_json`` convention: contiguous
    ``category_id``, ``isthing``, ``iscrowd``; detectron2's ``DatasetMapper`` keeps both at
    test time). A record without them (e.g. detectron2's ``*_panoptic_separated`` datasets)
    is looked up by ``image_id`` in the metadata's ``panoptic_json`` (dataset category ids),
    its PNG in ``panoptic_root``.

    Each image is scored in :meth:`process` (no prediction is kept); :meth:`evaluate` sums
    the counts of all processes (``comm.gather``) on the main process and returns
    ``{"panoptic_seg": {"PQ", "SQ", "RQ", "PQ_th", ..., "RQ_st", "PQ-<class>", "SQ-<class>",
    "RQ-<class>"}}`` in percent; the other processes return ``{}``. After it the main
    process keeps ``stats`` (:class:`PQStats`), ``tables`` (:func:`pq_tables`) and
    ``results``; ``output_dir`` gets ``panoptic_evaluation.json`` (written atomically).

    Example::

        evaluator = PanopticQualityEvaluator("coco_2017_val_panoptic_separated")
        results = inference_on_dataset(model, data_loader, evaluator)
        results["panoptic_seg"]["PQ"]
    """

    @configurable
    def __init__(
        self, dataset_name: str, *, distributed: bool = True, output_dir: str | None = None
    ):
        """
        Args:
            dataset_name: a MetadataCatalog name with ``thing_dataset_id_to_contiguous_id``
                and/or ``stuff_dataset_id_to_contiguous_id`` (and ``thing_classes`` /
                ``stuff_classes`` for the names).
            distributed: sum the counts of all processes in :meth:`evaluate`.
            output_dir: where panoptic_evaluation.json goes; None = nowhere.
        """
        meta = MetadataCatalog.get(dataset_name)
        self._dataset_name = dataset_name
        self._distributed = distributed
        self._output_dir = output_dir
        self._things = _inverse(meta, "thing_dataset_id_to_contiguous_id", dataset_name)
        self._stuff = _inverse(meta, "stuff_dataset_id_to_contiguous_id", dataset_name)
        self.categories = _metadata_categories(meta, self._things, self._stuff)
        if not self.categories:
            raise ValueError(
                f"dataset '{dataset_name}' has no panoptic categories; set its metadata's "
                "thing_dataset_id_to_contiguous_id and stuff_dataset_id_to_contiguous_id "
                "(detectron2's register_coco_panoptic does)"
            )
        self._category_ids = {c["id"] for c in self.categories}
        self._names = _unique_names(self.categories)
        self._label_divisor = getattr(meta, "label_divisor", None)
        self._panoptic_json = getattr(meta, "panoptic_json", None)
        self._panoptic_root = getattr(meta, "panoptic_root", None)
        self._json_index: dict | None = None
        self.stats: PQStats | None = None
        self.tables: dict | None = None
        self.results: dict[str, float] | None = None
        self.reset()

    @classmethod
    def from_config(cls, cfg, dataset_name: str, output_dir: str | None = None):
        return {"dataset_name": dataset_name, "output_dir": output_dir}

    def reset(self) -> None:
        self._stats = PQStats()
        self._num_images = 0

    def process(self, inputs: Sequence[dict], outputs: Sequence[dict]) -> None:
        for inp, out in zip(inputs, outputs):
            image = str(inp.get("file_name", inp.get("image_id")))
            pred_ids, pred_segments = self._prediction(out["panoptic_seg"], image)
            gt_ids, gt_segments = self._ground_truth(inp, image)
            self._stats += image_stats(gt_ids, gt_segments, pred_ids, pred_segments, image=image)
            self._num_images += 1

    # -- categories and inputs

    def _dataset_category(self, category_id, isthing, image: str, what: str) -> int:
        """The dataset's category id (VOID for the merged "things" stuff class)."""
        contiguous = int(category_id)
        if isthing is None:
            dataset_id = contiguous  # the model outputs dataset ids (detectron2's convention)
        else:
            kind = "thing" if isthing else "stuff"
            table = self._things if isthing else self._stuff
            if contiguous not in table:
                raise ValueError(
                    f"{image}: {what} has {kind} category_id {contiguous}, which "
                    f"{kind}_dataset_id_to_contiguous_id of '{self._dataset_name}' does not "
                    f"map (contiguous ids: {sorted(table)})"
                )
            dataset_id = table[contiguous]
        if dataset_id != VOID and dataset_id not in self._category_ids:
            raise ValueError(
                f"{image}: {what} has category {dataset_id}, not a category of "
                f"'{self._dataset_name}' ({sorted(self._category_ids)})"
            )
        return dataset_id

    def _prediction(self, panoptic_seg, image: str) -> tuple[np.ndarray, dict[int, int]]:
        seg, info = panoptic_seg
        ids = seg.detach().cpu().numpy() if hasattr(seg, "detach") else np.asarray(seg)
        ids = ids.astype(np.int64)
        if info is None:
            ids, info = self._segments_from_label_divisor(ids, image)
        segments: dict[int, int] = {}
        void: list[int] = []
        for s in info:
            sid = int(s["id"])
            if sid in segments or sid in void:
                raise ValueError(f"{image}: the prediction lists segment id {sid} twice")
            what = f"predicted segment {sid}"
            category = self._dataset_category(s["category_id"], s.get("isthing"), image, what)
            if category == VOID:
                void.append(sid)
            else:
                segments[sid] = category
        if void:
            ids = np.where(np.isin(ids, void), VOID, ids)
        return ids, segments

    def _segments_from_label_divisor(self, ids: np.ndarray, image: str):
        """ids ``category * label_divisor + instance`` (-1 = VOID) -> ids + 1 and their
        segments, as detectron2's COCOPanopticEvaluator reads them."""
        if not self._label_divisor:
            raise ValueError(
                f"{image}: the prediction has no segments_info, so its ids are read as "
                f"category * label_divisor + instance, but '{self._dataset_name}' has no "
                "label_divisor in its metadata"
            )
        overlap = sorted(set(self._things) & set(self._stuff))
        if overlap:
            raise ValueError(
                f"{image}: the prediction has no segments_info, so its ids are read as "
                f"category * label_divisor + instance, but the thing and stuff contiguous ids "
                f"overlap in '{self._dataset_name}' ({overlap}), so a category is ambiguous; "
                "output segments_info with 'isthing' instead"
            )
        labels = np.unique(ids)
        if labels.size and labels[0] < -1:
            raise ValueError(f"{image}: panoptic ids must be >= -1 (VOID), got {labels[0]}")
        things = set(self._things)
        info = []
        for label in labels[labels >= 0].tolist():
            category = label // int(self._label_divisor)
            info.append({"id": label + 1, "category_id": category, "isthing": category in things})
        return ids + 1, info

    def _ground_truth(self, inp: dict, image: str) -> tuple[np.ndarray, dict]:
        if "pan_seg_file_name" in inp and "segments_info" in inp:
            segments = {}
            for s in inp["segments_info"]:
                isthing = s.get("isthing")
                if isthing is None:
                    isthing = self._record_isthing(s["category_id"], image)
                sid = int(s["id"])
                category = self._dataset_category(
                    s["category_id"], isthing, image, f"ground-truth segment {sid}"
                )
                self._add_gt_segment(segments, sid, category, s.get("iscrowd", 0), image)
            return read_panoptic_ids(inp["pan_seg_file_name"]), segments
        if self._panoptic_json and self._panoptic_root:
            return self._ground_truth_from_json(inp, image)
        raise KeyError(
            f"{image}: the record has no 'pan_seg_file_name' / 'segments_info' and dataset "
            f"'{self._dataset_name}' has no panoptic_json / panoptic_root in its metadata; keep "
            "both keys in the test-time mapper's output, or set the metadata"
        )

    def _record_isthing(self, category_id, image: str) -> bool:
        """A record without ``isthing`` (detectron2's Cityscapes panoptic loader): thing or
        stuff from which contiguous ids hold the category, when only one does."""
        c = int(category_id)
        if (c in self._things) == (c in self._stuff):
            raise ValueError(
                f"{image}: a ground-truth segment has contiguous category_id {c} and no "
                "'isthing', which the thing and stuff ids cannot tell apart; add 'isthing' to "
                "the record's segments_info"
            )
        return c in self._things

    def _add_gt_segment(self, segments: dict, sid: int, category: int, iscrowd, image: str):
        if sid in segments:
            raise ValueError(f"{image}: the ground truth lists segment id {sid} twice")
        if category == VOID:
            raise ValueError(f"{image}: ground-truth segment {sid} has category 0 (VOID)")
        segments[sid] = (category, bool(iscrowd))

    def _ground_truth_from_json(self, inp: dict, image: str) -> tuple[np.ndarray, dict]:
        if self._json_index is None:
            with PathManager.open(self._panoptic_json) as f:
                annotations = json.load(f)["annotations"]
            self._json_index = {a["image_id"]: a for a in annotations}
        ann = self._json_index.get(inp.get("image_id"))
        if ann is None:
            raise KeyError(
                f"{image}: image_id {inp.get('image_id')!r} is not in {self._panoptic_json}"
            )
        segments: dict = {}
        for s in ann["segments_info"]:
            sid = int(s["id"])
            category = self._dataset_category(
                s["category_id"], None, image, f"ground-truth segment {sid}"
            )
            self._add_gt_segment(segments, sid, category, s.get("iscrowd", 0), image)
        path = os.path.join(self._panoptic_root, ann["file_name"])
        return read_panoptic_ids(path), segments

    # -- results

    def evaluate(self) -> dict:
        stats, count = self._stats, self._num_images
        if self._distributed and comm.get_world_size() > 1:
            parts = comm.gather((stats, count), dst=0)
            if not comm.is_main_process():
                return {}
            stats = PQStats.sum(part[0] for part in parts)
            count = sum(part[1] for part in parts)
        if count == 0:
            logger.warning("[%s] no image was evaluated", self._dataset_name)
            return {}
        source = f"dataset '{self._dataset_name}' ({count} images)"
        tables = pq_tables(stats, self.categories, source=source)
        res: dict[str, float] = OrderedDict()
        for group, _ in _GROUPS:
            for key in ("PQ", "SQ", "RQ"):
                res[key + _SUFFIX[group]] = tables[group][key]
        for row in tables["per_class"]:
            for key in ("PQ", "SQ", "RQ"):
                res[f"{key}-{self._names[row['id']]}"] = row[key]
        self.stats, self.tables, self.results = stats, tables, res
        self._log(tables, count)
        if self._output_dir:
            payload = {"dataset": self._dataset_name, "num_images": count, "panoptic_seg": res}
            payload.update(tables)
            os.makedirs(self._output_dir, exist_ok=True)
            atomic_write_text(
                os.path.join(self._output_dir, "panoptic_evaluation.json"),
                json.dumps(payload, indent=1),
            )
        return OrderedDict(panoptic_seg=res)

    def _log(self, tables: dict, count: int) -> None:
        summary = tabulate(
            [[g] + [tables[g][k] for k in ("PQ", "SQ", "RQ", "n")] for g, _ in _GROUPS],
            headers=["", "PQ", "SQ", "RQ", "#categories"],
            floatfmt=".3f",
            tablefmt="pipe",
        )
        per_class = tabulate(
            [
                [self._names[r["id"]], "thing" if r["isthing"] else "stuff"]
                + [r[k] for k in ("PQ", "SQ", "RQ", "TP", "FP", "FN")]
                for r in tables["per_class"]
            ],
            headers=["category", "kind", "PQ", "SQ", "RQ", "TP", "FP", "FN"],
            floatfmt=".2f",
            tablefmt="pipe",
        )
        logger.info(
            "Panoptic quality on %s (%d images, COCO definition):\n%s\n%s",
            self._dataset_name,
            count,
            summary,
            per_class,
        )


def official_panoptic_available() -> bool:
    """Whether panopticapi (detectron2's COCOPanopticEvaluator's pq_compute) is importable."""
    import importlib.util

    return importlib.util.find_spec("panopticapi") is not None


class COCOPanopticOfficialEvaluator(DatasetEvaluator):
    """detectron2's ``COCOPanopticEvaluator`` (panopticapi's ``pq_compute`` on PNGs it writes),
    run beside :class:`PanopticQualityEvaluator` where panopticapi is installed, its results
    under ``"coco_panoptic_seg"`` (both evaluators would otherwise return "panoptic_seg",
    which detectron2's ``DatasetEvaluators`` refuses), as the official Cityscapes evaluators
    sit beside ours."""

    result_key = "coco_panoptic_seg"

    def __init__(self, dataset_name: str, output_dir: str | None = None):
        from detectron2.evaluation import COCOPanopticEvaluator

        self._evaluator = COCOPanopticEvaluator(dataset_name, output_dir)

    def reset(self) -> None:
        self._evaluator.reset()

    def process(self, inputs, outputs) -> None:
        self._evaluator.process(inputs, outputs)

    def evaluate(self):
        results = self._evaluator.evaluate()
        if not results:  # not the main process
            return results
        return {self.result_key: dict(results["panoptic_seg"])}
