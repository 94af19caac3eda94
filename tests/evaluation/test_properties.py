"""Property-based tests of the semantic evaluator, over random class counts,
image sizes, label maps (with ignored pixels) and logits (with ties):

- every metric lies in [0, 100] or is NaN, and per class IoU <= Dice and IoU <= recall;
- the counts, hence the metrics, do not change when the pixels are permuted (image and
  prediction alike), nor with the thread count;
- ignored pixels are never counted: the matrix sums to the labelled pixels, and changing
  the prediction on ignored pixels changes nothing;
- a perfect prediction scores 100 on every present class;
- the evaluator (PNG on disk, threads, per-case Dice) gives the matrix of a direct count.

Bounded: a fixed number of derandomized examples per test (no example database).
"""

import os
import uuid

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from PIL import Image

import seg_plugins  # noqa: F401  must come before detectron2 submodules (repairs the install)

# isort: split
from detectron2.data import MetadataCatalog

from seg_plugins.evaluation import SemSegMetricsEvaluator
from seg_plugins.evaluation.confusion import argmax_channels_numpy, image_confusion_numpy
from seg_plugins.evaluation.sem_seg_metrics import (
    ABSENT_CLASS_CONVENTIONS,
    metrics_from_confusion,
)
from tests.hypothesis_policy import property_settings

EXAMPLES = 200
IGNORE = 255
_CHECKS = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
PROPERTY = property_settings(EXAMPLES, suppress_health_check=_CHECKS)
pytestmark = pytest.mark.property


@st.composite
def _case(draw):
    """(K, labels (H, W) uint8 with ignored pixels, logits (K, H, W) float32 with ties)."""
    k = draw(st.integers(2, 7))
    h, w = draw(st.integers(1, 20)), draw(st.integers(1, 20))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    labels = rng.integers(0, k, size=(h, w)).astype(np.uint8)
    labels[rng.random((h, w)) < draw(st.sampled_from([0.0, 0.2, 1.0]))] = IGNORE
    # coarse values make ties between channels common
    logits = rng.integers(-2, 3, size=(k, h, w)).astype(np.float32)
    return k, labels, logits


def _conf(k, labels, logits):
    return image_confusion_numpy(argmax_channels_numpy(logits), labels, k, IGNORE, "gt.png")


@PROPERTY
@given(case=_case(), convention=st.sampled_from(ABSENT_CLASS_CONVENTIONS))
def test_metrics_are_bounded_and_ordered(case, convention):
    k, labels, logits = case
    conf = _conf(k, labels, logits)
    res = metrics_from_confusion(conf, [f"c{i}" for i in range(k)], absent_classes=convention)
    for key, value in res.items():
        assert np.isnan(value) or -1e-9 <= value <= 100 + 1e-9, (key, value)
    for i in range(k):
        iou, dice, acc = (res[f"{m}-c{i}"] for m in ("IoU", "Dice", "ACC"))
        if not np.isnan(iou):
            assert iou <= dice + 1e-9 and (np.isnan(acc) or iou <= acc + 1e-9)


@PROPERTY
@given(case=_case(), seed=st.integers(0, 2**31))
def test_counts_are_invariant_under_pixel_permutation(case, seed):
    k, labels, logits = case
    h, w = labels.shape
    perm = np.random.default_rng(seed).permutation(h * w)
    new_shape = (w, h) if seed % 2 else (h, w)  # the layout does not matter either
    labels_p = labels.reshape(-1)[perm].reshape(new_shape)
    logits_p = logits.reshape(k, -1)[:, perm].reshape(k, *new_shape)
    assert np.array_equal(_conf(k, labels, logits), _conf(k, labels_p, logits_p))


@PROPERTY
@given(case=_case(), seed=st.integers(0, 2**31))
def test_ignored_pixels_are_never_counted(case, seed):
    k, labels, logits = case
    conf = _conf(k, labels, logits)
    assert conf.sum() == int((labels != IGNORE).sum())
    other = logits.copy()
    ignored = labels == IGNORE
    rng = np.random.default_rng(seed)
    other[:, ignored] = rng.normal(size=(k, int(ignored.sum()))).astype(np.float32) * 100
    assert np.array_equal(conf, _conf(k, labels, other))


@PROPERTY
@given(case=_case())
def test_a_perfect_prediction_scores_100_on_present_classes(case):
    k, labels, _ = case
    onehot = np.zeros((k, *labels.shape), np.float32)
    rows, cols = np.nonzero(labels != IGNORE)
    onehot[labels[rows, cols], rows, cols] = 1.0
    res = metrics_from_confusion(
        _conf(k, labels, onehot), [f"c{i}" for i in range(k)], absent_classes="detectron2_main"
    )
    present = set(np.unique(labels[labels != IGNORE]).tolist())
    for i in present:
        assert res[f"IoU-c{i}"] == 100.0 and res[f"Dice-c{i}"] == 100.0
    if present:
        assert res["mIoU"] == 100.0 and res["pACC"] == 100.0


@property_settings(50, suppress_health_check=_CHECKS)
@given(cases=st.lists(_case(), min_size=1, max_size=3), threads=st.sampled_from([1, 2, 3]))
def test_evaluator_equals_a_direct_count(tmp_path, cases, threads):
    """Through SemSegMetricsEvaluator: label maps read from PNG, any thread count,
    per-case Dice on; K is the first case's (the others are re-drawn to it)."""
    k = cases[0][0]
    name = f"prop_{uuid.uuid4().hex[:8]}"
    MetadataCatalog.get(name).set(stuff_classes=[f"c{i}" for i in range(k)], ignore_label=IGNORE)
    try:
        ev = SemSegMetricsEvaluator(name, num_threads=threads, per_case_dice=True)
        expected = np.zeros((k, k), np.int64)
        for i, (_, labels, _) in enumerate(cases):
            labels = np.where(labels == IGNORE, IGNORE, labels % k).astype(np.uint8)
            logits = np.random.default_rng(i).normal(size=(k, *labels.shape)).astype(np.float32)
            path = os.path.join(tmp_path, f"{name}_{i}.png")
            Image.fromarray(labels).save(path)
            ev.process([{"sem_seg_file_name": path}], [{"sem_seg": torch.from_numpy(logits)}])
            pred = logits.argmax(0)
            keep = labels != IGNORE
            np.add.at(expected, (labels[keep].astype(np.int64), pred[keep]), 1)
        res = ev.evaluate()["sem_seg"]
    finally:
        MetadataCatalog.remove(name)
    assert np.array_equal(ev.confusion_matrix, expected)
    assert ev.case_dice.shape == (len(cases), k)
    assert all(np.isnan(v) or 0 <= v <= 100 for v in res.values())
