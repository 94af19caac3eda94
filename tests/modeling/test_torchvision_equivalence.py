"""Converted torchvision models give torchvision's outputs (CPU, random weights, eval mode).

BatchNorm statistics and affine parameters are randomised first, so that a wrong BN mapping,
a missed fold of the ASPP pooling BN or a swapped eps would show. Both models get the same
normalised RGB tensor (ours with PIXEL_MEAN 0 / PIXEL_STD 1: the two orders of normalising
uint8 images differ by float rounding, which 50 layers amplify to ~1e-4);
test_equivalent_cfg_normalises_like_torchvision checks the config's statistics separately.
"""

import os
import subprocess
import sys

import pytest
import torch
import torchvision

import seg_plugins  # noqa: F401  must come before detectron2.modeling (repairs the install)

# isort: split
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from torch.nn import functional as F

from seg_plugins.modeling.backbone.dilated_resnet import DilatedResNet
from seg_plugins.modeling.convert_torchvision import (
    check_against_model,
    convert_torchvision,
    fold_batch_norm,
    torchvision_equivalent_cfg,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NUM_CLASSES = 5
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
TOL = {"rtol": 1e-4, "atol": 1e-4}


def _randomise_batch_norms(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=gen) * 0.2)
            m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=gen) * 0.2)
    return model.eval()


def _image(h, w, seed=0):
    """A normalised RGB image of shape (3, h, w), as torchvision's transforms produce it."""
    image = torch.randint(0, 256, (3, h, w), generator=torch.Generator().manual_seed(seed))
    return (image.float() / 255 - MEAN) / STD


def _torchvision_segmentation(name):
    torch.manual_seed(0)
    builder = getattr(torchvision.models.segmentation, name)
    model = builder(weights=None, weights_backbone=None, num_classes=NUM_CLASSES, aux_loss=True)
    return _randomise_batch_norms(model)


@pytest.fixture(scope="module", params=["fcn_resnet50", "deeplabv3_resnet50"])
def converted_pair(request, tmp_path_factory):
    """(torchvision model, our model loaded from a converted .pth through MODEL.WEIGHTS)."""
    return _converted_pair(request.param, tmp_path_factory)


def _converted_pair(name, tmp_path_factory):
    tv_model = _torchvision_segmentation(name)
    conversion = convert_torchvision(tv_model.state_dict())
    arch, depth = name.split("_resnet")
    assert conversion.arch == {"fcn": "FCN", "deeplabv3": "DeepLabV3"}[arch]
    assert (conversion.depth, conversion.num_classes, conversion.aux) == (
        int(depth), NUM_CLASSES, True,
    )  # fmt: skip
    assert conversion.unused == [] and conversion.dropped == []

    path = str(tmp_path_factory.mktemp(name) / "converted.pth")
    torch.save({"model": conversion.state_dict, "__author__": "torchvision"}, path)
    cfg = torchvision_equivalent_cfg(name, NUM_CLASSES)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = path
    model = build_model(cfg)
    assert check_against_model(conversion.state_dict, model) == {
        "missing": [],
        "unexpected": [],
        "shape_mismatch": [],
    }
    # detectron2's public entry point; then every tensor of the model is the converted one
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS, checkpointables=[])
    state = model.state_dict()
    for key, value in conversion.state_dict.items():
        assert torch.equal(state[key], torch.as_tensor(value)), key
    model.pixel_mean.zero_()  # inputs come normalised (see the module docstring)
    model.pixel_std.fill_(1.0)
    return tv_model, model.eval()


@pytest.mark.parametrize("size", [(64, 64), (64, 96), (97, 131), (45, 61), (33, 17)])
def test_full_model_logits_equal(converted_pair, size):
    tv_model, model = converted_pair
    image = _image(*size)
    with torch.no_grad():
        expected = tv_model(image[None])["out"][0]
        ours = model([{"image": image}])[0]["sem_seg"]
    assert ours.shape == expected.shape == (NUM_CLASSES, *size)
    assert expected.abs().max() > 1e-2  # the comparison is not between two near-zero maps
    torch.testing.assert_close(ours, expected, **TOL)


@pytest.mark.parametrize("name", ["fcn_resnet101", "deeplabv3_resnet101"])
def test_resnet101_models_equal_at_odd_sizes(name, tmp_path_factory):
    """At 97 x 131 the padded inference differed by 30-40% of the logits' range;
    whole-image inference now runs at the image's own size, as torchvision does. A batch of
    two same-size images gives the same logits as each alone."""
    tv_model, model = _converted_pair(name, tmp_path_factory)
    for size in [(97, 131), (61, 45)]:
        images = [_image(*size, seed=s) for s in (3, 4)]
        with torch.no_grad():
            expected = tv_model(torch.stack(images))["out"]
            ours = [o["sem_seg"] for o in model([{"image": im} for im in images])]
        for a, b in zip(ours, expected):
            # randomised BatchNorms over 101 layers give logits up to ~1e6: compare to their
            # range (torchvision's own float32 and float64 runs differ by ~1e-6 of it)
            assert (a - b).abs().max() <= 1e-5 * b.abs().max(), (name, size)


def test_images_of_other_sizes_in_one_batch_are_padded_not_dropped(converted_pair):
    """A batch of different sizes is padded to batch it (documented): each output still has
    its image's size."""
    _, model = converted_pair
    images = [_image(40, 56, seed=5), _image(33, 47, seed=6)]
    with torch.no_grad():
        outputs = model([{"image": im} for im in images])
    assert [tuple(o["sem_seg"].shape[-2:]) for o in outputs] == [(40, 56), (33, 47)]


@pytest.mark.parametrize("size", [(64, 64), (65, 97)])
def test_network_and_aux_logits_equal_at_any_size(converted_pair, size):
    """Backbone + heads on an unpadded input of any size, resized to it as torchvision does
    (the full model pads to size_divisibility first: see test_full_model_logits_equal)."""
    tv_model, model = converted_pair
    image = _image(*size, seed=1)
    with torch.no_grad():
        expected = tv_model(image[None])
        features = model.backbone(image[None])
        outputs = {
            "out": model.sem_seg_head.layers(features),
            "aux": model.aux_head.layers(features),
        }
    for key, logits in outputs.items():
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        torch.testing.assert_close(logits, expected[key], **TOL)


@pytest.mark.parametrize(
    "depth, output_stride, dilate",
    [(18, 32, [False, False, False]), (50, 16, [False, False, True])],
)
def test_imagenet_resnet_backbone_features_equal(depth, output_stride, dilate):
    torch.manual_seed(0)
    tv_model = torchvision.models.get_model(
        f"resnet{depth}", weights=None, replace_stride_with_dilation=dilate
    )
    tv_model = _randomise_batch_norms(tv_model)
    conversion = convert_torchvision(tv_model.state_dict())
    assert conversion.arch is None and conversion.depth == depth
    assert conversion.dropped == ["fc.bias", "fc.weight"] and conversion.unused == []

    backbone = DilatedResNet(
        depth=depth,
        output_stride=output_stride,
        res2_out_channels=256 if depth >= 50 else 64,
        stride_in_1x1=False,
    )
    state = {k[len("backbone.") :]: v for k, v in conversion.state_dict.items()}
    backbone.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, 65, 97, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = torch.nn.Sequential(*list(tv_model.children())[:-2])(x)  # up to layer4
        ours = backbone.eval()(x)["res5"]
    torch.testing.assert_close(ours, expected, **TOL)


def test_fold_batch_norm_is_exact_in_eval():
    gen = torch.Generator().manual_seed(0)
    conv = torch.nn.Conv2d(6, 4, 1, bias=False)
    bn = _randomise_batch_norms(torch.nn.Sequential(torch.nn.BatchNorm2d(4)), seed=3)[0]
    weight, bias = fold_batch_norm(conv.weight.detach(), None, bn.state_dict())
    x = torch.randn(2, 6, 3, 3, generator=gen)
    with torch.no_grad():
        torch.testing.assert_close(F.conv2d(x, weight, bias), bn(conv(x)), **TOL)


def test_unknown_keys_are_reported_by_name():
    state = _torchvision_segmentation("fcn_resnet50").state_dict()
    state["classifier.9.weight"] = torch.zeros(1)
    del state["aux_classifier.4.bias"]
    conversion = convert_torchvision(state)
    assert conversion.unused == ["classifier.9.weight"]
    cfg = torchvision_equivalent_cfg("fcn_resnet50", NUM_CLASSES)
    cfg.MODEL.DEVICE = "cpu"
    check = check_against_model(conversion.state_dict, build_model(cfg))
    assert check["missing"] == ["aux_head.predictor.bias"]


def test_cli_converts_a_model_by_name(tmp_path):
    out, cfg_out = tmp_path / "fcn.pth", tmp_path / "fcn.yaml"
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "tools", "convert_torchvision.py"),
            "resnet18",
            str(out),
            "--config-out",
            str(cfg_out),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "fc.weight" in result.stdout and "wrote" in result.stdout
    saved = torch.load(out, weights_only=True)
    assert saved["__author__"] == "torchvision"
    assert "backbone.res5.1.conv2.norm.running_var" in saved["model"]
    assert str(out) in cfg_out.read_text()


def test_equivalent_cfg_normalises_like_torchvision():
    cfg = torchvision_equivalent_cfg("fcn_resnet101")
    assert cfg.INPUT.FORMAT == "RGB"
    image = torch.randint(0, 256, (3, 5, 7)).float()
    mean = torch.tensor(cfg.MODEL.PIXEL_MEAN).view(3, 1, 1)
    std = torch.tensor(cfg.MODEL.PIXEL_STD).view(3, 1, 1)
    torch.testing.assert_close((image - mean) / std, (image / 255 - MEAN) / STD)


def test_equivalent_cfg_rejects_unknown_names():
    with pytest.raises(ValueError, match="deeplabv3_resnet50"):
        torchvision_equivalent_cfg("deeplabv3_mobilenet_v3_large")


def test_deeplab_with_pooling_norm_kept_equals_torchvision():
    """MODEL.ASPP.POOLING_NORM "BN" (torchvision's ASPPPooling BatchNorm kept, for training
    as torchvision does; tests/engine/test_torchvision_recipe.py): eval logits as well."""
    tv_model = _torchvision_segmentation("deeplabv3_resnet50")
    conversion = convert_torchvision(tv_model.state_dict(), fold_pooling_norm=False)
    assert "sem_seg_head.aspp.convs.4.1.norm.running_var" in conversion.state_dict
    cfg = torchvision_equivalent_cfg("deeplabv3_resnet50", NUM_CLASSES)
    cfg.MODEL.DEVICE, cfg.MODEL.ASPP.POOLING_NORM = "cpu", "BN"
    model = build_model(cfg)
    assert check_against_model(conversion.state_dict, model) == {
        "missing": [], "unexpected": [], "shape_mismatch": [],
    }  # fmt: skip
    model.load_state_dict(conversion.state_dict, strict=False)
    model.pixel_mean.zero_()
    model.pixel_std.fill_(1.0)
    image = _image(45, 61, seed=9)
    with torch.no_grad():
        expected = tv_model(image[None])["out"][0]
        ours = model.eval()([{"image": image}])[0]["sem_seg"]
    torch.testing.assert_close(ours, expected, **TOL)
