"""ImageNet backbones in detectron2's model-zoo ``.pkl`` formats load into the dilated ResNet.

detectron2's model zoo ships ImageNet ResNets as pickled Caffe2 blob dicts
(``ImageNetPretrained/MSRA/R-50.pkl``: names such as ``res2_0_branch2a_w``, BN folded into
``*_bn_s`` / ``*_bn_b``) and as detectron2-named pickles (``torchvision/R-50.pkl`` written by
its convert-torchvision script, ``"matching_heuristics": True``). Both go through
``MODEL.WEIGHTS`` and detectron2's ``DetectionCheckpointer``, which renames Caffe2 blobs and
matches names by suffix. Our DilatedResNet keeps detectron2's module names (dilation changes
no parameter), so the same files serve DeepLab and FCN. The test writes both kinds of file
from a random model (nothing is downloaded), loads them and compares every backbone tensor.
"""

import logging
import pickle

import pytest
import torch

import seg_plugins  # noqa: F401  must come before detectron2.modeling (repairs the install)

# isort: split
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from seg_plugins import add_seg_plugins_config

_BRANCH = {"conv1": "branch2a", "conv2": "branch2b", "conv3": "branch2c", "shortcut": "branch1"}


def _caffe2_name(d2_name: str) -> str:
    """detectron2 ResNet parameter name -> the Caffe2 blob name of the MSRA model zoo
    (the inverse of detectron2's ``convert_basic_c2_names`` for the backbone)."""
    parts = d2_name.split(".")
    suffix = {"weight": "w", "bias": "b"}[parts[-1]]
    is_norm = parts[-2] == "norm"
    if is_norm:
        suffix = {"w": "s", "b": "b"}[suffix]
    if parts[0] == "stem":  # stem.conv1[.norm].weight
        return "res_conv1_bn_" + suffix if is_norm else "conv1_" + suffix
    stage, block, conv = parts[0], parts[1], parts[2]
    name = f"{stage}_{block}_{_BRANCH[conv]}"
    return f"{name}_bn_{suffix}" if is_norm else f"{name}_{suffix}"


def _cfg(depth=50, norm="FrozenBN"):
    cfg = get_cfg()
    add_seg_plugins_config(cfg)
    cfg.merge_from_file("configs/Base-DeepLabV3.yaml")
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.RESNETS.DEPTH = depth
    cfg.MODEL.RESNETS.NORM = norm
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = True  # MSRA's ResNets stride in the 1x1 conv
    cfg.MODEL.RESNETS.STEM_OUT_CHANNELS = 16  # narrow: names and the mapping do not depend on
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 32  # the widths, and the test stays fast
    cfg.MODEL.RESNETS.WIDTH_PER_GROUP = 8
    cfg.MODEL.ASPP.CHANNELS = 16
    cfg.MODEL.ASPP.NORM = "BN"
    cfg.MODEL.FCN.NORM = "BN"
    cfg.MODEL.AUX_HEAD.CHANNELS = 8
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 3
    return cfg


def _source_backbone(cfg):
    """A different random backbone whose (affine) parameters are the "pretrained" weights."""
    torch.manual_seed(123)
    source = build_model(cfg).backbone
    with torch.no_grad():
        # a seed-123 init, perturbed; magnitudes stay sane so that the model still runs
        for p in source.parameters():
            p.mul_(1 + 0.1 * torch.randn_like(p))
        for name, buf in source.named_buffers():  # FrozenBN's weight / bias are buffers
            if name.endswith("norm.weight"):
                buf.copy_(1 + 0.1 * torch.randn_like(buf))
            elif name.endswith("norm.bias"):
                buf.copy_(0.1 * torch.randn_like(buf))
    return {
        k: v.clone()
        for k, v in source.state_dict().items()
        if k.endswith(("weight", "bias")) and "num_batches_tracked" not in k
    }


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.text = []

    def emit(self, record):
        self.text.append(record.getMessage())


@pytest.fixture
def checkpoint_log():
    handler = _Records()
    logger = logging.getLogger("fvcore.common.checkpoint")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def test_caffe2_names_cover_the_backbone():
    names = [_caffe2_name(k) for k in _source_backbone(_cfg())]
    assert len(set(names)) == len(names)
    assert {"conv1_w", "res_conv1_bn_s", "res2_0_branch1_w", "res5_2_branch2c_bn_b"} <= set(names)


@pytest.mark.parametrize("layout", ["caffe2_blobs", "caffe2_detection_blobs", "detectron2"])
def test_model_zoo_pkl_loads_into_dilated_resnet(tmp_path, layout, checkpoint_log):
    cfg = _cfg()
    weights = _source_backbone(cfg)
    if layout.startswith("caffe2"):
        blobs = {_caffe2_name(k): v.numpy() for k, v in weights.items()}
        blobs["fc1000_w"] = torch.zeros(1000, 2048).numpy()  # ImageNet classifier: unused
        blobs["res2_0_branch2a_w_momentum"] = blobs["res2_0_branch2a_w"]  # solver state
        data = {"blobs": blobs} if layout == "caffe2_detection_blobs" else blobs
    else:
        data = {
            "model": {k: v.numpy() for k, v in weights.items()},
            "__author__": "torchvision",
            "matching_heuristics": True,
        }
    path = tmp_path / "R-50.pkl"
    with open(path, "wb") as f:
        pickle.dump(data, f)

    cfg.MODEL.WEIGHTS = str(path)
    model = build_model(cfg)
    head_before = {k: v.clone() for k, v in model.sem_seg_head.state_dict().items()}
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)

    loaded = model.backbone.state_dict()
    for name, value in weights.items():
        torch.testing.assert_close(loaded[name], value, rtol=0, atol=0, msg=name)
    for name, value in model.sem_seg_head.state_dict().items():  # untouched
        torch.testing.assert_close(value, head_before[name], rtol=0, atol=0)
    log = "\n".join(checkpoint_log.text)
    # missing and unexpected keys are reported by name
    assert "sem_seg_head" in log and "not found in the checkpoint" in log
    if layout.startswith("caffe2"):
        assert "fc1000.weight" in log  # (renamed from fc1000_w by the C2 conversion)

    # the loaded dilated backbone runs (OS 8: res5 at 1/8 of the input)
    model.eval()
    with torch.no_grad():
        out = model([{"image": torch.randint(0, 256, (3, 40, 52)).float()}])
    assert out[0]["sem_seg"].shape == (3, 40, 52)
    assert torch.isfinite(out[0]["sem_seg"]).all()


def test_model_zoo_pkl_of_deeper_resnet_reports_unused_blocks(tmp_path, checkpoint_log):
    """An R-101 file into an R-50 model: res4.6 .. res4.22 are reported as unused."""
    weights = _source_backbone(_cfg(depth=101))
    blobs = {_caffe2_name(k): v.numpy() for k, v in weights.items()}
    path = tmp_path / "R-101.pkl"
    with open(path, "wb") as f:
        pickle.dump(blobs, f)
    model = build_model(_cfg(depth=50))
    DetectionCheckpointer(model).load(str(path))
    log = "\n".join(checkpoint_log.text)
    assert "res4.22.conv1.weight" in log
