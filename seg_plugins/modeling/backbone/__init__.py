"""Backbones registered into detectron2's BACKBONE_REGISTRY."""

from .dilated_resnet import DilatedResNet, build_dilated_resnet_backbone
from .unet_encoder import UNetEncoder, build_unet_encoder_backbone
from .vgg import VGG16Backbone, build_vgg16_backbone

__all__ = [
    "DilatedResNet",
    "UNetEncoder",
    "VGG16Backbone",
    "build_dilated_resnet_backbone",
    "build_unet_encoder_backbone",
    "build_vgg16_backbone",
]
