"""U-Net encoder (contracting path) of Ronneberger et al., "U-Net: Convolutional Networks for
Biomedical Image Segmentation", MICCAI 2015, https://arxiv.org/abs/1505.04597.

Shape shorthand: N images, C input channels, H x W pixels, D = depth (number of 2x
downsamplings), C_i channels of stage i.

Stage i (i = 0..D) is two (3x3 conv - norm - ReLU) layers
(:class:`~seg_plugins.modeling.blocks.DoubleConv`); a 2x2 max-pool (stride 2) sits between
consecutive stages. Unlike the paper's unpadded convolutions, the convs are padded
("same"), so that the decoder needs no cropping and the output covers the whole image.
Stage i outputs feature "enc{i}" of shape (N, C_i, H / 2**i, W / 2**i), with
C_i = min(BASE_CHANNELS * CHANNEL_MULTIPLIER**i, MAX_CHANNELS); inputs whose H, W are
multiples of ``size_divisibility = 2**D`` (detectron2's ImageList pads to it) keep every
stride exact.
"""

from typing import Callable, Dict, List, Optional, Union

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torch import Tensor
from torch.nn import functional as F

from ..blocks import DoubleConv
from ..norm import check_norm

__all__ = ["UNetEncoder", "build_unet_encoder_backbone"]

# detectron2.layers.get_norm("GN", c) builds nn.GroupNorm(32, c).


class UNetEncoder(Backbone):
    """The U-Net contracting path as a detectron2 :class:`Backbone`.

    ``forward(x)`` takes x of shape (N, C, H, W) and returns {"enc{i}": (N, C_i, H_i, W_i)}
    for i = 0..D, H_i = floor(H / 2**i) (exact when H is a multiple of 2**D).

    Example::

        encoder = UNetEncoder(in_channels=1, base_channels=8, depth=3)
        features = encoder(torch.randn(2, 1, 64, 64))
        assert features["enc3"].shape == (2, 64, 8, 8)
        assert encoder.output_shape()["enc3"] == ShapeSpec(channels=64, stride=8)
    """

    @configurable
    def __init__(
        self,
        *,
        in_channels: int = 3,
        base_channels: int = 64,
        depth: int = 4,
        channel_multiplier: float = 2,
        max_channels: int = 1024,
        norm: Union[str, Callable, None] = "BN",
    ):
        """
        Args:
            in_channels: C, channels of the input image (1 for grayscale).
            base_channels: channels of stage 0.
            depth: D >= 1, the number of 2x downsamplings; there are D + 1 stages.
            channel_multiplier: channel growth from one stage to the next (>= 1).
            max_channels: cap on the channels of any stage.
            norm: normalisation after each conv, as accepted by detectron2.layers.get_norm
                ("", "BN", "SyncBN", "GN", "FrozenBN" or a callable channels -> nn.Module).
        """
        super().__init__()
        _check_args(in_channels, base_channels, depth, channel_multiplier, max_channels)
        channels = [
            min(int(round(base_channels * channel_multiplier**i)), max_channels)
            for i in range(depth + 1)
        ]
        for c in set(channels):
            check_norm(norm, c, "MODEL.UNET.NORM", "MODEL.UNET.BASE_CHANNELS")
        self._depth = depth
        self._out_features: List[str] = [f"enc{i}" for i in range(depth + 1)]
        self._out_feature_channels: Dict[str, int] = dict(zip(self._out_features, channels))
        self._out_feature_strides: Dict[str, int] = {
            name: 2**i for i, name in enumerate(self._out_features)
        }
        prev = in_channels
        for name, c in zip(self._out_features, channels):
            self.add_module(name, DoubleConv(prev, c, norm))
            prev = c

    @classmethod
    def from_config(cls, cfg, input_shape: Optional[ShapeSpec] = None):
        in_channels = input_shape.channels if input_shape is not None else None
        if in_channels is None:
            in_channels = len(cfg.MODEL.PIXEL_MEAN)
        unet = cfg.MODEL.UNET
        return {
            "in_channels": in_channels,
            "base_channels": unet.BASE_CHANNELS,
            "depth": unet.DEPTH,
            "channel_multiplier": unet.CHANNEL_MULTIPLIER,
            "max_channels": unet.MAX_CHANNELS,
            "norm": unet.NORM,
        }

    @property
    def size_divisibility(self) -> int:
        return 2**self._depth

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        """
        Args:
            x: of shape (N, C, H, W).

        Returns:
            dict "enc{i}" -> tensor of shape (N, C_i, H / 2**i, W / 2**i), i = 0..D.
        """
        outputs = {}
        for i, name in enumerate(self._out_features):
            if i > 0:
                x = F.max_pool2d(x, kernel_size=2, stride=2)
            x = getattr(self, name)(x)
            outputs[name] = x
        return outputs


def _check_args(in_channels, base_channels, depth, channel_multiplier, max_channels) -> None:
    """Raise with the config key to fix for arguments that cannot build an encoder."""
    checks = [
        (in_channels >= 1, "in_channels", in_channels, "MODEL.PIXEL_MEAN (one value per channel)"),
        (base_channels >= 1, "base_channels", base_channels, "MODEL.UNET.BASE_CHANNELS >= 1"),
        (depth >= 1, "depth", depth, "MODEL.UNET.DEPTH >= 1"),
        (
            channel_multiplier >= 1,
            "channel_multiplier",
            channel_multiplier,
            "MODEL.UNET.CHANNEL_MULTIPLIER >= 1",
        ),
        (max_channels >= 1, "max_channels", max_channels, "MODEL.UNET.MAX_CHANNELS >= 1"),
    ]
    for ok, name, value, fix in checks:
        if not ok:
            raise ValueError(f"UNetEncoder: invalid {name}={value!r}; set {fix}")


@BACKBONE_REGISTRY.register()
def build_unet_encoder_backbone(cfg, input_shape: ShapeSpec) -> UNetEncoder:
    """Build a :class:`UNetEncoder` from cfg.MODEL.UNET (MODEL.BACKBONE.NAME:
    "build_unet_encoder_backbone"); ``input_shape.channels`` is the image's channel count."""
    return UNetEncoder(cfg, input_shape)
