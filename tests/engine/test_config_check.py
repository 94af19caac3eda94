"""Impossible configs are refused at start-up (seg_plugins.engine.config_check):
values out of range, a semantic head whose class count contradicts the dataset (binary
mode with more than two classes), a sliding window with gaps, slide windows that are not
multiples of the backbone's output stride, a box classifier with fewer classes than the
dataset. Each error names the key and the fix; tools/train_net.py reports it as one line."""

import os
import uuid

import pytest

import seg_plugins  # noqa: F401  (first: repairs detectron2 where needed)

# isort: split
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog

from seg_plugins import add_seg_plugins_config
from seg_plugins.engine.cli import main
from seg_plugins.engine.config_check import check_config
from seg_plugins.engine.trainer import Trainer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UNET = os.path.join(REPO, "configs", "shapes", "unet_shapes.yaml")
MASK_RCNN = os.path.join(REPO, "configs", "shapes", "mask_rcnn_R18_FPN_GN_shapes.yaml")


@pytest.fixture
def dataset():
    """A registered (empty) dataset whose metadata the test sets."""
    name = f"check_{uuid.uuid4().hex[:8]}"
    DatasetCatalog.register(name, lambda: [])
    yield name, MetadataCatalog.get(name)
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _cfg(path=UNET, *opts):
    cfg = get_cfg()
    add_seg_plugins_config(cfg)
    cfg.merge_from_file(path)
    cfg.merge_from_list(list(opts))
    return cfg


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("SOLVER.IMS_PER_BATCH", 0, r"SOLVER.IMS_PER_BATCH=0: must be >= 1"),
        ("SOLVER.MAX_ITER", -5, r"SOLVER.MAX_ITER=-5: must be >= 0"),
        ("SOLVER.CHECKPOINT_PERIOD", 0, r"SOLVER.CHECKPOINT_PERIOD=0: must be >= 1"),
        ("SOLVER.SKIP_NONFINITE_STEPS", -1, r"SKIP_NONFINITE_STEPS=-1"),
        ("TEST.EVAL_PERIOD", -1, r"TEST.EVAL_PERIOD=-1: must be >= 0 \(0 = only at the end\)"),
        ("DATALOADER.NUM_WORKERS", -2, r"DATALOADER.NUM_WORKERS=-2"),
        ("SOLVER.BASE_LR", 0.0, r"SOLVER.BASE_LR=0.0: must be a positive finite number"),
        ("SOLVER.BASE_LR", float("nan"), r"SOLVER.BASE_LR=nan"),
        ("MODEL.WEIGHTS_SHAPE_MISMATCH", "ignore", r"WEIGHTS_SHAPE_MISMATCH='ignore'; use one"),
        ("TEST.SEM_SEG.STRIDE", [96, 96], r"STRIDE=\[96, 96\] exceeds TEST.SEM_SEG.CROP_SIZE"),
        ("TEST.SEM_SEG.SCALES", [0.0], r"SCALES=\[0.0\]; give positive resize ratios"),
        ("MODEL.SEM_SEG_HEAD.NUM_CLASSES", 0, r"NUM_CLASSES=0: must be >= 1 \(1 = binary\)"),
    ],
)
def test_values_out_of_range_name_the_key(key, value, match):
    cfg = _cfg(UNET, "TEST.SEM_SEG.CROP_SIZE", [64, 64], "TEST.SEM_SEG.STRIDE", [48, 48])
    check_config(cfg)  # the shipped config passes
    cfg.merge_from_list([key, value])
    with pytest.raises(ValueError, match=match):
        check_config(cfg)


@pytest.mark.parametrize(
    "num_classes,classes,match",
    [
        (1, ["bg", "a", "b"], r"NUM_CLASSES=1 is binary mode .* dataset '.*' has 3 classes "
         r"\(bg, a, b\); set NUM_CLASSES to 3"),
        (5, ["bg", "a", "b"], r"NUM_CLASSES=5, but dataset '.*' has 3 classes .*set "
         r"NUM_CLASSES to 3$"),
        (3, ["bg", "vessel"], r"has 2 classes .*set NUM_CLASSES to 2 \(or 1 for binary"),
        (1, ["bg", "vessel"], None),
        (2, ["vessel"], None),  # a binary dataset naming its foreground only
        (3, ["bg", "a", "b"], None),
    ],
)  # fmt: skip
def test_semantic_class_count_must_fit_every_dataset(dataset, num_classes, classes, match):
    name, meta = dataset
    meta.set(stuff_classes=classes)
    cfg = _cfg(UNET, "DATASETS.TRAIN", (name,), "DATASETS.TEST", (name,),
               "MODEL.SEM_SEG_HEAD.NUM_CLASSES", num_classes)  # fmt: skip
    if match is None:
        check_config(cfg)
    else:
        with pytest.raises(ValueError, match=match):
            check_config(cfg)


def test_box_classifier_with_fewer_classes_than_the_dataset(dataset):
    name, meta = dataset
    meta.set(thing_classes=["a", "b", "c"])
    cfg = _cfg(MASK_RCNN, "DATASETS.TRAIN", (name,), "MODEL.ROI_HEADS.NUM_CLASSES", 2)
    with pytest.raises(
        ValueError,
        match=r"ROI_HEADS.NUM_CLASSES=2, but dataset .* has 3 thing "
        r"classes; set it to 3",
    ):
        check_config(cfg)
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    check_config(cfg)


def test_slide_window_not_a_multiple_of_the_output_stride_fails_before_training(tmp_path):
    """U-Net of depth 2 divides by 4: a 30-pixel window cannot be stitched; the Trainer
    refuses it while it builds the model, before any iteration."""
    cfg = _cfg(UNET, "MODEL.UNET.DEPTH", 2, "MODEL.UNET.BASE_CHANNELS", 4, "MODEL.DEVICE", "cpu",
               "TEST.SEM_SEG.MODE", "slide", "TEST.SEM_SEG.CROP_SIZE", [30, 30],
               "TEST.SEM_SEG.STRIDE", [20, 20], "OUTPUT_DIR", str(tmp_path))  # fmt: skip
    check_config(cfg)  # needs the model: not decidable from the keys alone
    with pytest.raises(
        ValueError,
        match=r"CROP_SIZE=\[30, 30\] is not a multiple of the "
        r"backbone's size_divisibility 4; set it to \[32, 32\]",
    ):
        Trainer(cfg)


def test_train_net_reports_an_impossible_combination_as_one_line(tmp_path, capsys):
    argv = ["--config-file", UNET, "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "1",
            "OUTPUT_DIR", str(tmp_path)]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "NUM_CLASSES=1 is binary mode" in err[0], err
    assert "'shapes_sem_seg_train' has 4 classes" in err[0]
    assert not os.listdir(tmp_path)  # refused before anything was written
