"""Tests of the dilated ResNet, the FCN / ASPP heads and the FCN / DeepLabV3 / DeepLabV3+
meta-architectures (CPU, tiny widths, odd sizes)."""

import os

import pytest
import torch

import seg_plugins

# isort: split
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import (
    BACKBONE_REGISTRY,
    META_ARCH_REGISTRY,
    SEM_SEG_HEADS_REGISTRY,
    SemanticSegmentor,
    build_model,
    build_sem_seg_head,
)

from seg_plugins.modeling.backbone import DilatedResNet
from seg_plugins.modeling.backbone.dilated_resnet import stage_strides_and_dilations
from seg_plugins.modeling.heads import ASPPHead, ASPPPlusHead, FCNHead
from seg_plugins.modeling.meta_arch import FCN, DeepLabV3, DeepLabV3Plus
from tests.modeling.seg_model_checks import make_inputs

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NUM_CLASSES = 4
ODD_SIZES = [(45, 45), (200, 249)]
ARCHS = ["FCN", "DeepLabV3", "DeepLabV3Plus"]


def _cfg(arch="FCN", **overrides):
    """A tiny model: ResNet-18 of width 16..128, heads of width 8."""
    cfg = get_cfg()
    seg_plugins.add_seg_plugins_config(cfg)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.META_ARCHITECTURE = arch
    cfg.MODEL.BACKBONE.NAME = "build_dilated_resnet_backbone"
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.NORM = "BN"
    cfg.MODEL.RESNETS.STEM_OUT_CHANNELS = 16
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 16
    cfg.MODEL.DILATED_RESNET.OUTPUT_STRIDE = 16 if arch == "DeepLabV3Plus" else 8
    cfg.MODEL.ASPP.DILATIONS = [6, 12, 18] if arch == "DeepLabV3Plus" else [12, 24, 36]
    cfg.MODEL.ASPP.CHANNELS = 8
    cfg.MODEL.DEEPLABV3PLUS.LOW_LEVEL_CHANNELS = 8
    cfg.MODEL.DEEPLABV3PLUS.DECODER_CHANNELS = 8
    cfg.MODEL.AUX_HEAD.ENABLED = True
    cfg.MODEL.AUX_HEAD.CHANNELS = 8
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = NUM_CLASSES
    cfg.merge_from_list([x for kv in overrides.items() for x in kv])
    return cfg


def _inputs(sizes=ODD_SIZES, channels=3, seed=0, with_targets=True):
    return make_inputs(sizes, NUM_CLASSES, channels, seed, with_targets)


def _train_step_checks(
    model, inputs, expected_losses=("loss_sem_seg", "loss_aux"), unused_params=()
):
    """One training step: the expected losses, finite, and a finite gradient for every
    parameter except those under the prefixes ``unused_params``."""
    model.train()
    losses = model(inputs)
    assert set(losses) == set(expected_losses)
    loss = sum(losses.values())
    assert torch.isfinite(loss)
    loss.backward()
    for name, param in model.named_parameters():
        if param.requires_grad and not name.startswith(tuple(unused_params)):
            assert param.grad is not None, f"{name} received no gradient"
            assert torch.isfinite(param.grad).all(), f"{name} has a non-finite gradient"
    return losses


def _eval_checks(model, inputs):
    model.eval()
    with torch.no_grad():
        outputs = model([{"image": x["image"]} for x in inputs])
    for out, x in zip(outputs, inputs):
        assert out["sem_seg"].shape == (NUM_CLASSES,) + tuple(x["image"].shape[-2:])
        assert torch.isfinite(out["sem_seg"]).all()


# --- registration -----------------------------------------------------------------------


def test_registered():
    assert {"FCN", "DeepLabV3", "DeepLabV3Plus"} <= {name for name, _ in META_ARCH_REGISTRY}
    assert {"FCNHead", "ASPPHead", "ASPPPlusHead"} <= {name for name, _ in SEM_SEG_HEADS_REGISTRY}
    assert "build_dilated_resnet_backbone" in BACKBONE_REGISTRY


@pytest.mark.parametrize(
    "arch, model_class, head_class",
    [
        ("FCN", FCN, FCNHead),
        ("DeepLabV3", DeepLabV3, ASPPHead),
        ("DeepLabV3Plus", DeepLabV3Plus, ASPPPlusHead),
    ],
)
def test_meta_arch_fixes_its_head(arch, model_class, head_class):
    cfg = _cfg(arch)
    cfg.MODEL.SEM_SEG_HEAD.NAME = "SemSegFPNHead"  # not read
    model = build_model(cfg)
    assert type(model) is model_class
    assert type(model.sem_seg_head) is head_class and type(model.aux_head) is FCNHead
    assert isinstance(model.backbone, DilatedResNet)


# --- whole models -----------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_train_and_eval_at_odd_sizes(arch):
    torch.manual_seed(0)
    model = build_model(_cfg(arch))
    _train_step_checks(model, _inputs())
    _eval_checks(model, _inputs())


@pytest.mark.parametrize("arch", ["DeepLabV3", "DeepLabV3Plus"])
@pytest.mark.parametrize("output_stride", [16, 32])
def test_aspp_trains_at_batch_size_one(arch, output_stride):
    """detectron2's ASPP has no BatchNorm after global pooling, so one image works, even when
    res5 is 2x2 (45x45 input at output stride 32)."""
    model = build_model(_cfg(arch, **{"MODEL.DILATED_RESNET.OUTPUT_STRIDE": output_stride}))
    _train_step_checks(model, _inputs(sizes=[(45, 45)]))


@pytest.mark.parametrize("arch", ARCHS)
def test_grayscale_input(arch):
    cfg = _cfg(arch, **{"MODEL.PIXEL_MEAN": [127.5], "MODEL.PIXEL_STD": [64.0]})
    model = build_model(cfg)
    assert model.backbone.stem.conv1.in_channels == 1
    _train_step_checks(model, _inputs(channels=1))
    _eval_checks(model, _inputs(channels=1))


def test_aux_loss_is_weighted_and_training_only():
    torch.manual_seed(0)
    cfg = _cfg("DeepLabV3", **{"MODEL.FCN.DROPOUT": 0.0, "MODEL.AUX_HEAD.LOSS_WEIGHT": 0.4})
    model = build_model(cfg).train()
    inputs = _inputs()
    weighted = model(inputs)["loss_aux"]
    model.aux_head.loss_weight = 1.0
    unweighted = model(inputs)["loss_aux"]
    torch.testing.assert_close(weighted, 0.4 * unweighted)
    _eval_checks(model, inputs)  # eval: logits only, no aux output

    cfg.MODEL.AUX_HEAD.ENABLED = False
    model = build_model(cfg)
    assert model.aux_head is None
    _train_step_checks(model, inputs, expected_losses=("loss_sem_seg",))


def test_eval_resizes_to_requested_height_width():
    model = build_model(_cfg("DeepLabV3Plus")).eval()
    inputs = [dict(x, height=90, width=91) for x in _inputs(with_targets=False)]
    with torch.no_grad():
        outputs = model(inputs)
    assert [o["sem_seg"].shape for o in outputs] == [(NUM_CLASSES, 90, 91)] * 2


def test_checkpoint_key_names():
    """Module names are the checkpoint format (and convert_torchvision's targets)."""
    keys = set(build_model(_cfg("DeepLabV3Plus")).state_dict())
    assert {
        "backbone.stem.conv1.norm.running_var",
        "backbone.res5.1.conv2.weight",
        "sem_seg_head.aspp.convs.0.norm.weight",
        "sem_seg_head.aspp.convs.4.1.bias",
        "sem_seg_head.aspp.project.weight",
        "sem_seg_head.low_level_project.weight",
        "sem_seg_head.fuse.conv2.norm.bias",
        "sem_seg_head.predictor.bias",
        "aux_head.conv.norm.running_mean",
        "aux_head.predictor.weight",
    } <= keys
    keys = set(build_model(_cfg("DeepLabV3")).state_dict())
    assert {"sem_seg_head.conv.weight", "sem_seg_head.conv.norm.weight"} <= keys


@pytest.mark.parametrize("arch", ARCHS)
def test_overfits_one_image(arch):
    torch.manual_seed(0)
    image = torch.rand(3, 48, 48) * 0.2
    target = torch.zeros(48, 48, dtype=torch.long)
    target[12:36, 10:30] = 1
    image[:, 12:36, 10:30] += 0.5
    cfg = _cfg(arch, **{"MODEL.AUX_HEAD.ENABLED": False})
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 2
    cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD = [0.3] * 3, [0.25] * 3
    model = build_model(cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(80):
        loss = model([{"image": image, "sem_seg": target}] * 2)["loss_sem_seg"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        prediction = model.eval()([{"image": image}])[0]["sem_seg"].argmax(0)
    assert (prediction == target).float().mean() > 0.95


# --- backbone ---------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [18, 50])
@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_output_stride_and_honest_shapes(depth, output_stride):
    net = DilatedResNet(
        depth=depth,
        output_stride=output_stride,
        stem_out_channels=8,
        res2_out_channels=16,
        width_per_group=4,
        out_features=["stem", "res2", "res3", "res4", "res5"],
    )
    shapes = net.output_shape()
    expected = {
        "stem": 4,
        "res2": 4,
        "res3": 8,
        "res4": min(16, output_stride),
        "res5": output_stride,
    }
    assert {k: s.stride for k, s in shapes.items()} == expected
    assert net.size_divisibility == output_stride
    h, w = 3 * output_stride, 5 * output_stride
    features = net(torch.randn(1, 3, h, w))
    for name, feature in features.items():
        stride = shapes[name].stride
        assert feature.shape == (1, shapes[name].channels, h // stride, w // stride)
    # any size runs (strided convs round up); ImageList pads to size_divisibility in models
    assert net(torch.randn(1, 3, 45, 61))["res5"].shape[-2:] == (
        -(-45 // output_stride),
        -(-61 // output_stride),
    )


def test_size_divisibility_follows_the_last_built_stage():
    net = DilatedResNet(
        depth=18, output_stride=8, stem_out_channels=8, res2_out_channels=8, out_features=["res2"]
    )
    assert net.size_divisibility == 4 and net.stage_names == ("res2",)


@pytest.mark.parametrize(
    "depth, output_stride, multi_grid, res4, res5",
    [
        (50, 8, [1, 1, 1], [1, 2, 2, 2, 2, 2], [2, 4, 4]),  # torchvision's rule
        (50, 16, [1, 1, 1], [1] * 6, [1, 2, 2]),
        (50, 32, [1, 1, 1], [1] * 6, [1, 1, 1]),
        (50, 16, [1, 2, 4], [1] * 6, [2, 4, 8]),  # DeepLabV3 paper, Sec. 3.2
        (50, 8, [1, 2, 1], [1, 2, 2, 2, 2, 2], [4, 8, 4]),
        (18, 8, [1, 1, 1], [1, 2], [2, 4]),
        (18, 16, [1, 2], [1, 1], [2, 4]),
    ],
)
def test_dilations_of_the_built_convs(depth, output_stride, multi_grid, res4, res5):
    net = DilatedResNet(
        depth=depth,
        output_stride=output_stride,
        multi_grid=multi_grid,
        stem_out_channels=8,
        res2_out_channels=16,
        width_per_group=4,
    )
    assert net.stage_dilations()["res4"] == res4
    assert net.stage_dilations()["res5"] == res5
    for stage, rates in (("res4", res4), ("res5", res5)):
        for block, rate in zip(getattr(net, stage), rates):
            convs = [block.conv2] if depth >= 50 else [block.conv1, block.conv2]
            for conv in convs:  # padding = dilation keeps the size
                assert conv.dilation == (rate, rate) and conv.padding == (rate, rate)
    assert (
        stage_strides_and_dilations(output_stride, [len(res4)] * 3 + [len(res5)], multi_grid)[3][1]
        == res5
    )


def test_backbone_from_cfg_reads_resnet_keys():
    cfg = _cfg(
        **{
            "MODEL.RESNETS.DEPTH": 50,
            "MODEL.RESNETS.WIDTH_PER_GROUP": 4,
            "MODEL.RESNETS.NUM_GROUPS": 2,
            "MODEL.RESNETS.STRIDE_IN_1X1": True,
            "MODEL.BACKBONE.FREEZE_AT": 2,
            "MODEL.DILATED_RESNET.OUT_FEATURES": ["res4"],
        }
    )
    backbone = BACKBONE_REGISTRY.get("build_dilated_resnet_backbone")(cfg, ShapeSpec(channels=3))
    assert backbone.res2[0].conv2.groups == 2 and backbone.res2[0].conv2.out_channels == 8
    assert backbone.res3[0].conv1.stride == (2, 2)  # STRIDE_IN_1X1
    assert not hasattr(backbone, "res5")
    assert all(not p.requires_grad for p in backbone.res2.parameters())
    assert all(p.requires_grad for p in backbone.res3.parameters())


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"MODEL.DILATED_RESNET.OUTPUT_STRIDE": 4}, "MODEL.DILATED_RESNET.OUTPUT_STRIDE"),
        ({"MODEL.DILATED_RESNET.MULTI_GRID": [1, 2, 4]}, "MODEL.DILATED_RESNET.MULTI_GRID"),
        ({"MODEL.DILATED_RESNET.OUT_FEATURES": ["res6"]}, "MODEL.DILATED_RESNET.OUT_FEATURES"),
        ({"MODEL.RESNETS.DEPTH": 42}, "MODEL.RESNETS.DEPTH"),
        ({"MODEL.RESNETS.NUM_GROUPS": 32}, "MODEL.RESNETS.NUM_GROUPS"),
        ({"MODEL.RESNETS.RES5_DILATION": 2}, "MODEL.DILATED_RESNET.OUTPUT_STRIDE"),
        ({"MODEL.RESNETS.NORM": "LayerNormish"}, "MODEL.RESNETS.NORM"),
        ({"MODEL.FCN.IN_FEATURE": "res9"}, "MODEL.FCN.IN_FEATURE"),
        ({"MODEL.AUX_HEAD.IN_FEATURE": "res1"}, "MODEL.AUX_HEAD.IN_FEATURE"),
        ({"MODEL.FCN.SKIPS": "4s"}, "MODEL.FCN.SKIPS"),
        ({"MODEL.FCN.NORM": "GN"}, "MODEL.FCN.NORM"),
        ({"MODEL.PIXEL_STD": [1.0]}, "MODEL.PIXEL_STD"),
    ],
)
def test_bad_config_names_the_key(overrides, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        build_model(_cfg("FCN", **overrides))


@pytest.mark.parametrize(
    "arch, overrides, key",
    [
        ("DeepLabV3", {"MODEL.ASPP.DILATIONS": [6, 12]}, "MODEL.ASPP.DILATIONS"),
        ("DeepLabV3", {"MODEL.ASPP.IN_FEATURE": "p5"}, "MODEL.ASPP.IN_FEATURE"),
        ("DeepLabV3", {"MODEL.ASPP.NORM": "nope"}, "MODEL.ASPP.NORM"),
        (
            "DeepLabV3Plus",
            {"MODEL.DEEPLABV3PLUS.LOW_LEVEL_FEATURE": "stem"},
            "MODEL.DEEPLABV3PLUS.LOW_LEVEL_FEATURE",
        ),
    ],
)
def test_bad_aspp_config_names_the_key(arch, overrides, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        build_model(_cfg(arch, **overrides))


# --- FCN skip variant -------------------------------------------------------------------


def test_fcn_skips_builds_the_registered_skip_head(monkeypatch):
    built = {}

    class FakeSkipHead(FCNHead):
        def __init__(self, cfg, input_shape):
            built["input_shape"] = input_shape
            super().__init__(input_shape, in_feature="res5", num_classes=NUM_CLASSES)

    monkeypatch.setitem(SEM_SEG_HEADS_REGISTRY._obj_map, "FCNSkipHead", FakeSkipHead)
    model = build_model(_cfg("FCN", **{"MODEL.FCN.SKIPS": "8s"}))
    assert type(model.sem_seg_head) is FakeSkipHead and "res5" in built["input_shape"]


def test_fcn_skips_without_registered_skip_head_is_a_clear_error(monkeypatch):
    monkeypatch.delitem(SEM_SEG_HEADS_REGISTRY._obj_map, "FCNSkipHead", raising=False)
    with pytest.raises(ValueError, match="FCNSkipHead.*MODEL.FCN.SKIPS"):
        build_model(_cfg("FCN", **{"MODEL.FCN.SKIPS": "16s"}))


# --- heads on fake features -------------------------------------------------------------


def _fake_features(shapes, image_size, batch=2):
    h, w = image_size
    return {
        name: torch.randn(
            batch, s.channels, -(-h // s.stride), -(-w // s.stride), requires_grad=True
        )
        for name, s in shapes.items()
    }


HEAD_CASES = {
    "FCNHead": lambda shapes: FCNHead(shapes, in_feature="res5", num_classes=3, channels=8),
    "ASPPHead": lambda shapes: ASPPHead(shapes, in_feature="res5", num_classes=3, channels=8),
    "ASPPPlusHead": lambda shapes: ASPPPlusHead(
        shapes, num_classes=3, channels=8, low_level_channels=4, decoder_channels=8
    ),
}


@pytest.mark.parametrize("head_name", sorted(HEAD_CASES))
@pytest.mark.parametrize("image_size", [(45, 45), (200, 249)])
def test_head_on_fake_features(head_name, image_size):
    shapes = {"res2": ShapeSpec(channels=6, stride=4), "res5": ShapeSpec(channels=12, stride=16)}
    head = HEAD_CASES[head_name](shapes)
    stride = 4 if head_name == "ASPPPlusHead" else 16
    assert head.common_stride == stride and head.ignore_value == 255
    features = _fake_features(shapes, image_size)
    targets = torch.randint(0, 3, (2, *image_size))
    targets[:, :5] = 255
    _, losses = head.train()(features, targets)
    assert set(losses) == {"loss_sem_seg"} and torch.isfinite(losses["loss_sem_seg"])
    losses["loss_sem_seg"].backward()
    for name, param in head.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    used = ["res2", "res5"] if head_name == "ASPPPlusHead" else ["res5"]
    assert all(features[n].grad is not None for n in used)
    logits, extra = head.eval()(features)
    h, w = features["res2" if stride == 4 else "res5"].shape[-2:]
    assert logits.shape == (2, 3, h * stride, w * stride) and extra == {}


def test_head_losses_scale_with_loss_weight_and_ignore_value():
    shapes = {"res5": ShapeSpec(channels=8, stride=8)}
    head = FCNHead(shapes, num_classes=3, dropout=0.0, ignore_value=7, loss_weight=2.5).train()
    features = _fake_features(shapes, (33, 35))
    targets = torch.full((2, 33, 35), 7)
    assert head(features, targets)[1]["loss_sem_seg"].item() == 0.0  # all ignored
    targets[:, 10:20] = 1
    head.loss_weight = 1.0
    one = head(features, targets)[1]["loss_sem_seg"]
    head.loss_weight = 2.5
    torch.testing.assert_close(head(features, targets)[1]["loss_sem_seg"], 2.5 * one)
    with pytest.raises(ValueError, match="needs targets"):
        head(features)


def test_fcn_head_default_width_is_a_quarter():
    head = FCNHead({"res5": ShapeSpec(channels=64, stride=8)}, num_classes=2)
    assert head.conv.out_channels == 16 and head.conv.bias is None


# --- detectron2 interoperability ----------------------------------------------------------


@pytest.mark.parametrize(
    "head_name, overrides",
    [
        ("FCNHead", {"MODEL.FCN.IN_FEATURE": "p2"}),
        ("ASPPHead", {"MODEL.ASPP.IN_FEATURE": "p5"}),
        (
            "ASPPPlusHead",
            {"MODEL.ASPP.IN_FEATURE": "p5", "MODEL.DEEPLABV3PLUS.LOW_LEVEL_FEATURE": "p2"},
        ),
    ],
)
def test_heads_under_semantic_segmentor_on_fpn(head_name, overrides):
    cfg = _cfg("SemanticSegmentor", **overrides)
    cfg.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64  # detectron2's ResNet-18 requires 64
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.OUT_CHANNELS = 16
    cfg.MODEL.SEM_SEG_HEAD.NAME = head_name
    model = build_model(cfg)
    assert type(model) is SemanticSegmentor and type(model.sem_seg_head).__name__ == head_name
    # FPN layers that feed no level the head reads get no gradient; all else does. Level l
    # reads output l and laterals l.. 5 (top-down path).
    used = {"FCNHead": [2], "ASPPHead": [5], "ASPPPlusHead": [2, 5]}[head_name]
    unused = [f"backbone.fpn_output{lvl}." for lvl in range(2, 6) if lvl not in used]
    unused += [f"backbone.fpn_lateral{lvl}." for lvl in range(2, min(used))]
    _train_step_checks(model, _inputs(), expected_losses=("loss_sem_seg",), unused_params=unused)
    _eval_checks(model, _inputs())


def test_coexists_with_detectron2_projects_deeplab():
    from detectron2.projects.deeplab import DeepLabV3PlusHead, add_deeplab_config

    cfg = _cfg("DeepLabV3Plus")
    add_deeplab_config(cfg)  # sets its own keys, and LOSS_TYPE "hard_pixel_mining"
    seg_plugins.add_seg_plugins_config(cfg)  # idempotent, in either order
    shapes = {"res2": ShapeSpec(channels=16, stride=4), "res5": ShapeSpec(channels=32, stride=16)}
    cfg.MODEL.SEM_SEG_HEAD.NAME = "DeepLabV3PlusHead"
    cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES = ["res2", "res5"]
    cfg.MODEL.SEM_SEG_HEAD.ASPP_CHANNELS = 8
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 8
    cfg.MODEL.SEM_SEG_HEAD.COMMON_STRIDE = 4
    cfg.MODEL.SEM_SEG_HEAD.NORM = "BN"
    theirs = build_sem_seg_head(cfg, shapes)
    assert type(theirs) is DeepLabV3PlusHead

    cfg.MODEL.SEM_SEG_HEAD.LOSS_TYPE = "cross_entropy"
    cfg.MODEL.SEM_SEG_HEAD.NAME = "ASPPPlusHead"
    ours = build_sem_seg_head(cfg, shapes)
    assert type(ours) is ASPPPlusHead
    features = _fake_features(shapes, (45, 45))
    assert theirs.eval()(features)[0].shape == ours.eval()(features)[0].shape
    model = build_model(cfg)  # our meta-architecture, from the same cfg
    assert type(model) is DeepLabV3Plus
    _train_step_checks(model, _inputs())


# --- explicit construction and configs ----------------------------------------------------


def test_explicit_kwargs_without_cfg():
    backbone = DilatedResNet(
        depth=18,
        in_channels=3,
        output_stride=16,
        stem_out_channels=8,
        res2_out_channels=8,
        out_features=["res2", "res4", "res5"],
    )
    shapes = backbone.output_shape()
    model = DeepLabV3Plus(
        backbone=backbone,
        sem_seg_head=ASPPPlusHead(
            shapes, num_classes=NUM_CLASSES, channels=8, decoder_channels=8, dilations=[6, 12, 18]
        ),
        aux_head=FCNHead(shapes, in_feature="res4", num_classes=NUM_CLASSES, loss_weight=0.4),
        pixel_mean=[128.0] * 3,
        pixel_std=[64.0] * 3,
    )
    _train_step_checks(model, _inputs())
    _eval_checks(model, _inputs())


CONFIGS = [
    "Base-FCN.yaml",
    "Base-DeepLabV3.yaml",
    "Base-DeepLabV3Plus.yaml",
    "shapes/fcn_R18_shapes.yaml",
    "shapes/deeplabv3_R18_shapes.yaml",
    "shapes/deeplabv3plus_R18_shapes.yaml",
]


@pytest.mark.parametrize("config", CONFIGS)
def test_config_loads_and_builds(config):
    cfg = get_cfg()
    seg_plugins.add_seg_plugins_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", config))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES or NUM_CLASSES
    model = build_model(cfg)
    expected = {"FCN": FCN, "DeepLabV3": DeepLabV3, "DeepLabV3Plus": DeepLabV3Plus}
    assert type(model) is expected[cfg.MODEL.META_ARCHITECTURE]
    assert model.backbone.size_divisibility == cfg.MODEL.DILATED_RESNET.OUTPUT_STRIDE
    if config.startswith("shapes/"):
        assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 4
        assert cfg.DATASETS.TRAIN == ("shapes_sem_seg_train",)
        _train_step_checks(model, _inputs(sizes=[(64, 64), (64, 64)]))
