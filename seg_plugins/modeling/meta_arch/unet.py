"""U-Net (Ronneberger et al., "U-Net: Convolutional Networks for Biomedical Image
Segmentation", MICCAI 2015, https://arxiv.org/abs/1505.04597) as a detectron2 meta-architecture.

Shape shorthand: N images, C image channels, K classes, H x W pixels.

``MODEL.META_ARCHITECTURE: "UNet"`` alone selects the whole model: a :class:`UNetEncoder`
built from MODEL.UNET (MODEL.BACKBONE.NAME is not read) and a :class:`UNetHead` built from
MODEL.SEM_SEG_HEAD and MODEL.UNET (MODEL.SEM_SEG_HEAD.NAME is not read). To put the U-Net
decoder behind another backbone, use detectron2's "SemanticSegmentor" with
MODEL.SEM_SEG_HEAD.NAME: "UNetHead" instead.

Everything else is :class:`EncoderDecoderSegmentor` (detectron2's SemanticSegmentor):
per-channel normalisation with MODEL.PIXEL_MEAN / PIXEL_STD, padding of the batch to
``size_divisibility = 2**DEPTH`` (images with 0, targets with ``ignore_value``), and
``sem_seg_postprocess``, which crops each image's logits back to its own (H, W) and resizes
them to its "height" x "width" if given.
"""

from typing import Optional, Sequence

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY, Backbone
from torch import nn

from ..backbone.unet_encoder import build_unet_encoder_backbone
from ..heads.unet_head import UNetHead
from ..inference import SemSegInference
from .base import EncoderDecoderSegmentor
from .build import inference_args, pixel_stats_args

__all__ = ["UNet"]


@META_ARCH_REGISTRY.register()
class UNet(EncoderDecoderSegmentor):
    """U-Net encoder + decoder on detectron2's semantic segmentation contract.

    ``forward(batched_inputs)`` takes a list of N dicts with "image" of shape (C, H_n, W_n)
    (uint8 or float, unnormalised), optional "sem_seg" of shape (H_n, W_n) (int64; required
    in training) and optional "height", "width". In training it returns
    ``{"loss_sem_seg": scalar}``; in eval a list of N ``{"sem_seg": logits of shape
    (K, height_n, width_n)}``, where height_n, width_n default to H_n, W_n.

    Example::

        encoder = UNetEncoder(in_channels=1, base_channels=8, depth=2, norm="")
        head = UNetHead(encoder.output_shape(), num_classes=2, norm="")
        model = UNet(backbone=encoder, sem_seg_head=head, pixel_mean=[0.0], pixel_std=[1.0])
        out = model.eval()([{"image": torch.rand(1, 45, 61)}])
        assert out[0]["sem_seg"].shape == (2, 45, 61)
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        sem_seg_head: nn.Module,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        crf: Optional[nn.Module] = None,
        inference: Optional[SemSegInference] = None,
    ):
        """
        Args:
            backbone: a detectron2 Backbone returning a stride pyramid (usually a UNetEncoder).
            sem_seg_head: a head on detectron2's semantic head contract (usually a UNetHead).
            pixel_mean, pixel_std: C values each, to normalise the C-channel input image.
            crf: optional inference-only post-processing (a DenseCRF; MODEL.CRF).
            inference: eval mode (whole / slide, flip / scales TTA; TEST.SEM_SEG); None = whole.
        """
        super().__init__(
            backbone=backbone,
            sem_seg_head=sem_seg_head,
            pixel_mean=pixel_mean,
            pixel_std=pixel_std,
            crf=crf,
            inference=inference,
        )

    @classmethod
    def from_config(cls, cfg):
        pixel_stats = pixel_stats_args(cfg)
        channels = len(pixel_stats["pixel_mean"])
        backbone = build_unet_encoder_backbone(cfg, ShapeSpec(channels=channels))
        return {
            "backbone": backbone,
            "sem_seg_head": UNetHead(cfg, backbone.output_shape()),
            **pixel_stats,
            **inference_args(cfg),
        }
