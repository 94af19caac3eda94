"""End to end: a 4-channel ``.npy`` folder dataset (INPUT.FORMAT "RAW", 4 PIXEL_MEAN values)
registered, mapped and trained for 2 iterations by a tiny U-Net through the Trainer."""

import numpy as np
import pytest
import torch
from PIL import Image

import seg_plugins  # noqa: F401  must come before detectron2 submodules (repairs the install)

# isort: split
from detectron2.data import DatasetCatalog, MetadataCatalog

from seg_plugins.data import SemSegDatasetMapper, register_sem_seg_folder
from seg_plugins.data.augmentations import (
    MultiChannelResizeTransform,
    PadToSize,
    PhotometricDistortion,
)
from seg_plugins.data.io import check_channels
from seg_plugins.engine import Trainer
from tests.modeling.seg_model_checks import tiny_model_cfg

NAME = "test_multichannel_npy"
SIZE = (22, 30)  # (H, W): not multiples of the U-Net's size_divisibility (8)


@pytest.fixture
def npy_dataset(tmp_path, monkeypatch):
    """4 images (22, 30, 4) uint8 whose 4th channel alone tells the class, their masks."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        label = rng.integers(0, 4, SIZE).astype(np.uint8)
        image = rng.integers(0, 256, (*SIZE, 4)).astype(np.uint8)
        image[..., 3] = label * 60
        np.save(images / f"case{i}.npy", image)
        Image.fromarray(label).save(masks / f"case{i}.png")
    register_sem_seg_folder(
        NAME, str(images), str(masks), stuff_classes=["a", "b", "c", "d"], image_ext=".npy"
    )
    yield NAME
    DatasetCatalog.remove(NAME)
    MetadataCatalog.remove(NAME)


def _cfg(output_dir, *opts):
    return tiny_model_cfg(
        "UNet",
        "INPUT.FORMAT",
        "RAW",
        "MODEL.PIXEL_MEAN",
        [128.0, 128.0, 128.0, 90.0],
        "MODEL.PIXEL_STD",
        [64.0, 64.0, 64.0, 67.0],
        "DATASETS.TRAIN",
        (NAME,),
        "DATASETS.TEST",
        (),
        "INPUT.CROP.ENABLED",
        False,
        "SOLVER.MAX_ITER",
        2,
        "SOLVER.IMS_PER_BATCH",
        2,
        "SOLVER.WARMUP_ITERS",
        1,
        "DATALOADER.NUM_WORKERS",
        0,
        "TEST.EVAL_PERIOD",
        0,
        "OUTPUT_DIR",
        str(output_dir),
        *opts,
    )


def test_records_and_mapper_keep_four_channels(npy_dataset):
    records = DatasetCatalog.get(npy_dataset)
    assert len(records) == 4 and (records[0]["height"], records[0]["width"]) == SIZE
    out = SemSegDatasetMapper(is_train=True, augmentations=[], image_format="RAW")(records[0])
    assert out["image"].shape == (4, *SIZE) and out["image"].dtype == torch.uint8
    expected = np.load(records[0]["file_name"])
    np.testing.assert_array_equal(out["image"].permute(1, 2, 0).numpy(), expected)
    np.testing.assert_array_equal(out["sem_seg"].numpy() * 60, expected[..., 3])
    with pytest.raises(ValueError, match=r"case0\.npy.*4 channel.*takes 3.*MODEL\.PIXEL_MEAN"):
        check_channels(expected, 3, records[0]["file_name"])


def test_augmentations_on_four_channels(npy_dataset):
    record = DatasetCatalog.get(npy_dataset)[0]
    augs = [
        MultiChannelResizeTransform(*SIZE, 33, 45),  # PIL alone: 4 channels = premultiplied RGBA
        PhotometricDistortion(image_format="RAW"),  # brightness / contrast only
        PadToSize((40, 48), seg_pad_value=255),
    ]
    np.random.seed(0)
    out = SemSegDatasetMapper(is_train=True, augmentations=augs, image_format="RAW")(record)
    image, label = out["image"], out["sem_seg"]
    assert image.shape == (4, 40, 48) and image.dtype == torch.uint8 and label.shape == (40, 48)
    assert torch.all(image[:, 33:] == 0) and torch.all(image[:, :, 45:] == 0)
    assert torch.all(label[33:] == 255) and torch.all(label[:, 45:] == 255)
    assert set(label[:33, :45].unique().tolist()) <= {0, 1, 2, 3}


def test_unet_trains_two_iterations_on_four_channels(npy_dataset, tmp_path):
    cfg = _cfg(tmp_path / "out")
    np.random.seed(0)  # detectron2's TrainingSampler draws its seed from numpy
    trainer = Trainer(cfg)
    assert trainer.model.backbone.output_shape()  # built with in_channels = 4
    first_conv = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.in_channels == 4
    trainer.train()
    assert trainer.iter == cfg.SOLVER.MAX_ITER
    losses = trainer.storage.history("total_loss").values()
    assert len(losses) == 2 and all(np.isfinite(v) for v, _ in losses)
