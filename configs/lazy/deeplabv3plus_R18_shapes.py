"""LazyConfig of configs/shapes/deeplabv3plus_R18_shapes.yaml: DeepLabV3+ on a half-width
dilated ResNet-18 (output stride 16), decoder fusing res2.

    from detectron2.config import LazyConfig, instantiate
    model = instantiate(LazyConfig.load("configs/lazy/deeplabv3plus_R18_shapes.py").model)
"""
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec

from seg_plugins.modeling.backbone.dilated_resnet import DilatedResNet
from seg_plugins.modeling.heads.aspp_head import ASPPPlusHead
from seg_plugins.modeling.meta_arch.deeplab import DeepLabV3Plus

model = L(DeepLabV3Plus)(
    backbone=L(DilatedResNet)(
        depth=18, output_stride=16, stem_out_channels=32, res2_out_channels=32,
        out_features=["res2", "res5"], norm="BN",
    ),
    sem_seg_head=L(ASPPPlusHead)(
        # DilatedResNet(depth=18, res2_out_channels=32, output_stride=16).output_shape()
        input_shape={
            "res2": L(ShapeSpec)(channels=32, stride=4),
            "res5": L(ShapeSpec)(channels=256, stride=16),
        },
        num_classes=4, channels=64, dilations=[2, 4, 6], low_level_channels=16,
        decoder_channels=64, norm="BN",
    ),
    pixel_mean=[123.675, 116.28, 103.53],
    pixel_std=[58.395, 57.12, 57.375],
)
