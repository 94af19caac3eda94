"""SemSegMetricsEvaluator against references, on random predictions with ignored pixels:
a direct NumPy computation of every metric (per pixel masks, not a confusion matrix),
detectron2's own SemSegEvaluator (v0.6, installed) under its convention, per-case Dice
computed image by image, and a 2-process CPU (gloo) run against a 1-process run.

The data: K = 5 classes ("bg", "a", "b", "c", "d"); the ground truth holds only bg, a, b
(and the ignore label); "c" is predicted but never in the ground truth (the absent-class
conventions differ on it); "d" is neither in the ground truth nor predicted; in one image
"b" is absent from both ground truth and prediction (an empty/empty case for per-case Dice).
"""

import json
import math
import os
import pickle
import uuid

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

import seg_plugins  # noqa: F401  must come before detectron2 submodules (repairs the install)

# isort: split
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import SemSegEvaluator
from detectron2.utils import comm

from seg_plugins.evaluation import SemSegMetricsEvaluator
from seg_plugins.evaluation.sem_seg_metrics import DETECTRON2_BOUNDARY_KEYS, detectron2_convention

IGNORE = 255
NAMES = ["bg", "a", "b", "c", "d"]
SIZES = [(23, 31), (40, 17), (16, 16), (33, 45), (9, 61)]  # odd sizes, 5 images
EMPTY_B = 2  # the image where class "b" is neither in the ground truth nor predicted
# fork: the workers inherit the imported detectron2 (0.2 s); spawn re-imports it in each
# (about 20 s on the shared 2-core CPU) and tests nothing more of the evaluator.
START_METHOD = "fork" if "fork" in mp.get_all_start_methods() else "spawn"


def make_image(i: int, h: int, w: int):
    """(gt (H, W) uint8, logits (K, H, W) float32) of image i."""
    rng = np.random.default_rng(100 + i)
    gt = rng.integers(0, 3, size=(h, w)).astype(np.uint8)  # bg, a, b only
    logits = rng.standard_normal((len(NAMES), h, w)).astype(np.float32)
    np.put_along_axis(logits, gt[None].astype(np.int64), 1.5, axis=0)  # mostly right
    logits[4] = -10.0  # "d" never predicted
    if i == EMPTY_B:
        gt[gt == 2] = 1
        logits[2] = -10.0
    gt[rng.random((h, w)) < 0.15] = IGNORE  # predictions there must not count
    return gt, logits


def make_items(root, write: bool = True) -> list:
    """[(record dict, logits tensor)], the ground-truth PNGs under ``root`` (written unless
    ``write`` is False)."""
    items = []
    for i, (h, w) in enumerate(SIZES):
        gt, logits = make_image(i, h, w)
        path = os.path.join(str(root), f"gt_{i}.png")
        if write:
            Image.fromarray(gt).save(path)
        record = {"file_name": f"img_{i}.jpg", "sem_seg_file_name": path, "height": h, "width": w}
        items.append((record, torch.from_numpy(logits)))
    return items


def register(name: str, items) -> None:
    records = [record for record, _ in items]
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(stuff_classes=list(NAMES), ignore_label=IGNORE)


def run(evaluator, items):
    evaluator.reset()
    for record, logits in items:
        evaluator.process([record], [{"sem_seg": logits}])
    return evaluator.evaluate()


@pytest.fixture
def data(tmp_path):
    items = make_items(tmp_path)
    name = f"test_sem_seg_ref_{uuid.uuid4().hex[:8]}"
    register(name, items)
    yield name, items
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


# ----------------------------------------------------------------------------- NumPy


def pixel_counts(items):
    """Per class TP, ground-truth and predicted pixels from masks, image by image: (3, N, K)."""
    out = np.zeros((3, len(items), len(NAMES)))
    for n, (record, logits) in enumerate(items):
        gt = np.asarray(Image.open(record["sem_seg_file_name"]))
        pred = logits.numpy().argmax(0)
        valid = gt != IGNORE
        for c in range(len(NAMES)):
            g, p = (gt == c) & valid, (pred == c) & valid
            out[:, n, c] = (g & p).sum(), g.sum(), p.sum()
    return out


def numpy_metrics(items, convention: str) -> dict:
    """Every dataset-level metric, written from the definitions in docs/metrics.md."""
    tp, n_gt, n_pred = pixel_counts(items).sum(axis=1)
    with np.errstate(invalid="ignore"):
        iou, dice = tp / (n_gt + n_pred - tp), 2 * tp / (n_gt + n_pred)
        acc, prec = tp / n_gt, tp / n_pred
    present, predicted = n_gt > 0, n_pred > 0
    absent_but_predicted = ~present & predicted
    if convention == "mmseg":  # mmseg IoUMetric: nanmean of the per-class values
        miou, mdice, fgdice = np.nanmean(iou), np.nanmean(dice), np.nanmean(dice[1:])
    else:
        iou[absent_but_predicted] = dice[absent_but_predicted] = np.nan
        if convention == "detectron2_v0.6":  # absent-but-predicted count as 0 in the means
            n, n_fg = (present | predicted).sum(), (present | predicted)[1:].sum()
            miou, mdice = np.nansum(iou) / n, np.nansum(dice) / n
            fgdice = np.nansum(dice[1:]) / n_fg
        else:
            miou, mdice, fgdice = np.nanmean(iou), np.nanmean(dice), np.nanmean(dice[1:])
    res = {
        "mIoU": miou,
        "mDice": mdice,
        "fgDice": fgdice,
        "mACC": np.nanmean(acc),
        "pACC": tp.sum() / n_gt.sum(),
        "fwIoU": np.nansum(iou[present] * n_gt[present]) / n_gt.sum(),
    }
    for c, name in enumerate(NAMES):
        res.update(
            {
                f"IoU-{name}": iou[c],
                f"ACC-{name}": acc[c],
                f"Dice-{name}": dice[c],
                f"Precision-{name}": prec[c],
            }
        )
    return {key: 100 * float(value) for key, value in res.items()}


@pytest.mark.parametrize("convention", ["mmseg", "detectron2_v0.6", "detectron2_main"])
def test_every_metric_equals_a_direct_numpy_computation(data, convention):
    name, items = data
    ours = run(SemSegMetricsEvaluator(name, absent_classes=convention), items)["sem_seg"]
    expected = numpy_metrics(items, convention)
    assert set(ours) == set(expected)
    assert ours == pytest.approx(expected, rel=1e-12, abs=1e-12, nan_ok=True)
    # the data exercises the conventions: "c" predicted but absent, "d" absent everywhere
    assert math.isnan(ours["IoU-d"]) and math.isnan(ours["ACC-c"])
    assert ours["IoU-c"] == 0.0 if convention == "mmseg" else math.isnan(ours["IoU-c"])


def test_conventions_differ_only_where_documented(data):
    name, items = data
    res = {
        c: run(SemSegMetricsEvaluator(name, absent_classes=c), items)["sem_seg"]
        for c in ("mmseg", "detectron2_v0.6", "detectron2_main")
    }
    mm, v06, main = res["mmseg"], res["detectron2_v0.6"], res["detectron2_main"]
    # "c" counts as 0 (bg, a, b, c, or a, b, c for fgDice) or is left out (bg, a, b / a, b)
    for key, counted in (("mIoU", 4 / 3), ("mDice", 4 / 3), ("fgDice", 3 / 2)):
        assert mm[key] == v06[key] < main[key]
        assert main[key] == pytest.approx(v06[key] * counted)
    for key in ("mACC", "pACC", "fwIoU", "IoU-a", "Dice-b", "Precision-c"):
        assert mm[key] == v06[key] == main[key]


def test_per_case_dice_equals_numpy_image_by_image(data, tmp_path):
    name, items = data
    evaluator = SemSegMetricsEvaluator(name, per_case_dice=True, output_dir=str(tmp_path / "o"))
    res = run(evaluator, items)["sem_seg"]
    tp, n_gt, n_pred = pixel_counts(items)
    with np.errstate(invalid="ignore"):
        dice = 2 * tp / (n_gt + n_pred)  # (N, K); NaN where empty in both
    np.testing.assert_allclose(evaluator.case_dice, dice, rtol=1e-15)
    assert math.isnan(evaluator.case_dice[EMPTY_B, 2])  # empty/empty: excluded...
    assert not np.isnan(np.delete(evaluator.case_dice[:, 2], EMPTY_B)).any()  # ...only there
    expected = {f"caseDice-{n}": 100 * np.nanmean(dice[:, c]) for c, n in enumerate(NAMES[1:-1], 1)}
    expected["mCaseDice"] = np.mean(list(expected.values()))  # "d" has no defined case
    for key, value in expected.items():
        assert res[key] == pytest.approx(value, rel=1e-12), key
    assert res["caseDice-c"] == 0.0 and math.isnan(res["caseDice-d"])
    assert "caseDice-bg" not in res  # background excluded (BACKGROUND_CLASS 0)
    assert res["caseDice-b"] != pytest.approx(100 * np.mean(np.nan_to_num(dice[:, 2])))
    assert evaluator.case_files == [record["sem_seg_file_name"] for record, _ in items]
    saved = json.loads((tmp_path / "o" / "sem_seg_evaluation.json").read_text())
    assert [row["file_name"] for row in saved["per_case_dice"]] == evaluator.case_files
    assert saved["per_case_dice"][0]["a"] == pytest.approx(100 * dice[0, 1])


# ----------------------------------------------------------------------------- detectron2


def test_equals_detectron2_semseg_evaluator_under_its_convention(data):
    name, items = data
    convention = detectron2_convention()  # of the detectron2 installed: v0.6 or main
    theirs = run(SemSegEvaluator(name, distributed=False), items)["sem_seg"]
    boundary = {k for k in theirs if k.startswith(DETECTRON2_BOUNDARY_KEYS)}
    # main also reports Boundary IoU per class (ours does not); v0.6 does not
    assert bool(boundary) == (convention == "detectron2_main")
    theirs = {k: v for k, v in theirs.items() if k not in boundary}
    ours = run(SemSegMetricsEvaluator(name, absent_classes=convention), items)["sem_seg"]
    assert set(theirs) == {"mIoU", "fwIoU", "mACC", "pACC"} | {
        f"{m}-{n}" for m in ("IoU", "ACC") for n in NAMES
    }
    different = {k: (ours[k], v) for k, v in theirs.items() if not same(ours[k], v)}
    assert not different  # bit for bit, NaN where detectron2 has NaN
    mmseg = run(SemSegMetricsEvaluator(name), items)["sem_seg"]  # the default convention
    # class c is predicted but absent from the ground truth: mmseg counts its IoU as 0;
    # v0.6 reports NaN but still averages a 0 for it; main leaves it out of mIoU
    expected = {"detectron2_v0.6": ["IoU-c"], "detectron2_main": ["mIoU", "IoU-c"]}
    assert [k for k, v in theirs.items() if not same(mmseg[k], v)] == expected[convention]


# ----------------------------------------------------------------------------- 2 processes


def _worker(rank: int, world_size: int, init_file: str, root: str, out_file: str) -> None:
    torch.set_num_threads(1)  # no OpenMP pool inherited through fork
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        items = make_items(root, write=False)  # the parent wrote the files
        name = "test_sem_seg_ref_2proc"
        register(name, items)
        assert comm.get_world_size() == world_size and comm.get_rank() == rank
        cut = (len(items) + 1) // 2  # 3 + 2 images: unequal shares, contiguous as detectron2's
        mine = items[:cut] if rank == 0 else items[cut:]
        evaluator = SemSegMetricsEvaluator(name, per_case_dice=True)
        res = run(evaluator, mine)
        if rank == 0:
            payload = (res, evaluator.confusion_matrix, evaluator.case_dice, evaluator.case_files)
            with open(out_file, "wb") as f:
                pickle.dump(payload, f)
        else:
            assert res == {} and evaluator.confusion_matrix is None
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_equal_one(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    items = make_items(root)
    out_file = str(tmp_path / "rank0.pkl")
    mp.start_processes(
        _worker,
        args=(2, str(tmp_path / "init"), str(root), out_file),
        nprocs=2,
        join=True,
        start_method=START_METHOD,
    )
    with open(out_file, "rb") as f:
        res2, conf2, case2, files2 = pickle.load(f)

    name = f"test_sem_seg_ref_{uuid.uuid4().hex[:8]}"
    register(name, items)
    try:
        evaluator = SemSegMetricsEvaluator(name, per_case_dice=True)
        res1 = run(evaluator, items)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    assert np.array_equal(conf2, evaluator.confusion_matrix)
    assert conf2.sum() == sum(
        (np.asarray(Image.open(r["sem_seg_file_name"])) != IGNORE).sum() for r, _ in items
    )
    assert list(res2["sem_seg"]) == list(res1["sem_seg"])
    assert all(same(res2["sem_seg"][k], v) for k, v in res1["sem_seg"].items())
    np.testing.assert_array_equal(case2, evaluator.case_dice)  # NaN == NaN here
    assert files2 == evaluator.case_files  # per-case rows in dataset order
