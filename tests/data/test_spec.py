"""Dataset specs (YAML / JSON, DATASETS.SPECS) and label conventions (reduce_zero_label,
binary masks as 0/255): registration without Python, errors that name the field, and the
palette-PNG folder format end to end (load, map, train two iterations, evaluate)."""

import json
import os

import numpy as np
import pytest
from PIL import Image

import seg_plugins  # noqa: F401  must come before detectron2 submodules (repairs the install)

# isort: split
from detectron2.data import DatasetCatalog, MetadataCatalog

from seg_plugins.data import SemSegDatasetMapper
from seg_plugins.data.builtin import _voc_colormap
from seg_plugins.data.labels import apply_label_transform, label_transform_for
from seg_plugins.data.spec import DatasetSpecError, load_dataset_spec, register_dataset_spec
from seg_plugins.engine import Trainer
from seg_plugins.engine.cli import ConfigError, setup_cfg
from tests.modeling.seg_model_checks import tiny_model_cfg

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _palette_folder(root, split, n, *, classes=3, zero_is_unlabelled=False, size=(24, 32)):
    """VOC-style data: RGB JPEG-like photos and palette ("P") PNG labels whose indices are the
    classes; each class has its own colour in the photo so a model can learn it."""
    rng = np.random.default_rng(len(split) + n)
    os.makedirs(os.path.join(root, split, "img"), exist_ok=True)
    os.makedirs(os.path.join(root, split, "ann"), exist_ok=True)
    colors = np.array(_voc_colormap(256), np.uint8)
    for i in range(n):
        label = np.zeros(size, np.uint8)
        for k in range(1, classes):
            y, x = rng.integers(0, size[0] - 8), rng.integers(0, size[1] - 8)
            label[y : y + 8, x : x + 8] = k
        if zero_is_unlabelled:
            label = label + 1  # 1..K classes, 0 = not labelled
            label[0, :] = 0
        photo = colors[label * 3 + 5]
        Image.fromarray(photo).save(os.path.join(root, split, "img", f"{i:03d}.png"))
        ann = Image.fromarray(label)
        ann.putpalette(colors.ravel().tolist())  # "P": indices stored, colours displayed
        ann.save(os.path.join(root, split, "ann", f"{i:03d}.png"))


def _write(path, text):
    path.write_text(text)
    return str(path)


SPEC = """
name: {name}
format: sem_seg_folder
classes: [background, cat, dog]
ignore_label: 255
splits:
  train: {{images: train/img, masks: train/ann}}
  val: {{images: val/img, masks: val/ann}}
"""


def test_yaml_spec_registers_palette_folders_and_config_trains_and_evaluates(tmp_path, names):
    """The palette-PNG folder acceptance fixture: registered by a spec named in the config,
    loaded, mapped (palette indices, not colours), two iterations trained, evaluated."""
    _palette_folder(tmp_path, "train", 4)
    _palette_folder(tmp_path, "val", 2)
    spec = _write(tmp_path / "pets.yaml", SPEC.format(name="t_pets"))
    names += ["t_pets_train", "t_pets_val"]

    cfg = tiny_model_cfg(
        "UNet",
        "DATASETS.SPECS", [spec],
        "DATASETS.TRAIN", ("t_pets_train",), "DATASETS.TEST", ("t_pets_val",),
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 3, "SOLVER.MAX_ITER", 2, "SOLVER.IMS_PER_BATCH", 2,
        "INPUT.CROP.ENABLED", False, "DATALOADER.NUM_WORKERS", 0,
        "TEST.SEM_SEG_VIS.NUM_IMAGES", 0, "OUTPUT_DIR", str(tmp_path / "out"),
    )  # fmt: skip
    trainer = Trainer(cfg)  # registers the spec
    records = DatasetCatalog.get("t_pets_train")
    assert len(records) == 4 and MetadataCatalog.get("t_pets_val").stuff_classes[2] == "dog"
    assert MetadataCatalog.get("t_pets_train").dataset_spec == spec
    item = SemSegDatasetMapper(cfg, is_train=False)(records[0])
    raw = np.asarray(Image.open(records[0]["sem_seg_file_name"]))
    assert np.array_equal(item["sem_seg"].numpy(), raw)  # indices, not the palette's colours
    assert set(np.unique(raw)) <= {0, 1, 2}
    trainer.resume_or_load(resume=False)
    trainer.train()
    res = trainer._last_eval_results["sem_seg"]
    assert 0 <= res["mIoU"] <= 100 and "IoU-dog" in res
    assert register_dataset_spec(spec) == ["t_pets_train", "t_pets_val"]  # idempotent


def test_json_spec_with_reduce_zero_label(tmp_path, names):
    """ADE20K-style labels (0 = not labelled, 1..K the classes) read as 0..K-1 with 255."""
    _palette_folder(tmp_path, "train", 2, zero_is_unlabelled=True)
    spec = {
        "name": "t_ade",
        "format": "sem_seg_folder",
        "classes": ["wall", "floor", "sky"],
        "reduce_zero_label": True,
        "splits": {"train": {"images": "train/img", "masks": "train/ann"}},
    }
    path = _write(tmp_path / "ade.json", json.dumps(spec))
    names += register_dataset_spec(path)
    record = DatasetCatalog.get("t_ade_train")[0]
    raw = np.asarray(Image.open(record["sem_seg_file_name"]))
    cfg = tiny_model_cfg("UNet", "DATASETS.TRAIN", ("t_ade_train",))
    label = SemSegDatasetMapper(cfg, is_train=False)(record)["sem_seg"].numpy()
    assert np.array_equal(label[raw == 0], np.full((raw == 0).sum(), 255))
    assert np.array_equal(label[raw > 0], raw[raw > 0] - 1.0)
    assert MetadataCatalog.get("t_ade_train").reduce_zero_label is True


def test_binary_spec_needs_mask_values_and_0_255_reads_as_1(tmp_path, names):
    os.makedirs(tmp_path / "img")
    os.makedirs(tmp_path / "msk")
    Image.fromarray(np.full((8, 8), 40, np.uint8)).save(tmp_path / "img" / "c1.png")
    mask = np.zeros((8, 8), np.uint8)
    mask[2:6, 2:6] = 255
    Image.fromarray(mask).save(tmp_path / "msk" / "c1.png")
    text = (
        "name: t_bin\nformat: sem_seg_folder\nclasses: [background, lesion]\n"
        "splits: {train: {images: img, masks: msk}}\n"
    )
    with pytest.raises(DatasetSpecError, match=r"mask_values: '0/1'.*'0/255'.*never guessed"):
        load_dataset_spec(_write(tmp_path / "bin.yaml", text))
    names += register_dataset_spec(_write(tmp_path / "bin.yaml", text + "mask_values: '0/255'\n"))
    cfg = tiny_model_cfg(
        "UNet", "DATASETS.TRAIN", ("t_bin_train",), "INPUT.FORMAT", "L",
        "MODEL.PIXEL_MEAN", [128.0], "MODEL.PIXEL_STD", [64.0],
    )  # fmt: skip
    item = SemSegDatasetMapper(cfg, is_train=False)(DatasetCatalog.get("t_bin_train")[0])
    assert np.array_equal(item["sem_seg"].numpy(), (mask == 255).astype(np.int64))


@pytest.mark.parametrize(
    "text, message",
    [
        ("name: x\nformat: sem_seg_folder\nclases: [a, b, c]\nsplits: {}\n",
         "did you mean 'classes'"),
        ("name: x\nformat: semseg_folder\n", "did you mean 'sem_seg_folder'"),
        ("[1, 2]\n", "top level must be a mapping"),
        ("name: x\nformat: sem_seg_folder\nclasses: [a, b, c]\nsplits: {train: {images: i}}\n",
         "split 'train' lacks required field(s) ['masks']"),
        ("name: x\nformat: sem_seg_folder\nclasses: [a, b, c]\nmask_values: '0/1'\n"
         "splits: {train: {images: i, masks: m}}\n", "mask_values is for 2-class"),
        ("name: x y\nformat: coco_instances\nsplits: {train: {json: a.json, images: i}}\n",
         "without spaces"),
        ("name: x\nformat: cityscapes\nsplits: {train: a}\n", "a list like [train, val]"),
        ("name: x\nformat: sem_seg_folder\nclasses: a\nsplits: {train: {images: i, masks: m}}\n",
         "'classes' must be a non-empty list"),
        ("name: [unclosed\n", "not valid YAML"),
        ("name: !!python/object/apply:os.system [echo hi]\nformat: cityscapes\nsplits: [val]\n",
         "not valid YAML"),
    ],
)  # fmt: skip
def test_spec_errors_name_the_file_and_the_field(tmp_path, text, message):
    path = _write(tmp_path / "bad.yaml", text)
    with pytest.raises(DatasetSpecError) as info:
        load_dataset_spec(path)
    assert message in str(info.value) and path in str(info.value)


def test_spec_name_clash_and_missing_spec_via_the_cli(tmp_path, names):
    _palette_folder(tmp_path, "train", 1)
    text = SPEC.format(name="shapes").replace("  val: {images: val/img, masks: val/ann}\n", "")
    with pytest.raises(DatasetSpecError, match=r"\['shapes_train'\] are already registered"):
        register_dataset_spec(_write(tmp_path / "clash.yaml", text))

    class Args:
        config_file = os.path.join(REPO, "configs", "shapes", "unet_shapes.yaml")
        opts = ["DATASETS.SPECS", [str(tmp_path / "nope.yaml")]]
        num_gpus = 1

    with pytest.raises(ConfigError, match="nope.yaml.*not found"):
        setup_cfg(Args())


def test_label_transform_options_are_checked():
    with pytest.raises(ValueError, match="exclude each other"):
        label_transform_for(reduce_zero_label=True, mask_values="0/255")
    with pytest.raises(ValueError, match="mask_values must be one of"):
        label_transform_for(mask_values="0-255")
    lut = label_transform_for(reduce_zero_label=True)
    label = np.array([[0, 1, 2, 255]], np.uint8)
    assert apply_label_transform(label, lut).tolist() == [[255, 0, 1, 255]]
    wide = np.array([[0, 1, 300]], np.int32)
    assert apply_label_transform(wide, lut).tolist() == [[255, 0, 299]]


def test_example_spec_in_the_repository_is_valid():
    spec = load_dataset_spec(os.path.join(REPO, "datasets", "specs", "polyps_example.yaml"))
    assert spec["format"] == "sem_seg_folder" and spec["mask_values"] == "0/255"
    assert spec["root"] == os.path.join(REPO, "datasets", "kvasir_seg")
