"""Semantic segmentation heads registered into detectron2's SEM_SEG_HEADS_REGISTRY."""

from .unet_head import UNetHead

__all__ = ["UNetHead"]
