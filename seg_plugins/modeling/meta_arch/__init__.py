"""Meta-architectures registered into detectron2's META_ARCH_REGISTRY."""

from .unet import UNet

__all__ = ["UNet"]
