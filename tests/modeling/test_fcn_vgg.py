"""Tests of the VGG-16 backbone, its torchvision converter and the FCN-32s/16s/8s skip head
(CPU, tiny widths, odd sizes)."""

import os

import pytest
import torch

import seg_plugins  # must come before detectron2.modeling (repairs the install)

# isort: split
import torchvision
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import (
    BACKBONE_REGISTRY,
    META_ARCH_REGISTRY,
    SEM_SEG_HEADS_REGISTRY,
    SemanticSegmentor,
    build_model,
)
from torch.nn import functional as F

from seg_plugins.modeling import convert_vgg
from seg_plugins.modeling.backbone import VGG16Backbone
from seg_plugins.modeling.convert_vgg import convert_torchvision_vgg16, load_torchvision_vgg16
from seg_plugins.modeling.heads import FCNSkipHead
from seg_plugins.modeling.heads.fcn_skip_head import BilinearUpsample
from tests.modeling.seg_model_checks import make_inputs, train_step_checks

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NUM_CLASSES = 4
SIZES = [(45, 45), (200, 249)]
TINY = {"BASE_CHANNELS": 4, "FC_CHANNELS": 16, "FC6_KERNEL": 3}


def _cfg(skips="8s", norm="BN", **vgg):
    cfg = get_cfg()
    seg_plugins.add_seg_plugins_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = "SemanticSegmentor"
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.NAME = "build_vgg16_backbone"
    cfg.MODEL.SEM_SEG_HEAD.NAME = "FCNSkipHead"
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = NUM_CLASSES
    cfg.MODEL.FCN.SKIPS = skips
    cfg.MODEL.VGG.NORM = norm
    cfg.MODEL.VGG.SKIP_SCALES = [1.0, 1.0]
    for key, value in {**TINY, **vgg}.items():
        cfg.MODEL.VGG[key] = value
    return cfg


def _inputs(sizes=SIZES, channels=3, seed=0, with_targets=True):
    return make_inputs(sizes, NUM_CLASSES, channels, seed, with_targets)


def _train_step_checks(model, inputs):
    train_step_checks(model, inputs)
    for name, param in model.named_parameters():
        assert param.grad.abs().sum() > 0, f"{name} received an all-zero gradient"


def _eval_checks(model, inputs):
    model.eval()
    with torch.no_grad():
        outputs = model([{"image": x["image"]} for x in inputs])
    for out, x in zip(outputs, inputs):
        assert out["sem_seg"].shape == (NUM_CLASSES,) + tuple(x["image"].shape[-2:])
        assert torch.isfinite(out["sem_seg"]).all()


def test_registered():
    assert "build_vgg16_backbone" in BACKBONE_REGISTRY
    assert "FCNSkipHead" in SEM_SEG_HEADS_REGISTRY


# --- backbone ---------------------------------------------------------------------------------


def test_backbone_output_shape_is_honest():
    names = ["conv1", "pool2", "conv3", "pool3", "pool4", "conv5", "pool5", "fc6", "fc7"]
    backbone = VGG16Backbone(
        in_channels=2, base_channels=4, fc_channels=8, fc6_kernel=3, out_features=names
    )
    assert backbone.size_divisibility == 32
    features = backbone(torch.randn(2, 2, 64, 96))
    shapes = backbone.output_shape()
    assert list(features) == names == list(shapes)
    channels = [4, 8, 16, 16, 32, 32, 32, 8, 8]
    assert [s.channels for s in shapes.values()] == channels
    assert [s.stride for s in shapes.values()] == [1, 4, 4, 8, 16, 16, 32, 32, 32]
    for name, feature in features.items():
        stride = shapes[name].stride
        assert feature.shape == (2, shapes[name].channels, 64 // stride, 96 // stride)


def test_backbone_builds_only_the_layers_it_needs():
    backbone = VGG16Backbone(base_channels=4, out_features=["pool3"])
    assert backbone.size_divisibility == 8
    names = {n for n, _ in backbone.named_children()}
    assert "conv3_3" in names and not names & {"conv4_1", "fc6", "fc7"}
    assert set(backbone(torch.randn(1, 3, 16, 16))) == {"pool3"}


def test_checkpoint_key_names():
    keys = set(build_model(_cfg()).state_dict())
    assert {
        "backbone.conv1_1.weight",
        "backbone.conv5_3.norm.running_mean",
        "backbone.fc6.weight",
        "backbone.fc7.norm.weight",
        "sem_seg_head.score_fr.weight",
        "sem_seg_head.upscore2.weight",
        "sem_seg_head.score_pool4.bias",
        "sem_seg_head.upscore_pool4.weight",
        "sem_seg_head.score_pool3.weight",
    } <= keys
    assert not any("upscore." in k for k in keys)  # the fixed final upsampling is not saved


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"fc6_kernel": 4}, "MODEL.VGG.FC6_KERNEL"),
        ({"out_features": ["res5"]}, "MODEL.VGG.OUT_FEATURES"),
        ({"out_features": []}, "MODEL.VGG.OUT_FEATURES"),
        ({"dropout": 1.0}, "MODEL.VGG.DROPOUT"),
        ({"norm": "GN", "base_channels": 4}, "MODEL.VGG.NORM.*BASE_CHANNELS"),
        ({"norm": "XN"}, "MODEL.VGG.NORM"),
    ],
)
def test_backbone_bad_args_name_the_key(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VGG16Backbone(**kwargs)


# --- head ---------------------------------------------------------------------------------------


def test_head_bad_config_names_the_key():
    shapes = VGG16Backbone(base_channels=4, fc_channels=8, fc6_kernel=3).output_shape()
    with pytest.raises(ValueError, match="MODEL.FCN.SKIPS"):
        FCNSkipHead(shapes, num_classes=3, skips="")
    with pytest.raises(ValueError, match="MODEL.VGG.OUT_FEATURES"):
        FCNSkipHead({"fc7": shapes["fc7"]}, num_classes=3, skips="16s")
    bad = {**shapes, "pool3": ShapeSpec(channels=16, stride=4)}
    with pytest.raises(ValueError, match="strides"):
        FCNSkipHead(bad, num_classes=3, skips="8s")
    with pytest.raises(ValueError, match="MODEL.VGG.SKIP_SCALES"):
        FCNSkipHead(shapes, num_classes=3, skip_scales=[1.0])


@pytest.mark.parametrize("skips", ["32s", "16s", "8s"])
def test_train_and_eval_at_odd_sizes(skips):
    torch.manual_seed(0)
    model = build_model(_cfg(skips))
    assert isinstance(model, SemanticSegmentor) and isinstance(model.sem_seg_head, FCNSkipHead)
    assert model.backbone.size_divisibility == 32
    assert model.sem_seg_head.common_stride == {"32s": 32, "16s": 16, "8s": 8}[skips]
    _train_step_checks(model, _inputs())
    _eval_checks(model, _inputs())


def test_paper_settings_without_norm_and_with_at_once_scales():
    """The paper's layer settings (no norm, 0.01 / 0.0001 skip scales, zero-init skip score
    layers) still give every parameter a non-zero gradient at the first step."""
    torch.manual_seed(0)
    cfg = _cfg(norm="")
    cfg.MODEL.VGG.SKIP_SCALES = [0.01, 0.0001]
    model = build_model(cfg)
    head = model.sem_seg_head
    assert head.skip_scales == [0.01, 0.0001]
    assert head.score_pool4.weight.abs().sum() == 0 and head.score_pool3.weight.abs().sum() == 0
    _train_step_checks(model, _inputs(sizes=[(64, 64)]))


def test_grayscale_input():
    cfg = _cfg()
    cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD = [127.5], [64.0]
    model = build_model(cfg)
    assert model.backbone.conv1_1.in_channels == 1
    _train_step_checks(model, _inputs(channels=1))
    _eval_checks(model, _inputs(channels=1))


def test_fixed_upsampling_and_eval_resize_to_height_width():
    backbone = VGG16Backbone(base_channels=4, fc_channels=8, fc6_kernel=3, norm="")
    head = FCNSkipHead(backbone.output_shape(), num_classes=NUM_CLASSES, learn_upsampling=False)
    assert [n for n, _ in head.named_parameters() if "upscore" in n] == []
    model = SemanticSegmentor(
        backbone=backbone, sem_seg_head=head, pixel_mean=[0.0] * 3, pixel_std=[1.0] * 3
    )
    _train_step_checks(model, _inputs())
    inputs = [dict(x, height=90, width=91) for x in _inputs(with_targets=False)]
    with torch.no_grad():
        outputs = model.eval()(inputs)
    assert [o["sem_seg"].shape for o in outputs] == [(NUM_CLASSES, 90, 91)] * 2


@pytest.mark.parametrize("size", SIZES)
def test_head_without_padding_predicts_the_exact_size(size):
    """Features of an unpadded odd-sized image (floor pooling) still give logits of exactly
    that size, by output_padding rather than by a resize."""
    backbone = VGG16Backbone(base_channels=4, fc_channels=8, fc6_kernel=3, norm="")
    head = FCNSkipHead(backbone.output_shape(), num_classes=3, skips="8s")
    features = backbone(torch.randn(2, 3, *size))
    assert head.layers(features, size).shape == (2, 3, *size)
    targets = torch.randint(0, 3, (2, *size))
    _, losses = head.train()(features, targets)
    assert torch.isfinite(losses["loss_sem_seg"])
    logits, extra = head.eval()(features)
    assert logits.shape == (2, 3, 8 * (size[0] // 8), 8 * (size[1] // 8)) and extra == {}
    with pytest.raises(ValueError, match="size_divisibility"):
        head.layers(features, (size[0] + 8, size[1]))


# --- alignment ----------------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [2, 8, 32])
def test_bilinear_upsampling_of_a_delta_peaks_at_the_cell_centre(factor):
    """A stride-f cell (i, j) is centred on pixel (f*i + (f-1)/2, f*j + (f-1)/2)."""
    up = BilinearUpsample(1, factor, learnable=False)
    for i, j in [(0, 0), (1, 2), (3, 1)]:
        x = torch.zeros(1, 1, 4, 3)
        x[0, 0, i, j] = 1.0
        y = up(x, (4 * factor, 3 * factor))[0, 0]
        assert y.shape == (4 * factor, 3 * factor)
        rows, cols = torch.nonzero(y == y.max(), as_tuple=True)
        assert set(rows.tolist()) <= {factor * i + factor // 2 - 1, factor * i + factor // 2}
        assert set(cols.tolist()) <= {factor * j + factor // 2 - 1, factor * j + factor // 2}
        if 0 < i < 3 and 0 < j < 2:  # whole kernel inside: exact centre of mass
            grid_r = torch.arange(y.shape[0], dtype=y.dtype)[:, None]
            grid_c = torch.arange(y.shape[1], dtype=y.dtype)[None, :]
            centre = ((y * grid_r).sum() / y.sum(), (y * grid_c).sum() / y.sum())
            expected = (factor * i + (factor - 1) / 2, factor * j + (factor - 1) / 2)
            assert torch.allclose(torch.stack(centre), torch.tensor(expected), atol=1e-5)


@pytest.mark.parametrize("factor", [2, 8, 32])
def test_bilinear_upsampling_equals_interpolate_away_from_the_border(factor):
    x = torch.randn(2, 3, 5, 6)
    y = BilinearUpsample(3, factor, learnable=True)(x, (5 * factor, 6 * factor))
    ref = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    m = factor // 2
    torch.testing.assert_close(y[..., m:-m, m:-m], ref[..., m:-m, m:-m], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("skips", ["32s", "16s", "8s"])
def test_whole_model_is_flip_equivariant(skips):
    """With mirror-symmetric kernels, mirroring the image mirrors the logits exactly iff every
    feature map and every upsampling is centred on the input grid: a crop offset or an
    upsampling shifted by even one pixel breaks this."""
    torch.manual_seed(0)
    backbone = VGG16Backbone(base_channels=4, fc_channels=8, fc6_kernel=3, norm="")
    head = FCNSkipHead(backbone.output_shape(), num_classes=3, skips=skips, skip_scales=[1, 1])
    model = SemanticSegmentor(
        backbone=backbone, sem_seg_head=head, pixel_mean=[127.5] * 3, pixel_std=[64.0] * 3
    ).eval()
    with torch.no_grad():
        for param in model.parameters():  # random (not the zero / bilinear init), symmetric
            param.normal_(0.0, 0.1)
            if param.dim() == 4:
                param.normal_(0.0, (2.0 / param[0].numel()) ** 0.5)
                param.copy_(param + param.flip(-1) + param.flip(-2) + param.flip(-1, -2)).div_(2)
        image = torch.rand(3, 64, 96) * 255
        logits = model([{"image": image}])[0]["sem_seg"]
        scale = logits.abs().max()
        for dims in [(-1,), (-2,)]:
            flipped = model([{"image": image.flip(dims)}])[0]["sem_seg"]
            assert (flipped - logits.flip(dims)).abs().max() < 1e-5 * scale
            assert (logits - logits.flip(dims)).abs().max() > 1e-3 * scale  # not trivial
        shifted = logits.flip(-1)[..., :-1]  # the same, one pixel off
        assert (logits[..., 1:] - shifted).abs().max() > 1e-3 * scale


# --- torchvision converter ----------------------------------------------------------------------


def test_converted_torchvision_vgg16_matches_torchvision():
    torch.manual_seed(0)
    tv = torchvision.models.vgg16(weights=None).eval()
    backbone = VGG16Backbone(out_features=["conv5", "fc7"]).eval()
    result = load_torchvision_vgg16(backbone, tv.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert result.unused_keys == ["classifier.6.bias", "classifier.6.weight"]
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        ours = backbone(x)
        conv5 = tv.features[:30](x)
        fc7 = tv.classifier[:5](torch.flatten(tv.features(x), 1))
    torch.testing.assert_close(ours["conv5"], conv5, rtol=1e-4, atol=1e-4)
    # fc6 (7x7, padding 3) at the centre of the 7x7 pool5 map sees exactly the classifier's input
    assert ours["fc7"].shape == (1, 4096, 7, 7)
    torch.testing.assert_close(ours["fc7"][:, :, 3, 3], fc7, rtol=1e-4, atol=1e-4)

    gray = VGG16Backbone(in_channels=1, out_features=["conv1"]).eval()
    result = load_torchvision_vgg16(gray, tv.state_dict())
    assert result.missing_keys == [] and "fc6.weight" in result.unexpected_keys
    with torch.no_grad():
        rgb = x[:, :1].expand(-1, 3, -1, -1)  # a grey image fed as R = G = B
        torch.testing.assert_close(
            gray(x[:, :1])["conv1"], tv.features[:4](rgb), rtol=1e-4, atol=1e-4
        )


def _tiny_torchvision_state_dict(base=4, fc=8, batch_norm=False):
    """A torchvision-layout VGG-16 state dict (features.<i>, classifier.<i>) of small widths."""
    layout = [base, base, "M", 2 * base, 2 * base, "M"] + [4 * base] * 3 + ["M"]
    layout += [8 * base] * 3 + ["M"] + [8 * base] * 3 + ["M"]
    state = torchvision.models.vgg.make_layers(layout, batch_norm=batch_norm).state_dict()
    shapes = {"0": (fc, 8 * base * 49), "3": (fc, fc), "6": (1000, fc)}
    for i, shape in shapes.items():
        state[f"classifier.{i}.weight"] = torch.randn(shape) * 0.1
        state[f"classifier.{i}.bias"] = torch.randn(shape[0]) * 0.1
    return {f"features.{k}" if not k.startswith("classifier") else k: v for k, v in state.items()}


def test_converter_reports_keys_of_vgg16_bn_into_a_plain_backbone_by_name():
    state = _tiny_torchvision_state_dict(batch_norm=True)
    converted, unused = convert_torchvision_vgg16(state)
    assert "conv5_3.norm.running_var" in converted and unused[0] == "classifier.6.bias"
    backbone = VGG16Backbone(base_channels=4, fc_channels=8, norm="BN")
    result = load_torchvision_vgg16(backbone, state)
    assert "conv1_1.bias" in result.unexpected_keys  # BN convs have no bias
    norm_keys = ("bias", "running_mean", "running_var", "weight")
    assert result.missing_keys == [f"fc{i}.norm.{k}" for i in (6, 7) for k in norm_keys]
    with pytest.raises(ValueError, match="MODEL.VGG.FC6_KERNEL"):
        load_torchvision_vgg16(VGG16Backbone(base_channels=4, fc_channels=8, fc6_kernel=3), state)
    with pytest.raises(ValueError, match="VGG-16 state dict"):
        convert_torchvision_vgg16({"features.0.weight": torch.zeros(4, 3, 3, 3)})


def test_converter_cli_writes_a_checkpoint_for_model_weights(tmp_path):
    state = _tiny_torchvision_state_dict()
    torch.save(state, tmp_path / "vgg16.pth")
    convert_vgg.main([str(tmp_path / "vgg16.pth"), str(tmp_path / "converted.pth")])
    cfg = _cfg(norm="", BASE_CHANNELS=4, FC_CHANNELS=8, FC6_KERNEL=7)
    model = build_model(cfg)
    DetectionCheckpointer(model).load(str(tmp_path / "converted.pth"))
    torch.testing.assert_close(model.backbone.conv4_2.weight, state["features.19.weight"])
    torch.testing.assert_close(model.backbone.fc6.weight.flatten(1), state["classifier.0.weight"])


# --- configs ------------------------------------------------------------------------------------

BASE_CFG = os.path.join(REPO, "configs", "Base-FCN-VGG16.yaml")
SHAPES_CFG = os.path.join(REPO, "configs", "shapes", "fcn8s_vgg16_shapes.yaml")


def _file_cfg(path, *opts):
    cfg = get_cfg()
    seg_plugins.add_seg_plugins_config(cfg)
    cfg.merge_from_file(path)
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *opts])
    return cfg


def _meta_arch_opts(meta_arch):
    assert meta_arch in META_ARCH_REGISTRY
    # "FCN" picks FCNSkipHead from MODEL.FCN.SKIPS; SemanticSegmentor reads the head's name.
    return ["MODEL.META_ARCHITECTURE", meta_arch, "MODEL.SEM_SEG_HEAD.NAME", "FCNSkipHead"]


@pytest.mark.parametrize("meta_arch", ["SemanticSegmentor", "FCN"])
def test_base_config_builds_the_paper_model(meta_arch):
    opts = ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "21", *_meta_arch_opts(meta_arch)]
    cfg = _file_cfg(BASE_CFG, *opts)
    model = build_model(cfg)
    assert model.backbone.fc6.weight.shape == (4096, 512, 7, 7)
    assert model.backbone.fc6.norm is None and model.backbone.drop7.p == 0.5
    assert model.sem_seg_head.skip_scales == [0.01, 0.0001]
    assert model.sem_seg_head.score_pool3.weight.shape == (21, 256, 1, 1)
    assert cfg.SOLVER.MOMENTUM == 0.99 and cfg.MODEL.FCN.SKIPS == "8s"


@pytest.mark.parametrize("meta_arch", ["SemanticSegmentor", "FCN"])
def test_shapes_config_trains_a_step(meta_arch):
    cfg = _file_cfg(SHAPES_CFG, *_meta_arch_opts(meta_arch))
    assert cfg.MODEL.VGG.NORM == "BN" and cfg.SOLVER.IMS_PER_BATCH == 8
    torch.manual_seed(0)
    model = build_model(cfg)
    assert isinstance(model.sem_seg_head, FCNSkipHead)
    assert model.sem_seg_head.common_stride == 8
    _train_step_checks(model, _inputs(sizes=[(128, 128), (128, 128)]))
    _eval_checks(model, _inputs(sizes=[(61, 77)]))
