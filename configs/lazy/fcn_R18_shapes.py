"""LazyConfig of an FCN on a half-width dilated ResNet-18 (output stride 8), torchvision's
FCNHead on res5: configs/shapes/fcn_R18_shapes.yaml without its training-only auxiliary
head (configs/lazy/deeplab_R18_shapes.py shows how to add one).

    from detectron2.config import LazyConfig, instantiate
    model = instantiate(LazyConfig.load("configs/lazy/fcn_R18_shapes.py").model)
"""
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec

from seg_plugins.modeling.backbone.dilated_resnet import DilatedResNet
from seg_plugins.modeling.heads.fcn_head import FCNHead
from seg_plugins.modeling.meta_arch.fcn import FCN

model = L(FCN)(
    backbone=L(DilatedResNet)(
        depth=18, output_stride=8, stem_out_channels=32, res2_out_channels=32,
        out_features=["res5"], norm="BN",
    ),
    sem_seg_head=L(FCNHead)(
        input_shape={"res5": L(ShapeSpec)(channels=256, stride=8)},
        in_feature="res5", num_classes=4, channels=64, norm="BN",
    ),
    pixel_mean=[123.675, 116.28, 103.53],
    pixel_std=[58.395, 57.12, 57.375],
)
