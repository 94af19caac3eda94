"""seg_plugins.data.builtin: VOC 2012, the medical binary folders, register_sem_seg_folder,
and the datasets the reference configs name (registered, consistent with the configs)."""

import glob
import logging
import os

import numpy as np
import pytest
from PIL import Image

import seg_plugins  # noqa: F401  must come before detectron2 submodules (repairs the install)

# isort: split
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog

from seg_plugins import add_seg_plugins_config
from seg_plugins.data import (
    SemSegDatasetMapper,
    read_label,
    register_medical_binary,
    register_sem_seg_folder,
    register_voc_2012_sem_seg,
)
from seg_plugins.data.builtin import VOC_CLASSES, _voc_colormap
from seg_plugins.data.io import read_image
from seg_plugins.engine import Trainer
from tests.data.train_checks import train_two_iterations

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# VOC ids -> (height, width); train and val as in VOC's split files, aug as in mmseg's aug.txt
VOC_TRAIN = {"2007_000032": (20, 30), "2007_000039": (24, 18)}
VOC_VAL = {"2007_000033": (16, 22)}
VOC_AUG = {"2008_000002": (12, 14), "2008_000003": (18, 26), "2008_000007": (10, 10)}


def _save_image(path, size, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    shape = size if channels == 1 else (*size, channels)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)


def _label(size, num_classes, seed=0):
    """Class indices (H, W) uint8 with an ignore (255) border, as VOC's object boundaries."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, num_classes, size, dtype=np.uint8)
    label[0, :] = 255
    return label


def _save_palette_label(path, label):
    """A VOC-style "P" PNG: indices stored raw, displayed with VOC's colour map."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img = Image.fromarray(label)  # "L"; putpalette makes it "P" with the same indices
    palette = [c for rgb in _voc_colormap(256) for c in rgb]
    img.putpalette(palette)
    img.save(path)


def _fake_voc(root, aug=True):
    """VOCdevkit/VOC2012 with JPEGImages, SegmentationClass (palette PNGs), split files, and
    (aug=True) mmseg's SegmentationClassAug ("L" PNGs) + aug.txt. Returns {id: label}."""
    voc = os.path.join(root, "VOCdevkit", "VOC2012")
    labels = {}
    splits = {"train.txt": VOC_TRAIN, "val.txt": VOC_VAL}
    if aug:
        splits["aug.txt"] = VOC_AUG
    for seed, (split, ids) in enumerate(splits.items()):
        for i, (image_id, size) in enumerate(ids.items()):
            _save_image(os.path.join(voc, "JPEGImages", f"{image_id}.jpg"), size, seed=i)
            labels[image_id] = _label(size, len(VOC_CLASSES), seed=10 * seed + i)
            if split == "aug.txt":
                path = os.path.join(voc, "SegmentationClassAug", f"{image_id}.png")
                os.makedirs(os.path.dirname(path), exist_ok=True)
                Image.fromarray(labels[image_id]).save(path)  # "L", as voc_aug.py
            else:
                path = os.path.join(voc, "SegmentationClass", f"{image_id}.png")
                _save_palette_label(path, labels[image_id])
        split_dir = os.path.join(voc, "ImageSets", "Segmentation")
        os.makedirs(split_dir, exist_ok=True)
        with open(os.path.join(split_dir, split), "w") as f:
            f.write("".join(f"{i}\n" for i in ids))
    return labels


def _fake_medical(root, cases=None, split="train"):
    """<root>/medical_binary/<split>/{images,masks}/<case>.png: grey images, 0/1 masks."""
    cases = cases or {"case_003": (20, 24), "case_001": (16, 16)}
    base = os.path.join(root, "medical_binary", split)
    for i, (case, size) in enumerate(cases.items()):
        _save_image(os.path.join(base, "images", f"{case}.png"), size, channels=1, seed=i)
        mask = np.zeros(size, np.uint8)
        mask[4:10, 3:12] = 1
        os.makedirs(os.path.join(base, "masks"), exist_ok=True)
        Image.fromarray(mask).save(os.path.join(base, "masks", f"{case}.png"))
    return base


# --------------------------------------------------------------------------- VOC
def test_voc_records_sizes_and_raw_palette_labels(tmp_path, names):
    labels = _fake_voc(tmp_path)
    names += register_voc_2012_sem_seg(str(tmp_path), prefix="t_voc")
    assert names == ["t_voc_sem_seg_train", "t_voc_sem_seg_val", "t_voc_aug_sem_seg_train"]
    voc = os.path.join(str(tmp_path), "VOCdevkit", "VOC2012")

    train = DatasetCatalog.get("t_voc_sem_seg_train")
    assert [r["image_id"] for r in train] == list(VOC_TRAIN)
    for record in train:
        image_id = record["image_id"]
        assert record["file_name"] == os.path.join(voc, "JPEGImages", f"{image_id}.jpg")
        assert record["sem_seg_file_name"] == os.path.join(
            voc, "SegmentationClass", f"{image_id}.png"
        )
        assert (record["height"], record["width"]) == VOC_TRAIN[image_id]
        # palette indices come back raw (255 = boundary stays 255), not palette colours
        np.testing.assert_array_equal(read_label(record["sem_seg_file_name"]), labels[image_id])
    assert [r["image_id"] for r in DatasetCatalog.get("t_voc_sem_seg_val")] == list(VOC_VAL)

    # mmseg's voc12aug: train.txt with SegmentationClass + aug.txt with SegmentationClassAug
    aug = DatasetCatalog.get("t_voc_aug_sem_seg_train")
    assert [r["image_id"] for r in aug] == list(VOC_TRAIN) + list(VOC_AUG)
    folders = [os.path.basename(os.path.dirname(r["sem_seg_file_name"])) for r in aug]
    assert folders == ["SegmentationClass"] * 2 + ["SegmentationClassAug"] * 3
    assert (aug[-1]["height"], aug[-1]["width"]) == VOC_AUG["2008_000007"]

    meta = MetadataCatalog.get("t_voc_sem_seg_val")
    assert meta.stuff_classes == VOC_CLASSES and len(meta.stuff_classes) == 21
    assert meta.stuff_colors[15] == [192, 128, 128]  # "person" in VOC's colour map
    assert (meta.ignore_label, meta.evaluator_type) == (255, "sem_seg")
    assert meta.image_root == os.path.join(voc, "JPEGImages")
    assert meta.sem_seg_root == os.path.join(voc, "SegmentationClass")


def test_voc_missing_root_fails_on_load_not_on_register(tmp_path, names):
    names += register_voc_2012_sem_seg(str(tmp_path / "nowhere"), prefix="t_voc")
    with pytest.raises(FileNotFoundError) as err:
        DatasetCatalog.get("t_voc_sem_seg_train")
    message = str(err.value)
    assert os.path.join(str(tmp_path / "nowhere"), "VOCdevkit", "VOC2012") in message
    assert "VOCtrainval_11-May-2012.tar" in message and "DETECTRON2_DATASETS" in message


def test_voc_aug_without_conversion_names_the_converter(tmp_path, names):
    _fake_voc(tmp_path, aug=False)
    names += register_voc_2012_sem_seg(str(tmp_path), prefix="t_voc")
    assert len(DatasetCatalog.get("t_voc_sem_seg_train")) == 2  # the plain splits still load
    with pytest.raises(FileNotFoundError) as err:
        DatasetCatalog.get("t_voc_aug_sem_seg_train")
    assert "SegmentationClassAug" in str(err.value) and "voc_aug.py" in str(err.value)


def test_voc_listed_file_missing_is_named(tmp_path, names):
    _fake_voc(tmp_path)
    voc = os.path.join(str(tmp_path), "VOCdevkit", "VOC2012")
    os.remove(os.path.join(voc, "SegmentationClass", "2007_000039.png"))
    names += register_voc_2012_sem_seg(str(tmp_path), prefix="t_voc")
    with pytest.raises(FileNotFoundError, match="2007_000039.png"):
        DatasetCatalog.get("t_voc_sem_seg_train")


# --------------------------------------------------------------------------- medical / folders
def test_medical_binary_records_metadata_and_grey_mapping(tmp_path, names):
    base = _fake_medical(tmp_path)
    names += register_medical_binary(str(tmp_path), prefix="t_med")
    assert names == ["t_med_train", "t_med_val"]
    records = DatasetCatalog.get("t_med_train")
    assert [r["image_id"] for r in records] == ["case_001", "case_003"]  # sorted by name
    assert records[1] == {
        "file_name": os.path.join(base, "images", "case_003.png"),
        "sem_seg_file_name": os.path.join(base, "masks", "case_003.png"),
        "height": 20,
        "width": 24,
        "image_id": "case_003",
    }
    meta = MetadataCatalog.get("t_med_train")
    assert meta.stuff_classes == ["background", "foreground"]
    assert (meta.ignore_label, meta.evaluator_type) == (255, "sem_seg")
    assert meta.image_root == os.path.join(base, "images")
    assert meta.sem_seg_root == os.path.join(base, "masks")

    # through the medical U-Net config's mapper: one grey channel, labels 0/1
    cfg = _config("configs/medical/unet_S5_medical_binary_40k.yaml")
    out = SemSegDatasetMapper(cfg, is_train=True)(records[1])
    assert out["image"].shape[0] == 1 and out["image"].shape[1:] == out["sem_seg"].shape
    # the 20x24 image (randomly rescaled) is padded up to the config's crop with 255
    # (INPUT.SEM_SEG.PAD_TO_CROP)
    assert tuple(out["sem_seg"].shape) == tuple(cfg.INPUT.CROP.SIZE)
    assert set(out["sem_seg"].unique().tolist()) == {0, 1, 255}


def test_missing_medical_folder_fails_on_load_naming_the_path(tmp_path, names):
    names += register_medical_binary(str(tmp_path), prefix="t_med")  # nothing there: fine
    with pytest.raises(FileNotFoundError) as err:
        DatasetCatalog.get("t_med_val")
    expected = os.path.join(str(tmp_path), "medical_binary", "val", "images")
    assert expected in str(err.value) and "<case>.png" in str(err.value)


def test_unmatched_files_are_named_with_the_fix(tmp_path, names):
    cases = {f"c{i}": (8, 8) for i in range(8)}
    base = _fake_medical(tmp_path, cases)
    for i in range(7):  # 7 images without a mask: the message names 5 and counts the rest
        os.remove(os.path.join(base, "masks", f"c{i}.png"))
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(os.path.join(base, "masks", "stray.png"))
    names.append("t_folder")
    register_sem_seg_folder(
        "t_folder",
        os.path.join(base, "images"),
        os.path.join(base, "masks"),
        stuff_classes=["background", "foreground"],
    )
    with pytest.raises(ValueError) as err:
        DatasetCatalog.get("t_folder")
    message = str(err.value)
    assert "7 image(s)" in message and os.path.join(base, "images") in message
    assert "'c0.png'" in message and "'c4.png'" in message and "and 2 more" in message
    assert "'c5.png'" not in message
    assert "1 mask(s)" in message and "'stray.png'" in message and "mask_ext" in message


def test_folder_pairs_mask_suffix_and_other_extensions(tmp_path, names):
    images, masks = tmp_path / "img", tmp_path / "lbl"
    masks.mkdir()
    for i, stem in enumerate(["b", "a"]):
        _save_image(str(images / f"{stem}.jpg"), (6, 9), seed=i)
        Image.fromarray(_label((6, 9), 3)).save(str(masks / f"{stem}_mask.png"))
    (images / "notes.txt").write_text("not an image")
    names.append("t_folder")
    register_sem_seg_folder(
        "t_folder",
        str(images),
        str(masks),
        stuff_classes=["a", "b", "c"],
        image_ext=".jpg",
        mask_ext="_mask.png",
    )
    records = DatasetCatalog.get("t_folder")
    assert [os.path.basename(r["sem_seg_file_name"]) for r in records] == [
        "a_mask.png",
        "b_mask.png",
    ]
    assert (records[0]["height"], records[0]["width"]) == (6, 9)


def test_record_size_follows_exif_rotation_as_read_image(tmp_path, names):
    images, masks = tmp_path / "img", tmp_path / "lbl"
    images.mkdir()
    masks.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees: a 10x30 (HxW) file is a 30x10 image
    Image.fromarray(np.zeros((10, 30, 3), np.uint8)).save(images / "r.jpg", exif=exif.tobytes())
    Image.fromarray(np.zeros((30, 10), np.uint8)).save(masks / "r.png")
    names.append("t_folder")
    register_sem_seg_folder(
        "t_folder", str(images), str(masks), stuff_classes=["a", "b"], image_ext=".jpg"
    )
    record = DatasetCatalog.get("t_folder")[0]
    assert (record["height"], record["width"]) == read_image(str(images / "r.jpg")).shape[:2]
    assert (record["height"], record["width"]) == (30, 10)


def test_16bit_tiff_medical_pairs_load_map_train_and_evaluate(tmp_path, names):
    """16-bit TIFF CT-like slices (values up to 4000) with 0/1 masks: the records, the mapper
    (a fixed window, values intact before it), two training iterations of the medical U-Net
    and an evaluation."""
    import cv2
    import torch
    from detectron2.modeling import build_model

    from seg_plugins.evaluation import SemSegMetricsEvaluator

    base = os.path.join(tmp_path, "medical_binary", "train")
    os.makedirs(os.path.join(base, "images"))
    os.makedirs(os.path.join(base, "masks"))
    rng = np.random.default_rng(0)
    for case in ("ct_0", "ct_1"):
        image = rng.integers(0, 1000, (40, 48)).astype(np.uint16)
        mask = np.zeros((40, 48), np.uint8)
        mask[10:30, 8:40] = 1
        image[mask == 1] += 3000  # bright foreground, above 8 bits
        assert cv2.imwrite(os.path.join(base, "images", f"{case}.tif"), image)
        Image.fromarray(mask).save(os.path.join(base, "masks", f"{case}.png"))
    register_sem_seg_folder(
        "t_med16_train",
        os.path.join(base, "images"),
        os.path.join(base, "masks"),
        stuff_classes=["background", "foreground"],
        image_ext=".tif",
    )
    names.append("t_med16_train")
    records = DatasetCatalog.get("t_med16_train")
    assert [(r["height"], r["width"]) for r in records] == [(40, 48), (40, 48)]
    assert read_image(records[0]["file_name"], format="L").max() > 3000  # not clipped

    cfg = _config("configs/medical/unet_S5_medical_binary_40k.yaml")
    cfg.merge_from_list(
        ["DATASETS.TRAIN", ("t_med16_train",), "DATASETS.TEST", ("t_med16_train",)]
        + ["INPUT.INTENSITY_NORM.MODE", "window", "INPUT.INTENSITY_NORM.WINDOW", [0.0, 4000.0]]
        + ["INPUT.CROP.ENABLED", False, "INPUT.SEM_SEG.RESIZE_RATIO_RANGE", [1.0, 1.0]]
        + ["INPUT.SEM_SEG.PHOTOMETRIC.ENABLED", False]  # the window's output, unchanged
        + ["MODEL.UNET.BASE_CHANNELS", 4, "MODEL.UNET.DEPTH", 2, "MODEL.DEVICE", "cpu"]
    )
    batch = [SemSegDatasetMapper(cfg, is_train=True)(r) for r in records]
    image = batch[0]["image"]
    assert image.dtype == torch.float32 and image.shape == (1, 40, 48)
    assert 0 <= image.min() and image.max() <= 255 and image.max() > 200  # windowed, not clipped
    fg = batch[0]["sem_seg"] == 1
    assert image[0][fg].mean() > 3 * image[0][~fg].mean()  # the foreground stays bright

    model = build_model(cfg)
    train_two_iterations(model, batch)
    evaluator = SemSegMetricsEvaluator(cfg, "t_med16_train")
    evaluator.reset()
    test_mapper = SemSegDatasetMapper(cfg, is_train=False)
    with torch.no_grad():
        for r in records:
            item = test_mapper(r)
            evaluator.process([r], model([item]))
    res = evaluator.evaluate()["sem_seg"]
    assert 0 <= res["mIoU"] <= 100 and "caseDice-foreground" in res


def test_0_255_binary_mask_warns(tmp_path, names, caplog):
    base = _fake_medical(tmp_path, {"a": (8, 8)})
    Image.fromarray(np.where(np.eye(8) > 0, 255, 0).astype(np.uint8)).save(
        os.path.join(base, "masks", "a.png")
    )
    names += register_medical_binary(str(tmp_path), prefix="t_med")
    with caplog.at_level(logging.WARNING, logger="seg_plugins.data.builtin"):
        DatasetCatalog.get("t_med_train")
    assert "only 0 and 255" in caplog.text


def test_register_sem_seg_folder_checks_its_arguments(names):
    with pytest.raises(ValueError, match="ignore_label 1"):
        register_sem_seg_folder("t_bad", "i", "m", stuff_classes=["bg", "fg"], ignore_label=1)
    with pytest.raises(ValueError, match="non-empty list"):
        register_sem_seg_folder("t_bad", "i", "m", stuff_classes=[])
    assert "t_bad" not in DatasetCatalog.list()


# --------------------------------------------------------------------------- builtin names
def test_builtin_names_registered_on_import_under_detectron2_datasets():
    root = os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))
    voc = os.path.join(root, "VOCdevkit", "VOC2012")
    expected = {
        "voc_2012_sem_seg_train": os.path.join(voc, "SegmentationClass"),
        "voc_2012_sem_seg_val": os.path.join(voc, "SegmentationClass"),
        "voc_2012_aug_sem_seg_train": os.path.join(voc, "SegmentationClassAug"),
        "medical_binary_train": os.path.join(root, "medical_binary", "train", "masks"),
        "medical_binary_val": os.path.join(root, "medical_binary", "val", "masks"),
    }
    for name, sem_seg_root in expected.items():
        assert name in DatasetCatalog.list()
        assert MetadataCatalog.get(name).sem_seg_root == sem_seg_root


def _config(relpath):
    cfg = get_cfg()
    add_seg_plugins_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, relpath))
    return cfg


# The semantic reference configs (the instance ones, mask_rcnn_*, are checked in
# tests/engine/test_instance_configs.py).
REFERENCE_CONFIGS = sorted(
    os.path.relpath(p, REPO)
    for family in ("cityscapes", "ade20k", "voc", "medical")
    for p in glob.glob(os.path.join(REPO, "configs", family, "*.yaml"))
    if not os.path.basename(p).startswith("mask_rcnn")
)


def test_reference_configs_exist():
    families = {p.split(os.sep)[1] for p in REFERENCE_CONFIGS}
    assert families == {"cityscapes", "ade20k", "voc", "medical"}


@pytest.mark.parametrize("path", REFERENCE_CONFIGS)
def test_reference_config_datasets_match_the_model(path):
    """Registered datasets whose classes and ignore label agree with the config's head."""
    cfg = _config(path)
    head = cfg.MODEL.SEM_SEG_HEAD
    for name in cfg.DATASETS.TRAIN + cfg.DATASETS.TEST:
        assert name in DatasetCatalog.list(), name
        meta = MetadataCatalog.get(name)
        expected = 2 if head.NUM_CLASSES == 1 else head.NUM_CLASSES  # 1 = binary
        assert len(meta.stuff_classes) == expected, name
        assert meta.ignore_label == head.IGNORE_VALUE, name
    assert cfg.OUTPUT_DIR.endswith(os.path.splitext(os.path.basename(path))[0])
    assert cfg.TEST.EVAL_PERIOD > 0 and cfg.SOLVER.CHECKPOINT_PERIOD > 0


# Cityscapes' official evaluator reads gtFine at construction (tests/evaluation covers it).
@pytest.mark.parametrize("path", [p for p in REFERENCE_CONFIGS if "cityscapes" not in p])
def test_reference_config_test_sets_have_an_evaluator(path):
    cfg = _config(path)
    for name in cfg.DATASETS.TEST:
        assert Trainer.build_evaluator(cfg, name, output_folder=None) is not None
