"""seg_plugins.data.mapper: SemSegDatasetMapper and its augmentations."""

import copy

import numpy as np
import pytest
import torch
from PIL import Image

import seg_plugins  # noqa: F401  must come before detectron2 submodules (repairs the install)

# isort: split
from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T

from seg_plugins.config import add_seg_plugins_config
from seg_plugins.data import SemSegDatasetMapper, generate_shapes
from seg_plugins.data.augmentations import PadToSize
from seg_plugins.data.mapper import RandomResizeRatio
from seg_plugins.data.shapes import load_shapes

# One distinct colour per class: the image says which class each pixel has, so any
# misalignment between image and label after augmentation is visible.
PALETTE = np.array([[10, 20, 30], [250, 40, 40], [40, 250, 40], [40, 40, 250]], np.uint8)


def _write_pair(tmp_path, label: np.ndarray, name="a", label_mode=None):
    """Write image (PALETTE[label % 4]) and label PNGs; return a dataset dict."""
    image_file, label_file = tmp_path / f"{name}.png", tmp_path / f"{name}_label.png"
    Image.fromarray(PALETTE[label % 4]).save(image_file)
    Image.fromarray(label if label_mode is None else label.astype(label_mode)).save(label_file)
    h, w = label.shape
    return {
        "file_name": str(image_file),
        "sem_seg_file_name": str(label_file),
        "height": h,
        "width": w,
        "image_id": name,
        "annotations": [{"bbox": [0, 0, 1, 1]}],
    }


def _blocks(h=48, w=40, cell=8, seed=0):
    """A label map (H, W) uint8 of random classes 0..3 in cell x cell blocks."""
    rng = np.random.default_rng(seed)
    grid = rng.integers(0, 4, (h // cell + 1, w // cell + 1)).astype(np.uint8)
    return np.kron(grid, np.ones((cell, cell), np.uint8))[:h, :w]


def _class_from_image(image: torch.Tensor) -> np.ndarray:
    """Per pixel, the class whose PALETTE colour is nearest to the (3, H, W) RGB image."""
    pixels = image.permute(1, 2, 0).numpy().astype(np.int64)
    dist = ((pixels[:, :, None, :] - PALETTE[None, None].astype(np.int64)) ** 2).sum(-1)
    return dist.argmin(-1)


def _cfg(**input_overrides):
    cfg = get_cfg()
    add_seg_plugins_config(cfg)
    cfg.INPUT.FORMAT = "RGB"
    cfg.DATASETS.TRAIN = ()
    for key, value in input_overrides.items():
        node = cfg.INPUT
        *parents, leaf = key.split("__")
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return cfg


def test_output_shapes_dtypes_and_keys(tmp_path):
    label = _blocks()
    record = _write_pair(tmp_path, label)
    original = copy.deepcopy(record)
    out = SemSegDatasetMapper(is_train=True, augmentations=[], image_format="RGB")(record)
    assert record == original  # the input dict is not modified
    assert out["image"].dtype == torch.uint8 and out["image"].shape == (3, 48, 40)
    assert out["image"].is_contiguous()
    assert out["sem_seg"].dtype == torch.long and out["sem_seg"].shape == (48, 40)
    np.testing.assert_array_equal(out["sem_seg"].numpy(), label)
    np.testing.assert_array_equal(_class_from_image(out["image"]), label)
    assert "annotations" not in out
    assert (out["height"], out["width"], out["file_name"]) == (48, 40, record["file_name"])


def test_bgr_format(tmp_path):
    record = _write_pair(tmp_path, _blocks())
    rgb = SemSegDatasetMapper(is_train=False, image_format="RGB")(record)["image"]
    bgr = SemSegDatasetMapper(is_train=False, image_format="BGR")(record)["image"]
    assert torch.equal(bgr, rgb.flip(0))


@pytest.mark.parametrize("horizontal", [True, False])
def test_flip_applied_to_image_and_label_alike(tmp_path, horizontal):
    label = _blocks(cell=4)
    flip = T.RandomFlip(prob=1.0, horizontal=horizontal, vertical=not horizontal)
    mapper = SemSegDatasetMapper(is_train=True, augmentations=[flip], image_format="RGB")
    out = mapper(_write_pair(tmp_path, label))
    expected = label[:, ::-1] if horizontal else label[::-1, :]
    np.testing.assert_array_equal(out["sem_seg"].numpy(), expected)
    np.testing.assert_array_equal(_class_from_image(out["image"]), expected)


def test_random_resize_ratio(tmp_path):
    label = _blocks()
    mapper = SemSegDatasetMapper(augmentations=[RandomResizeRatio(2.0, 2.0)], image_format="RGB")
    out = mapper(_write_pair(tmp_path, label))
    assert out["image"].shape == (3, 96, 80) and out["sem_seg"].shape == (96, 80)
    np.testing.assert_array_equal(out["sem_seg"].numpy(), np.kron(label, np.ones((2, 2))))
    with pytest.raises(ValueError, match="RESIZE_RATIO_RANGE"):
        RandomResizeRatio(2.0, 1.0)


def test_from_config_train_pipeline_keeps_alignment(tmp_path):
    cfg = _cfg(
        SEM_SEG__RESIZE_RATIO_RANGE=[0.75, 1.5],
        CROP__ENABLED=True,
        CROP__TYPE="absolute",
        CROP__SIZE=[32, 32],
        SEM_SEG__CROP_SINGLE_CATEGORY_MAX_AREA=0.75,
        RANDOM_FLIP="horizontal",
    )
    mapper = SemSegDatasetMapper(cfg, is_train=True)
    kinds = [type(a) for a in mapper.augmentations.augs]
    assert kinds == [
        RandomResizeRatio,
        T.RandomCrop_CategoryAreaConstraint,
        T.RandomFlip,
        PadToSize,  # INPUT.SEM_SEG.PAD_TO_CROP (default True): small images padded to 32x32
    ]
    record = _write_pair(tmp_path, _blocks(64, 64))
    np.random.seed(0)
    for _ in range(5):
        out = mapper(record)
        assert out["image"].shape == (3, 32, 32) and out["sem_seg"].shape == (32, 32)
        agree = _class_from_image(out["image"]) == out["sem_seg"].numpy()
        assert agree.mean() > 0.9  # only block edges may blur under bilinear resizing


def test_from_config_test_has_no_augmentation(tmp_path):
    cfg = _cfg(CROP__ENABLED=True, SEM_SEG__RESIZE_RATIO_RANGE=[0.5, 2.0])
    mapper = SemSegDatasetMapper(cfg, is_train=False)
    assert mapper.augmentations.augs == [] and not mapper.is_train
    label = _blocks()
    out = mapper(_write_pair(tmp_path, label))
    np.testing.assert_array_equal(out["sem_seg"].numpy(), label)


def test_from_config_reads_ignore_label_from_metadata():
    name = "test_mapper_meta_ignore"
    MetadataCatalog.get(name).set(ignore_label=7)
    try:
        cfg = _cfg(CROP__ENABLED=True, CROP__TYPE="absolute", CROP__SIZE=[8, 8])
        cfg.DATASETS.TRAIN = (name,)
        mapper = SemSegDatasetMapper(cfg, is_train=True)
        assert mapper.ignore_label == 7
        assert mapper.augmentations.augs[0].ignored_category == 7
        assert SemSegDatasetMapper(_cfg(), is_train=True).ignore_label == 255
    finally:
        MetadataCatalog.remove(name)


def test_bad_flip_option_rejected():
    with pytest.raises(ValueError, match="RANDOM_FLIP"):
        SemSegDatasetMapper(_cfg(RANDOM_FLIP="diagonal"), is_train=True)


def test_missing_label_file(tmp_path):
    record = _write_pair(tmp_path, _blocks())
    del record["sem_seg_file_name"]
    with pytest.raises(ValueError, match="sem_seg_file_name") as info:
        SemSegDatasetMapper(is_train=True, image_format="RGB")(record)
    assert record["file_name"] in str(info.value)
    out = SemSegDatasetMapper(is_train=False, image_format="RGB")(record)  # inference: fine
    assert "sem_seg" not in out and out["image"].shape == (3, 48, 40)


def test_size_mismatch_names_both_files(tmp_path):
    record = _write_pair(tmp_path, _blocks(48, 40))
    Image.fromarray(_blocks(40, 48)).save(record["sem_seg_file_name"])
    del record["height"], record["width"]
    with pytest.raises(ValueError) as info:
        SemSegDatasetMapper(image_format="RGB")(record)
    message = str(info.value)
    assert record["file_name"] in message and record["sem_seg_file_name"] in message
    assert "48x40" in message and "40x48" in message


def test_16bit_and_palette_labels_through_resize(tmp_path):
    label16 = _blocks().astype(np.uint16) * 300  # values up to 900
    record = _write_pair(tmp_path, label16, name="b")
    mapper = SemSegDatasetMapper(augmentations=[RandomResizeRatio(2.0, 2.0)], image_format="RGB")
    out = mapper(record)
    np.testing.assert_array_equal(out["sem_seg"].numpy(), np.kron(label16, np.ones((2, 2))))

    label = _blocks()
    record = _write_pair(tmp_path, label, name="c")
    palette_img = Image.fromarray(label, mode="P")
    palette_img.putpalette([v for c in PALETTE.tolist() for v in c])
    palette_img.save(record["sem_seg_file_name"])
    out = SemSegDatasetMapper(image_format="RGB")(record)
    np.testing.assert_array_equal(out["sem_seg"].numpy(), label)


def test_maps_shapes_records(tmp_path):
    generate_shapes(str(tmp_path), "val", 2, 64, seed=3)
    records = load_shapes(str(tmp_path), "val", 2, 64, 3, "", "test_mapper_shapes_val")
    try:
        mapper = SemSegDatasetMapper(is_train=True, augmentations=[], image_format="BGR")
        out = mapper(records[0])
        assert out["image"].shape == (3, 64, 64) and out["sem_seg"].shape == (64, 64)
        assert set(out["sem_seg"].unique().tolist()) <= {0, 1, 2, 3}
        assert "annotations" not in out
    finally:
        MetadataCatalog.remove("test_mapper_shapes_val")
