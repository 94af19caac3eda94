"""FCN (Long et al., "Fully Convolutional Networks for Semantic Segmentation", CVPR 2015,
https://arxiv.org/abs/1411.4038) as a detectron2 meta-architecture.

Shape shorthand: N images, C image channels, K classes, H x W pixels.

``MODEL.META_ARCHITECTURE: "FCN"`` builds the backbone named by MODEL.BACKBONE.NAME (usually
"build_dilated_resnet_backbone": torchvision's FCN-ResNet at output stride 8) and the head the
meta-architecture fixes (MODEL.SEM_SEG_HEAD.NAME is not read):

- MODEL.FCN.SKIPS "" : :class:`FCNHead` on MODEL.FCN.IN_FEATURE (torchvision's FCN-ResNet);
- MODEL.FCN.SKIPS "32s" / "16s" / "8s": the head registered as "FCNSkipHead" (the paper's
  skip fusion on a VGG-16 backbone's fc7 / pool4 / pool3).

MODEL.AUX_HEAD adds a training-only :class:`FCNHead` whose loss is ``loss_aux``. The rest is
:class:`EncoderDecoderSegmentor` (detectron2's SemanticSegmentor): normalisation, padding to
``backbone.size_divisibility`` and ``sem_seg_postprocess``.
"""

from detectron2.layers import ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY, SEM_SEG_HEADS_REGISTRY
from torch import nn

from ..heads.fcn_head import FCNHead
from .base import EncoderDecoderSegmentor
from .build import encoder_decoder_args

__all__ = ["FCN", "build_fcn_head"]

SKIP_MODES = ("", "32s", "16s", "8s")


def build_fcn_head(cfg, input_shape: dict[str, ShapeSpec]) -> nn.Module:
    """:class:`FCNHead`, or the registered "FCNSkipHead" when MODEL.FCN.SKIPS is set."""
    skips = cfg.MODEL.FCN.SKIPS
    if skips not in SKIP_MODES:
        raise ValueError(f"MODEL.FCN.SKIPS={skips!r}; use one of {list(SKIP_MODES)}")
    if not skips:
        return FCNHead(cfg, input_shape)
    try:
        head_class = SEM_SEG_HEADS_REGISTRY.get("FCNSkipHead")
    except KeyError:
        raise ValueError(
            f"MODEL.FCN.SKIPS={skips!r} needs the head 'FCNSkipHead', which is not registered "
            f"in SEM_SEG_HEADS_REGISTRY (is seg_plugins.modeling.heads complete?); set "
            f"MODEL.FCN.SKIPS to '' for the single-scale FCNHead"
        ) from None
    return head_class(cfg, input_shape)


@META_ARCH_REGISTRY.register()
class FCN(EncoderDecoderSegmentor):
    """FCN: backbone -> :class:`FCNHead` (or FCNSkipHead) (+ auxiliary FCNHead in training).

    ``forward(batched_inputs)`` takes a list of N dicts with "image" of shape (C, H_n, W_n)
    (unnormalised), optional "sem_seg" of shape (H_n, W_n) (int64; required in training) and
    optional "height", "width". Training returns ``{"loss_sem_seg": …}`` (+ ``"loss_aux"``);
    eval returns N dicts ``{"sem_seg": logits of shape (K, height_n, width_n)}``.

    Example::

        backbone = DilatedResNet(depth=18, output_stride=8, stem_out_channels=16,
                                 res2_out_channels=16, out_features=["res4", "res5"])
        shapes = backbone.output_shape()
        model = FCN(
            backbone=backbone,
            sem_seg_head=FCNHead(shapes, in_feature="res5", num_classes=3),
            aux_head=FCNHead(shapes, in_feature="res4", num_classes=3, loss_weight=0.4),
            pixel_mean=[128.0] * 3, pixel_std=[64.0] * 3,
        )
        out = model.eval()([{"image": torch.randint(0, 256, (3, 45, 61))}])
        assert out[0]["sem_seg"].shape == (3, 45, 61)
    """

    # __init__: EncoderDecoderSegmentor's (backbone, sem_seg_head, pixel_mean, pixel_std,
    # aux_head, crf, inference).

    @classmethod
    def from_config(cls, cfg):
        return encoder_decoder_args(cfg, build_fcn_head)
