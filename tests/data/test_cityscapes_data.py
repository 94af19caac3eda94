"""Cityscapes fine as a dataset format: datasets/prepare_cityscapes.py (labelTrainIds from the
polygons) and seg_plugins.data.cityscapes.register_cityscapes (detectron2's loaders and
metadata on a tree anywhere, path-naming errors), then load -> map -> train two iterations ->
evaluate through the Trainer's evaluators, semantic (U-Net) and instance (Mask R-CNN).

The tree is made by tests/evaluation/cityscapes_fixture.py with cityscapesscripts' own
converters (64 x 128 images, two cities, two images each per split; a "cargroup" crowd region
in frankfurt_000000).
"""

import glob
import importlib.util
import logging
import os
import shutil
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import seg_plugins  # noqa: F401  must come before detectron2 submodules (repairs the install)

# isort: split
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from detectron2.evaluation import inference_on_dataset
from detectron2.modeling import build_model
from detectron2.structures import BoxMode

from seg_plugins import add_seg_plugins_config
from seg_plugins.data import SemSegDatasetMapper
from seg_plugins.data.cityscapes import register_cityscapes
from seg_plugins.data.validation import DataProblemError
from seg_plugins.engine import Trainer
from tests.data.train_checks import train_two_iterations
from tests.evaluation import cityscapes_fixture as fixture

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(TESTS)
# cityscapesscripts 2.3.0 calls np.in1d (deprecated in numpy 2.0; setup.py pins numpy < 2.4).
pytestmark = pytest.mark.filterwarnings("ignore:.*in1d.*:DeprecationWarning")


def _import(name, path):
    """A module by file path (datasets/ is not a package), registered under ``name`` before it
    runs, as ``import <name>`` would register it."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # before exec: pool workers unpickle functions by name
        spec.loader.exec_module(module)
    return sys.modules[name]


prepare = _import("prepare_cityscapes", os.path.join(REPO, "datasets", "prepare_cityscapes.py"))
PERSON, CAR = 0, 2  # indices in thing_classes


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A Cityscapes root with train and val (4 images each); tests only read it."""
    root = tmp_path_factory.mktemp("cityscapes")
    fixture.make_cityscapes(root, "train", seed=1)
    fixture.make_cityscapes(root, "val", seed=0)
    return str(root)


def _train_id_files(root):
    return sorted(glob.glob(os.path.join(root, "gtFine", "*", "*", "*_gtFine_labelTrainIds.png")))


# --------------------------------------------------------------------------- prepare script
def test_prepare_writes_what_cityscapesscripts_writes(tree, tmp_path, caplog):
    root = str(tmp_path / "cityscapes")
    shutil.copytree(tree, root)
    expected = {path: np.asarray(Image.open(path)) for path in _train_id_files(root)}
    assert len(expected) == 8  # createTrainIdLabelImgs' output, train + val
    for path in expected:
        os.remove(path)

    with caplog.at_level(logging.INFO, logger="prepare_cityscapes"):
        assert prepare.main([root, "--workers", "2", "--log-every", "3"]) == 0
    assert _train_id_files(root) == sorted(expected)
    for path, labels in expected.items():
        with Image.open(path) as img:
            assert img.mode == "L"
            np.testing.assert_array_equal(np.asarray(img), labels)
    assert not glob.glob(os.path.join(root, "gtFine", "*", "*", ".*"))  # no temporary files
    assert "3/8 written" in caplog.text and "6/8 written" in caplog.text
    assert "8/8 written" in caplog.text
    assert "written 8, skipped 0, total 8" in caplog.text

    # Idempotent: a second run writes nothing and leaves the files alone.
    mtimes = {path: os.stat(path).st_mtime_ns for path in expected}
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="prepare_cityscapes"):
        assert prepare.main([root, "--workers", "1"]) == 0
        assert "written 0, skipped 8, total 8" in caplog.text
        assert mtimes == {path: os.stat(path).st_mtime_ns for path in expected}
        caplog.clear()
        assert prepare.main([root, "--splits", "val", "--overwrite", "--workers", "1"]) == 0
        assert "written 4, skipped 0, total 4" in caplog.text


def test_prepare_errors_name_the_path_and_the_download(tree, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    assert prepare.main([]) == 2  # default root: $DETECTRON2_DATASETS/cityscapes
    err = capsys.readouterr().err
    assert os.path.join(str(tmp_path), "cityscapes", "gtFine") in err
    assert "gtFine_trainvaltest.zip" in err and "cityscapes-dataset.com" in err

    assert prepare.main([tree, "--splits", "test"]) == 2
    err = capsys.readouterr().err
    assert os.path.join(tree, "gtFine", "test") in err and "['train', 'val']" in err

    # A polygon with an unknown label: cityscapesscripts calls sys.exit in the worker; the
    # run ends with the file and the reason instead of a pool waiting forever.
    root = tmp_path / "broken"
    fixture.make_cityscapes(root, "val", per_city=1)
    bad = glob.glob(str(root / "gtFine" / "val" / "lindau" / "*_polygons.json"))[0]
    with open(bad, "w") as f:
        f.write(
            '{"imgHeight": 4, "imgWidth": 4, "objects": [{"label": "unicorn", '
            '"polygon": [[0, 0], [3, 0], [3, 3]]}]}'
        )
    assert prepare.main([str(root), "--splits", "val", "--overwrite", "--workers", "2"]) == 2
    err = capsys.readouterr().err
    assert bad in err and "Label 'unicorn' not known" in err
    assert not glob.glob(str(root / "gtFine" / "val" / "*" / ".*"))


# --------------------------------------------------------------------------- registration
def _instance_counts(record):
    """{category index: count} of the non-crowd instances in the instanceIds PNG."""
    ids = np.asarray(Image.open(fixture.gt_file(record["file_name"], "instanceIds")))
    cats = [int(i) // 1000 for i in np.unique(ids[ids >= 1000])]  # 24 person, 26 car
    return {PERSON: cats.count(24), CAR: cats.count(26)}


def test_register_records_and_metadata(tree, names):
    names += register_cityscapes(tree, prefix="t_cs")
    assert names == [
        "t_cs_sem_seg_train",
        "t_cs_instance_seg_train",
        "t_cs_sem_seg_val",
        "t_cs_instance_seg_val",
    ]
    for split in ("train", "val"):
        sem = DatasetCatalog.get(f"t_cs_sem_seg_{split}")
        files = sorted(glob.glob(os.path.join(tree, "leftImg8bit", split, "*", "*.png")))
        assert [r["file_name"] for r in sem] == files and len(files) == 4
        for r in sem:
            assert r["sem_seg_file_name"] == fixture.gt_file(r["file_name"], "labelTrainIds")
            assert (r["height"], r["width"]) == (64, 128)

        inst = DatasetCatalog.get(f"t_cs_instance_seg_{split}")
        assert [r["file_name"] for r in inst] == files
        crowd = []
        for r in inst:
            for a in r["annotations"]:
                assert a["bbox_mode"] == BoxMode.XYXY_ABS and 0 <= a["category_id"] < 8
                assert all(len(p) >= 6 and len(p) % 2 == 0 for p in a["segmentation"])
            plain = [a["category_id"] for a in r["annotations"] if not a["iscrowd"]]
            assert {c: plain.count(c) for c in (PERSON, CAR)} == _instance_counts(r)
            crowd += [
                (os.path.basename(r["file_name"]), a["category_id"])
                for a in r["annotations"]
                if a["iscrowd"]
            ]
        assert crowd == [("frankfurt_000000_000019_leftImg8bit.png", CAR)]  # the cargroup

    # The metadata detectron2 gives cityscapes_fine_*, with this tree's folders.
    for task in ("sem_seg", "instance_seg"):
        mine = MetadataCatalog.get(f"t_cs_{task}_val").as_dict()
        builtin = MetadataCatalog.get(f"cityscapes_fine_{task}_val").as_dict()
        assert mine.pop("image_dir") == os.path.join(tree, "leftImg8bit", "val")
        assert mine.pop("gt_dir") == os.path.join(tree, "gtFine", "val")
        for key in ("name", "image_dir", "gt_dir"):
            builtin.pop(key)
        assert mine.pop("name") == f"t_cs_{task}_val"
        assert mine == builtin
    sem = MetadataCatalog.get("t_cs_sem_seg_val")
    assert (sem.evaluator_type, sem.ignore_label, len(sem.stuff_classes)) == (
        "cityscapes_sem_seg",
        255,
        19,
    )
    assert MetadataCatalog.get("t_cs_instance_seg_val").evaluator_type == "cityscapes_instance"


def test_registration_reads_nothing_and_loading_names_missing_folders(tmp_path, names):
    root = tmp_path / "cityscapes"
    names += register_cityscapes(root, prefix="t_cs", splits=("val",))
    assert not root.exists()  # registered without looking

    with pytest.raises(FileNotFoundError) as err:
        DatasetCatalog.get("t_cs_sem_seg_val")
    assert os.path.join(str(root), "leftImg8bit", "val") in str(err.value)
    assert "leftImg8bit_trainvaltest.zip" in str(err.value)

    os.makedirs(root / "leftImg8bit" / "val" / "frankfurt")
    with pytest.raises(FileNotFoundError) as err:
        DatasetCatalog.get("t_cs_instance_seg_val")
    assert os.path.join(str(root), "gtFine", "val") in str(err.value)
    assert "gtFine_trainvaltest.zip" in str(err.value)

    os.makedirs(root / "gtFine" / "val")
    with pytest.raises(FileNotFoundError, match=r"no <city>/\*_leftImg8bit.png in"):
        DatasetCatalog.get("t_cs_sem_seg_val")

    (root / "leftImg8bit" / "val" / "frankfurt" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match="notes.txt"):
        DatasetCatalog.get("t_cs_sem_seg_val")


def test_missing_gt_files_name_the_fix(tmp_path, names):
    fixture.make_cityscapes(tmp_path, "val", per_city=1)
    removed = _train_id_files(str(tmp_path))[0]
    os.remove(removed)
    names += register_cityscapes(tmp_path, prefix="t_cs", splits=["val"])

    with pytest.raises(FileNotFoundError) as err:
        DatasetCatalog.get("t_cs_sem_seg_val")
    message = str(err.value)
    assert "1 ground-truth file(s)" in message and repr(removed) in message
    assert f"python datasets/prepare_cityscapes.py {tmp_path} --splits val" in message
    assert len(DatasetCatalog.get("t_cs_instance_seg_val")) == 2  # needs no labelTrainIds

    # The fix the message gives works.
    assert prepare.main([str(tmp_path), "--splits", "val", "--workers", "1"]) == 0
    assert len(DatasetCatalog.get("t_cs_sem_seg_val")) == 2

    polygons = removed.replace("labelTrainIds.png", "polygons.json")
    os.remove(polygons)
    for name in ("t_cs_instance_seg_val", "t_cs_sem_seg_val"):
        with pytest.raises(FileNotFoundError) as err:
            DatasetCatalog.get(name)
        assert repr(polygons) in str(err.value) and "gtFine_trainvaltest.zip" in str(err.value)


def test_duplicate_names_and_bad_arguments(tree, names):
    names += register_cityscapes(tree, prefix="t_cs", splits=("val",))
    before = set(DatasetCatalog.list())
    with pytest.raises(ValueError, match="already registered") as err:
        register_cityscapes(tree, prefix="t_cs")  # train is free, val is taken
    assert "t_cs_sem_seg_val" in str(err.value) and "t_cs_sem_seg_train" not in str(err.value)
    assert set(DatasetCatalog.list()) == before  # nothing half-registered
    with pytest.raises(ValueError, match="cityscapes_fine_sem_seg_val.*another prefix"):
        register_cityscapes(tree, prefix="cityscapes_fine")  # detectron2's own names
    with pytest.raises(ValueError, match=r"splits=\('val',\)"):
        register_cityscapes(tree, prefix="t_cs2", splits="val")
    with pytest.raises(ValueError, match="prefix"):
        register_cityscapes(tree, prefix="")
    assert set(DatasetCatalog.list()) == before


# --------------------------------------------------------------------------- train + evaluate
def _cfg(config, tmp_path, *opts):
    cfg = get_cfg()
    add_seg_plugins_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", "shapes", config))
    cfg.merge_from_list(
        ["MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", 0, "OUTPUT_DIR", str(tmp_path), *opts]
    )
    return cfg


@pytest.mark.slow
def test_semantic_load_map_train_and_evaluate(tree, names, tmp_path):
    names += register_cityscapes(tree, prefix="t_cs")
    cfg = _cfg(
        "unet_shapes.yaml",
        tmp_path,
        *["MODEL.UNET.BASE_CHANNELS", 4, "MODEL.UNET.DEPTH", 3],
        *["MODEL.SEM_SEG_HEAD.NUM_CLASSES", 19, "TEST.SEM_SEG_VIS.NUM_IMAGES", 1],
        *["DATASETS.TRAIN", ("t_cs_sem_seg_train",), "DATASETS.TEST", ("t_cs_sem_seg_val",)],
    )
    mapper = SemSegDatasetMapper(cfg, is_train=True)
    batch = [mapper(r) for r in DatasetCatalog.get("t_cs_sem_seg_train")]
    for item in batch:
        assert item["image"].shape == (3, 64, 128) and item["sem_seg"].shape == (64, 128)
        values = set(item["sem_seg"].unique().tolist())
        assert 255 in values and values - {255} <= set(range(19))  # trainIds and void

    model = build_model(cfg)
    train_two_iterations(model, batch)
    name = "t_cs_sem_seg_val"
    evaluator = Trainer.build_evaluator(cfg, name)  # ours + the official evaluation
    with torch.no_grad():
        results = inference_on_dataset(model, Trainer.build_test_loader(cfg, name), evaluator)
    assert set(results) == {"sem_seg", "cityscapes_sem_seg"}
    assert 0 <= results["sem_seg"]["mIoU"] <= 100 and 0 <= results["sem_seg"]["pACC"] <= 100
    assert set(results["cityscapes_sem_seg"]) == {"IoU", "iIoU", "IoU_sup", "iIoU_sup"}
    assert all(0 <= v <= 100 for v in results["cityscapes_sem_seg"].values())
    assert results["sem_seg"]["mIoU"] == pytest.approx(results["cityscapes_sem_seg"]["IoU"])


@pytest.mark.slow
def test_instance_load_map_train_and_evaluate(tree, names, tmp_path, monkeypatch):
    # cityscapesscripts' instance evaluation writes matches.json into the working directory.
    monkeypatch.chdir(tmp_path)
    names += register_cityscapes(tree, prefix="t_cs")
    cfg = _cfg(
        "mask_rcnn_R18_FPN_GN_shapes.yaml",
        tmp_path,
        *["MODEL.FPN.OUT_CHANNELS", 32, "MODEL.ROI_MASK_HEAD.CONV_DIM", 32],  # GN: 32 groups
        *["MODEL.ROI_MASK_HEAD.NUM_CONV", 1, "MODEL.ROI_BOX_HEAD.FC_DIM", 32],
        *["MODEL.ROI_HEADS.NUM_CLASSES", 8, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0],
        *["INPUT.MIN_SIZE_TRAIN", (64,), "INPUT.MAX_SIZE_TRAIN", 128, "INPUT.MIN_SIZE_TEST", 64],
        *["INPUT.MAX_SIZE_TEST", 128, "INPUT.MASK_FORMAT", "polygon"],
        *["DATASETS.TRAIN", ("t_cs_instance_seg_train",)],
        *["DATASETS.TEST", ("t_cs_instance_seg_val",)],
    )
    records = DatasetCatalog.get("t_cs_instance_seg_train")
    mapper = DatasetMapper(cfg, is_train=True)
    batch = [mapper(r) for r in records]
    for item, record in zip(batch, records):
        instances = item["instances"]
        assert item["image"].shape == (3, 64, 128)
        assert len(instances) == sum(not a["iscrowd"] for a in record["annotations"]) > 0
        assert set(instances.gt_classes.tolist()) <= {PERSON, CAR}
        assert len(instances.gt_masks.polygons) == len(instances)

    model = build_model(cfg)
    train_two_iterations(model, batch)
    name = "t_cs_instance_seg_val"
    evaluator = Trainer.build_evaluator(cfg, name)  # the official instance evaluation
    with torch.no_grad():
        results = inference_on_dataset(model, Trainer.build_test_loader(cfg, name), evaluator)
    assert set(results) == {"cityscapes_instance"}
    assert set(results["cityscapes_instance"]) >= {"AP", "AP50"}
    assert all(0 <= v <= 100 for v in results["cityscapes_instance"].values())


@pytest.mark.parametrize("damage", ["truncated", "no_size"])
def test_a_broken_polygons_json_is_named_not_a_parser_traceback(tmp_path, names, damage):
    """An audit: detectron2's loaders stop at the first broken polygons JSON with a
    bare parser error (JSONDecodeError / KeyError); the listing names each broken file and
    the fix instead, for both tasks."""
    fixture.make_cityscapes(tmp_path, "val", per_city=1)
    polygons = _train_id_files(str(tmp_path))[0].replace("labelTrainIds.png", "polygons.json")
    with open(polygons) as f:
        text = f.read()
    with open(polygons, "w") as f:
        f.write(text[: len(text) // 2] if damage == "truncated" else '{"objects": []}')
    names += register_cityscapes(tmp_path, prefix="t_cs", splits=["val"])
    for name in ("t_cs_instance_seg_val", "t_cs_sem_seg_val"):
        with pytest.raises(DataProblemError) as err:
            DatasetCatalog.get(name)
        message = str(err.value)
        assert f"[json_schema] {polygons}" in message and "gtFine_trainvaltest.zip" in message
