"""torchvision VGG-16 ImageNet weights -> :class:`VGG16Backbone` weights (FCN initialisation).

torchvision's ``vgg16`` / ``vgg16_bn`` state dict holds 13 convs in ``features.<i>`` (each
followed, in ``vgg16_bn``, by a BatchNorm at ``features.<i + 1>``) and the classifier
``classifier.0`` (Linear 25088 -> 4096), ``classifier.3`` (4096 -> 4096) and ``classifier.6``
(the 1000-way ImageNet classifier). The FCN paper "convolutionalises" the classifier: fc6 is
``classifier.0`` reshaped to a 7x7 conv of shape (4096, 512, 7, 7) (torchvision flattens the
pool5 map of shape (N, 512, 7, 7) channel-major, so a plain reshape is exact) and fc7 is
``classifier.3`` as a 1x1 conv; ``classifier.6`` is dropped (the paper discards it).

Expected input: RGB, ``(x / 255 - mean) / std`` with torchvision's ImageNet statistics, i.e.
MODEL.PIXEL_MEAN [123.675, 116.28, 103.53], MODEL.PIXEL_STD [58.395, 57.12, 57.375] and
INPUT.FORMAT "RGB" (configs/Base-FCN-VGG16.yaml).

Two ways in::

    # 1. in Python, with a report of what did not match
    weights = torchvision.models.vgg16(weights="IMAGENET1K_V1").state_dict()
    result = load_torchvision_vgg16(model.backbone, weights)

    # 2. as a checkpoint for MODEL.WEIGHTS (keys prefixed "backbone.")
    python -m seg_plugins.modeling.convert_vgg vgg16-397923af.pth vgg16_fcn_backbone.pth
"""

import argparse
import logging
import re
from typing import NamedTuple

import torch
from torch import Tensor

from .backbone.vgg import VGG16Backbone

__all__ = ["LoadResult", "convert_torchvision_vgg16", "load_torchvision_vgg16"]

logger = logging.getLogger(__name__)

# Our conv names in the order of torchvision's features.<i> convs.
_CONV_NAMES = [
    f"conv{s}_{j}" for s, n in zip(range(1, 6), (2, 2, 3, 3, 3)) for j in range(1, n + 1)
]
_BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
# Which config key to fix when a converted tensor does not fit.
_SIZE_KEYS = {
    "fc6.weight": "MODEL.VGG.FC6_KERNEL: 7 and MODEL.VGG.FC_CHANNELS: 4096",
    "fc7.weight": "MODEL.VGG.FC_CHANNELS: 4096",
}


class LoadResult(NamedTuple):
    """Key names, each sorted: ``missing_keys`` (backbone keys the weights did not provide),
    ``unexpected_keys`` (converted keys the backbone has no place for, e.g. conv biases for a
    BN backbone) and ``unused_keys`` (torchvision keys with no VGG16Backbone counterpart)."""

    missing_keys: list[str]
    unexpected_keys: list[str]
    unused_keys: list[str]


def convert_torchvision_vgg16(state_dict: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """Rename and reshape a torchvision ``vgg16`` / ``vgg16_bn`` state dict.

    Returns:
        (converted, unused): the VGG16Backbone state dict ("conv1_1.weight", ...,
        "conv1_1.norm.running_mean" for vgg16_bn, "fc6.weight" of shape (4096, 512, 7, 7),
        "fc7.weight" of shape (4096, 4096, 1, 1)) and the sorted source keys not converted.
    """
    conv_ids = sorted(
        int(m.group(1))
        for key, value in state_dict.items()
        if (m := re.fullmatch(r"features\.(\d+)\.weight", key)) and value.dim() == 4
    )
    if len(conv_ids) != len(_CONV_NAMES):
        raise ValueError(
            f"expected the {len(_CONV_NAMES)} convs of torchvision's vgg16 / vgg16_bn in "
            f"'features.<i>.weight', found {len(conv_ids)}; is this a VGG-16 state dict "
            f"(torchvision.models.vgg16(...).state_dict())?"
        )
    converted: dict[str, Tensor] = {}
    used = set()

    def take(src: str, dst: str, transform=lambda t: t) -> None:
        if src in state_dict:
            converted[dst] = transform(state_dict[src])
            used.add(src)

    for i, name in zip(conv_ids, _CONV_NAMES):
        take(f"features.{i}.weight", f"{name}.weight")
        take(f"features.{i}.bias", f"{name}.bias")
        if f"features.{i + 1}.running_mean" in state_dict:
            for key in _BN_KEYS:
                take(f"features.{i + 1}.{key}", f"{name}.norm.{key}")
    fc6 = state_dict.get("classifier.0.weight")
    if fc6 is not None:
        in_channels = state_dict[f"features.{conv_ids[-1]}.weight"].shape[0]
        side = round((fc6.shape[1] / in_channels) ** 0.5)
        take("classifier.0.weight", "fc6.weight", lambda t: t.reshape(t.shape[0], -1, side, side))
    take("classifier.0.bias", "fc6.bias")
    take("classifier.3.weight", "fc7.weight", lambda t: t[:, :, None, None])
    take("classifier.3.bias", "fc7.bias")
    return converted, sorted(set(state_dict) - used)


def load_torchvision_vgg16(backbone: VGG16Backbone, state_dict: dict[str, Tensor]) -> LoadResult:
    """Convert ``state_dict`` (torchvision vgg16 / vgg16_bn) and load it into ``backbone``.

    A 1-channel backbone gets conv1_1 summed over RGB (exact for a grey image fed as R = G = B).
    Raises on a shape mismatch, naming the config key to fix; logs and returns the key names
    that did not match (see :class:`LoadResult`).
    """
    converted, unused = convert_torchvision_vgg16(state_dict)
    own = backbone.state_dict()
    first, target = converted.get("conv1_1.weight"), own.get("conv1_1.weight")
    if first is not None and target is not None and (target.shape[1], first.shape[1]) == (1, 3):
        converted["conv1_1.weight"] = first.sum(dim=1, keepdim=True)
    unexpected = sorted(k for k in converted if k not in own)
    for key in sorted(set(converted) & set(own)):
        if converted[key].shape != own[key].shape:
            fix = _SIZE_KEYS.get(key, "MODEL.VGG.BASE_CHANNELS: 64 (and 3 or 1 input channels)")
            raise ValueError(
                f"torchvision VGG-16 weight for {key} has shape {tuple(converted[key].shape)} "
                f"but the backbone's is {tuple(own[key].shape)}; set {fix} to load it"
            )
    result = backbone.load_state_dict(
        {k: v for k, v in converted.items() if k in own}, strict=False
    )
    report = LoadResult(sorted(result.missing_keys), unexpected, unused)
    for what, keys in zip(("missing in the weights", "not in the backbone", "unused"), report):
        if keys:
            logger.warning("VGG-16 weights: %d keys %s: %s", len(keys), what, ", ".join(keys))
    return report


def main(argv=None) -> None:
    """Write a detectron2 checkpoint ({"model": {"backbone.<key>": tensor}}) for MODEL.WEIGHTS."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("source", help="torchvision vgg16 / vgg16_bn state dict (.pth)")
    parser.add_argument("output", help="checkpoint to write (.pth)")
    args = parser.parse_args(argv)
    state_dict = torch.load(args.source, map_location="cpu", weights_only=True)
    converted, unused = convert_torchvision_vgg16(state_dict)
    if unused:
        print(f"not converted: {', '.join(unused)}")
    model = {f"backbone.{k}": v for k, v in converted.items()}
    torch.save({"model": model, "__author__": "torchvision (converted)"}, args.output)
    print(f"wrote {len(model)} tensors to {args.output}")


if __name__ == "__main__":
    main()
