"""LazyConfig of the U-Net in configs/shapes/unet_shapes.yaml: the same model, built from
Python objects instead of yacs keys (detectron2's LazyConfig / `instantiate`).

    from detectron2.config import LazyConfig, instantiate
    cfg = LazyConfig.load("configs/lazy/unet_shapes.py")
    cfg.model.sem_seg_head.num_classes = 2       # edit anything before building
    model = instantiate(cfg.model)
"""
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec

from seg_plugins.modeling.backbone.unet_encoder import UNetEncoder
from seg_plugins.modeling.heads.unet_head import UNetHead
from seg_plugins.modeling.meta_arch.unet import UNet

BASE_CHANNELS, DEPTH = 16, 4

model = L(UNet)(
    backbone=L(UNetEncoder)(in_channels=3, base_channels=BASE_CHANNELS, depth=DEPTH, norm="BN"),
    sem_seg_head=L(UNetHead)(
        # The encoder's output_shape(): stage i has BASE * 2**i channels at stride 2**i.
        input_shape={
            f"enc{i}": L(ShapeSpec)(channels=BASE_CHANNELS * 2**i, stride=2**i)
            for i in range(DEPTH + 1)
        },
        num_classes=4,
        ignore_value=255,
        norm="BN",
    ),
    pixel_mean=[123.675, 116.28, 103.53],
    pixel_std=[58.395, 57.12, 57.375],
)
