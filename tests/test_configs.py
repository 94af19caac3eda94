"""Every config file in configs/ loads, builds its model and trains two iterations on a
tiny synthetic batch (the architecture as configured; only the input is small)."""

import glob
import math
import os

import seg_plugins  # noqa: F401  (first: repairs detectron2 where needed)

# isort: split
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

from seg_plugins import add_seg_plugins_config
from seg_plugins.engine import Trainer
from seg_plugins.modeling.task import task_of

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True))


def _load(path):
    cfg = get_cfg()
    add_seg_plugins_config(cfg)
    cfg.merge_from_file(path)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    # Reference configs expect pretrained weights; from random init at their full LR, two
    # steps can already diverge (R-CNN with FrozenBN). This test is about the plumbing.
    cfg.SOLVER.BASE_LR = 1e-4
    return cfg


def _batch(cfg, size=64, n=2):
    torch.manual_seed(0)
    channels = len(cfg.MODEL.PIXEL_MEAN)
    outputs = task_of(cfg).outputs
    batch = []
    for _ in range(n):
        item = {"image": torch.randint(0, 256, (channels, size, size), dtype=torch.uint8).float()}
        mask = torch.zeros(size, size, dtype=torch.bool)
        mask[8:40, 12:44] = True
        if "sem_seg" in outputs:
            num_classes = max(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, 2)
            item["sem_seg"] = mask.long() * (num_classes - 1)
        if "instances" in outputs:
            inst = Instances((size, size))
            inst.gt_boxes = Boxes(torch.tensor([[12.0, 8.0, 44.0, 40.0]]))
            inst.gt_classes = torch.tensor([0])
            inst.gt_masks = BitMasks(mask[None])
            item["instances"] = inst
        batch.append(item)
    return batch


def test_configs_exist():
    names = {os.path.relpath(p, REPO) for p in CONFIGS}
    assert "configs/shapes/unet_shapes.yaml" in names
    assert "configs/shapes/mask_rcnn_R18_FPN_GN_shapes.yaml" in names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, REPO))
def test_config_loads_builds_and_trains_two_iterations(path):
    cfg = _load(path)
    model = Trainer.build_model(cfg)
    optimizer = Trainer.build_optimizer(cfg, model)
    model.train()
    batch = _batch(cfg)
    for it in range(2):
        with EventStorage(it):  # detectron2's R-CNN heads log training statistics
            losses = model(batch)
        total = sum(losses.values())
        assert math.isfinite(total.item()), {k: v.item() for k, v in losses.items()}
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        out = model([{"image": batch[0]["image"], "height": 64, "width": 64}])[0]
    if "sem_seg" in task_of(cfg).outputs:
        assert out["sem_seg"].shape[-2:] == (64, 64)
        # Training batches are padded to the backbone's size divisibility; with crops that
        # are multiples of it (images smaller than the crop are padded to the crop with the
        # ignore label, INPUT.SEM_SEG.PAD_TO_CROP) nothing is padded there, so that padding
        # (unlike the inference padding, now gone) never reaches a shipped config's training.
        div = max(int(getattr(model.backbone, "size_divisibility", 1)), 1)
        if cfg.INPUT.CROP.ENABLED and cfg.INPUT.CROP.TYPE == "absolute":
            assert all(c % div == 0 for c in cfg.INPUT.CROP.SIZE), (cfg.INPUT.CROP.SIZE, div)
            assert cfg.INPUT.SEM_SEG.PAD_TO_CROP
    else:
        assert isinstance(out["instances"], Instances)


LAZY_CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "**", "*.py"), recursive=True))


def test_lazy_configs_exist():
    assert any(p.endswith("unet_shapes.py") for p in LAZY_CONFIGS)


@pytest.mark.parametrize("path", LAZY_CONFIGS, ids=lambda p: os.path.relpath(p, REPO))
def test_lazy_config_instantiates_and_runs(path, tmp_path):
    from detectron2.config import LazyConfig, instantiate

    cfg = LazyConfig.load(path)
    model = instantiate(cfg.model)
    channels = len(cfg.model.pixel_mean)
    image = torch.randint(0, 256, (channels, 45, 45)).float()
    model.train()
    target = torch.zeros(45, 45, dtype=torch.long)
    target[5:30, 10:40] = 1
    losses = model([{"image": image, "sem_seg": target}, {"image": image, "sem_seg": target}])
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        assert model([{"image": image}])[0]["sem_seg"].shape[-2:] == (45, 45)
    LazyConfig.save(cfg, str(tmp_path / "saved.yaml"))  # round-trips to YAML
    assert (tmp_path / "saved.yaml").stat().st_size > 0
