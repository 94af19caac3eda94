"""Agreement with the official Cityscapes evaluation (cityscapesscripts), on a tiny
Cityscapes-format set made by ``cityscapes_fixture`` (Cityscapes' own converters).

Semantic: SemSegMetricsEvaluator on labelTrainIds equals cityscapesscripts'
evalPixelLevelSemanticLabeling on labelIds, class by class and in the mean. Both drop pixels
whose ground truth is a void class (trainId 255 <=> ignoreInEval), and both average IoU over
the classes with TP + FP + FN > 0: a class absent from the ground truth but predicted scores
0 and counts, one neither present nor predicted is NaN and left out. That is
SemSegMetricsEvaluator's default absent-class convention, which these tests require.

Instance: detectron2's CityscapesInstanceEvaluator (evalInstanceLevelSemanticLabeling) and
COCOEvaluator through the Trainer's evaluator choice.
"""

import os
import uuid
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

import seg_plugins  # noqa: F401  must come before detectron2 submodules (repairs the install)

# isort: split
import cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling as cs_pixel
from cityscapesscripts.helpers.labels import id2label, trainId2label
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.cityscapes import (
    load_cityscapes_instances,
    load_cityscapes_semantic,
)
from detectron2.evaluation import (
    CityscapesSemSegEvaluator,
    COCOEvaluator,
    DatasetEvaluators,
    inference_on_dataset,
)
from detectron2.structures import Boxes, Instances

from seg_plugins import add_seg_plugins_config, compat
from seg_plugins.engine import Trainer
from seg_plugins.evaluation import AtomicCOCOEvaluator, SemSegMetricsEvaluator
from seg_plugins.evaluation.cityscapes import (
    CityscapesOfficialInstanceEvaluator,
    CityscapesOfficialSemSegEvaluator,
    cityscapes_train_names,
)
from seg_plugins.evaluation.visualizer import SemSegVisualizer
from tests.evaluation.cityscapes_fixture import gt_file, make_cityscapes

# cityscapesscripts 2.3.0 calls np.in1d (deprecated in numpy 2.0, removed in 2.4; setup.py
# pins numpy < 2.4). Third-party; the results are unaffected.
pytestmark = pytest.mark.filterwarnings("ignore:.*in1d.*:DeprecationWarning")


NUM_CLASSES = 19
BUS = 15  # trainId of "bus": never in the ground truth, predicted in a corner below


@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory):
    """The generated set, registered as a semantic and an instance dataset (detectron2's
    loaders and builtin "cityscapes" metadata, as for cityscapes_fine_*_val)."""
    root = tmp_path_factory.mktemp("cityscapes")
    image_dir, gt_dir = make_cityscapes(root)
    tag = uuid.uuid4().hex[:8]
    sem, inst = f"cs_sem_{tag}", f"cs_inst_{tag}"
    meta = compat.cityscapes_metadata()
    DatasetCatalog.register(sem, lambda: load_cityscapes_semantic(image_dir, gt_dir))
    MetadataCatalog.get(sem).set(
        image_dir=image_dir, gt_dir=gt_dir, evaluator_type="cityscapes_sem_seg",
        ignore_label=255, **meta,
    )
    # from_json=False: the polygon path needs shapely, which detectron2 does not require.
    DatasetCatalog.register(
        inst, lambda: load_cityscapes_instances(image_dir, gt_dir, from_json=False)
    )
    MetadataCatalog.get(inst).set(
        image_dir=image_dir, gt_dir=gt_dir, evaluator_type=["cityscapes_instance", "coco"],
        **meta,
    )
    yield {"root": root, "gt_dir": gt_dir, "sem": sem, "inst": inst}
    for name in (sem, inst):
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def _prediction(record) -> torch.Tensor:
    """Logits of shape (19, H, W): the ground-truth trainIds, perturbed. Void pixels get a
    class, 10% of pixels a random one of trainIds 0..13 (so wall, fence, terrain, rider, ...
    are predicted though absent), a corner is "bus" (absent, predicted); truck, train,
    motorcycle and bicycle are neither present nor predicted."""
    gt = np.asarray(Image.open(record["sem_seg_file_name"])).astype(np.int64)
    rng = np.random.default_rng(zlib.crc32(os.path.basename(record["file_name"]).encode()))
    pred = gt.copy()
    void = pred == 255
    pred[void] = rng.integers(0, 14, int(void.sum()))
    flip = rng.random(pred.shape) < 0.1
    pred[flip] = rng.integers(0, 14, int(flip.sum()))
    pred[:6, :10] = BUS
    return 10.0 * torch.nn.functional.one_hot(torch.from_numpy(pred), NUM_CLASSES).permute(
        2, 0, 1
    ).float()


def _run(evaluator, records, predictions):
    evaluator.reset()
    for record in records:
        evaluator.process([record], [{"sem_seg": predictions[record["file_name"]]}])
    return evaluator.evaluate()


def _official_class_iou(records, predictions, tmp_path, monkeypatch):
    """cityscapesscripts itself on labelId prediction PNGs (the submission format):
    {class name: IoU in [0, 1] or NaN} and the mean it reports."""
    monkeypatch.setattr(cs_pixel.args, "quiet", True)
    monkeypatch.setattr(cs_pixel.args, "JSONOutput", False)
    to_id = np.full(256, 255, np.uint8)
    for train_id in range(NUM_CLASSES):
        to_id[train_id] = trainId2label[train_id].id
    preds, gts = [], []
    for record in records:
        path = tmp_path / os.path.basename(record["file_name"]).replace("leftImg8bit", "pred")
        train_ids = predictions[record["file_name"]].argmax(0).numpy()
        Image.fromarray(to_id[train_ids]).save(path)
        preds.append(str(path))
        gts.append(gt_file(record["file_name"], "labelIds"))
    result = cs_pixel.evaluateImgLists(preds, gts, cs_pixel.args)
    return result["classScores"], result["averageScoreClasses"]


def test_generated_set_is_cityscapes_format(cityscapes):
    records = DatasetCatalog.get(cityscapes["sem"])
    assert len(records) == 4
    seen_ids, seen_instances = set(), set()
    for record in records:
        ids = np.asarray(Image.open(gt_file(record["file_name"], "labelIds")))
        train_ids = np.asarray(Image.open(record["sem_seg_file_name"]))
        # createTrainIdLabelImgs rasterised the same polygons with labels.py's trainIds.
        lut = np.array([id2label[i].trainId if i in id2label else 0 for i in range(256)])
        np.testing.assert_array_equal(np.where(lut[ids] < 0, 255, lut[ids]), train_ids)
        assert (record["height"], record["width"]) == ids.shape == (64, 128)
        seen_ids |= set(np.unique(ids).tolist())
        inst = np.asarray(Image.open(gt_file(record["file_name"], "instanceIds")))
        seen_instances |= set(np.unique(inst[inst >= 24]).tolist())
    assert {0, 1, 4} <= seen_ids  # void: unlabeled, ego vehicle, static
    assert {7, 8, 11, 17, 20, 21, 23, 24, 26} <= seen_ids
    assert {24000, 24001, 26000, 26001, 26} <= seen_instances  # 26: the "cargroup" crowd


def test_semantic_metrics_equal_cityscapesscripts(cityscapes, tmp_path, monkeypatch):
    records = DatasetCatalog.get(cityscapes["sem"])
    predictions = {r["file_name"]: _prediction(r) for r in records}
    # The default absent-class convention (mean over classes with TP + FP + FN > 0) is the
    # official one; pass it explicitly here once SemSegMetricsEvaluator makes it selectable.
    ours = _run(SemSegMetricsEvaluator(cityscapes["sem"], distributed=False), records,
                predictions)["sem_seg"]
    detectron2_official = _run(CityscapesSemSegEvaluator(cityscapes["sem"]), records,
                               predictions)["sem_seg"]
    class_iou, mean_iou = _official_class_iou(records, predictions, tmp_path, monkeypatch)

    names = cityscapes_train_names()
    assert MetadataCatalog.get(cityscapes["sem"]).stuff_classes == names
    for name in names:
        if np.isnan(class_iou[name]):
            assert np.isnan(ours[f"IoU-{name}"]), name
        else:
            assert ours[f"IoU-{name}"] == pytest.approx(100 * class_iou[name], abs=1e-9), name
    assert ours["mIoU"] == pytest.approx(100 * mean_iou, abs=1e-9)
    assert ours["mIoU"] == pytest.approx(detectron2_official["IoU"], abs=1e-9)
    # The conventions are exercised: absent + predicted -> 0, absent + unpredicted -> NaN.
    assert class_iou["bus"] == 0 and class_iou["wall"] == 0
    assert np.isnan(class_iou["train"]) and np.isnan(class_iou["bicycle"])
    assert 20 < ours["mIoU"] < 90


def _cfg(tmp_path, arch, *opts):
    cfg = get_cfg()
    add_seg_plugins_config(cfg)
    cfg.merge_from_list(
        ["MODEL.META_ARCHITECTURE", arch, "OUTPUT_DIR", str(tmp_path), "MODEL.DEVICE", "cpu",
         "DATALOADER.NUM_WORKERS", 0, "INPUT.MIN_SIZE_TEST", 64, *opts]
    )
    return cfg


class _FakeModel(torch.nn.Module):
    """Returns precomputed outputs by file name, as a detectron2 model would."""

    def __init__(self, outputs):
        super().__init__()
        self._outputs = outputs

    def forward(self, batch):
        return [self._outputs[x["file_name"]] for x in batch]


def test_trainer_reports_ours_and_official_semantic_numbers(cityscapes, tmp_path):
    cfg = _cfg(tmp_path, "UNet")
    name = cityscapes["sem"]
    evaluator = Trainer.build_evaluator(cfg, name)
    assert isinstance(evaluator, DatasetEvaluators)
    kinds = [type(e) for e in evaluator._evaluators]
    assert kinds == [SemSegMetricsEvaluator, SemSegVisualizer, CityscapesOfficialSemSegEvaluator]

    records = DatasetCatalog.get(name)
    outputs = {r["file_name"]: {"sem_seg": _prediction(r)} for r in records}
    results = inference_on_dataset(
        _FakeModel(outputs), Trainer.build_test_loader(cfg, name), evaluator
    )
    assert set(results) == {"sem_seg", "cityscapes_sem_seg"}  # no duplicate "sem_seg" key
    official = results["cityscapes_sem_seg"]
    assert set(official) == {"IoU", "iIoU", "IoU_sup", "iIoU_sup"}
    assert results["sem_seg"]["mIoU"] == pytest.approx(official["IoU"], abs=1e-9)
    assert os.path.isfile(tmp_path / "inference" / name / "sem_seg_evaluation.json")


def _instances(record, thing_classes, drop=()):
    """Predictions made from the ground-truth instance masks (ids >= 1000), score 0.9."""
    ids = np.asarray(Image.open(gt_file(record["file_name"], "instanceIds")))
    masks, classes = [], []
    for inst_id in np.unique(ids[ids >= 1000]):
        label = id2label[int(inst_id) // 1000].name
        if label in thing_classes and label not in drop:
            masks.append(ids == inst_id)
            classes.append(thing_classes.index(label))
    h, w = ids.shape
    out = Instances((h, w))
    out.pred_masks = torch.from_numpy(np.stack(masks) if masks else np.zeros((0, h, w), bool))
    boxes = [[m.nonzero()[1].min(), m.nonzero()[0].min(), m.nonzero()[1].max() + 1,
              m.nonzero()[0].max() + 1] for m in masks]
    out.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    out.pred_classes = torch.tensor(classes, dtype=torch.int64)
    out.scores = torch.full((len(masks),), 0.9)
    return {"instances": out}


@pytest.fixture
def in_tmp_path(tmp_path, monkeypatch):
    """cityscapesscripts' instance evaluation writes "matches.json" into the working
    directory on every run (upstream behaviour); keep it out of the repository."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_cityscapes_instance_ap(cityscapes, in_tmp_path):
    name = cityscapes["inst"]
    records = DatasetCatalog.get(name)
    things = MetadataCatalog.get(name).thing_classes
    evaluator = CityscapesOfficialInstanceEvaluator(name)

    def ap(drop=()):
        outputs = {r["file_name"]: _instances(r, things, drop) for r in records}
        return inference_on_dataset(_FakeModel(outputs), [[r] for r in records], evaluator)

    perfect = ap()["cityscapes_instance"]
    assert perfect["AP"] == pytest.approx(100) and perfect["AP50"] == pytest.approx(100)
    # No person predicted: person AP 0, car AP 100; the mean is over the classes in the gt.
    no_person = ap(drop=("person",))["cityscapes_instance"]
    assert no_person["AP"] == pytest.approx(50) and no_person["AP50"] == pytest.approx(50)


def test_trainer_instance_evaluators_cityscapes_and_coco(cityscapes, in_tmp_path):
    tmp_path = in_tmp_path
    name = cityscapes["inst"]
    cfg = _cfg(tmp_path, "GeneralizedRCNN", "MODEL.MASK_ON", True)
    evaluator = Trainer.build_evaluator(cfg, name)
    kinds = [type(e) for e in evaluator._evaluators]
    assert kinds == [AtomicCOCOEvaluator, CityscapesOfficialInstanceEvaluator]

    records = DatasetCatalog.get(name)
    things = MetadataCatalog.get(name).thing_classes
    model = _FakeModel({r["file_name"]: _instances(r, things) for r in records})
    results = inference_on_dataset(model, [[r] for r in records], evaluator)
    assert set(results) == {"bbox", "segm", "cityscapes_instance"}
    assert results["cityscapes_instance"]["AP"] == pytest.approx(100)
    # COCO numbers are those of COCOEvaluator alone on the same predictions.
    alone = COCOEvaluator(name, tasks=("bbox", "segm"), output_dir=str(tmp_path / "alone"))
    coco = inference_on_dataset(model, [[r] for r in records], alone)
    for task in ("bbox", "segm"):
        assert results[task] == pytest.approx(coco[task], nan_ok=True)
    assert coco["segm"]["AP50"] == pytest.approx(100)


def test_clear_errors(cityscapes, tmp_path, monkeypatch):
    def meta(**kwargs):
        name = f"cs_bad_{uuid.uuid4().hex[:8]}"
        MetadataCatalog.get(name).set(**kwargs)
        names.append(name)
        return name

    names = []
    try:
        gt_dir = cityscapes["gt_dir"]
        with pytest.raises(ValueError, match="stuff_classes.*trainId"):
            CityscapesOfficialSemSegEvaluator(meta(gt_dir=gt_dir, stuff_classes=["bg", "road"]))
        with pytest.raises(ValueError, match="not Cityscapes instance classes"):
            CityscapesOfficialInstanceEvaluator(meta(gt_dir=gt_dir, thing_classes=["circle"]))
        with pytest.raises(ValueError, match="has no metadata 'gt_dir'"):
            CityscapesOfficialInstanceEvaluator(meta(thing_classes=["car"]))
        with pytest.raises(FileNotFoundError, match="gtFine/<split>"):
            CityscapesOfficialInstanceEvaluator(meta(gt_dir=str(tmp_path), thing_classes=["car"]))
    finally:
        for name in names:
            MetadataCatalog.remove(name)

    evaluator = CityscapesOfficialSemSegEvaluator(cityscapes["sem"])
    monkeypatch.setattr("detectron2.utils.comm.get_world_size", lambda: 4)
    with pytest.raises(RuntimeError, match="one machine only"):
        evaluator.reset()
    monkeypatch.undo()
    # A ground-truth file without a prediction: cityscapesscripts calls sys.exit.
    evaluator.reset()
    records = DatasetCatalog.get(cityscapes["sem"])[:1]
    evaluator.process(records, [{"sem_seg": _prediction(records[0])}])
    with pytest.raises(RuntimeError, match="must cover every"):
        evaluator.evaluate()


def test_official_evaluations_run_on_numpy_without_in1d(cityscapes, in_tmp_path, monkeypatch):
    """numpy >= 2.4 removed np.in1d, which cityscapesscripts' evaluations call: with it gone
    (as on numpy 2.4+; this venv's numpy may still have it), compat's repair gives those
    modules an in1d, and the official semantic and instance figures are unchanged."""
    import importlib

    sem_name, inst_name = cityscapes["sem"], cityscapes["inst"]
    records = DatasetCatalog.get(sem_name)
    predictions = {r["file_name"]: _prediction(r) for r in records}
    inst_records = DatasetCatalog.get(inst_name)
    things = MetadataCatalog.get(inst_name).thing_classes
    outputs = {r["file_name"]: _instances(r, things, drop=("person",)) for r in inst_records}

    def official():
        semantic = _run(CityscapesSemSegEvaluator(sem_name), records, predictions)["sem_seg"]
        instance = inference_on_dataset(
            _FakeModel(outputs),
            [[r] for r in inst_records],
            CityscapesOfficialInstanceEvaluator(inst_name),
        )["cityscapes_instance"]
        return semantic, instance

    before = official()
    modules = [importlib.import_module(name) for name in compat._IN1D_MODULES]
    for module in modules:  # restored after the test, repaired or not
        monkeypatch.setattr(module, "np", np)
    monkeypatch.delattr(np, "in1d", raising=False)  # numpy >= 2.4
    with pytest.raises(AttributeError, match="in1d"):
        official()  # unrepaired, the official evaluations fail
    compat._repair_numpy_in1d()  # the modules are imported: repaired now
    assert all(isinstance(m.np, compat._NumpyWithIn1d) for m in modules)
    after = official()
    assert after == before
    assert 0 < before[1]["AP"] < 100  # a figure that the matching decides


@pytest.mark.parametrize("invert", [False, True])
def test_the_in1d_stand_in_is_numpys_in1d(invert):
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 9, (4, 5)), [1, 3, 8]
    got = compat._NumpyWithIn1d(np).in1d(a, b, invert=invert)
    assert got.shape == (20,) and got.dtype == bool
    assert np.array_equal(got, np.isin(a, b, invert=invert).ravel())
    if hasattr(np, "in1d"):  # numpy < 2.4: the removed function itself
        with pytest.warns(DeprecationWarning):
            assert np.array_equal(got, np.in1d(a, b, invert=invert))
