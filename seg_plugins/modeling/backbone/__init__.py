"""Backbones registered into detectron2's BACKBONE_REGISTRY."""

from .unet_encoder import DoubleConv, UNetEncoder, build_unet_encoder_backbone

__all__ = ["DoubleConv", "UNetEncoder", "build_unet_encoder_backbone"]
