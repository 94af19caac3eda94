"""Semantic segmentation heads registered into detectron2's SEM_SEG_HEADS_REGISTRY."""

from .aspp_head import ASPPHead, ASPPPlusHead
from .base import SemSegHeadBase
from .fcn_head import FCNHead, build_aux_head
from .fcn_skip_head import FCNSkipHead
from .unet_head import UNetHead

__all__ = [
    "ASPPHead",
    "ASPPPlusHead",
    "FCNHead",
    "FCNSkipHead",
    "SemSegHeadBase",
    "UNetHead",
    "build_aux_head",
]
