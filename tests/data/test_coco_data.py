"""seg_plugins.data.coco: COCO-format instance JSON of any user dataset (polygons, RLE, crowd
regions) loaded, mapped, trained on and evaluated with detectron2; every broken file or
annotation named with its file, its id and the fix; bad images skipped on request."""

import copy
import errno
import itertools
import json
import logging
import math
import os

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch

import seg_plugins  # noqa: F401  must come before detectron2 submodules (repairs the install)

# isort: split
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from detectron2.evaluation import inference_on_dataset
from detectron2.structures import BitMasks, Boxes, BoxMode, Instances

from seg_plugins import add_seg_plugins_config
from seg_plugins.data.build import checked_dataset_dicts
from seg_plugins.data.coco import (
    CheckedCocoLoader,
    CocoJsonError,
    check_coco_json,
    check_mask_format,
    load_coco_instances_checked,
    register_coco_instances_checked,
)
from seg_plugins.data.validation import DataProblemError, check_dataset_records
from seg_plugins.engine import Trainer
from seg_plugins.evaluation import AtomicCOCOEvaluator
from tests.data.coco_fixture import LAYOUT, SIZE, make_coco_dataset, write_json

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MASK_RCNN_CFG = os.path.join(REPO, "configs", "shapes", "mask_rcnn_R18_FPN_GN_shapes.yaml")
_COUNTER = itertools.count()
# detectron2's ResizeTransform gives masks as read-only arrays (np.asarray of a PIL image); it
# copies them into a new tensor right after, so torch's warning about them does not apply.
_READ_ONLY_MASKS = pytest.mark.filterwarnings("ignore:The given NumPy array is not writable")


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return make_coco_dataset(str(tmp_path_factory.mktemp("coco")))


@pytest.fixture
def register():
    """register(json_file, image_root, **kwargs) -> a fresh dataset name; removed after."""
    names = []

    def make(json_file, image_root, **kwargs):
        name = f"coco_test_{next(_COUNTER)}"
        register_coco_instances_checked(name, json_file, image_root, **kwargs)
        names.append(name)
        return name

    yield make
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def _decode(segmentation, height, width) -> np.ndarray:
    if isinstance(segmentation, list):
        rle = mask_util.merge(mask_util.frPyObjects(segmentation, height, width))
    else:
        rle = segmentation
    return mask_util.decode(rle).astype(bool)


# --------------------------------------------------------------------------- acceptance
def test_loads_records_metadata_and_masks(coco, register):
    name = register(coco["json_file"], coco["image_root"])
    records = DatasetCatalog.get(name)

    meta = MetadataCatalog.get(name)
    assert meta.thing_classes == ["ellipse", "square"]  # sorted by category id (3, 7)
    assert meta.thing_dataset_id_to_contiguous_id == {3: 0, 7: 1}
    assert meta.evaluator_type == "coco"
    assert (meta.json_file, meta.image_root) == (coco["json_file"], coco["image_root"])
    assert [r["image_id"] for r in records] == sorted(LAYOUT)
    anns = iter(coco["data"]["annotations"])  # in the JSON's order, as the records
    for record in records:
        assert record["file_name"] == os.path.join(
            coco["image_root"], coco["files"][record["image_id"]]
        )
        assert (record["height"], record["width"]) == (SIZE, SIZE)
        for obj in record["annotations"]:
            ann = next(anns)
            assert obj["category_id"] == {3: 0, 7: 1}[ann["category_id"]]
            assert obj["bbox_mode"] == BoxMode.XYWH_ABS and obj["bbox"] == ann["bbox"]
            assert obj["iscrowd"] == ann["iscrowd"]
            mask = _decode(obj["segmentation"], SIZE, SIZE)
            np.testing.assert_array_equal(mask, coco["masks"][ann["id"]])

    # The same records as detectron2's own loader gives.
    try:
        assert records == load_coco_json(coco["json_file"], coco["image_root"], "coco_test_d2")
    finally:
        MetadataCatalog.remove("coco_test_d2")


def _cfg(*opts):
    cfg = get_cfg()
    add_seg_plugins_config(cfg)
    cfg.merge_from_file(MASK_RCNN_CFG)
    small = [
        "MODEL.DEVICE", "cpu",
        "MODEL.ROI_HEADS.NUM_CLASSES", 2,
        "INPUT.MIN_SIZE_TRAIN", (SIZE,), "INPUT.MAX_SIZE_TRAIN", SIZE,
        "INPUT.MIN_SIZE_TEST", SIZE, "INPUT.MAX_SIZE_TEST", SIZE,
        "INPUT.MASK_FORMAT", "bitmask",
        "DATALOADER.NUM_WORKERS", 0,
    ]  # fmt: skip
    cfg.merge_from_list(small + list(opts))
    return cfg


@_READ_ONLY_MASKS
def test_detectron2_dataset_mapper_gives_bitmasks(coco, register):
    records = DatasetCatalog.get(register(coco["json_file"], coco["image_root"]))
    mapper = DatasetMapper(_cfg("INPUT.RANDOM_FLIP", "none"), is_train=True)
    for record in records:
        out = mapper(copy.deepcopy(record))
        assert tuple(out["image"].shape) == (3, SIZE, SIZE)
        instances = out["instances"]
        shapes = [s for s in LAYOUT[record["image_id"]] if not s[3]]  # crowd regions left out
        assert isinstance(instances.gt_masks, BitMasks) and len(instances) == len(shapes)
        assert instances.gt_classes.tolist() == [{3: 0, 7: 1}[s[0]] for s in shapes]
        for mask, shape in zip(instances.gt_masks.tensor, shapes):
            np.testing.assert_array_equal(mask.numpy(), shape[1])


def _evaluate_ground_truth(coco, register, tmp_path):
    name = register(coco["json_file"], coco["image_root"])
    records = DatasetCatalog.get(name)
    evaluator = Trainer.build_evaluator(_cfg(), name, output_folder=str(tmp_path))
    evaluator.reset()
    for record in records:
        objs = [o for o in record["annotations"] if not o["iscrowd"]]
        instances = Instances((SIZE, SIZE))
        boxes = [BoxMode.convert(o["bbox"], o["bbox_mode"], BoxMode.XYXY_ABS) for o in objs]
        instances.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
        instances.scores = torch.ones(len(objs))
        instances.pred_classes = torch.tensor([o["category_id"] for o in objs])
        masks = [_decode(o["segmentation"], SIZE, SIZE) for o in objs]
        instances.pred_masks = torch.from_numpy(np.stack(masks))
        evaluator.process([{"image_id": record["image_id"]}], [{"instances": instances}])
    return evaluator.evaluate()


def test_coco_evaluator_scores_ground_truth_as_perfect(coco, register, tmp_path):
    """Predictions equal to the (non-crowd) ground truth: AP 100 for boxes and masks, so the
    category ids map back to the JSON's 3 and 7 and the RLE / polygon masks agree."""
    results = _evaluate_ground_truth(coco, register, tmp_path)
    for task in ("bbox", "segm"):
        assert results[task]["AP"] == pytest.approx(100.0)
        assert results[task]["AP-ellipse"] == pytest.approx(100.0)
    with open(tmp_path / "coco_instances_results.json") as f:
        assert len(json.load(f)) == sum(len(v) for v in LAYOUT.values()) - 1  # minus the crowd


def test_coco_evaluator_outputs_are_written_atomically(coco, register, tmp_path, monkeypatch):
    """A failure (here: the disk filling up) while detectron2's COCOEvaluator writes its
    results JSON leaves the previous file whole and no temporary file behind."""
    from detectron2.evaluation import coco_evaluation

    (tmp_path / "coco_instances_results.json").write_text('["previous results"]')
    real_path_manager = coco_evaluation.PathManager

    class FullDisk:
        @staticmethod
        def dumps(obj, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(coco_evaluation, "json", FullDisk)
    with pytest.raises(OSError, match="No space left"):
        _evaluate_ground_truth(coco, register, tmp_path)
    assert (tmp_path / "coco_instances_results.json").read_text() == '["previous results"]'
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "coco_instances_results.json",
        "instances_predictions.pth",
    ]
    assert coco_evaluation.PathManager is real_path_manager  # restored after the failure
    torch.load(tmp_path / "instances_predictions.pth", weights_only=False)  # whole


@_READ_ONLY_MASKS
@pytest.mark.slow
def test_mask_rcnn_trains_two_iterations_and_coco_evaluates(coco, register, tmp_path):
    train = register(coco["json_file"], coco["image_root"])
    val = register(coco["json_file"], coco["image_root"])
    cfg = _cfg(
        "DATASETS.TRAIN", (train,), "DATASETS.TEST", (),  # evaluated below, once
        "OUTPUT_DIR", str(tmp_path),
        "SOLVER.MAX_ITER", 2, "SOLVER.IMS_PER_BATCH", 2, "SOLVER.WARMUP_ITERS", 1,
        "SOLVER.CHECKPOINT_PERIOD", 100,
        "MODEL.FPN.OUT_CHANNELS", 32, "MODEL.ROI_MASK_HEAD.CONV_DIM", 32,
        "MODEL.ROI_BOX_HEAD.FC_DIM", 64, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 32,
        "MODEL.RPN.POST_NMS_TOPK_TRAIN", 50, "MODEL.RPN.POST_NMS_TOPK_TEST", 50,
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0, "TEST.DETECTIONS_PER_IMAGE", 20,
    )  # fmt: skip
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert trainer.iter == 2
    results = inference_on_dataset(
        trainer.model,
        Trainer.build_test_loader(cfg, val),
        Trainer.build_evaluator(cfg, val, output_folder=str(tmp_path / "eval")),
    )
    assert set(results) == {"bbox", "segm"}
    for task in ("bbox", "segm"):
        for key in ("AP", "AP50", "AP75", "AP-ellipse", "AP-square"):
            assert math.isfinite(results[task][key]) and 0 <= results[task][key] <= 100, key


# --------------------------------------------------------------------------- broken corpus
def _ann(data, ann_id):
    return next(a for a in data["annotations"] if a["id"] == ann_id)


def _set(*path_and_value):
    """A mutation setting data[path...] = value (path of keys / list indices)."""
    *path, key, value = path_and_value

    def mutate(data):
        node = data
        for k in path:
            node = node[k]
        node[key] = value

    return mutate


def _del(*path):
    def mutate(data):
        node = data
        for k in path[:-1]:
            node = node[k]
        del node[path[-1]]

    return mutate


def _set_ann(ann_id, key, value):
    return lambda data: _ann(data, ann_id).__setitem__(key, value)


def _bbox_width_zero(data):
    _ann(data, 2)["bbox"][2] = 0


# (mutation, where: "file" or image id, kind, message parts besides the JSON file)
BROKEN = {
    "missing_annotations": (_del("annotations"), "file", "json_schema", ["no 'annotations' list"]),
    "image_without_height": (
        _del("images", 1, "height"),
        "file",
        "json_schema",
        ["images[1] (id 102) has no ['height']", "every image needs 'id' (int), 'file_name'"],
    ),
    "unknown_image_id": (
        _set_ann(3, "image_id", 999),
        "file",
        "json_schema",
        ["annotation id 3 (annotations[2]) refers to image_id 999", "add the image or remove"],
    ),
    "unknown_category_id": (
        _set_ann(4, "category_id", 5),
        "file",
        "json_schema",
        ["annotation id 4 (annotations[3]) has category_id 5", "(ids 3, 7); add the category"],
    ),
    "empty_segmentation": (
        _set_ann(1, "segmentation", []),
        101,
        "polygon",
        ["annotation id 1 of image id 101", "empty segmentation []", "or remove the annotation"],
    ),
    "two_point_polygon": (
        _set_ann(1, "segmentation", [[10, 10, 20, 20]]),
        101,
        "polygon",
        ["annotation id 1 of image id 101", "polygon #0 has 4 coordinates", "at least 6"],
    ),
    "zero_area_polygon": (
        _set_ann(2, "segmentation", [[40, 32, 50, 32, 60, 32]]),
        101,
        "polygon",
        ["annotation id 2 of image id 101", "polygon #0 has zero area", "remove it"],
    ),
    "bbox_width_0": (
        _bbox_width_zero,
        101,
        "annotation",
        ["annotation id 2 of image id 101", "has width 0", "[x, y, width, height]"],
    ),
    "rle_size_mismatch": (
        _set_ann(4, "segmentation", {"size": [32, 64], "counts": "0"}),
        102,
        "annotation",
        ["annotation id 4 of image id 102", "RLE size [32, 64] differs", "[64, 64]", "encode"],
    ),
    "missing_image_file": (
        _set("images", 2, "file_name", "gone.png"),
        103,
        "missing_file",
        ["image id 103", "not found under image_root", "correct its 'file_name'"],
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_annotation_is_named_with_file_id_and_fix(case, coco, register, tmp_path):
    mutate, where, kind, parts = BROKEN[case]
    data = copy.deepcopy(coco["data"])
    mutate(data)
    json_file = write_json(str(tmp_path / "broken.json"), data)

    file_problems, image_problems = check_coco_json(json_file, coco["image_root"])
    if where == "file":
        assert not image_problems
        (problem,) = file_problems
    else:
        assert not file_problems and list(image_problems) == [where]
        (problem,) = image_problems[where]
        image = next(i for i in data["images"] if i["id"] == where)
        assert problem.file == os.path.join(coco["image_root"], image["file_name"])
    assert problem.kind == kind and problem.fatal
    assert json_file in str(problem)
    for part in parts:
        assert part in problem.message

    # The registered loader raises on it: a broken file always; a bad image unless skipping.
    name = register(json_file, coco["image_root"])
    error = CocoJsonError if where == "file" else DataProblemError
    with pytest.raises(error) as info:
        DatasetCatalog.get(name)
    assert parts[0] in str(info.value) and f"dataset '{name}'" in str(info.value)
    assert ("SKIP_BAD_SAMPLES" in str(info.value)) == (where != "file")


# (mutation, where, message parts): beyond the cases above
MORE_BROKEN = {
    "results_file": (lambda data: [], "file", ["looks like a COCO *results* file"]),
    "duplicate_image_id": (
        lambda data: data["images"].append(dict(data["images"][0])),
        "file",
        ["image id 101 is used by images[0] and images[4]; image ids must be unique"],
    ),
    "iscrowd_2": (
        _set_ann(2, "iscrowd", 2),
        "file",
        ["annotation id 2 (annotations[1]) has iscrowd 2; it must be 0 or 1"],
    ),
    "flat_polygon": (
        _set_ann(1, "segmentation", [1, 2, 9, 2, 9, 9]),
        101,
        ["segmentation is one flat list of numbers", "write it as [[x1, y1, x2, y2, ...]]"],
    ),
    "rle_counts_sum": (
        lambda data: _ann(data, 3)["segmentation"].__setitem__("counts", [5, 6]),
        102,
        ["annotation id 3 of image id 102", "RLE counts sum to 11 pixels", "has 4096"],
    ),
    "rle_string_malformed": (
        lambda data: _ann(data, 4)["segmentation"].__setitem__("counts", "zz~~"),
        102,
        ["annotation id 4 of image id 102", "compressed RLE counts 'zz~~' are malformed"],
    ),
}


@pytest.mark.parametrize("case", sorted(MORE_BROKEN))
def test_more_broken_files_and_annotations(case, coco, tmp_path):
    mutate, where, parts = MORE_BROKEN[case]
    data = copy.deepcopy(coco["data"])
    replaced = mutate(data)  # in place, or a whole new JSON value
    json_file = write_json(str(tmp_path / "broken.json"), data if replaced is None else replaced)
    file_problems, image_problems = check_coco_json(json_file, coco["image_root"])
    problems = file_problems if where == "file" else image_problems[where]
    assert len(problems) == 1 and not (file_problems and image_problems)
    assert json_file in str(problems[0])
    for part in parts:
        assert part in problems[0].message


def test_missing_json_file_and_missing_area(coco, register, tmp_path, caplog):
    missing = str(tmp_path / "nope.json")
    ((problem,), _) = check_coco_json(missing, coco["image_root"])
    assert (problem.kind, problem.file) == ("missing_file", missing)
    with pytest.raises(CocoJsonError, match="annotation file not found"):
        DatasetCatalog.get(register(missing, coco["image_root"]))

    # Without 'area' detectron2 trains, but pycocotools' evaluation fails: a warning.
    data = copy.deepcopy(coco["data"])
    for ann in data["annotations"]:
        del ann["area"]
    json_file = write_json(str(tmp_path / "no_area.json"), data)
    with caplog.at_level(logging.WARNING, logger="seg_plugins.data.coco"):
        assert len(DatasetCatalog.get(register(json_file, coco["image_root"]))) == 4
    assert "8 annotation(s) have no 'area' (ids 1, 2, 3, 4, 5, 6, 7, 8)" in caplog.text


def _json_text(coco) -> str:
    return json.dumps(coco["data"], indent=1)


def test_invalid_json_names_line_and_column(coco, tmp_path, register):
    text = _json_text(coco)
    pos = text.index('"categories": [') + len('"categories": [')
    broken = text[:pos] + "," + text[pos:]  # a stray comma: JSON has no empty items
    json_file = str(tmp_path / "invalid.json")
    with open(json_file, "w") as f:
        f.write(broken)
    line, column = broken[:pos].count("\n") + 1, pos - broken.rfind("\n", 0, pos)

    (problem,), image_problems = check_coco_json(json_file, coco["image_root"])
    assert not image_problems and problem.kind == "json_schema" and problem.file == json_file
    assert f"not valid JSON at line {line}, column {column} (Expecting value)" in problem.message
    assert "fix the file there" in problem.message
    with pytest.raises(CocoJsonError, match=f"line {line}, column {column}"):
        DatasetCatalog.get(register(json_file, coco["image_root"]))


@pytest.mark.parametrize("cut", [0.5, 0.83])
def test_truncated_json_is_called_truncated(cut, coco, tmp_path):
    text = _json_text(coco)
    short = text[: int(len(text) * cut)].rstrip()
    json_file = str(tmp_path / "truncated.json")
    with open(json_file, "w") as f:
        f.write(short)

    (problem,), _ = check_coco_json(json_file, coco["image_root"])
    assert problem.kind == "json_schema" and problem.file == json_file
    assert "the JSON ends early" in problem.message and "the file is truncated" in problem.message
    lines = short.split("\n")
    assert f"the text stops at line {len(lines)}, column {len(lines[-1]) + 1}" in problem.message
    assert "copy or write it again" in problem.message


# --------------------------------------------------------------------------- skipping
def _two_bad_images(coco, tmp_path) -> str:
    data = copy.deepcopy(coco["data"])
    _ann(data, 1)["segmentation"] = []  # image 101
    data["images"][2]["file_name"] = "gone.png"  # image 103
    return write_json(str(tmp_path / "two_bad.json"), data)


def test_skip_bad_drops_images_and_logs_the_count(coco, register, tmp_path, caplog):
    clean = {
        r["image_id"]: r
        for r in DatasetCatalog.get(register(coco["json_file"], coco["image_root"]))
    }
    json_file = _two_bad_images(coco, tmp_path)
    name = register(json_file, coco["image_root"], skip_bad=True)

    with caplog.at_level(logging.WARNING, logger="seg_plugins.data.validation"):
        records = DatasetCatalog.get(name)

    assert records == [clean[102], clean[104]]  # the others intact
    assert (
        f"dataset '{name}': skipped 2 of 4 records with problems (1 missing_file, 1 polygon)"
        in caplog.text
    )
    loader = DatasetCatalog[name]  # what DatasetCatalog.get called
    assert isinstance(loader, CheckedCocoLoader) and loader.skip_bad
    kept, skipped, total = loader.load(skip=True)  # what was skipped is returned, as a value
    assert kept == records and total == 4
    assert [s["file_name"] for s in skipped] == [
        os.path.join(coco["image_root"], "img_101.png"),
        os.path.join(coco["image_root"], "gone.png"),
    ]
    assert all(p["kind"] in ("polygon", "missing_file") for s in skipped for p in s["problems"])
    assert load_coco_instances_checked(json_file, coco["image_root"], name, skip_bad=True) == kept


def test_the_skip_of_a_load_overrides_registration(coco, register, tmp_path):
    json_file = _two_bad_images(coco, tmp_path)
    strict, skipping = (
        register(json_file, coco["image_root"]),
        register(json_file, coco["image_root"], skip_bad=True),
    )
    with pytest.raises(DataProblemError, match="2 data problem"):
        DatasetCatalog.get(strict)
    # the Trainer's DATASETS.SKIP_BAD_SAMPLES True
    assert [r["image_id"] for r in DatasetCatalog[strict].load(skip=True).records] == [102, 104]
    with pytest.raises(DataProblemError):
        DatasetCatalog[skipping].load(skip=False)
    assert len(DatasetCatalog.get(skipping)) == 2  # the registration's choice is unchanged
    with pytest.raises(DataProblemError):
        DatasetCatalog.get(strict)


@pytest.mark.parametrize("skip", [True, False])
def test_skip_bad_samples_overrides_registration_through_checked_dataset_dicts(
    skip, coco, register, tmp_path
):
    """DATASETS.SKIP_BAD_SAMPLES decides for a checked COCO dataset, both ways, whatever its
    registration said; the images its loader dropped are in the report, with the JSON's
    total."""
    json_file = _two_bad_images(coco, tmp_path)
    strict, skipping = (
        register(json_file, coco["image_root"]),
        register(json_file, coco["image_root"], skip_bad=True),
    )
    cfg = _cfg("DATASETS.SKIP_BAD_SAMPLES", skip)
    for name in (strict, skipping):
        if not skip:
            with pytest.raises(DataProblemError, match="2 data problem"):
                checked_dataset_dicts(cfg, name, is_train=True)
            continue
        records, report = checked_dataset_dicts(cfg, name, is_train=True)
        assert [r["image_id"] for r in records] == [102, 104]
        assert report and report.covered == (name,) and list(report.datasets) == [name]
        entry = report.datasets[name]
        assert entry["total"] == 4 and entry["level"] == "light"
        assert [os.path.basename(s["file_name"]) for s in entry["skipped"]] == [
            "img_101.png",
            "gone.png",
        ]


def test_checked_dataset_dicts_gives_detectron2s_records_and_runs_the_check(
    coco, register, tmp_path
):
    """A checked COCO dataset goes through its loader's ``load`` rather than detectron2's
    get_detection_dataset_dicts: the records are the same (the crowd-only image filtered
    when training); ``check`` sees each dataset's records."""
    from detectron2.data import get_detection_dataset_dicts

    data = copy.deepcopy(coco["data"])
    data["annotations"] = [
        a for a in data["annotations"] if a["image_id"] != 103 or a["iscrowd"]
    ]  # image 103: a crowd region only
    name = register(write_json(str(tmp_path / "crowd.json"), data), coco["image_root"])
    seen = []
    for is_train in (True, False):
        records, report = checked_dataset_dicts(
            _cfg(), name, is_train=is_train, check=lambda n, r: seen.append((n, len(r)))
        )
        assert not report and report.covered == (name,) and not report.datasets
        assert records == get_detection_dataset_dicts([name], filter_empty=is_train)
        assert (103 in [r["image_id"] for r in records]) is not is_train
    assert seen == [(name, len(LAYOUT) - 1), (name, len(LAYOUT))]
    with pytest.raises(ValueError, match="set INPUT.MASK_FORMAT bitmask"):
        checked_dataset_dicts(
            _cfg(),
            name,
            is_train=True,
            check=lambda n, r: check_mask_format(r, "polygon", n),
        )


# --------------------------------------------------------------------------- mask format
def test_rle_masks_with_polygon_mask_format_give_a_clear_error(coco, register):
    name = register(coco["json_file"], coco["image_root"])
    records = DatasetCatalog.get(name)
    with pytest.raises(ValueError, match="set INPUT.MASK_FORMAT bitmask") as info:
        check_mask_format(records, "polygon", name)
    assert f"dataset '{name}' has RLE masks (3 non-crowd annotations" in str(info.value)
    check_mask_format(records, "bitmask", name)
    # Polygons plus a crowd RLE (dropped by the mapper, as in COCO itself) are fine.
    check_mask_format([r for r in records if r["image_id"] in (101, 103)], "polygon", name)
    with pytest.raises(ValueError, match="must be 'polygon' or 'bitmask'"):
        check_mask_format(records, "bitmasks", name)

    # What it prevents: detectron2's own mapper fails with a vague message.
    mapper = DatasetMapper(_cfg("INPUT.MASK_FORMAT", "polygon"), is_train=True)
    with pytest.raises(ValueError, match="Failed to use mask_format=='polygon'"):
        mapper(copy.deepcopy(records[1]))


@_READ_ONLY_MASKS
@pytest.mark.slow
def test_skipping_through_the_trainer_trains_evaluates_and_lists_the_skipped(
    coco, register, tmp_path
):
    """DATASETS.SKIP_BAD_SAMPLES with a COCO JSON holding a 2-point polygon and an image file
    that is gone: the Trainer drops both images from training and test set, trains, scores
    COCO AP on the images it evaluated, and lists the two in skipped_samples.json."""
    import shutil

    root = tmp_path / "data"
    shutil.copytree(coco["image_root"], root)
    data = copy.deepcopy(coco["data"])
    first, second = sorted(LAYOUT)[:2]
    bad_ann = next(a for a in data["annotations"] if a["image_id"] == first and not a["iscrowd"])
    bad_ann["segmentation"] = [[1, 1, 9, 9]]
    os.remove(os.path.join(root, coco["files"][second]))
    json_file = write_json(str(tmp_path / "broken.json"), data)
    train = register(json_file, str(root))
    val = register(json_file, str(root))
    cfg = _cfg(
        "DATASETS.TRAIN", (train,), "DATASETS.TEST", (val,), "DATASETS.SKIP_BAD_SAMPLES", True,
        "OUTPUT_DIR", str(tmp_path / "out"),
        "SOLVER.MAX_ITER", 2, "SOLVER.IMS_PER_BATCH", 2, "SOLVER.WARMUP_ITERS", 1,
        "MODEL.FPN.OUT_CHANNELS", 32, "MODEL.ROI_MASK_HEAD.CONV_DIM", 32,
        "MODEL.ROI_BOX_HEAD.FC_DIM", 64, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 32,
        "MODEL.RPN.POST_NMS_TOPK_TEST", 50, "TEST.DETECTIONS_PER_IMAGE", 20,
    )  # fmt: skip
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    results = trainer._last_eval_results
    assert 0 <= results["segm"]["AP"] <= 100
    evaluator = Trainer.build_evaluator(cfg, val)
    # scores the images it saw: skipped ones are not missed detections
    # (tests/evaluation/test_coco_evaluator.py)
    assert isinstance(evaluator, AtomicCOCOEvaluator)
    report = json.loads((tmp_path / "out" / "skipped_samples.json").read_text())
    for name in (train, val):
        assert report[name]["total"] == len(LAYOUT)
        files = sorted(os.path.basename(s["file_name"]) for s in report[name]["skipped"])
        assert files == sorted([coco["files"][first], coco["files"][second]])


# --------------------------------------------------------------------------- sizes
def _check_dataset_tool():
    from seg_plugins_cli import check

    return check


@pytest.mark.parametrize("level", ["light", "full"])
# (24, 64): the case make fuzz found (FUZZ_SEED=20261204, test_malformed_coco_json_corpus):
# detectron2's mapper raised SizeMismatchError after the checks had passed the file
@pytest.mark.parametrize("size", [(24, 64), (48, 64), (64, 80)])
def test_json_height_width_that_disagree_with_the_image_are_named(
    size, level, coco, register, tmp_path, capsys
):
    """A COCO "images" entry whose height / width are not the file's: detectron2's mapper
    would stop training on it (or masks would be rasterised at the wrong size). The loader
    (one header read per image), the JSON check and both dataset-check levels name the file,
    both sizes and the fix, in the same words; polygons stay inside the stated size."""
    data = copy.deepcopy(coco["data"])
    entry = next(im for im in data["images"] if im["id"] == 101)  # polygons only
    entry["height"], entry["width"] = size
    json_file = write_json(str(tmp_path / "sizes.json"), data)
    name = register(json_file, coco["image_root"])
    tool = _check_dataset_tool()
    assert tool.main([name, "--level", level, "--workers", "1"]) == 1
    out = capsys.readouterr().out
    assert "size_mismatch" in out and coco["files"][101] in out, out
    assert f"image is {SIZE}x{SIZE} (HxW) but its record says {size[0]}x{size[1]}" in out
    assert "'height' / 'width'" in out  # the fix
    assert "1 error(s)" in out and out.count("size_mismatch") == 2  # the line and the summary
    line = f"image is {SIZE}x{SIZE} (HxW) but its record says {size[0]}x{size[1]}"
    _, per_image = check_coco_json(json_file, coco["image_root"])
    assert [p.kind for p in per_image[101]] == ["size_mismatch"] and line in str(per_image[101][0])
    # the dataset checks on records that bypassed the loader's check say the same
    records = load_coco_instances_checked(json_file, coco["image_root"], name, skip_bad=True)
    assert 101 not in [r["image_id"] for r in records]  # skipped, counted
    record = dict(records[0], annotations=[],
                  file_name=os.path.join(coco["image_root"], coco["files"][101]),
                  height=size[0], width=size[1])  # fmt: skip
    found = check_dataset_records([record], level=level)
    assert [p.kind for p in found[0]] == ["size_mismatch"] and line in str(found[0][0])


def test_swapped_height_and_width_are_called_swapped(coco, register, tmp_path):
    from seg_plugins.data.validation import check_instance_record

    record = DatasetCatalog.get(register(coco["json_file"], coco["image_root"]))[0]
    image = np.zeros((SIZE, SIZE + 16, 3), np.uint8)
    wide = str(tmp_path / "wide.png")
    cv2.imwrite(wide, image)
    record = dict(record, file_name=wide, height=SIZE + 16, width=SIZE)
    problems = [p for p in check_instance_record(record) if p.kind == "size_mismatch"]
    assert len(problems) == 1 and "swapped?" in problems[0].message
