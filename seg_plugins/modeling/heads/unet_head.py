"""U-Net decoder (expansive path) of Ronneberger et al., "U-Net: Convolutional Networks for
Biomedical Image Segmentation", MICCAI 2015, https://arxiv.org/abs/1505.04597, as a detectron2
semantic segmentation head.

Shape shorthand: N images, K classes, features f_0 .. f_D sorted by stride (f_0 finest) with
f_i of shape (N, C_i, H_i, W_i) and stride s_i.

Starting from x = f_D, each level i = D-1 .. 0 upsamples x to f_i's exact size (H_i, W_i),
projecting it to C_i channels, concatenates f_i (the skip), and applies two
(3x3 conv - norm - ReLU) layers -> (N, C_i, H_i, W_i). A final 1x1 conv gives logits of shape
(N, K, H_0, W_0), i.e. at stride ``common_stride = s_0`` (1 behind a :class:`UNetEncoder`,
4 behind detectron2's ResNet res2..res5). Any backbone that returns a stride pyramid works.

Upsampling ("up-convolution" in the paper) is one of:
- "bilinear": 1x1 conv C_{i+1} -> C_i, then bilinear resize to (H_i, W_i);
- "transposed": ConvTranspose2d with kernel = stride = s_{i+1} / s_i, then a bilinear resize
  to (H_i, W_i) only when the sizes still differ (inputs not padded to size_divisibility).
"""

from typing import Callable, Dict, Optional, Sequence, Union

import fvcore.nn.weight_init as weight_init
import torch
from detectron2.config import configurable
from detectron2.layers import Conv2d, ConvTranspose2d, ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import Tensor, nn
from torch.nn import functional as F

from ..blocks import DoubleConv
from ..norm import check_norm
from .base import SemSegHeadBase, sem_seg_head_args

__all__ = ["UNetHead", "UNetUpBlock"]

UPSAMPLE_MODES = ("bilinear", "transposed")


class UNetUpBlock(nn.Module):
    """One decoder level: ``up`` (deep -> skip channels, to the skip's size), concatenation
    with the skip, then ``fuse`` (two 3x3 conv - norm - ReLU).

    ``forward(x, skip)``: x of shape (N, C_deep, h, w) and skip of shape (N, C_skip, H, W)
    -> (N, C_skip, H, W).
    """

    def __init__(
        self,
        deep_channels: int,
        skip_channels: int,
        *,
        scale: int,
        upsample: str,
        norm: Union[str, Callable, None],
    ):
        super().__init__()
        if upsample == "transposed":
            self.up = ConvTranspose2d(deep_channels, skip_channels, kernel_size=scale, stride=scale)
        else:
            # A 1x1 conv commutes with bilinear resizing (both linear; bilinear weights sum to
            # 1, so the bias passes through), so project first, at the lower resolution.
            self.up = Conv2d(deep_channels, skip_channels, kernel_size=1)
        weight_init.c2_msra_fill(self.up)
        self.fuse = DoubleConv(2 * skip_channels, skip_channels, norm)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = self.up(x)
        if x.shape[-2:] != skip.shape[-2:]:
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([x, skip], dim=1))


@SEM_SEG_HEADS_REGISTRY.register()
class UNetHead(SemSegHeadBase):
    """U-Net decoder following detectron2's semantic head contract (like SemSegFPNHead).

    ``forward(features, targets)`` returns ``(None, {"loss_sem_seg": loss})`` in training and
    ``(logits of shape (N, K, s_0 * H_0, s_0 * W_0), {})`` in eval.

    Example::

        shapes = {"enc0": ShapeSpec(channels=8, stride=1), "enc1": ShapeSpec(channels=16, stride=2)}
        head = UNetHead(shapes, num_classes=3, norm="", ignore_value=255).eval()
        features = {"enc0": torch.randn(2, 8, 32, 32), "enc1": torch.randn(2, 16, 16, 16)}
        logits, _ = head(features)
        assert logits.shape == (2, 3, 32, 32)
    """

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        num_classes: int,
        ignore_value: int = 255,
        norm: Union[str, Callable, None] = "BN",
        loss_weight: float = 1.0,
        loss_type: str = "cross_entropy",
        class_weights: Optional[Sequence[float]] = None,
        upsample: str = "bilinear",
        loss_options: Optional[Dict[str, object]] = None,
    ):
        """
        Args:
            input_shape: channels and stride of every input feature; all are used, ordered by
                stride (finest first).
            num_classes: K.
            ignore_value: target class id that does not contribute to the loss.
            norm: normalisation after each 3x3 conv (see detectron2.layers.get_norm).
            loss_weight: multiplier of the loss.
            loss_type: see :func:`seg_plugins.modeling.losses.build_sem_seg_loss`.
            class_weights: K per-class loss weights, or None / [] for uniform weights.
            upsample: "bilinear" or "transposed".
            loss_options: further keyword options of ``build_sem_seg_loss`` (Dice smooth
                term, Dice/CE weights, hard-pixel fraction; see MODEL.SEM_SEG_HEAD.*).
        """
        if not input_shape:
            raise ValueError("UNetHead(input_shape=) is empty; the backbone returned no feature")
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(
                f"unknown upsample={upsample!r}; set MODEL.UNET.UPSAMPLE to one of "
                f"{list(UPSAMPLE_MODES)}"
            )
        shapes = sorted(input_shape.items(), key=lambda kv: kv[1].stride)
        super().__init__(
            num_classes=num_classes,
            common_stride=shapes[0][1].stride,
            ignore_value=ignore_value,
            loss_weight=loss_weight,
            loss_type=loss_type,
            class_weights=class_weights,
            loss_options=loss_options,
        )
        self.in_features = [name for name, _ in shapes]
        # One block per skip feature, deepest level first; keyed by the skip's feature name.
        self.decoder = nn.ModuleDict()
        for (skip_name, skip), (deep_name, deep) in reversed(list(zip(shapes, shapes[1:]))):
            check_norm(norm, skip.channels, "MODEL.UNET.NORM", "MODEL.UNET.BASE_CHANNELS")
            self.decoder[skip_name] = UNetUpBlock(
                deep.channels,
                skip.channels,
                scale=_stride_ratio(deep_name, deep, skip_name, skip, upsample),
                upsample=upsample,
                norm=norm,
            )
        self.predictor = Conv2d(shapes[0][1].channels, num_classes, kernel_size=1)
        weight_init.c2_msra_fill(self.predictor)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        return {
            "input_shape": input_shape,
            "norm": cfg.MODEL.UNET.NORM,
            "upsample": cfg.MODEL.UNET.UPSAMPLE,
            **sem_seg_head_args(cfg),
        }

    def layers(self, features: Dict[str, Tensor]) -> Tensor:
        """Decode ``features`` to logits of shape (N, K, H_0, W_0) (the finest feature's size)."""
        x = features[self.in_features[-1]]
        for skip_name, block in self.decoder.items():
            x = block(x, features[skip_name])
        return self.predictor(x)


def _stride_ratio(deep_name, deep: ShapeSpec, skip_name, skip: ShapeSpec, upsample: str) -> int:
    """s_deep / s_skip, the transposed conv's kernel and stride; checked to be an integer."""
    ratio, remainder = divmod(deep.stride, skip.stride)
    if upsample == "transposed" and remainder != 0:
        raise ValueError(
            f"UPSAMPLE='transposed' needs each stride to be a multiple of the next finer one; "
            f"got {deep_name} (stride {deep.stride}) over {skip_name} (stride {skip.stride}); "
            f"set MODEL.UNET.UPSAMPLE to 'bilinear'"
        )
    return max(ratio, 1)
