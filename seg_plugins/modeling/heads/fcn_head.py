"""The FCN head of torchvision's FCN-ResNet (a ResNet variant of Long et al., "Fully
Convolutional Networks for Semantic Segmentation", CVPR 2015,
https://arxiv.org/abs/1411.4038), also the auxiliary head of PSPNet / DeepLab recipes.

Shape shorthand: N images, K classes, C_in channels of the feature read, h x w its size,
s its stride, H x W the (padded) input size = (s * h, s * w).

3x3 conv C_in -> C (no bias) - norm - ReLU - Dropout - 1x1 conv C -> K (with bias), on one
backbone feature, gives logits of shape (N, K, h, w); eval upsamples them bilinearly
(align_corners=False) to (s * h, s * w), training upsamples them to the targets' size.
Module names (``conv``, ``predictor``) are part of the checkpoint format (see
:mod:`seg_plugins.modeling.convert_torchvision`).

"""

from collections.abc import Callable, Sequence

from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY, Backbone
from fvcore.nn import weight_init
from torch import Tensor, nn
from torch.nn import functional as F

from ..norm import check_norm
from .base import SemSegHeadBase, build_predictor, select_feature, sem_seg_head_args

__all__ = ["FCNHead", "build_aux_head"]


@SEM_SEG_HEADS_REGISTRY.register()
class FCNHead(SemSegHeadBase):
    """torchvision's FCNHead on detectron2's semantic head contract.

    Example::

        shapes = {"res5": ShapeSpec(channels=64, stride=8)}
        head = FCNHead(shapes, in_feature="res5", num_classes=3).eval()
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
        channels: int = 0,
        dropout: float = 0.1,
        norm: str | Callable | None = "BN",
        ignore_value: int = 255,
        loss_weight: float = 1.0,
        loss_type: str = "cross_entropy",
        class_weights: Sequence[float] | None = None,
        loss_options: dict[str, object] | None = None,
    ):
        """
        Args:
            input_shape: channels and stride of the backbone's features.
            in_feature: the feature the head reads.
            num_classes: K.
            channels: C, width of the 3x3 conv; 0 = C_in // 4 (torchvision).
            dropout: dropout probability before the 1x1 classifier.
            norm: normalisation after the 3x3 conv (see detectron2.layers.get_norm).
            ignore_value: target class id that does not contribute to the loss.
            loss_weight: multiplier of the loss.
            loss_type: see :func:`seg_plugins.modeling.losses.build_sem_seg_loss`.
            class_weights: K per-class loss weights, or None / [] for uniform weights.
            loss_options: further keyword options of ``build_sem_seg_loss`` (Dice smooth
                term, Dice/CE weights, hard-pixel fraction; see MODEL.SEM_SEG_HEAD.*).
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
        channels = channels or shape.channels // 4
        if channels < 1 or not 0.0 <= dropout < 1.0:
            raise ValueError(
                f"FCNHead: channels={channels} (from C_in={shape.channels}) and dropout={dropout} "
                f"need channels >= 1 and 0 <= dropout < 1; set MODEL.FCN.CHANNELS / "
                f"MODEL.AUX_HEAD.CHANNELS and MODEL.FCN.DROPOUT"
            )
        check_norm(norm, channels, "MODEL.FCN.NORM")
        self.in_feature = in_feature
        self.conv = Conv2d(
            shape.channels,
            channels,
            kernel_size=3,
            padding=1,
            bias=not norm,  # a norm layer's shift makes the conv bias redundant
            norm=get_norm(norm, channels),
            activation=F.relu,
        )
        self.dropout = nn.Dropout(dropout)
        weight_init.c2_msra_fill(self.conv)
        self.predictor = build_predictor(channels, num_classes)

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec]):
        select_feature(input_shape, cfg.MODEL.FCN.IN_FEATURE, "MODEL.FCN.IN_FEATURE")
        return {
            "input_shape": input_shape,
            "in_feature": cfg.MODEL.FCN.IN_FEATURE,
            "channels": cfg.MODEL.FCN.CHANNELS,
            "dropout": cfg.MODEL.FCN.DROPOUT,
            "norm": cfg.MODEL.FCN.NORM,
            **sem_seg_head_args(cfg),
        }

    def layers(self, features: dict[str, Tensor]) -> Tensor:
        """features[in_feature] of shape (N, C_in, h, w) -> logits of shape (N, K, h, w)."""
        return self.predictor(self.dropout(self.conv(features[self.in_feature])))


def build_aux_head(cfg, backbone: Backbone) -> FCNHead | None:
    """The training-only auxiliary :class:`FCNHead` of MODEL.AUX_HEAD (None unless ENABLED):
    it reads AUX_HEAD.IN_FEATURE, is AUX_HEAD.CHANNELS wide, and its loss is multiplied by
    AUX_HEAD.LOSS_WEIGHT (instead of MODEL.SEM_SEG_HEAD.LOSS_WEIGHT); dropout and norm are
    MODEL.FCN's."""
    aux = cfg.MODEL.AUX_HEAD
    if not aux.ENABLED:
        return None
    shapes = backbone.output_shape()
    select_feature(shapes, aux.IN_FEATURE, "MODEL.AUX_HEAD.IN_FEATURE")
    args = {**sem_seg_head_args(cfg), "loss_weight": aux.LOSS_WEIGHT}
    return FCNHead(
        shapes,
        in_feature=aux.IN_FEATURE,
        channels=aux.CHANNELS,
        dropout=cfg.MODEL.FCN.DROPOUT,
        norm=cfg.MODEL.FCN.NORM,
        **args,
    )
