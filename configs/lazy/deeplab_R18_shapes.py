"""LazyConfig of configs/shapes/deeplabv3_R18_shapes.yaml: DeepLabV3 on a half-width dilated
ResNet-18 (output stride 8) with a training-only auxiliary FCN head on res4.

    from detectron2.config import LazyConfig, instantiate
    cfg = LazyConfig.load("configs/lazy/deeplab_R18_shapes.py")
    model = instantiate(cfg.model)
"""
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec

from seg_plugins.modeling.backbone.dilated_resnet import DilatedResNet
from seg_plugins.modeling.heads.aspp_head import ASPPHead
from seg_plugins.modeling.heads.fcn_head import FCNHead
from seg_plugins.modeling.meta_arch.deeplab import DeepLabV3

NUM_CLASSES = 4
# DilatedResNet(depth=18, res2_out_channels=32, output_stride=8).output_shape():
FEATURES = {
    "res4": L(ShapeSpec)(channels=128, stride=8),
    "res5": L(ShapeSpec)(channels=256, stride=8),
}

model = L(DeepLabV3)(
    backbone=L(DilatedResNet)(
        depth=18, output_stride=8, stem_out_channels=32, res2_out_channels=32,
        out_features=["res4", "res5"], norm="BN",
    ),
    sem_seg_head=L(ASPPHead)(
        input_shape=FEATURES, in_feature="res5", num_classes=NUM_CLASSES, channels=64,
        dilations=[3, 6, 9], norm="BN",
    ),
    aux_head=L(FCNHead)(
        input_shape=FEATURES, in_feature="res4", num_classes=NUM_CLASSES, channels=32,
        loss_weight=0.4, norm="BN",
    ),
    pixel_mean=[123.675, 116.28, 103.53],
    pixel_std=[58.395, 57.12, 57.375],
)
