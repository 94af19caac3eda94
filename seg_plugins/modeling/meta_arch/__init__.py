"""Meta-architectures registered into detectron2's META_ARCH_REGISTRY."""

from .base import EncoderDecoderSegmentor
from .unet import UNet

__all__ = ["EncoderDecoderSegmentor", "UNet"]
