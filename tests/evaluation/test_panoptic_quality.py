"""Panoptic quality (seg_plugins.evaluation.panoptic) against the tools that define it:
panopticapi's ``pq_compute`` on the same cases written as COCO panoptic PNG + JSON (every
table, to 1e-6), torchmetrics' ``PanopticQuality`` where its definition agrees
(docs/metrics.md), and detectron2's ``COCOPanopticEvaluator``; then the DatasetEvaluator on
Panoptic FPN-style outputs (contiguous ids), the gather over processes, and the bound check.

The reference tools are test extras (panopticapi-lite, torchmetrics); without them the tests
that need them are skipped, and the rest still run.
"""

import seg_plugins  # noqa: F401  (first: repairs detectron2 where needed)

# isort: split
import contextlib
import copy
import io
import json
import math
import os
import types
import uuid
from typing import NamedTuple

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.coco_panoptic import load_coco_panoptic_json
from PIL import Image

from seg_plugins.evaluation import PanopticQualityEvaluator
from seg_plugins.evaluation.panoptic import CategoryStats, PQStats, image_stats, pq_tables

PERSON, CAR, BIKE, ROAD, SKY, GRASS, WATER = 1, 3, 5, 7, 9, 12, 14  # dataset ids
CATEGORIES = [
    {"id": PERSON, "name": "person", "isthing": 1},
    {"id": CAR, "name": "car", "isthing": 1},
    {"id": BIKE, "name": "bike", "isthing": 1},
    {"id": ROAD, "name": "road", "isthing": 0},
    {"id": SKY, "name": "sky", "isthing": 0},
    {"id": GRASS, "name": "grass", "isthing": 0},
    {"id": WATER, "name": "water", "isthing": 0},
]
THINGS = [c["id"] for c in CATEGORIES if c["isthing"]]
STUFF = [c["id"] for c in CATEGORIES if not c["isthing"]]
NAME = {c["id"]: c["name"] for c in CATEGORIES}
H, W = 40, 60


class Img(NamedTuple):
    gt: np.ndarray  # (H, W) segment ids, 0 = VOID
    gt_segments: dict  # {id: (category_id, iscrowd)}
    pred: np.ndarray
    pred_segments: dict  # {id: category_id}


# ------------------------------------------------------------------------------- cases


def scene():
    """Sky over road, two persons and a car."""
    ids = np.zeros((H, W), np.int64)
    ids[:15], ids[15:] = 1, 2
    ids[18:34, 5:15], ids[20:36, 25:45], ids[16:30, 48:56] = 3, 4, 5
    segments = {1: (SKY, 0), 2: (ROAD, 0), 3: (PERSON, 0), 4: (CAR, 0), 5: (PERSON, 0)}
    return ids, segments


def as_prediction(ids, segments, offset=100):
    """The same segments under other ids; crowd flags dropped."""
    pred = np.where(ids > 0, ids + offset, 0)
    return pred, {k + offset: cat for k, (cat, _) in segments.items()}


def perfect():
    gt, gs = scene()
    return [Img(gt, gs, *as_prediction(gt, gs))]


def empty():
    return [Img(*scene(), np.zeros((H, W), np.int64), {})]


def crowd():
    """A person crowd region: a prediction lying on it is no FP, one half on it is (more
    than half is needed), and a car on it is (the crowd is not the car's); the crowd is
    never a false negative."""
    gt, gs = scene()
    gt[2:12, 26:56], gs[6] = 6, (PERSON, 1)
    pred, ps = as_prediction(*scene())  # sky predicted over the crowd region
    pred[2:12, 20:32], ps[201] = 201, PERSON  # exactly half on the crowd: still FP
    pred[2:12, 32:46], ps[202] = 202, PERSON  # all on the crowd: ignored
    pred[2:12, 46:56], ps[203] = 203, CAR  # on a crowd of persons: FP
    return [Img(gt, gs, pred, ps)]


def void():
    """VOID in the ground truth: a person matches only because the union leaves out its
    pixels on VOID (IoU 60 / 100, 60 / 160 otherwise); a bike lying on VOID is no FP; and
    VOID in the prediction (unlabelled road pixels)."""
    gt, gs = scene()
    gt[28:34, 5:15] = 0  # person 3 is now rows 18:28 (100 pixels)
    gt[36:40] = 0
    pred, ps = as_prediction(*scene())
    pred[24:28, 5:15] = 102  # road
    pred[28:34, 5:15] = 103  # the person, on VOID
    pred[36:40, :30], ps[150] = 150, BIKE
    pred[15:18, :10] = 0
    return [Img(gt, gs, pred, ps)]


def split():
    """A car split in two: 60 / 40 (one TP at IoU 0.6, one FP), then 50 / 50 (IoU exactly
    0.5 is no match: one FN, two FP)."""
    images = []
    for cut in (37, 35):
        gt, gs = scene()
        pred, ps = as_prediction(gt, gs)
        pred[20:36, cut:45], ps[120] = 120, CAR
        images.append(Img(gt, gs, pred, ps))
    return images


def merged():
    """Two persons predicted as one: 160 + 96 pixels (TP + FN), then 128 + 128 (IoU 0.5:
    two FN and one FP)."""
    images = []
    for cut in (15, 13):
        gt, gs = scene()
        gt[18:34, cut:21], gs[6] = 6, (PERSON, 0)
        pred, ps = as_prediction(*scene())
        pred[18:34, 5:21] = 103
        images.append(Img(gt, gs, pred, ps))
    return images


def one_side():
    """A bike only in the ground truth (FN), grass only in the prediction (FP)."""
    gt, gs = scene()
    pred, ps = as_prediction(gt, gs)
    gt[2:8, 2:10], gs[7] = 7, (BIKE, 0)
    pred[36:40, :20], ps[160] = 160, GRASS
    return [Img(gt, gs, pred, ps)]


def _rect(rng, h, w):
    y0, x0 = rng.integers(0, h - 6), rng.integers(0, w - 6)
    return y0, y0 + rng.integers(6, 18), x0, x0 + rng.integers(6, 22)


def _jitter(rng, rect, amount=2):
    y0, y1, x0, x1 = (int(v + rng.integers(-amount, amount + 1)) for v in rect)
    return max(y0, 0), max(y1, y0 + 1), max(x0, 0), max(x1, x0 + 1)


def _present(ids, segments):
    return {k: v for k, v in segments.items() if (ids == k).any()}


def random_image(rng, *, crowd: bool, pred_void: bool, h=48, w=64) -> Img:
    """Stuff bands with things on them; the prediction moves boundaries and boxes, changes
    some categories, misses and invents things. At most one crowd region per category (the
    COCO panoptic format's rule); ``pred_void`` leaves a hole in the prediction."""
    while True:
        gt, gs = np.zeros((h, w), np.int64), {}
        pred, ps = np.zeros((h, w), np.int64), {}
        cuts = [0, *sorted(rng.choice(np.arange(8, h - 8), 2, replace=False)), h]
        stuff = [int(c) for c in rng.choice(STUFF, 3, replace=False)]
        for i, cat in enumerate(stuff):
            gt[cuts[i] : cuts[i + 1]], gs[i + 1] = i + 1, (cat, 0)
        pred_cuts = [cuts[0], *(c + int(rng.integers(-3, 4)) for c in cuts[1:3]), h]
        pred_stuff = list(stuff)
        if rng.random() < 0.3:  # one band of another stuff class (distinct, as in COCO)
            pred_stuff[int(rng.integers(3))] = next(c for c in STUFF if c not in stuff)
        for i, cat in enumerate(pred_stuff):
            pred[pred_cuts[i] : pred_cuts[i + 1]], ps[101 + i] = 101 + i, cat
        crowd_cats = set()
        for sid in range(10, 10 + int(rng.integers(2, 7))):
            cat, rect = int(rng.choice(THINGS)), _rect(rng, h, w)
            is_crowd = crowd and cat not in crowd_cats and rng.random() < 0.3
            crowd_cats |= {cat} if is_crowd else set()
            gt[rect[0] : rect[1], rect[2] : rect[3]], gs[sid] = sid, (cat, int(is_crowd))
            if rng.random() < 0.8:
                pcat = cat if rng.random() < 0.85 else int(rng.choice(THINGS))
                y0, y1, x0, x1 = _jitter(rng, rect)
                pred[y0:y1, x0:x1], ps[100 + sid] = 100 + sid, pcat
        for sid in range(200, 200 + int(rng.integers(0, 3))):  # invented things
            y0, y1, x0, x1 = _rect(rng, h, w)
            pred[y0:y1, x0:x1], ps[sid] = sid, int(rng.choice(THINGS))
        if rng.random() < 0.7:
            y0, y1, x0, x1 = _rect(rng, h, w)
            gt[y0:y1, x0:x1] = 0
        if pred_void:
            y0, y1, x0, x1 = _rect(rng, h, w)
            pred[y0:y1, x0:x1] = 0
        gs, ps = _present(gt, gs), _present(pred, ps)
        if any(cat in THINGS and not c for cat, c in gs.values()):
            return Img(gt, gs, pred, ps)


def random_case(seed, *, crowd=True, pred_void=True, n=3):
    rng = np.random.default_rng(seed)
    return [random_image(rng, crowd=crowd, pred_void=pred_void) for _ in range(n)]


CASES = {
    "perfect": perfect,
    "empty": empty,
    "crowd": crowd,
    "void": void,
    "split": split,
    "merged": merged,
    "one_side": one_side,
    **{f"random{s}": (lambda s=s: random_case(s)) for s in range(4)},
}
# no crowd, no VOID in the prediction: where torchmetrics' definition is COCO's
TORCHMETRICS_CASES = {
    "perfect": perfect,
    "split": split,
    "merged": merged,
    "one_side": one_side,
    **{
        f"random{s}": (lambda s=s: random_case(s, crowd=False, pred_void=False))
        for s in (10, 11, 12)
    },
}


def our_tables(images):
    stats = PQStats.sum(image_stats(*img, image=f"image {i}") for i, img in enumerate(images))
    return stats, pq_tables(stats, CATEGORIES)


# ------------------------------------------------------------------- COCO panoptic files


def id_to_rgb(ids):
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


def write_coco_panoptic(images, root):
    """Ground truth and prediction as COCO panoptic folders + JSONs, and a tiny JPEG per
    image (detectron2's loader wants one). Ids are spread over all three channels."""
    paths = {k: os.path.join(root, k) for k in ("gt", "pred", "images")}
    for path in paths.values():
        os.makedirs(path, exist_ok=True)
    gt_anns, pred_anns, infos = [], [], []
    for i, img in enumerate(images):
        big = 70000  # segment ids use G and B too
        png = f"{i}.png"
        Image.fromarray(id_to_rgb(np.where(img.gt > 0, img.gt + big, 0))).save(
            os.path.join(paths["gt"], png)
        )
        Image.fromarray(id_to_rgb(img.pred)).save(os.path.join(paths["pred"], png))
        Image.new("RGB", (W, H)).save(os.path.join(paths["images"], f"{i}.jpg"))
        infos.append({"id": i, "file_name": f"{i}.jpg", "height": H, "width": W})
        gt_anns.append(
            {
                "image_id": i,
                "file_name": png,
                "segments_info": [
                    {
                        "id": k + big,
                        "category_id": cat,
                        "iscrowd": int(c),
                        "area": int((img.gt == k).sum()),
                    }
                    for k, (cat, c) in img.gt_segments.items()
                ],
            }
        )
        pred_anns.append(
            {
                "image_id": i,
                "file_name": png,
                "segments_info": [
                    {"id": k, "category_id": cat} for k, cat in img.pred_segments.items()
                ],
            }
        )
    files = {"gt_json": os.path.join(root, "gt.json"), "pred_json": os.path.join(root, "pred.json")}
    with open(files["gt_json"], "w") as f:
        json.dump({"images": infos, "annotations": gt_anns, "categories": CATEGORIES}, f)
    with open(files["pred_json"], "w") as f:
        json.dump({"images": infos, "annotations": pred_anns, "categories": CATEGORIES}, f)
    return {**paths, **files}


class _SerialPool:
    """Stands in for ``multiprocessing.Pool`` inside panopticapi: its per-core function runs
    here, one call after another. pq_compute's arithmetic is unchanged; no process holding
    torch is forked and no pool is left open."""

    def __init__(self, processes=None):
        """No worker: ``apply_async`` runs the call at once."""

    def apply_async(self, fn, args):
        result = fn(*args)
        return types.SimpleNamespace(get=lambda: result)

    def close(self):
        """Nothing to close (upstream panopticapi closes its pool; panopticapi-lite 0.2.0
        does not)."""


@pytest.fixture
def pq_compute(monkeypatch):
    evaluation = pytest.importorskip("panopticapi.evaluation")
    serial = types.SimpleNamespace(Pool=_SerialPool, cpu_count=lambda: 1)
    monkeypatch.setattr(evaluation, "multiprocessing", serial)

    def run(files):
        with contextlib.redirect_stdout(io.StringIO()):
            return evaluation.pq_compute(
                files["gt_json"], files["pred_json"], files["gt"], files["pred"]
            )

    return run


def assert_same_as_pq_compute(ours, theirs, stats):
    for group in ("All", "Things", "Stuff"):
        assert ours[group]["n"] == theirs[group]["n"], group
        for key in ("PQ", "SQ", "RQ"):
            assert ours[group][key] == pytest.approx(100 * theirs[group][key.lower()], abs=1e-6)
    assert sorted(theirs["per_class"]) == sorted(c["id"] for c in CATEGORIES)
    for row in ours["per_class"]:
        ref = theirs["per_class"][row["id"]]
        s = stats[row["id"]]
        for key in ("PQ", "SQ", "RQ"):
            if s.tp + s.fp + s.fn == 0:  # pq_compute: 0 and left out of the means; ours: NaN
                assert math.isnan(row[key]) and ref[key.lower()] == 0
            else:
                assert row[key] == pytest.approx(100 * ref[key.lower()], abs=1e-6), (row, key)


# ---------------------------------------------------------------------- against the tools


@pytest.mark.parametrize("case", list(CASES))
def test_equals_pq_compute(case, tmp_path, pq_compute):
    images = CASES[case]()
    stats, ours = our_tables(images)
    theirs = pq_compute(write_coco_panoptic(images, str(tmp_path)))
    assert_same_as_pq_compute(ours, theirs, stats)


def test_cases_exercise_what_they_say():
    """The hand-made cases hold the situations they are named after (with the numbers the
    definition gives), so the comparison above covers each rule."""
    assert our_tables(perfect())[1]["All"]["PQ"] == 100
    stats, tables = our_tables(empty())
    assert tables["All"]["PQ"] == 0 and stats[PERSON] == CategoryStats(0, 0, 2, 0.0)
    stats, _ = our_tables(crowd())
    assert stats[PERSON][:3] == (2, 1, 0) and stats[CAR][:3] == (1, 1, 0)
    stats, _ = our_tables(void())
    assert stats[PERSON].tp == 2 and stats[BIKE] == CategoryStats()
    assert stats[PERSON].iou == pytest.approx(1 + 60 / 100)
    stats, _ = our_tables(split())
    assert stats[CAR] == CategoryStats(1, 3, 1, pytest.approx(0.6))
    stats, _ = our_tables(merged())
    assert stats[PERSON] == CategoryStats(3, 1, 3, pytest.approx(2 + 160 / 256))
    stats, tables = our_tables(one_side())
    assert stats[BIKE] == CategoryStats(0, 0, 1, 0.0) and stats[GRASS] == CategoryStats(0, 1, 0)
    assert tables["Stuff"]["n"] == 3
    random_stats = [our_tables(random_case(s))[0] for s in range(4)]
    assert sum(s[c].tp for s in random_stats for c in THINGS) > 10
    assert all(sum(s[c].fp + s[c].fn for c in THINGS) > 0 for s in random_stats)
    flags = [c for s in range(4) for img in random_case(s) for _, c in img.gt_segments.values()]
    assert any(flags)  # the random cases hold crowd regions too


def to_torchmetrics(ids, categories):
    """(1, H, W, 2) (category, instance); VOID = a category torchmetrics does not know."""
    out = np.zeros(ids.shape + (2,), np.int64)
    out[..., 0] = 255
    for sid, cat in categories.items():
        out[ids == sid] = (cat, sid)
    return torch.from_numpy(out)[None]


def torchmetrics_pq(images):
    detection = pytest.importorskip("torchmetrics.detection")
    kwargs = dict(things=set(THINGS), stuffs=set(STUFF), allow_unknown_preds_category=True)
    per_class = detection.PanopticQuality(**kwargs, return_sq_and_rq=True, return_per_class=True)
    average = detection.PanopticQuality(**kwargs, return_sq_and_rq=True)
    for img in images:
        pred = to_torchmetrics(img.pred, img.pred_segments)
        target = to_torchmetrics(img.gt, {k: cat for k, (cat, _) in img.gt_segments.items()})
        per_class.update(pred, target)
        average.update(pred, target)
    order = sorted(THINGS) + sorted(STUFF)  # torchmetrics' order of classes
    rows = per_class.compute().reshape(len(order), 3).tolist()
    return 100 * average.compute().numpy(), {cat: np.array(r) * 100 for cat, r in zip(order, rows)}


@pytest.mark.parametrize("case", list(TORCHMETRICS_CASES))
def test_equals_torchmetrics_without_crowd_and_prediction_void(case):
    images = TORCHMETRICS_CASES[case]()
    assert not any(c for img in images for _, c in img.gt_segments.values())
    stats, ours = our_tables(images)
    average, per_class = torchmetrics_pq(images)
    np.testing.assert_allclose([ours["All"][k] for k in ("PQ", "SQ", "RQ")], average, atol=1e-6)
    for row in ours["per_class"]:
        if not math.isnan(row["PQ"]):  # torchmetrics: 0 for a class without TP, FP, FN
            np.testing.assert_allclose(
                [row[k] for k in ("PQ", "SQ", "RQ")], per_class[row["id"]], atol=1e-6
            )


@pytest.mark.parametrize(
    "case, category",
    [(crowd, PERSON), (void, ROAD)],  # crowd: an FN there; VOID in the prediction: a smaller union
)
def test_torchmetrics_differs_where_docs_say(case, category):
    """docs/metrics.md: torchmetrics knows no crowd regions, and leaves the ground truth's
    pixels that the prediction leaves VOID out of the union."""
    images = case()
    _, ours = our_tables(images)
    _, per_class = torchmetrics_pq(images)
    row = next(r for r in ours["per_class"] if r["id"] == category)
    key = "RQ" if case is crowd else "SQ"
    theirs = per_class[category][["PQ", "SQ", "RQ"].index(key)]
    assert (theirs < row[key]) if case is crowd else (theirs > row[key])


# --------------------------------------------------------------------- the bound check


@pytest.mark.parametrize(
    "bad, message",
    [
        (CategoryStats(2, 0, 0, 2.5), "iou_sum=2.5"),  # SQ would be 125
        (CategoryStats(1, -1, 0, 0.9), "fp=-1"),  # RQ would be 200
        (CategoryStats(2, -2, 0, 1.5), "fp=-2"),  # TP + FP + FN = 0: would pass as absent
        (CategoryStats(0, 1, 1, 0.7), "iou_sum=0.7"),  # PQ 70 with RQ 0
        (CategoryStats(1, 0, 0, float("nan")), "iou_sum=nan"),
    ],
)
def test_corrupted_stats_are_an_error_naming_the_inputs(bad, message):
    stats = PQStats({PERSON: (3, 1, 0, 2.4), CAR: bad})
    with pytest.raises(ValueError, match=message) as err:
        pq_tables(stats, CATEGORIES, source="dataset 'tiny_val' (4 images)")
    assert "category 3 'car'" in str(err.value)
    assert "dataset 'tiny_val' (4 images)" in str(err.value)
    pq_tables(PQStats({PERSON: (3, 1, 0, 2.4)}), CATEGORIES)  # the valid part alone passes


def test_figures_outside_the_bounds_are_an_error(monkeypatch):
    """The check on the figures themselves, past the counts' check (a wrong formula)."""
    from seg_plugins.evaluation import panoptic

    monkeypatch.setattr(panoptic, "_check_stats", lambda *args: None)
    with pytest.raises(ValueError, match=r"PQ of category 1 'person' is 150.0, outside \[0, 100\]"):
        pq_tables(PQStats({PERSON: (2, 0, 0, 3.0)}), CATEGORIES, source="x")
    with pytest.raises(ValueError, match="not among the dataset's categories"):
        pq_tables(PQStats({4: (1, 0, 0, 0.9)}), CATEGORIES)


def test_inconsistent_id_maps_are_an_error():
    gt, gs = scene()
    pred, ps = as_prediction(gt, gs)
    with pytest.raises(ValueError, match=r"img\.png: the predicted id map has segment ids \[105\]"):
        image_stats(gt, gs, pred, {k: v for k, v in ps.items() if k != 105}, image="img.png")
    with pytest.raises(ValueError, match=r"predicted segments \[300\] are listed but have no"):
        image_stats(gt, gs, pred, {**ps, 300: CAR}, image="img.png")
    with pytest.raises(ValueError, match="ground truth is"):
        image_stats(gt, gs, pred[:, :-1], ps, image="img.png")


def test_stats_add_up_over_images():
    images = random_case(3)
    parts = [image_stats(*img) for img in images]
    total = PQStats.sum(parts)
    assert total == parts[0] + parts[1] + parts[2] and total != parts[0]
    assert total[PERSON].tp == sum(p[PERSON].tp for p in parts)


# --------------------------------------------------------- the detectron2 DatasetEvaluator


@pytest.fixture
def panoptic_dataset(tmp_path):
    """Metadata as detectron2's COCO panoptic *separated* datasets have it (Panoptic FPN's):
    contiguous thing ids, stuff ids 1.. with 0 the semantic branch's merged "things";
    records from detectron2's ``load_coco_panoptic_json``; predictions in Panoptic FPN's
    format. Yields (name, records, outputs, images, files)."""
    images = crowd() + void() + split() + merged() + one_side()
    files = write_coco_panoptic(images, str(tmp_path / "data"))
    things = {d: i for i, d in enumerate(THINGS)}
    stuff = {0: 0, **{d: i + 1 for i, d in enumerate(STUFF)}}
    meta = {
        "thing_dataset_id_to_contiguous_id": things,
        "stuff_dataset_id_to_contiguous_id": stuff,
        "thing_classes": [NAME[d] for d in THINGS],
        "stuff_classes": ["things"] + [NAME[d] for d in STUFF],
    }
    name = f"test_panoptic_{uuid.uuid4().hex[:8]}"
    MetadataCatalog.get(name).set(panoptic_json=files["gt_json"], panoptic_root=files["gt"], **meta)
    records = load_coco_panoptic_json(files["gt_json"], files["images"], files["gt"], meta)
    outputs = []
    for img in images:
        info = [
            {"id": k, "isthing": cat in things, "category_id": things.get(cat, stuff.get(cat))}
            for k, cat in img.pred_segments.items()
        ]
        outputs.append({"panoptic_seg": (torch.from_numpy(img.pred).int(), info)})
    yield name, records, outputs, images, files
    MetadataCatalog.remove(name)


def run(evaluator, records, outputs):
    evaluator.reset()
    for record, output in zip(records, outputs):  # batches of one, as detectron2's loader
        evaluator.process([record], [copy.deepcopy(output)])
    return evaluator.evaluate()["panoptic_seg"]


def test_evaluator_equals_the_core_and_pq_compute(panoptic_dataset, pq_compute, tmp_path):
    name, records, outputs, images, files = panoptic_dataset
    assert records[0]["segments_info"][0]["isthing"] is not None  # contiguous ids + isthing
    evaluator = PanopticQualityEvaluator(name, output_dir=str(tmp_path / "out"))
    res = run(evaluator, records, outputs)
    stats, tables = our_tables(images)
    assert evaluator.stats == stats
    assert_same_as_pq_compute(evaluator.tables, pq_compute(files), stats)
    expected = {}
    for group, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
        expected.update({k + suffix: tables[group][k] for k in ("PQ", "SQ", "RQ")})
    for row in tables["per_class"]:
        expected.update({f"{k}-{row['name']}": row[k] for k in ("PQ", "SQ", "RQ")})
    assert list(res) == list(expected)
    np.testing.assert_array_equal(list(res.values()), list(expected.values()))  # NaN == NaN
    with open(tmp_path / "out" / "panoptic_evaluation.json") as f:
        written = json.load(f)
    assert written["panoptic_seg"] == pytest.approx(dict(res), nan_ok=True)
    assert written["num_images"] == 7 and written["All"]["n"] == tables["All"]["n"]
    assert os.listdir(tmp_path / "out") == ["panoptic_evaluation.json"]  # no temporary left


def test_evaluator_reads_the_panoptic_json_without_record_keys(panoptic_dataset):
    """Records without pan_seg_file_name / segments_info (detectron2's separated datasets
    merge instance and semantic records) take their ground truth from panoptic_json."""
    name, records, outputs, images, _ = panoptic_dataset
    bare = [{"file_name": r["file_name"], "image_id": r["image_id"]} for r in records]
    evaluator = PanopticQualityEvaluator(name)
    run(evaluator, bare, outputs)
    assert evaluator.stats == our_tables(images)[0]


def test_detectron2_dataset_mapper_keeps_the_ground_truth_keys(panoptic_dataset):
    from detectron2.data import DatasetMapper

    record = panoptic_dataset[1][0]
    mapped = DatasetMapper(is_train=False, augmentations=[], image_format="RGB")(record)
    assert mapped["pan_seg_file_name"] == record["pan_seg_file_name"]
    assert mapped["segments_info"] == record["segments_info"]


def test_merged_things_stuff_class_counts_as_void(panoptic_dataset):
    """Stuff contiguous id 0 (Panoptic FPN's "things" of the semantic branch) maps to
    dataset id 0 = VOID: its pixels count as unlabelled, as if the segment were absent."""
    name, records, outputs, images, _ = panoptic_dataset
    seg, info = outputs[0]["panoptic_seg"]
    info = info + [{"id": 999, "isthing": False, "category_id": 0}]
    seg = seg.clone()
    seg[36:40, 40:60] = 999
    evaluator = PanopticQualityEvaluator(name)
    run(evaluator, records[:1], [{"panoptic_seg": (seg, info)}])
    img = images[0]
    pred = np.where(seg.numpy() == 999, 0, seg.numpy())
    assert evaluator.stats == image_stats(img.gt, img.gt_segments, pred, img.pred_segments)
    assert evaluator.stats != our_tables(images[:1])[0]  # the region mattered


def test_shared_contiguous_ids(panoptic_dataset):
    """Metadata with one contiguous space for things and stuff (detectron2's standard COCO
    and Cityscapes panoptic datasets): records without ``isthing`` (its Cityscapes loader)
    and outputs with ``segments_info`` None (ids = contiguous category * label_divisor +
    instance, -1 VOID, as Panoptic-DeepLab gives them)."""
    _, _, _, images, files = panoptic_dataset
    contiguous = {d: i for i, d in enumerate(THINGS + STUFF)}
    meta = {
        "thing_dataset_id_to_contiguous_id": {d: contiguous[d] for d in THINGS},
        "stuff_dataset_id_to_contiguous_id": {d: contiguous[d] for d in STUFF},
        "thing_classes": [NAME[d] for d in THINGS + STUFF],
        "stuff_classes": [NAME[d] for d in THINGS + STUFF],
    }
    name = f"test_panoptic_{uuid.uuid4().hex[:8]}"
    MetadataCatalog.get(name).set(label_divisor=1000, **meta)
    try:
        records = load_coco_panoptic_json(files["gt_json"], files["images"], files["gt"], meta)
        for record in records:
            for s in record["segments_info"]:
                del s["isthing"]
        outputs = []
        for img in images:
            ids = np.full(img.pred.shape, -1, np.int64)
            for k, cat in img.pred_segments.items():
                ids[img.pred == k] = 1000 * contiguous[cat] + k % 1000
            outputs.append({"panoptic_seg": (torch.from_numpy(ids), None)})
        evaluator = PanopticQualityEvaluator(name)
        run(evaluator, records, outputs)
        assert evaluator.stats == our_tables(images)[0]
    finally:
        MetadataCatalog.remove(name)


def test_label_divisor_needs_one_contiguous_space(panoptic_dataset):
    """Under separated metadata contiguous thing 1 and stuff 1 are two classes: ids
    category * label_divisor + instance cannot say which, and that is an error."""
    name, records, _, images, _ = panoptic_dataset
    MetadataCatalog.get(name).set(label_divisor=1000)
    seg = torch.from_numpy(np.where(images[0].pred > 0, 1000 + images[0].pred, -1))
    with pytest.raises(ValueError, match="thing and stuff contiguous ids overlap"):
        run(PanopticQualityEvaluator(name), records[:1], [{"panoptic_seg": (seg, None)}])


def test_gathers_the_counts_of_all_processes(panoptic_dataset, monkeypatch):
    """Two processes' counts (3 + 4 images) summed on the main one; the others return {}."""
    from detectron2.utils import comm

    name, records, outputs, images, _ = panoptic_dataset
    other = PanopticQualityEvaluator(name)
    for record, output in zip(records[3:], outputs[3:]):
        other.process([record], [output])
    evaluator = PanopticQualityEvaluator(name)
    for record, output in zip(records[:3], outputs[:3]):
        evaluator.process([record], [output])
    gathered = []
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    monkeypatch.setattr(
        comm, "gather", lambda data, dst=0: gathered.append(data) or [data, (other._stats, 4)]
    )
    monkeypatch.setattr(comm, "is_main_process", lambda: True)
    res = evaluator.evaluate()["panoptic_seg"]
    assert gathered[0][1] == 3
    stats, tables = our_tables(images)
    assert evaluator.stats.per_category.keys() == stats.per_category.keys()
    for category, counts in stats.per_category.items():  # the IoU sums added in another order
        assert evaluator.stats[category] == (*counts[:3], pytest.approx(counts.iou, abs=1e-12))
    assert res["PQ"] == pytest.approx(tables["All"]["PQ"], abs=1e-9)
    monkeypatch.setattr(comm, "is_main_process", lambda: False)
    assert evaluator.evaluate() == {}


def test_equals_detectron2_coco_panoptic_evaluator(panoptic_dataset, pq_compute, tmp_path):
    pytest.importorskip("panopticapi")
    from detectron2.evaluation import COCOPanopticEvaluator

    name, records, outputs, _, _ = panoptic_dataset
    theirs = run(COCOPanopticEvaluator(name, output_dir=str(tmp_path)), records, outputs)
    ours = run(PanopticQualityEvaluator(name), records, outputs)
    assert sorted(theirs) == sorted(k for k in ours if "-" not in k)
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(value, abs=1e-6), key


def test_unknown_contiguous_category_is_an_error(panoptic_dataset):
    name, records, outputs, _, _ = panoptic_dataset
    seg, info = outputs[0]["panoptic_seg"]
    bad = [dict(s, category_id=17) if s["isthing"] else s for s in info]
    with pytest.raises(ValueError, match="thing category_id 17, which thing_dataset_id_to_"):
        run(PanopticQualityEvaluator(name), records[:1], [{"panoptic_seg": (seg, bad)}])


def test_from_config_and_registered_datasets(tmp_path):
    """The evaluator builds from a config like the others, and from detectron2's metadata
    of its builtin COCO panoptic datasets (133 categories, as pq_compute's JSON has)."""
    from detectron2.config import get_cfg  # (detectron2.data registered the builtin sets)

    for builtin in ("coco_2017_val_panoptic_separated", "coco_2017_val_panoptic"):
        evaluator = PanopticQualityEvaluator(get_cfg(), builtin, output_dir=str(tmp_path))
        assert len(evaluator.categories) == 133
        assert sum(c["isthing"] for c in evaluator.categories) == 80
        names = [c["name"] for c in evaluator.categories]
        assert "person" in names and len(set(names)) == 133
    assert "coco_2017_val_panoptic_separated" in DatasetCatalog.list()
