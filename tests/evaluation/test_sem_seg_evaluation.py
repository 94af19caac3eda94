"""Tests of seg_plugins.evaluation.SemSegMetricsEvaluator and metrics_from_confusion (CPU).

Here ``distributed=True`` in one process must simply be a no-op; the 2-process all-reduce,
and the comparisons with NumPy and detectron2, are in test_sem_seg_metrics_reference.py.
"""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import seg_plugins  # noqa: F401  must come before detectron2 submodules (repairs the install)

# isort: split

from seg_plugins.evaluation import SemSegMetricsEvaluator, metrics_from_confusion

IGNORE = 255



def _write_label(tmp_path, label, name="gt"):
    path = tmp_path / f"{name}.png"
    Image.fromarray(np.asarray(label, dtype=np.uint8)).save(path)
    return str(path)


def _one_hot_logits(pred, k):
    """Logits of shape (K, H, W) whose argmax is ``pred``."""
    return 10.0 * torch.nn.functional.one_hot(torch.as_tensor(pred), k).permute(2, 0, 1).float()


def _evaluate(evaluator, pairs):
    """Run the evaluator over [(gt_file, logits (K, H, W))]."""
    evaluator.reset()
    for gt_file, logits in pairs:
        evaluator.process(
            [{"file_name": gt_file, "sem_seg_file_name": gt_file}], [{"sem_seg": logits}]
        )
    return evaluator.evaluate()["sem_seg"]


# Hand-computed example, K = 3 classes a, b, c. Non-ignored (gt, pred) pixels:
# (0,0) x2, (0,1), (1,1) x2, (2,2), (2,0); the ignored pixel predicts 2 and must not count.
GT = [[0, 0, 1, 1], [2, 2, IGNORE, 0]]
PRED = [[0, 1, 1, 1], [2, 0, 2, 0]]
CONF = np.array([[2, 1, 0], [0, 2, 0], [1, 0, 1]])


def test_confusion_matrix_and_metrics_by_hand(tmp_path, dataset):
    name = dataset(["a", "b", "c"])
    gt_file = _write_label(tmp_path, GT)
    res = _evaluate(
        SemSegMetricsEvaluator(name, output_dir=str(tmp_path)),
        [(gt_file, _one_hot_logits(PRED, 3))],
    )
    saved = json.loads((tmp_path / "sem_seg_evaluation.json").read_text())
    assert np.array_equal(saved["confusion_matrix"], CONF)
    # tp = [2, 2, 1]; gt = [3, 2, 2]; pred = [3, 3, 1]; union = [4, 3, 2]; 7 pixels
    iou, acc, dice, prec = (
        [2 / 4, 2 / 3, 1 / 2],
        [2 / 3, 1, 1 / 2],
        [4 / 6, 4 / 5, 2 / 3],
        [2 / 3, 2 / 3, 1],
    )
    expected = {
        "mIoU": np.mean(iou),
        "mACC": np.mean(acc),
        "mDice": np.mean(dice),
        "pACC": 5 / 7,
        "fwIoU": (3 * iou[0] + 2 * iou[1] + 2 * iou[2]) / 7,
        "fgDice": np.mean(dice[1:]),
    }
    for i, cls in enumerate("abc"):
        expected.update(
            {
                f"IoU-{cls}": iou[i],
                f"ACC-{cls}": acc[i],
                f"Dice-{cls}": dice[i],
                f"Precision-{cls}": prec[i],
            }
        )
    assert set(res) == set(expected)
    for key, value in expected.items():
        assert res[key] == pytest.approx(100 * value), key


def test_metrics_accumulate_over_images(tmp_path, dataset):
    name = dataset(["a", "b", "c"])
    gt_file = _write_label(tmp_path, GT)
    evaluator = SemSegMetricsEvaluator(name)
    twice = _evaluate(evaluator, [(gt_file, _one_hot_logits(PRED, 3))] * 2)
    once = metrics_from_confusion(CONF, ["a", "b", "c"])
    assert twice == pytest.approx(once)  # the same ratios from a matrix twice as large


def test_absent_class_convention():
    """Predicted-but-absent classes score IoU 0 and count in mIoU; classes neither in the
    ground truth nor predicted are NaN and left out; Acc only averages present classes."""
    conf = np.array([[3, 0, 1, 0], [0, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    res = metrics_from_confusion(conf, ["a", "b", "c", "d"])
    assert res["IoU-a"] == pytest.approx(75.0) and res["IoU-b"] == pytest.approx(100.0)
    assert res["IoU-c"] == 0.0 and math.isnan(res["IoU-d"])
    assert res["mIoU"] == pytest.approx((75 + 100 + 0) / 3)
    assert res["Dice-c"] == 0.0 and math.isnan(res["Dice-d"])
    assert res["mDice"] == pytest.approx((2 * 3 / 7 * 100 + 100 + 0) / 3)
    assert math.isnan(res["ACC-c"]) and math.isnan(res["ACC-d"])
    assert res["mACC"] == pytest.approx((75 + 100) / 2)
    assert res["Precision-c"] == 0.0 and math.isnan(res["Precision-d"])


def test_empty_confusion_gives_nan_means():
    res = metrics_from_confusion(np.zeros((2, 2), np.int64), ["a", "b"])
    assert all(math.isnan(res[k]) for k in ("mIoU", "fwIoU", "mACC", "pACC", "mDice"))


@pytest.mark.parametrize("ignore_from", ["metadata", "argument"])
def test_ignored_pixels_are_never_counted(tmp_path, dataset, ignore_from):
    ignore = 7
    gt = np.array([[0, 1, ignore], [ignore, 1, 0]])
    name = dataset(["a", "b"], **({"ignore_label": ignore} if ignore_from == "metadata" else {}))
    kwargs = {"ignore_label": ignore} if ignore_from == "argument" else {}
    gt_file = _write_label(tmp_path, gt)
    results = []
    for pred_at_ignored in (0, 1):
        pred = np.where(gt == ignore, pred_at_ignored, gt)
        out = tmp_path / str(pred_at_ignored)
        evaluator = SemSegMetricsEvaluator(name, output_dir=str(out), **kwargs)
        results.append(_evaluate(evaluator, [(gt_file, _one_hot_logits(pred, 2))]))
        conf = np.array(
            json.loads((out / "sem_seg_evaluation.json").read_text())["confusion_matrix"]
        )
        assert np.array_equal(conf, [[2, 0], [0, 2]])  # 4 labelled pixels, all correct
    assert results[0] == results[1] and results[0]["mIoU"] == 100.0


def test_out_of_range_label_names_the_file(tmp_path, dataset):
    name = dataset(["a", "b", "c"])
    gt_file = _write_label(tmp_path, [[0, 5], [1, IGNORE]], name="bad_label")
    evaluator = SemSegMetricsEvaluator(name)
    with pytest.raises(ValueError, match=r"bad_label\.png.*\[5\].*0\.\.2"):
        _evaluate(evaluator, [(gt_file, _one_hot_logits([[0, 0], [1, 1]], 3))])


def test_prediction_with_wrong_channel_count_raises(tmp_path, dataset):
    name = dataset(["a", "b", "c"])
    gt_file = _write_label(tmp_path, [[0, 1], [2, 2]])
    with pytest.raises(ValueError, match="3 classes.*4 channels.*NUM_CLASSES"):
        _evaluate(SemSegMetricsEvaluator(name), [(gt_file, _one_hot_logits([[0, 3], [1, 2]], 4))])


# ----------------------------------------------------------------------------- binary mode


BINARY_GT = np.array([[0, 1, 1, 0, 1], [1, 0, IGNORE, 1, 0]])
BINARY_LOGITS = torch.tensor([[[-2.0, 1.5, -0.5, 0.2, 2.0], [-1.0, -3.0, 5.0, 0.9, 1.2]]])


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.8])
def test_binary_prediction_is_thresholded_sigmoid(tmp_path, dataset, threshold):
    name = dataset(["background", "vessel"])
    gt_file = _write_label(tmp_path, BINARY_GT)
    evaluator = SemSegMetricsEvaluator(name, binary_threshold=threshold, output_dir=str(tmp_path))
    res = _evaluate(evaluator, [(gt_file, BINARY_LOGITS)])
    pred = (torch.sigmoid(BINARY_LOGITS[0]) > threshold).numpy().astype(int)
    keep = BINARY_GT != IGNORE
    conf = np.zeros((2, 2), int)
    np.add.at(conf, (BINARY_GT[keep], pred[keep]), 1)
    saved = json.loads((tmp_path / "sem_seg_evaluation.json").read_text())
    assert np.array_equal(saved["confusion_matrix"], conf)
    assert saved["class_names"] == ["background", "vessel"]
    expected = metrics_from_confusion(conf, ["background", "vessel"])
    assert set(res) - set(expected) == {"mCaseDice", "caseDice-vessel"}  # binary: per case too
    assert {k: res[k] for k in expected} == pytest.approx(expected, nan_ok=True)


def test_binary_thresholds_give_different_matrices(tmp_path, dataset):
    name = dataset(["background", "vessel"])
    gt_file = _write_label(tmp_path, BINARY_GT)
    fg_iou = [
        _evaluate(SemSegMetricsEvaluator(name, binary_threshold=t), [(gt_file, BINARY_LOGITS)])[
            "IoU-vessel"
        ]
        for t in (0.3, 0.8)
    ]
    assert fg_iou == pytest.approx([100 * 4 / 7, 100 * 2 / 5])  # TP 4 FP 2 FN 1; TP 2 FN 3


@pytest.mark.parametrize(
    "stuff_classes,expected",
    [
        (["vessel"], ["background", "vessel"]),
        (["background"], ["background", "foreground"]),
    ],
)
def test_binary_dataset_with_one_class_name(tmp_path, dataset, stuff_classes, expected):
    name = dataset(stuff_classes)
    gt_file = _write_label(tmp_path, BINARY_GT)
    res = _evaluate(SemSegMetricsEvaluator(name), [(gt_file, BINARY_LOGITS)])
    assert f"IoU-{expected[1]}" in res and f"IoU-{expected[0]}" in res


def test_binary_num_classes_argument(tmp_path, dataset):
    name = dataset([])
    gt_file = _write_label(tmp_path, BINARY_GT)
    res = _evaluate(SemSegMetricsEvaluator(name, num_classes=1), [(gt_file, BINARY_LOGITS)])
    assert "IoU-0" in res and "IoU-1" in res


def test_binary_dataset_still_accepts_two_channel_predictions(tmp_path, dataset):
    name = dataset(["background", "vessel"])
    gt_file = _write_label(tmp_path, BINARY_GT)
    pred = np.where(BINARY_GT == IGNORE, 0, BINARY_GT)
    res = _evaluate(SemSegMetricsEvaluator(name), [(gt_file, _one_hot_logits(pred, 2))])
    assert res["mIoU"] == 100.0


def test_binary_label_outside_zero_one_names_the_file(tmp_path, dataset):
    name = dataset(["background", "vessel"])
    gt_file = _write_label(tmp_path, np.where(BINARY_GT == 1, 128, BINARY_GT), name="mask_0_128")
    with pytest.raises(ValueError, match=r"mask_0_128\.png.*\[128\].*binary"):
        _evaluate(SemSegMetricsEvaluator(name), [(gt_file, BINARY_LOGITS)])


def test_one_channel_prediction_on_multiclass_dataset_raises(tmp_path, dataset):
    name = dataset(["a", "b", "c"])
    gt_file = _write_label(tmp_path, [[0, 1], [2, 2]])
    with pytest.raises(ValueError, match="3 classes.*1 channels"):
        _evaluate(SemSegMetricsEvaluator(name), [(gt_file, torch.randn(1, 2, 2))])


@pytest.mark.parametrize("threshold", [0.0, 1.0, -0.2])
def test_bad_binary_threshold_raises_at_construction(dataset, threshold):
    with pytest.raises(ValueError, match="BINARY_THRESHOLD"):
        SemSegMetricsEvaluator(dataset(["background", "vessel"]), binary_threshold=threshold)
