"""The FCN-32s / FCN-16s / FCN-8s skip architecture of Long, Shelhamer & Darrell, "Fully
Convolutional Networks for Semantic Segmentation", CVPR 2015 / TPAMI 2016,
https://arxiv.org/abs/1411.4038, as a detectron2 semantic segmentation head.

Shape shorthand: N images, K classes, H x W the (padded) input size; the head reads up to
three features, coarsest first (by default "fc7", "pool4", "pool3" of a
:class:`~seg_plugins.modeling.backbone.VGG16Backbone`) with strides S, S/2, S/4 (32, 16, 8).

    score_fr      1x1 conv on fc7 -> (N, K, H/32, W/32)                                  [32s]
    upscore2      2x bilinear transposed conv, to pool4's exact size, + score_pool4
                  (1x1 conv on 0.01 * pool4)                -> (N, K, H/16, W/16)          [16s]
    upscore_pool4 2x bilinear transposed conv, to pool3's exact size, + score_pool3
                  (1x1 conv on 0.0001 * pool3)              -> (N, K, H/8, W/8)            [8s]
    upscore       fixed bilinear transposed conv by 32 / 16 / 8 -> (N, K, H, W)

Alignment without crops: a transposed conv of kernel 2f, stride f and padding f/2 maps a
cell centred on pixel s * i + (s - 1) / 2 of a stride-s map onto the same pixel of its
stride-s/f output, which is exactly how :class:`VGG16Backbone`'s centred layers place their
cells; so every fusion happens at offset 0 and the final map lies on the input grid (its
bilinear kernel equals ``F.interpolate(align_corners=False)`` away from the border). The
output size is chosen with the transposed conv's ``output_padding`` (up to f - 1 extra rows
and columns), never with a resize, which would shift the grid: the skip's exact size for the
2x layers, and in training the targets' size for the last one (in eval: S/4, S/2 or S times
the finest feature's size, which is H x W once the batch is padded to ``size_divisibility``).
Features of any input size (floor pooling) therefore give logits of exactly that size.

Choices beyond the paper's text, each tested:
- score_pool4 / score_pool3 start at zero, as in the paper, so the skips start as no-ops; but
  score_fr starts from N(0, 0.01), not zero: a zero score_fr would leave the backbone and the
  2x layers without gradient at the first step (nothing flows back through zero weights).
- The 2x layers are initialised to bilinear interpolation and learned, as in the paper's
  text (the reference Caffe nets freeze them: ``learn_upsampling=False``); the final one is
  fixed bilinear interpolation, as in the paper, and holds no parameters.
- pool4 / pool3 are scaled by 0.01 / 0.0001 before scoring, as in the at-once FCN-8s, whose
  unnormalised VGG features are large (``skip_scales``; use 1.0 behind a BN backbone).
"""

import itertools
from collections.abc import Sequence

import torch
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import Tensor, nn
from torch.nn import functional as F

from .base import SemSegHeadBase, sem_seg_head_args

__all__ = ["BilinearUpsample", "FCNSkipHead", "bilinear_kernel"]

#: MODEL.FCN.SKIPS -> number of features the head fuses.
SKIP_LEVELS = {"32s": 1, "16s": 2, "8s": 3}
# Module names of the skip levels 1 and 2 (the FCN reference nets' names).
_SKIP_NAMES = (("upscore2", "score_pool4"), ("upscore_pool4", "score_pool3"))


def bilinear_kernel(factor: int) -> Tensor:
    """The (2f, 2f) kernel with which a transposed conv of stride f, padding f / 2
    interpolates bilinearly: ``w[a, b] = (1 - |a - c| / f) * (1 - |b - c| / f)``, c = f - 1/2."""
    t = torch.arange(2 * factor, dtype=torch.float32)
    w1d = 1 - (t - (factor - 0.5)).abs() / factor
    return w1d[:, None] * w1d[None, :]


class BilinearUpsample(nn.Module):
    """Per-class upsampling by an even factor f with a transposed conv (kernel 2f, stride f,
    padding f/2, no bias) initialised to bilinear interpolation.

    ``forward(x, size)``: x of shape (N, K, h, w) -> (N, K, size[0], size[1]), where
    f * h <= size[0] < f * (h + 1) (same for w). ``learnable``: a full K -> K kernel, bilinear on
    its diagonal, as a parameter (``weight``); else a fixed per-class kernel, not saved.

    Example::

        up = BilinearUpsample(channels=3, factor=8, learnable=False)
        assert up(torch.randn(2, 3, 5, 6), (45, 48)).shape == (2, 3, 45, 48)
    """

    def __init__(self, channels: int, factor: int, *, learnable: bool):
        super().__init__()
        if factor < 2 or factor % 2 != 0:
            raise ValueError(f"BilinearUpsample needs an even factor >= 2, got {factor}")
        self.factor = factor
        kernel = bilinear_kernel(factor)
        if learnable:
            weight = torch.zeros(channels, channels, 2 * factor, 2 * factor)
            weight[range(channels), range(channels)] = kernel
            self.weight = nn.Parameter(weight)
            self.groups = 1
        else:
            weight = kernel.expand(channels, 1, -1, -1).contiguous()
            self.register_buffer("weight", weight, persistent=False)
            self.groups = channels

    def forward(self, x: Tensor, size: Sequence[int]) -> Tensor:
        f = self.factor
        base = (f * x.shape[-2], f * x.shape[-1])
        extra = tuple(int(s) - b for s, b in zip(size, base))
        if not all(0 <= e < f for e in extra):
            raise ValueError(
                f"cannot upsample a {tuple(x.shape[-2:])} map by {f} to {tuple(size)}: the "
                f"size must lie in [{f} * h, {f} * (h + 1)); do the features come from one "
                f"image of that size (padded to the backbone's size_divisibility)?"
            )
        return F.conv_transpose2d(
            x,
            self.weight.to(x.dtype),
            stride=f,
            padding=f // 2,
            output_padding=extra,
            groups=self.groups,
        )


@SEM_SEG_HEADS_REGISTRY.register()
class FCNSkipHead(SemSegHeadBase):
    """FCN-32s / 16s / 8s score and fusion layers on detectron2's semantic head contract.

    ``forward(features, targets)`` returns ``(None, {"loss_sem_seg": loss})`` in training and
    ``(logits of shape (N, K, s * h, s * w), {})`` in eval, where (h, w) is the finest fused
    feature's size and s = ``common_stride`` (its stride: 32, 16 or 8). The loss is
    :class:`SemSegHeadBase`'s; unlike the other heads, this one upsamples by transposed convs
    onto its padded input's grid, never to an arbitrary size, so it has no ``logits_at``.

    Example::

        shapes = {"fc7": ShapeSpec(channels=32, stride=32),
                  "pool4": ShapeSpec(channels=16, stride=16),
                  "pool3": ShapeSpec(channels=8, stride=8)}
        head = FCNSkipHead(shapes, num_classes=3, skips="8s").eval()
        features = {"fc7": torch.randn(2, 32, 2, 3), "pool4": torch.randn(2, 16, 4, 6),
                    "pool3": torch.randn(2, 8, 8, 12)}
        logits, _ = head(features)
        assert logits.shape == (2, 3, 64, 96)
    """

    # The final upsampling sizes its output by output_padding on the padded input's grid
    # (module docstring); SemSegHeadBase.logits_at's resize to an unpadded image's own size
    # would shift that grid. None, not a method, tells EncoderDecoderSegmentor.exact_size (and
    # the export) to pad the input instead.
    logits_at = None

    @configurable
    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        *,
        num_classes: int,
        skips: str = "8s",
        in_features: Sequence[str] = ("fc7", "pool4", "pool3"),
        skip_scales: Sequence[float] = (0.01, 0.0001),
        learn_upsampling: bool = True,
        ignore_value: int = 255,
        loss_weight: float = 1.0,
        loss_type: str = "cross_entropy",
        class_weights: Sequence[float] | None = None,
        loss_options: dict[str, object] | None = None,
    ):
        """
        Args:
            input_shape: channels and stride of the backbone outputs (others are ignored).
            num_classes: K.
            skips: "32s", "16s" or "8s": fuse the first 1, 2 or 3 of ``in_features``.
            in_features: three feature names, coarsest first, each of half the previous
                stride (the paper's fc7, pool4, pool3).
            skip_scales: fixed factors on the 2nd and 3rd feature before their score layers.
            learn_upsampling: learn the 2x transposed convs (else fixed bilinear).
            ignore_value: target class id that does not contribute to the loss.
            loss_weight: multiplier of the loss.
            loss_type: see :func:`seg_plugins.modeling.losses.build_sem_seg_loss`.
            class_weights: K per-class loss weights, or None / [] for uniform weights.
            loss_options: further keyword options of ``build_sem_seg_loss`` (Dice smooth
                term, Dice/CE weights, hard-pixel fraction; see MODEL.SEM_SEG_HEAD.*).
        """
        if len(skip_scales) != 2:
            raise ValueError(
                f"skip_scales={list(skip_scales)}; give 2 values (pool4, pool3), e.g. "
                f"MODEL.VGG.SKIP_SCALES: [0.01, 0.0001]"
            )
        in_features = _check_features(input_shape, in_features, skips)
        super().__init__(
            num_classes=num_classes,
            common_stride=input_shape[in_features[-1]].stride,
            ignore_value=ignore_value,
            loss_weight=loss_weight,
            loss_type=loss_type,
            class_weights=class_weights,
            loss_options=loss_options,
        )
        self.in_features = in_features
        self.skip_scales = [float(s) for s in skip_scales]
        self.score_fr = _score_layer(input_shape[self.in_features[0]].channels, num_classes)
        nn.init.normal_(self.score_fr.weight, std=0.01)
        for (up_name, score_name), feature in zip(_SKIP_NAMES, self.in_features[1:]):
            up = BilinearUpsample(num_classes, 2, learnable=learn_upsampling)
            self.add_module(up_name, up)
            self.add_module(score_name, _score_layer(input_shape[feature].channels, num_classes))
        self.upscore = BilinearUpsample(num_classes, self.common_stride, learnable=False)

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec]):
        return {
            "input_shape": input_shape,
            "skips": cfg.MODEL.FCN.SKIPS,
            "skip_scales": list(cfg.MODEL.VGG.SKIP_SCALES),
            **sem_seg_head_args(cfg),
        }

    def forward(self, features: dict[str, Tensor], targets: Tensor | None = None):
        """
        Args:
            features: name -> tensor of shape (N, C_i, H_i, W_i), as described by input_shape.
            targets: of shape (N, H, W), int64; required in training.

        Returns:
            In training ``(None, {"loss_sem_seg": scalar})``; in eval ``(logits, {})`` with
            logits of shape (N, K, common_stride * H_f, common_stride * W_f), f the finest
            fused feature.
        """
        if self.training:
            self._require_targets(targets)
            # Predicted at the targets' size exactly, so the base's losses() resizes nothing.
            return None, self.losses(self.layers(features, targets.shape[-2:]), targets)
        return self.layers(features), {}

    def layers(
        self, features: dict[str, Tensor], output_size: tuple[int, int] | None = None
    ) -> Tensor:
        """Logits of shape (N, K, *output_size); output_size defaults to common_stride times
        the finest fused feature's size and may exceed it by up to common_stride - 1."""
        scores = self.score_fr(features[self.in_features[0]])
        for (up_name, score_name), name, scale in zip(
            _SKIP_NAMES, self.in_features[1:], self.skip_scales
        ):
            skip = features[name]
            scores = getattr(self, up_name)(scores, skip.shape[-2:])
            scores = scores + getattr(self, score_name)(skip * scale)
        if output_size is None:
            output_size = tuple(self.common_stride * s for s in scores.shape[-2:])
        return self.upscore(scores, output_size)


def _score_layer(in_channels: int, num_classes: int) -> Conv2d:
    """1x1 conv to K class scores, zero-initialised (the paper's skip score layers)."""
    conv = Conv2d(in_channels, num_classes, kernel_size=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def _check_features(input_shape: dict[str, ShapeSpec], in_features, skips: str) -> list:
    """The features the head fuses, coarsest first; raise with the fix if unusable."""
    if skips not in SKIP_LEVELS:
        raise ValueError(
            f"FCNSkipHead: MODEL.FCN.SKIPS={skips!r}; set it to one of {list(SKIP_LEVELS)} "
            f"(or use MODEL.SEM_SEG_HEAD.NAME 'FCNHead' for the single-scale FCN head)"
        )
    if len(in_features) != 3:
        raise ValueError(f"in_features={list(in_features)}; give 3 names, coarsest first")
    names = list(in_features[: SKIP_LEVELS[skips]])
    missing = [n for n in names if n not in input_shape]
    if missing:
        raise ValueError(
            f"FCNSkipHead ({skips}) reads {names} but the backbone has no {missing}; it returns "
            f"{sorted(input_shape)} (add them to MODEL.VGG.OUT_FEATURES)"
        )
    strides = [input_shape[n].stride for n in names]
    halving = all(a == 2 * b for a, b in itertools.pairwise(strides))
    if None in strides or not halving or strides[-1] % 2:
        raise ValueError(
            f"FCNSkipHead fuses features of strides s, s/2, s/4 with an even s; got "
            f"{dict(zip(names, strides))}"
        )
    return names
