"""``from_config`` helpers shared by the meta-architectures (FCN, DeepLabV3 / V3+, U-Net).

Each returns keyword arguments of :class:`EncoderDecoderSegmentor` (or of a subclass) read
from a detectron2 config; a meta-architecture's ``from_config`` combines them with the parts
it fixes (its head, for U-Net its encoder). They live here, not in one model's file, so that
no model imports another's.
"""

from collections.abc import Callable

from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone
from torch import nn

from ..heads.fcn_head import build_aux_head
from ..inference import SemSegInference
from ..postprocessing import build_crf
from .base import check_pixel_stats

__all__ = ["encoder_decoder_args", "inference_args", "pixel_stats_args"]


def pixel_stats_args(cfg) -> dict:
    """``pixel_mean`` and ``pixel_std``: MODEL.PIXEL_MEAN / PIXEL_STD (C values each),
    checked before anything is built."""
    pixel_mean, pixel_std = cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD
    check_pixel_stats(pixel_mean, pixel_std, "MODEL.PIXEL_MEAN", "MODEL.PIXEL_STD")
    return {"pixel_mean": pixel_mean, "pixel_std": pixel_std}


def inference_args(cfg) -> dict:
    """The inference-only parts: ``crf``, the MODEL.CRF DenseCRF (or None), and
    ``inference``, the TEST.SEM_SEG mode (whole / slide, flip / scales TTA)."""
    return {"crf": build_crf(cfg), "inference": SemSegInference.from_config(cfg)}


def encoder_decoder_args(
    cfg, build_head: Callable[[object, dict[str, ShapeSpec]], nn.Module]
) -> dict:
    """Keyword arguments of :class:`EncoderDecoderSegmentor`: the backbone of
    MODEL.BACKBONE.NAME, ``build_head(cfg, backbone.output_shape())``, the MODEL.AUX_HEAD
    head (or None), the MODEL.CRF DenseCRF (or None), MODEL.PIXEL_MEAN / PIXEL_STD and the
    TEST.SEM_SEG inference mode."""
    pixel_stats = pixel_stats_args(cfg)
    backbone = build_backbone(cfg)
    return {
        "backbone": backbone,
        "sem_seg_head": build_head(cfg, backbone.output_shape()),
        "aux_head": build_aux_head(cfg, backbone),
        **inference_args(cfg),
        **pixel_stats,
    }
