"""Tests of the U-Net encoder, head and meta-architecture (CPU, tiny widths, odd sizes)."""

import pytest
import torch

import seg_plugins  # noqa: F401  must come before detectron2.modeling (repairs the install)

# isort: split
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import (
    BACKBONE_REGISTRY,
    META_ARCH_REGISTRY,
    SEM_SEG_HEADS_REGISTRY,
    build_model,
)

from seg_plugins.modeling import UNet, UNetEncoder, UNetHead
from tests.modeling.seg_model_checks import make_inputs, train_step_checks

NUM_CLASSES = 4
SIZES = [(45, 45), (61, 77)]


def _cfg(**unet):
    cfg = get_cfg()
    seg_plugins.add_seg_plugins_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = "UNet"
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.UNET.BASE_CHANNELS = 4
    cfg.MODEL.UNET.DEPTH = 3
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = NUM_CLASSES
    for key, value in unet.items():
        cfg.MODEL.UNET[key] = value
    return cfg


def _inputs(sizes=SIZES, channels=3, seed=0, with_targets=True):
    return make_inputs(sizes, NUM_CLASSES, channels, seed, with_targets)


_train_step_checks = train_step_checks


def _eval_checks(model, inputs):
    model.eval()
    with torch.no_grad():
        outputs = model([{"image": x["image"]} for x in inputs])
    assert len(outputs) == len(inputs)
    for out, x in zip(outputs, inputs):
        assert out["sem_seg"].shape == (NUM_CLASSES,) + tuple(x["image"].shape[-2:])
        assert torch.isfinite(out["sem_seg"]).all()


def test_registered():
    assert "UNet" in META_ARCH_REGISTRY
    assert "UNetHead" in SEM_SEG_HEADS_REGISTRY
    assert "build_unet_encoder_backbone" in BACKBONE_REGISTRY


def test_build_model_from_cfg_selects_whole_unet():
    model = build_model(_cfg())
    assert isinstance(model, UNet)
    assert isinstance(model.backbone, UNetEncoder)
    assert isinstance(model.sem_seg_head, UNetHead)
    assert model.backbone.size_divisibility == 8
    assert model.sem_seg_head.common_stride == 1
    assert model.sem_seg_head.ignore_value == 255
    assert model.sem_seg_head.in_features == ["enc0", "enc1", "enc2", "enc3"]


@pytest.mark.parametrize("norm", ["", "BN"])
@pytest.mark.parametrize("upsample", ["bilinear", "transposed"])
def test_train_and_eval_at_odd_sizes(norm, upsample):
    torch.manual_seed(0)
    model = build_model(_cfg(NORM=norm, UPSAMPLE=upsample))
    _train_step_checks(model, _inputs())
    _eval_checks(model, _inputs())


def test_group_norm_with_multiples_of_32_channels():
    model = build_model(_cfg(NORM="GN", BASE_CHANNELS=32, DEPTH=2, MAX_CHANNELS=64))
    _train_step_checks(model, _inputs())
    _eval_checks(model, _inputs())


def test_group_norm_with_tiny_channels_fails_with_fix():
    with pytest.raises(ValueError, match="MODEL.UNET.NORM.*BASE_CHANNELS"):
        build_model(_cfg(NORM="GN"))


def test_grayscale_input():
    cfg = _cfg()
    cfg.MODEL.PIXEL_MEAN = [127.5]
    cfg.MODEL.PIXEL_STD = [64.0]
    model = build_model(cfg)
    assert model.backbone.enc0.conv1.in_channels == 1
    _train_step_checks(model, _inputs(channels=1))
    _eval_checks(model, _inputs(channels=1))


def test_eval_resizes_to_requested_height_width():
    model = build_model(_cfg()).eval()
    inputs = [dict(x, height=90, width=91) for x in _inputs(with_targets=False)]
    with torch.no_grad():
        outputs = model(inputs)
    assert [o["sem_seg"].shape for o in outputs] == [(NUM_CLASSES, 90, 91)] * 2


def test_pixel_stats_length_mismatch_names_keys():
    cfg = _cfg()
    cfg.MODEL.PIXEL_STD = [1.0]
    with pytest.raises(ValueError, match="MODEL.PIXEL_MEAN.*MODEL.PIXEL_STD"):
        build_model(cfg)


def test_unknown_upsample_names_key():
    with pytest.raises(ValueError, match="MODEL.UNET.UPSAMPLE"):
        build_model(_cfg(UPSAMPLE="nearest"))


def test_class_weights_from_cfg():
    cfg = _cfg()
    cfg.MODEL.SEM_SEG_HEAD.CLASS_WEIGHTS = [1.0, 2.0, 0.5]
    with pytest.raises(ValueError, match="MODEL.SEM_SEG_HEAD.CLASS_WEIGHTS"):
        build_model(cfg)
    cfg.MODEL.SEM_SEG_HEAD.CLASS_WEIGHTS = [1.0, 2.0, 0.5, 1.0]
    _train_step_checks(build_model(cfg), _inputs())


def test_encoder_output_shape_is_honest():
    encoder = UNetEncoder(in_channels=2, base_channels=4, depth=4, max_channels=16, norm="")
    assert encoder.size_divisibility == 16
    features = encoder(torch.randn(2, 2, 48, 80))
    shapes = encoder.output_shape()
    assert list(features) == ["enc0", "enc1", "enc2", "enc3", "enc4"]
    assert [s.channels for s in shapes.values()] == [4, 8, 16, 16, 16]
    for name, feature in features.items():
        stride = shapes[name].stride
        assert feature.shape == (2, shapes[name].channels, 48 // stride, 80 // stride)


def test_explicit_kwargs_without_cfg():
    encoder = UNetEncoder(in_channels=3, base_channels=4, depth=2, norm="BN")
    head = UNetHead(
        encoder.output_shape(),
        num_classes=NUM_CLASSES,
        ignore_value=255,
        norm="BN",
        upsample="transposed",
        class_weights=[1.0] * NUM_CLASSES,
    )
    model = UNet(backbone=encoder, sem_seg_head=head, pixel_mean=[0.0] * 3, pixel_std=[1.0] * 3)
    _train_step_checks(model, _inputs())
    _eval_checks(model, _inputs())


def test_checkpoint_key_names():
    keys = set(build_model(_cfg(UPSAMPLE="transposed")).state_dict())
    assert {
        "backbone.enc0.conv1.weight",
        "backbone.enc3.conv2.norm.running_mean",
        "sem_seg_head.decoder.enc2.up.weight",
        "sem_seg_head.decoder.enc0.fuse.conv2.weight",
        "sem_seg_head.predictor.weight",
    } <= keys


@pytest.mark.parametrize("upsample", ["bilinear", "transposed"])
def test_head_on_fake_stride_pyramid(upsample):
    shapes = {
        f"p{i}": ShapeSpec(channels=c, stride=s)
        for i, (c, s) in enumerate([(16, 32), (4, 4), (12, 16), (8, 8)])
    }
    head = UNetHead(shapes, num_classes=3, norm="", upsample=upsample)
    assert head.common_stride == 4 and head.in_features == ["p1", "p3", "p2", "p0"]
    # 45 x 61 image -> ceil-sized feature maps, as strided convs produce them
    features = {
        name: torch.randn(2, s.channels, -(-45 // s.stride), -(-61 // s.stride), requires_grad=True)
        for name, s in shapes.items()
    }
    assert head.layers(features).shape == (2, 3, 12, 16)
    targets = torch.randint(0, 3, (2, 45, 61))
    _, losses = head.train()(features, targets)
    losses["loss_sem_seg"].backward()
    assert all(f.grad is not None and torch.isfinite(f.grad).all() for f in features.values())
    logits, extra = head.eval()(features)
    assert logits.shape == (2, 3, 48, 64) and extra == {}


def test_head_behind_detectron2_resnet():
    cfg = _cfg(NORM="BN")
    cfg.MODEL.META_ARCHITECTURE = "SemanticSegmentor"
    cfg.MODEL.BACKBONE.NAME = "build_resnet_backbone"
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.SEM_SEG_HEAD.NAME = "UNetHead"
    resnets = cfg.MODEL.RESNETS
    resnets.DEPTH, resnets.NORM, resnets.OUT_FEATURES = 50, "BN", ["res2", "res3", "res4", "res5"]
    resnets.STEM_OUT_CHANNELS, resnets.RES2_OUT_CHANNELS, resnets.WIDTH_PER_GROUP = 8, 16, 4
    model = build_model(cfg)
    assert isinstance(model.sem_seg_head, UNetHead)
    assert model.sem_seg_head.common_stride == 4
    _train_step_checks(model, _inputs())
    _eval_checks(model, _inputs())


def test_overfits_one_image():
    torch.manual_seed(0)
    image = torch.rand(3, 32, 32) * 0.2
    target = torch.zeros(32, 32, dtype=torch.long)
    target[8:20, 10:24] = 1
    image[:, 8:20, 10:24] += 0.5
    cfg = _cfg(BASE_CHANNELS=8, DEPTH=2, NORM="")
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 2
    cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD = [0.3] * 3, [0.25] * 3
    model = build_model(cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):
        loss = model([{"image": image, "sem_seg": target}])["loss_sem_seg"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        prediction = model.eval()([{"image": image}])[0]["sem_seg"].argmax(0)
    assert (prediction == target).float().mean() > 0.95
