"""Semantic segmentation metrics from confusion counts (pure NumPy; docs/metrics.md).

Shapes: K classes; N cases (images).

``conf[g, p]`` counts the pixels of ground-truth class g predicted as p (ignored pixels
already removed). All figures are in percent, as detectron2 reports them.

Absent-class conventions (``absent_classes``): what happens to a class that is absent from
the ground truth (no pixel of it in the whole dataset) but predicted somewhere. A class that
is neither in the ground truth nor predicted is NaN per class and left out of every mean in
all three conventions.

- ``"mmseg"``: its IoU and Dice are 0 and count in mIoU / mDice / fgDice (mmsegmentation's
  ``IoUMetric``: ``np.nanmean`` of intersect / union).
- ``"detectron2_v0.6"``: its IoU (and Dice) are reported as NaN per class, but the means still
  divide by the number of classes present in the ground truth *or* predicted, so it counts
  as 0 there: the same means as "mmseg" (detectron2 v0.6 ``SemSegEvaluator``).
- ``"detectron2_main"``: NaN per class and left out of the means (detectron2 since commit
  f3c1bc1, 2022-07-06: ``iou_valid = acc_valid & (union > 0)``).

Accuracy (= recall, TP / (TP + FN)), mACC, pACC and fwIoU do not depend on the convention.
The means are computed the way detectron2 computes them (sum over the classes present in
the ground truth, divided by the count of counted classes; fwIoU = sum of IoU x pixel
share), so that the numbers equal detectron2's bit for bit under its convention.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

__all__ = [
    "ABSENT_CLASS_CONVENTIONS",
    "case_dice",
    "check_absent_classes",
    "detectron2_convention",
    "mean_case_dice",
    "metrics_from_confusion",
]

ABSENT_CLASS_CONVENTIONS = ("mmseg", "detectron2_v0.6", "detectron2_main")


# Boundary IoU, reported by detectron2 main's SemSegEvaluator (not by v0.6, not by ours)
DETECTRON2_BOUNDARY_KEYS = ("BoundaryIoU-", "min(IoU, B-Iou)-")


def detectron2_convention() -> str:
    """The absent-class convention of the installed detectron2's ``SemSegEvaluator``:
    "detectron2_main" where a class counts in mIoU only if it is in the ground truth
    (``iou_valid = np.logical_and(acc_valid, ...)``, detectron2 since 2022-07), else
    "detectron2_v0.6". Pass it as ``absent_classes`` to get detectron2's numbers exactly."""
    import inspect
    import re

    from detectron2.evaluation import SemSegEvaluator

    source = inspect.getsource(SemSegEvaluator.evaluate)
    if re.search(r"iou_valid\s*=\s*np\.logical_and\(\s*acc_valid", source):
        return "detectron2_main"
    return "detectron2_v0.6"


def check_absent_classes(value: str) -> str:
    """Return ``value`` if it names a convention, else raise naming the config key."""
    if value not in ABSENT_CLASS_CONVENTIONS:
        raise ValueError(
            f"unknown absent-class convention {value!r}; set TEST.SEM_SEG_EVAL.ABSENT_CLASSES "
            f"(absent_classes=) to one of {list(ABSENT_CLASS_CONVENTIONS)} (docs/metrics.md)"
        )
    return value


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den elementwise, NaN where den == 0."""
    out = np.full(num.shape, np.nan, dtype=np.float64)
    ok = den > 0
    out[ok] = num[ok] / den[ok]
    return out


def _mean(values: np.ndarray, present: np.ndarray, counted: np.ndarray) -> float:
    """Sum of ``values`` over classes present in the ground truth, divided by the number of
    ``counted`` classes (detectron2's formula; classes counted but not present add 0)."""
    n = int(counted.sum())
    return float(100 * (np.sum(values[present]) / n)) if n else float("nan")


def metrics_from_confusion(
    conf: np.ndarray,
    class_names: Sequence[str],
    *,
    absent_classes: str = "mmseg",
    background_class: int = 0,
) -> dict[str, float]:
    """Metrics (percent) from a (K, K) confusion matrix, rows = ground truth.

    Args:
        conf: (K, K) pixel counts.
        class_names: K names, used in the per-class keys ("IoU-<name>", ...).
        absent_classes: one of :data:`ABSENT_CLASS_CONVENTIONS` (module docstring).
        background_class: the class left out of ``fgDice``; -1 = none (no ``fgDice`` key).

    Returns:
        mIoU, fwIoU, mACC, pACC, mDice, [fgDice], then per class IoU-, ACC- (recall),
        Dice- and Precision-<name>. Per-class values are NaN where undefined.
    """
    check_absent_classes(absent_classes)
    conf = np.asarray(conf).astype(np.float64)
    k = conf.shape[0]
    if conf.shape != (k, k) or len(class_names) != k:
        raise ValueError(
            f"expected a (K, K) confusion matrix and K class names, got {conf.shape} and "
            f"{len(class_names)} names"
        )
    tp = np.diag(conf)
    pos_gt, pos_pred = conf.sum(axis=1), conf.sum(axis=0)
    union = pos_gt + pos_pred - tp
    present = pos_gt > 0
    counted = present if absent_classes == "detectron2_main" else union > 0
    iou, dice = _ratio(tp, union), _ratio(2 * tp, pos_gt + pos_pred)
    acc, prec = _ratio(tp, pos_gt), _ratio(tp, pos_pred)
    total = np.sum(pos_gt)

    res = OrderedDict()
    res["mIoU"] = _mean(iou, present, counted)
    res["fwIoU"] = (
        float(100 * np.sum(iou[present] * (pos_gt / total)[present])) if total else float("nan")
    )
    res["mACC"] = _mean(acc, present, present)
    res["pACC"] = float(100 * (np.sum(tp) / total)) if total else float("nan")
    res["mDice"] = _mean(dice, present, counted)
    if 0 <= background_class < k:
        fg = np.arange(k) != background_class
        res["fgDice"] = _mean(dice, present & fg, counted & fg)
    if absent_classes != "mmseg":  # detectron2 reports absent classes' IoU as NaN
        iou[~present] = np.nan
        dice[~present] = np.nan
    for i, name in enumerate(class_names):
        for key, values in (("IoU", iou), ("ACC", acc), ("Dice", dice), ("Precision", prec)):
            res[f"{key}-{name}"] = float(100 * values[i])
    return res


def case_dice(stats: np.ndarray) -> np.ndarray:
    """Per-case Dice of shape (N, K) from per-case counts of shape (N, 3, K): TP, ground-truth
    pixels and predicted pixels of each class in each case. A case where the class is absent
    from both the ground truth and the prediction is NaN (excluded, as in nnU-Net); absent
    from one only gives 0."""
    stats = np.asarray(stats, dtype=np.float64).reshape(-1, 3, stats.shape[-1])
    tp, n_gt, n_pred = stats[:, 0], stats[:, 1], stats[:, 2]
    return _ratio(2 * tp, n_gt + n_pred)


def mean_case_dice(
    dice: np.ndarray, class_names: Sequence[str], *, background_class: int = 0
) -> dict[str, float]:
    """``caseDice-<name>`` (mean over the cases where the class is defined) for every class
    except the background, and ``mCaseDice``, their mean (nnU-Net's "foreground_mean"; a
    class without a defined case is NaN and left out of it). Percent."""
    res = OrderedDict()
    per_class = []
    for i, name in enumerate(class_names):
        if i == background_class:
            continue
        defined = ~np.isnan(dice[:, i])
        value = float(100 * np.mean(dice[defined, i])) if defined.any() else float("nan")
        res[f"caseDice-{name}"] = value
        per_class.append(value)
    finite = [v for v in per_class if not np.isnan(v)]
    res["mCaseDice"] = float(np.mean(finite)) if finite else float("nan")
    res.move_to_end("mCaseDice", last=False)
    return res
