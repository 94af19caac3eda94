"""Meta-architectures registered into detectron2's META_ARCH_REGISTRY."""

from .base import EncoderDecoderSegmentor
from .deeplab import DeepLabV3, DeepLabV3Plus
from .fcn import FCN
from .unet import UNet

__all__ = ["FCN", "DeepLabV3", "DeepLabV3Plus", "EncoderDecoderSegmentor", "UNet"]
