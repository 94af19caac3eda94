"""DeepLabV3 and DeepLabV3+ heads: Atrous Spatial Pyramid Pooling (ASPP) and the V3+ decoder.

Chen et al., "Rethinking Atrous Convolution for Semantic Image Segmentation" (DeepLabV3),
2017, https://arxiv.org/abs/1706.05587; Chen et al., "Encoder-Decoder with Atrous Separable
Convolution for Semantic Image Segmentation" (DeepLabV3+), ECCV 2018,
https://arxiv.org/abs/1802.02611.

Shape shorthand: N images, K classes, C_in channels of the feature ASPP reads (size h x w,
stride s), C_low channels of the low-level feature (size h_l x w_l, stride s_l), C = ASPP
width.

- "ASPPHead" (torchvision's DeepLabHead): ASPP(C_in -> C; 1x1, three 3x3 atrous, image
  pooling; projection, dropout) -> 3x3 conv C -> C - norm - ReLU -> 1x1 conv C -> K:
  logits of shape (N, K, h, w).
- "ASPPPlusHead": ASPP output resized to the low-level feature's exact size (h_l, w_l),
  concatenated with a 1x1 projection (C_low -> 48, norm, ReLU) of that feature, two
  (3x3 conv - norm - ReLU) of width 256 and a 1x1 conv to K: logits of shape (N, K, h_l, w_l).

ASPP is ``detectron2.layers.ASPP``: its image-pooling branch has no norm (torchvision's has a
BatchNorm on a 1x1 map, which fails in training at batch size 1), so these heads train at
any batch size; :mod:`seg_plugins.modeling.convert_torchvision` folds torchvision's
pooling BatchNorm into the pooling conv. The names "ASPPHead" / "ASPPPlusHead" do not
collide with detectron2.projects.deeplab's "DeepLabV3Head" / "DeepLabV3PlusHead".
"""

from collections.abc import Callable, Sequence

import torch
from detectron2.config import configurable
from detectron2.layers import ASPP, Conv2d, ShapeSpec, get_norm
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from fvcore.nn import weight_init
from torch import Tensor
from torch.nn import functional as F

from ..blocks import DoubleConv
from ..norm import check_norm
from .base import SemSegHeadBase, build_predictor, select_feature, sem_seg_head_args

__all__ = ["ASPPHead", "ASPPPlusHead"]


def _aspp(
    in_channels: int, channels: int, dilations, dropout: float, norm, pooling_norm=""
) -> ASPP:
    """detectron2's ASPP with ReLU and global image pooling; errors name MODEL.ASPP keys.
    With ``pooling_norm`` its image-pooling conv gets that norm (and no bias), as
    torchvision's ASPPPooling has: keys ``convs.4.1.norm.*`` are added."""
    if len(dilations) != 3 or any(d < 1 for d in dilations):
        raise ValueError(
            f"MODEL.ASPP.DILATIONS={list(dilations)}: give 3 atrous rates >= 1 "
            f"([12, 24, 36] at output stride 8, [6, 12, 18] at 16)"
        )
    if channels < 1 or not 0.0 <= dropout < 1.0:
        raise ValueError(
            f"MODEL.ASPP.CHANNELS={channels} and MODEL.ASPP.DROPOUT={dropout}: need "
            f"CHANNELS >= 1 and 0 <= DROPOUT < 1"
        )
    check_norm(norm, channels, "MODEL.ASPP.NORM")
    aspp = ASPP(
        in_channels, channels, list(dilations), norm=norm, activation=F.relu, dropout=dropout
    )
    if pooling_norm:
        check_norm(pooling_norm, channels, "MODEL.ASPP.POOLING_NORM")
        pooling = Conv2d(
            in_channels, channels, 1, bias=False, norm=get_norm(pooling_norm, channels),
            activation=F.relu,
        )  # fmt: skip
        weight_init.c2_xavier_fill(pooling)
        aspp.convs[-1][1] = pooling  # [pool, conv]: detectron2's layout, kept
    return aspp


def _aspp_args(cfg) -> dict:
    aspp = cfg.MODEL.ASPP
    return {
        "in_feature": aspp.IN_FEATURE,
        "channels": aspp.CHANNELS,
        "dilations": list(aspp.DILATIONS),
        "dropout": aspp.DROPOUT,
        "norm": aspp.NORM,
        "pooling_norm": aspp.POOLING_NORM,
        **sem_seg_head_args(cfg),
    }


@SEM_SEG_HEADS_REGISTRY.register()
class ASPPHead(SemSegHeadBase):
    """DeepLabV3's head (torchvision's DeepLabHead) on detectron2's semantic head contract:
    ``(None, {"loss_sem_seg": loss})`` in training, ``(logits (N, K, s * h, s * w), {})``
    in eval.

    Example::

        shapes = {"res5": ShapeSpec(channels=64, stride=8)}
        head = ASPPHead(shapes, in_feature="res5", num_classes=3, channels=16).eval()
        logits, _ = head({"res5": torch.randn(2, 64, 6, 7)})
        assert logits.shape == (2, 3, 48, 56)
    """

    @configurable
    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        *,
        in_feature: str = "res5",
        num_classes: int,
        channels: int = 256,
        dilations: Sequence[int] = (12, 24, 36),
        dropout: float = 0.1,
        norm: str | Callable | None = "BN",
        pooling_norm: str | Callable | None = "",
        ignore_value: int = 255,
        loss_weight: float = 1.0,
        loss_type: str = "cross_entropy",
        class_weights: Sequence[float] | None = None,
        loss_options: dict[str, object] | None = None,
    ):
        """
        Args:
            input_shape: channels and stride of the backbone's features.
            in_feature: the feature ASPP reads.
            num_classes: K.
            channels: C, width of every ASPP branch, its projection and the 3x3 conv.
            dilations: the three atrous rates.
            dropout: dropout probability after the ASPP projection (torchvision: 0.5).
            norm: normalisation of every conv but the image-pooling one and the classifier.
            pooling_norm: normalisation of the image-pooling conv ("": none, detectron2's
                ASPP; "BN" as torchvision's DeepLabHead, MODEL.ASPP.POOLING_NORM).
            ignore_value, loss_weight, loss_type, class_weights, loss_options: see
                :class:`FCNHead`.
        """
        shape = select_feature(input_shape, in_feature, "in_feature")
        super().__init__(
            num_classes=num_classes,
            common_stride=shape.stride,
            ignore_value=ignore_value,
            loss_weight=loss_weight,
            loss_type=loss_type,
            class_weights=class_weights,
            loss_options=loss_options,
        )
        self.in_feature = in_feature
        self.aspp = _aspp(shape.channels, channels, dilations, dropout, norm, pooling_norm)
        self.conv = Conv2d(
            channels,
            channels,
            kernel_size=3,
            padding=1,
            bias=not norm,
            norm=get_norm(norm, channels),
            activation=F.relu,
        )
        weight_init.c2_msra_fill(self.conv)
        self.predictor = build_predictor(channels, num_classes)

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec]):
        select_feature(input_shape, cfg.MODEL.ASPP.IN_FEATURE, "MODEL.ASPP.IN_FEATURE")
        return {"input_shape": input_shape, **_aspp_args(cfg)}

    def layers(self, features: dict[str, Tensor]) -> Tensor:
        """features[in_feature] of shape (N, C_in, h, w) -> logits of shape (N, K, h, w)."""
        return self.predictor(self.conv(self.aspp(features[self.in_feature])))


@SEM_SEG_HEADS_REGISTRY.register()
class ASPPPlusHead(SemSegHeadBase):
    """DeepLabV3+'s ASPP + decoder on detectron2's semantic head contract:
    ``(None, {"loss_sem_seg": loss})`` in training, ``(logits (N, K, s_l * h_l, s_l * w_l),
    {})`` in eval.

    Example::

        shapes = {
            "res2": ShapeSpec(channels=8, stride=4), "res5": ShapeSpec(channels=32, stride=16)
        }
        head = ASPPPlusHead(shapes, num_classes=3, channels=16, decoder_channels=16).eval()
        features = {"res2": torch.randn(2, 8, 12, 13), "res5": torch.randn(2, 32, 3, 4)}
        logits, _ = head(features)
        assert logits.shape == (2, 3, 48, 52)
    """

    @configurable
    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        *,
        in_feature: str = "res5",
        low_level_feature: str = "res2",
        num_classes: int,
        channels: int = 256,
        dilations: Sequence[int] = (6, 12, 18),
        dropout: float = 0.1,
        norm: str | Callable | None = "BN",
        pooling_norm: str | Callable | None = "",
        low_level_channels: int = 48,
        decoder_channels: int = 256,
        ignore_value: int = 255,
        loss_weight: float = 1.0,
        loss_type: str = "cross_entropy",
        class_weights: Sequence[float] | None = None,
        loss_options: dict[str, object] | None = None,
    ):
        """
        Args:
            input_shape, in_feature, num_classes, channels, dilations, dropout, norm,
                pooling_norm, ignore_value, loss_weight, loss_type, class_weights,
                loss_options: see :class:`ASPPHead`.
            low_level_feature: the finer feature (stride 4 in the paper) fused by the decoder.
            low_level_channels: width of its 1x1 projection (48 in the paper).
            decoder_channels: width of the decoder's two 3x3 convs (256 in the paper).
        """
        shape = select_feature(input_shape, in_feature, "in_feature")
        low = select_feature(input_shape, low_level_feature, "low_level_feature")
        if low.stride > shape.stride:
            raise ValueError(
                f"the low-level feature {low_level_feature!r} (stride {low.stride}) is coarser "
                f"than the ASPP feature {in_feature!r} (stride {shape.stride}); set "
                f"MODEL.DEEPLABV3PLUS.LOW_LEVEL_FEATURE to a finer one (e.g. 'res2')"
            )
        if low_level_channels < 1 or decoder_channels < 1:
            raise ValueError(
                f"MODEL.DEEPLABV3PLUS.LOW_LEVEL_CHANNELS={low_level_channels} and "
                f"DECODER_CHANNELS={decoder_channels} must be >= 1"
            )
        super().__init__(
            num_classes=num_classes,
            common_stride=low.stride,
            ignore_value=ignore_value,
            loss_weight=loss_weight,
            loss_type=loss_type,
            class_weights=class_weights,
            loss_options=loss_options,
        )
        self.in_feature = in_feature
        self.low_level_feature = low_level_feature
        self.aspp = _aspp(shape.channels, channels, dilations, dropout, norm, pooling_norm)
        for width in (low_level_channels, decoder_channels):
            check_norm(norm, width, "MODEL.ASPP.NORM")
        self.low_level_project = Conv2d(
            low.channels,
            low_level_channels,
            kernel_size=1,
            bias=not norm,
            norm=get_norm(norm, low_level_channels),
            activation=F.relu,
        )
        weight_init.c2_msra_fill(self.low_level_project)
        self.fuse = DoubleConv(channels + low_level_channels, decoder_channels, norm)
        self.predictor = build_predictor(decoder_channels, num_classes)

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec]):
        dlp = cfg.MODEL.DEEPLABV3PLUS
        select_feature(input_shape, cfg.MODEL.ASPP.IN_FEATURE, "MODEL.ASPP.IN_FEATURE")
        select_feature(input_shape, dlp.LOW_LEVEL_FEATURE, "MODEL.DEEPLABV3PLUS.LOW_LEVEL_FEATURE")
        return {
            "input_shape": input_shape,
            "low_level_feature": dlp.LOW_LEVEL_FEATURE,
            "low_level_channels": dlp.LOW_LEVEL_CHANNELS,
            "decoder_channels": dlp.DECODER_CHANNELS,
            **_aspp_args(cfg),
        }

    def layers(self, features: dict[str, Tensor]) -> Tensor:
        """features[in_feature] of shape (N, C_in, h, w) and features[low_level_feature] of
        shape (N, C_low, h_l, w_l) -> logits of shape (N, K, h_l, w_l)."""
        low = self.low_level_project(features[self.low_level_feature])
        x = self.aspp(features[self.in_feature])
        x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.predictor(self.fuse(torch.cat([x, low], dim=1)))
