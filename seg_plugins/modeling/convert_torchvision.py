"""Convert torchvision weights to seg_plugins models, and the configs that match torchvision.

Supported state dicts (``torch.load`` of torchvision's .pth files, or ``model.state_dict()``):

- ``fcn_resnet50`` / ``fcn_resnet101`` -> meta-architecture "FCN";
- ``deeplabv3_resnet50`` / ``deeplabv3_resnet101`` -> "DeepLabV3";
  both with or without ``aux_classifier`` (-> ``aux_head``, MODEL.AUX_HEAD.ENABLED);
- ``resnet18`` .. ``resnet152`` ImageNet classifiers -> the backbone only (``backbone.*``,
  for MODEL.WEIGHTS; ``fc.*`` is dropped).

The converted file, ``{"model": state_dict, "__author__": "torchvision",
"matching_heuristics": False}``, loads with detectron2's ``DetectionCheckpointer`` (e.g. via
MODEL.WEIGHTS) into a model built from :func:`torchvision_equivalent_cfg`; then the eval
logits equal torchvision's (tests/modeling/test_torchvision_equivalence.py).

Renames (torchvision -> detectron2 names, which are part of our checkpoint format):
``conv1`` / ``bn1`` -> ``stem.conv1`` / ``stem.conv1.norm``; ``layer{i}.{j}.conv{k}`` /
``bn{k}`` -> ``res{i+1}.{j}.conv{k}`` / ``.norm``; ``downsample.0`` / ``.1`` -> ``shortcut``
/ ``shortcut.norm``. FCNHead ``0, 1, 4`` -> ``conv, conv.norm, predictor``. DeepLabHead ``0``
(ASPP) -> ``aspp`` (``convs.{n}.0/1`` -> ``convs.{n}`` / ``.norm``, ``project.0/1`` ->
``project`` / ``.norm``), ``1, 2, 4`` -> ``conv, conv.norm, predictor``.

detectron2's ASPP has no norm in its image-pooling branch (conv with bias, then ReLU) where
torchvision has conv - BatchNorm - ReLU: that BatchNorm is folded, with its running
statistics, into the conv (``w' = w * g / sqrt(v + eps)``, ``b' = b - m * g / sqrt(v + eps)``),
which is exact in eval mode.
"""

import argparse
import os
import re
import sys
from collections.abc import Sequence
from typing import NamedTuple

import torch
from detectron2.config import CfgNode, get_cfg
from torch import Tensor

from ..config import add_seg_plugins_config
from .backbone.dilated_resnet import BLOCKS_PER_STAGE

__all__ = [
    "TORCHVISION_MODELS",
    "Conversion",
    "check_against_model",
    "convert_torchvision",
    "fold_batch_norm",
    "load_torchvision_state_dict",
    "main",
    "torchvision_equivalent_cfg",
    "torchvision_name",
]

#: torchvision model name -> (our meta-architecture or None for a plain backbone, depth).
TORCHVISION_MODELS = {
    **{f"resnet{d}": (None, d) for d in BLOCKS_PER_STAGE},
    "fcn_resnet50": ("FCN", 50),
    "fcn_resnet101": ("FCN", 101),
    "deeplabv3_resnet50": ("DeepLabV3", 50),
    "deeplabv3_resnet101": ("DeepLabV3", 101),
}
BN_EPS = 1e-5  # torch.nn.BatchNorm2d's default, used by every torchvision ResNet / head
_BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")

# (pattern, replacement) pairs tried in order on a key without its prefix.
_RESNET_RULES = [
    (r"conv1\.weight", "stem.conv1.weight"),
    (r"bn1\.(\w+)", r"stem.conv1.norm.\1"),
    (r"layer(\d)\.(\d+)\.conv(\d)\.weight", lambda m: _res(m, f"conv{m[3]}.weight")),
    (r"layer(\d)\.(\d+)\.bn(\d)\.(\w+)", lambda m: _res(m, f"conv{m[3]}.norm.{m[4]}")),
    (r"layer(\d)\.(\d+)\.downsample\.0\.weight", lambda m: _res(m, "shortcut.weight")),
    (r"layer(\d)\.(\d+)\.downsample\.1\.(\w+)", lambda m: _res(m, f"shortcut.norm.{m[3]}")),
]
_FCN_HEAD_RULES = [
    (r"0\.weight", "conv.weight"),
    (r"1\.(\w+)", r"conv.norm.\1"),
    (r"4\.(weight|bias)", r"predictor.\1"),
]
_DEEPLAB_HEAD_RULES = [
    (r"0\.convs\.([0-3])\.0\.weight", r"aspp.convs.\1.weight"),
    (r"0\.convs\.([0-3])\.1\.(\w+)", r"aspp.convs.\1.norm.\2"),
    (r"0\.project\.0\.weight", "aspp.project.weight"),
    (r"0\.project\.1\.(\w+)", r"aspp.project.norm.\1"),
    (r"1\.weight", "conv.weight"),
    (r"2\.(\w+)", r"conv.norm.\1"),
    (r"4\.(weight|bias)", r"predictor.\1"),
]
_POOL = "0.convs.4."  # torchvision ASPPPooling: 0 AdaptiveAvgPool2d, 1 conv, 2 BN, 3 ReLU


def _res(match, rest: str) -> str:
    layer, block = int(match[1]), match[2]
    return f"res{layer + 1}.{block}.{rest}"


class Conversion(NamedTuple):
    """A converted state dict and what was learned from the input."""

    state_dict: dict[str, Tensor]  # our keys -> tensors
    arch: str | None  # "FCN", "DeepLabV3" or None (backbone only)
    depth: int  # ResNet depth
    num_classes: int | None  # K of the classifier, None for a backbone
    aux: bool  # an aux_classifier was converted
    unused: list[str]  # input keys that no rule mapped (a wrong or unsupported input)
    dropped: list[str]  # input keys dropped on purpose (ImageNet fc.*)


def fold_batch_norm(
    weight: Tensor, bias: Tensor | None, bn: dict[str, Tensor], eps: float = BN_EPS
) -> tuple[Tensor, Tensor]:
    """Fold an eval-mode BatchNorm into the preceding conv.

    Args:
        weight: conv weight of shape (C_out, C_in, kh, kw); bias: (C_out,) or None.
        bn: BatchNorm "weight", "bias", "running_mean", "running_var", each of shape (C_out,).

    Returns:
        (weight', bias') with ``conv'(x) = bn(conv(x))`` for every x.
    """
    scale = bn["weight"] / torch.sqrt(bn["running_var"] + eps)
    bias = torch.zeros_like(bn["running_mean"]) if bias is None else bias
    return weight * scale.reshape(-1, 1, 1, 1), (bias - bn["running_mean"]) * scale + bn["bias"]


def _apply_rules(state_dict, prefix, rules, out_prefix, converted, used) -> None:
    """Rename every key ``prefix + k`` matched by one of ``rules`` to ``out_prefix + new``."""
    for key, value in state_dict.items():
        if not key.startswith(prefix):
            continue
        short = key[len(prefix) :]
        for pattern, replacement in rules:
            match = re.fullmatch(pattern, short)
            if match:
                new = replacement(match) if callable(replacement) else match.expand(replacement)
                converted[out_prefix + new] = value
                used.add(key)
                break


def _convert_aspp_pooling(state_dict, prefix, out_prefix, converted, used, fold=True) -> None:
    """torchvision's ASPPPooling conv + BN -> detectron2's pooling conv with bias (``fold``)
    or conv + ``norm`` (MODEL.ASPP.POOLING_NORM "BN")."""
    conv_key, bn_prefix = f"{prefix}{_POOL}1.weight", f"{prefix}{_POOL}2."
    bn = {k: state_dict.get(bn_prefix + k) for k in _BN_KEYS[:4]}
    if conv_key not in state_dict or any(v is None for v in bn.values()):
        return  # reported as unused / missing
    if not fold:
        converted[f"{out_prefix}aspp.convs.4.1.weight"] = state_dict[conv_key]
        for k in _BN_KEYS:
            if bn_prefix + k in state_dict:
                converted[f"{out_prefix}aspp.convs.4.1.norm.{k}"] = state_dict[bn_prefix + k]
        used.update([conv_key] + [bn_prefix + k for k in _BN_KEYS if bn_prefix + k in state_dict])
        return
    bn = {k: v.float() for k, v in bn.items()}
    weight, bias = fold_batch_norm(state_dict[conv_key].float(), None, bn)
    converted[f"{out_prefix}aspp.convs.4.1.weight"] = weight
    converted[f"{out_prefix}aspp.convs.4.1.bias"] = bias
    used.update([conv_key] + [bn_prefix + k for k in _BN_KEYS if bn_prefix + k in state_dict])


def _resnet_depth(state_dict, prefix: str) -> int:
    """Depth from the number of blocks per layer and the block type."""
    blocks = []
    for layer in range(1, 5):
        pattern = re.compile(rf"{re.escape(prefix)}layer{layer}\.(\d+)\.")
        blocks.append(len({m[1] for k in state_dict if (m := pattern.match(k))}))
    bottleneck = f"{prefix}layer1.0.conv3.weight" in state_dict
    for depth, per_stage in BLOCKS_PER_STAGE.items():
        if tuple(blocks) == per_stage and bottleneck == (depth >= 50):
            return depth
    raise ValueError(
        f"not a torchvision ResNet state dict: blocks per layer {blocks} "
        f"({'bottleneck' if bottleneck else 'basic'} blocks) match no depth in "
        f"{list(BLOCKS_PER_STAGE)}"
    )


def convert_torchvision(
    state_dict: dict[str, Tensor], prefix: str = "backbone.", *, fold_pooling_norm: bool = True
) -> Conversion:
    """Convert a torchvision ResNet / FCN-ResNet / DeepLabV3-ResNet state dict.

    ``fold_pooling_norm``: DeepLabV3's image-pooling BatchNorm folded into its conv (for the
    default MODEL.ASPP.POOLING_NORM "", exact in eval), or kept as ``aspp.convs.4.1.norm``
    (for POOLING_NORM "BN": the model then also trains as torchvision's does).

    The kind is recognised from the keys: ``classifier.0.convs.*`` = DeepLabV3,
    ``classifier.*`` = FCN, ``layer1.*`` = a plain ResNet. ``prefix`` is where a plain
    ResNet's keys go ("backbone." for our models; "backbone.bottom_up." for detectron2's
    FPN); segmentation models always give ``backbone.``, ``sem_seg_head.``, ``aux_head.``.

    Example::

        tv = torchvision.models.segmentation.fcn_resnet50(weights=None, weights_backbone=None,
                                                          num_classes=5, aux_loss=True)
        result = convert_torchvision(tv.state_dict())
        assert result.arch == "FCN" and result.num_classes == 5 and not result.unused
    """
    converted: dict[str, Tensor] = {}
    used: set = set()
    dropped: list[str] = []
    if any(k.startswith("classifier.") for k in state_dict):
        deeplab = any(k.startswith("classifier.0.convs.") for k in state_dict)
        arch = "DeepLabV3" if deeplab else "FCN"
        depth = _resnet_depth(state_dict, "backbone.")
        _apply_rules(state_dict, "backbone.", _RESNET_RULES, "backbone.", converted, used)
        head_rules = _DEEPLAB_HEAD_RULES if deeplab else _FCN_HEAD_RULES
        _apply_rules(state_dict, "classifier.", head_rules, "sem_seg_head.", converted, used)
        if deeplab:
            _convert_aspp_pooling(
                state_dict, "classifier.", "sem_seg_head.", converted, used, fold_pooling_norm
            )
        aux = any(k.startswith("aux_classifier.") for k in state_dict)
        _apply_rules(state_dict, "aux_classifier.", _FCN_HEAD_RULES, "aux_head.", converted, used)
        classifier = state_dict.get("classifier.4.weight")
        num_classes = None if classifier is None else int(classifier.shape[0])
    else:
        arch, aux, num_classes = None, False, None
        depth = _resnet_depth(state_dict, "")
        _apply_rules(state_dict, "", _RESNET_RULES, prefix, converted, used)
        dropped = sorted(k for k in state_dict if k.startswith("fc."))
        used.update(dropped)
    unused = sorted(k for k in state_dict if k not in used)
    return Conversion(converted, arch, depth, num_classes, aux, unused, dropped)


def check_against_model(
    state_dict: dict[str, Tensor], model: torch.nn.Module, prefix: str = ""
) -> dict[str, list[str]]:
    """Compare converted keys with ``model.state_dict()`` (restricted to keys starting with
    ``prefix``, e.g. "backbone." for a backbone-only conversion).

    Returns:
        {"missing": model keys absent from state_dict, "unexpected": state_dict keys the model
        lacks, "shape_mismatch": "key: checkpoint (..) vs model (..)" strings}; all empty when
        the model loads the state dict exactly. pixel_mean / pixel_std are not expected.
    """
    target = {
        k: v
        for k, v in model.state_dict().items()
        if k.startswith(prefix) and k not in ("pixel_mean", "pixel_std")
    }
    mismatch = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(target[k].shape)}"
        for k, v in state_dict.items()
        if k in target and v.shape != target[k].shape
    ]
    return {
        "missing": sorted(set(target) - set(state_dict)),
        "unexpected": sorted(set(state_dict) - set(target)),
        "shape_mismatch": sorted(mismatch),
    }


def torchvision_equivalent_cfg(name: str, num_classes: int = 21, aux: bool = True) -> CfgNode:
    """A config whose model has torchvision ``name``'s architecture (and input convention:
    RGB uint8 images, ImageNet mean / std scaled to 0..255).

    Segmentation names give that model (output stride 8, torchvision's dilation rule,
    ``num_classes`` outputs; with ``aux`` an FCNHead on res4, weighted 0.5 as in
    torchvision's reference training). ResNet names give an FCN on that backbone (without
    auxiliary head) as a starting point: the backbone keys (STRIDE_IN_1X1 False, widths,
    depth) are what matters for their weights.

    Example::

        cfg = torchvision_equivalent_cfg("deeplabv3_resnet50", num_classes=21)
        cfg.MODEL.WEIGHTS = "deeplabv3_resnet50_converted.pth"
        model = build_model(cfg)
    """
    arch, depth = _parse_name(name)
    cfg = get_cfg()
    add_seg_plugins_config(cfg)
    m = cfg.MODEL
    m.META_ARCHITECTURE = arch or "FCN"
    m.PIXEL_MEAN = [0.485 * 255, 0.456 * 255, 0.406 * 255]
    m.PIXEL_STD = [0.229 * 255, 0.224 * 255, 0.225 * 255]
    cfg.INPUT.FORMAT = "RGB"
    m.BACKBONE.NAME = "build_dilated_resnet_backbone"
    m.BACKBONE.FREEZE_AT = 0
    m.RESNETS.DEPTH = depth
    m.RESNETS.NORM = "BN"
    m.RESNETS.STRIDE_IN_1X1 = False  # torchvision's stride sits in the 3x3 conv ("v1.5")
    m.RESNETS.NUM_GROUPS = 1
    m.RESNETS.WIDTH_PER_GROUP = 64
    m.RESNETS.STEM_OUT_CHANNELS = 64
    m.RESNETS.RES2_OUT_CHANNELS = 256 if depth >= 50 else 64
    m.DILATED_RESNET.OUTPUT_STRIDE = 8
    m.DILATED_RESNET.MULTI_GRID = [1, 1, 1]
    m.DILATED_RESNET.OUT_FEATURES = ["res4", "res5"]
    m.FCN.IN_FEATURE, m.FCN.CHANNELS, m.FCN.DROPOUT, m.FCN.NORM = "res5", 0, 0.1, "BN"
    m.FCN.SKIPS = ""
    m.ASPP.IN_FEATURE, m.ASPP.DILATIONS, m.ASPP.CHANNELS = "res5", [12, 24, 36], 256
    m.ASPP.DROPOUT, m.ASPP.NORM = 0.5, "BN"
    m.AUX_HEAD.ENABLED = bool(aux and arch is not None)
    # CHANNELS 0: in_channels // 4 as torchvision (256 on ResNet-50's res4)
    m.AUX_HEAD.IN_FEATURE, m.AUX_HEAD.CHANNELS, m.AUX_HEAD.LOSS_WEIGHT = "res4", 0, 0.5
    m.SEM_SEG_HEAD.NUM_CLASSES = num_classes
    m.SEM_SEG_HEAD.IGNORE_VALUE = 255
    m.SEM_SEG_HEAD.LOSS_WEIGHT = 1.0
    return cfg


def _parse_name(name: str) -> tuple[str | None, int]:
    """(meta-architecture or None, depth) of a name: "fcn_resnet50" -> ("FCN", 50),
    "resnet18" -> (None, 18); also depths that torchvision ships no segmentation model for."""
    match = re.fullmatch(r"(fcn_|deeplabv3_)?resnet(\d+)", name)
    if match is None or int(match[2]) not in BLOCKS_PER_STAGE:
        raise ValueError(
            f"unknown torchvision model {name!r}; use one of {list(TORCHVISION_MODELS)}"
        )
    return {None: None, "fcn_": "FCN", "deeplabv3_": "DeepLabV3"}[match[1]], int(match[2])


def torchvision_name(conversion: Conversion) -> str:
    """The torchvision model name of a conversion ("fcn_resnet50", "resnet18", ...)."""
    base = f"resnet{conversion.depth}"
    prefix = {None: "", "FCN": "fcn_", "DeepLabV3": "deeplabv3_"}[conversion.arch]
    return prefix + base


def load_torchvision_state_dict(
    source: str, num_classes: int = 21, aux: bool = True
) -> dict[str, Tensor]:
    """The state dict in file ``source`` (a torchvision .pth, or a checkpoint of torchvision's
    reference scripts holding it under "model"), or, when ``source`` is a name of
    :data:`TORCHVISION_MODELS` and no such file exists, that torchvision model randomly
    initialised (``num_classes`` outputs, ``aux`` head) -- for tests and dry runs."""
    if os.path.isfile(source):
        data = torch.load(source, map_location="cpu", weights_only=True)
        if isinstance(data, dict) and isinstance(data.get("model"), dict):
            data = data["model"]
        return data
    if source not in TORCHVISION_MODELS:
        raise FileNotFoundError(
            f"{source!r} is neither a file nor a torchvision model name "
            f"({', '.join(TORCHVISION_MODELS)})"
        )
    import torchvision  # only here: converting files needs no torchvision

    if TORCHVISION_MODELS[source][0] is None:
        model = torchvision.models.get_model(source, weights=None)
    else:
        model = torchvision.models.get_model(
            source, weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=aux
        )
    return model.state_dict()


def _report(title: str, keys: Sequence[str]) -> None:
    if keys:
        print(f"{title} ({len(keys)}):")
        for key in keys:
            print(f"  {key}")


def main(argv: Sequence[str] | None = None) -> int:
    """Convert torchvision weights for MODEL.WEIGHTS (see this module's docstring)."""
    parser = argparse.ArgumentParser(
        description="Convert a torchvision ResNet / FCN-ResNet / DeepLabV3-ResNet state dict "
        "to seg_plugins' FCN / DeepLabV3 / dilated ResNet names (a .pth for MODEL.WEIGHTS)."
    )
    parser.add_argument(
        "input",
        help="a torchvision .pth, or a torchvision model name "
        f"(random init, for testing): {', '.join(TORCHVISION_MODELS)}",
    )
    parser.add_argument("output", help="the converted .pth")
    parser.add_argument(
        "--num-classes", type=int, default=21, help="classes of a model built by name (default 21)"
    )
    parser.add_argument("--no-aux", action="store_true", help="build by name without aux head")
    parser.add_argument(
        "--prefix",
        default="backbone.",
        help="key prefix of a plain ResNet's weights (default 'backbone.'; "
        "'backbone.bottom_up.' for detectron2's FPN; not checked then)",
    )
    parser.add_argument("--config-out", help="also write the matching config YAML here")
    parser.add_argument(
        "--pooling-norm",
        action="store_true",
        help="DeepLabV3: keep ASPP's image-pooling BatchNorm (for MODEL.ASPP.POOLING_NORM "
        "'BN', to train as torchvision does) instead of folding it into the conv (the default, "
        "for POOLING_NORM '', exact in eval)",
    )
    parser.add_argument(
        "--allow-mismatch",
        action="store_true",
        help="write the output even if keys are missing / unexpected",
    )
    args = parser.parse_args(argv)

    state_dict = load_torchvision_state_dict(args.input, args.num_classes, not args.no_aux)
    conversion = convert_torchvision(
        state_dict, prefix=args.prefix, fold_pooling_norm=not args.pooling_norm
    )
    name = torchvision_name(conversion)
    cfg = torchvision_equivalent_cfg(name, conversion.num_classes or 21, conversion.aux)
    if args.pooling_norm:
        cfg.MODEL.ASPP.POOLING_NORM = "BN"
    print(
        f"{args.input}: {name}, {len(conversion.state_dict)} tensors converted"
        + (f", {conversion.num_classes} classes" if conversion.num_classes else "")
        + (", with aux head" if conversion.aux else "")
    )
    _report("dropped on purpose", conversion.dropped)
    _report("UNUSED input keys (no rule maps them)", conversion.unused)
    problems = list(conversion.unused)
    if conversion.arch is not None or args.prefix == "backbone.":
        from detectron2.modeling import build_model

        cfg.MODEL.DEVICE = "cpu"
        model = build_model(cfg)
        check = check_against_model(
            conversion.state_dict, model, prefix="" if conversion.arch else "backbone."
        )
        for kind in ("missing", "unexpected", "shape_mismatch"):
            _report(
                f"{kind.upper()} keys vs {cfg.MODEL.META_ARCHITECTURE} of the config", check[kind]
            )
            problems += check[kind]
    if problems and not args.allow_mismatch:
        print(
            f"not written: {len(problems)} problem(s) above (--allow-mismatch writes anyway)",
            file=sys.stderr,
        )
        return 1
    torch.save(
        {"model": conversion.state_dict, "__author__": "torchvision", "matching_heuristics": False},
        args.output,
    )
    print(f"wrote {args.output}")
    if args.config_out:
        cfg.MODEL.WEIGHTS = os.path.abspath(args.output)
        with open(args.config_out, "w") as f:
            f.write(cfg.dump())
        print(f"wrote {args.config_out} (MODEL.WEIGHTS set; add DATASETS, SOLVER, ...)")
    return 0
