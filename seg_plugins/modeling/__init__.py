"""Models: backbones, semantic segmentation heads, meta-architectures and losses, and the
task of a configured model (:mod:`seg_plugins.modeling.task`: semantic / instance /
panoptic, which supplies its mapper, evaluators and checks).

Importing this package registers them into detectron2's BACKBONE_REGISTRY,
SEM_SEG_HEADS_REGISTRY and META_ARCH_REGISTRY.
"""

from . import backbone, heads, losses, meta_arch, postprocessing  # noqa: F401  registers
from .backbone import UNetEncoder, build_unet_encoder_backbone
from .heads import UNetHead
from .losses import build_sem_seg_loss
from .meta_arch import UNet
from .postprocessing import DenseCRF
from .task import task_of

__all__ = [
    "DenseCRF",
    "UNet",
    "UNetEncoder",
    "UNetHead",
    "build_sem_seg_loss",
    "build_unet_encoder_backbone",
    "task_of",
]
