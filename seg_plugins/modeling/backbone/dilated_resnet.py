"""Dilated ("atrous") ResNet of the FCN-ResNet and DeepLab models: detectron2's ResNet in
which the stages after the target output stride trade their stride-2 for dilation.

Shape shorthand: N images, C input channels, H x W pixels, OS = output stride (8, 16 or 32),
s_i = stride of stage res_i.

Chen et al., "Rethinking Atrous Convolution for Semantic Image Segmentation" (DeepLabV3),
2017, https://arxiv.org/abs/1706.05587, Sec. 3.2 (output stride, Multi-Grid); Yu et al.,
"Dilated Residual Networks", CVPR 2017, https://arxiv.org/abs/1705.09914.

The stem, blocks, stage builder and module names are detectron2's
(``detectron2.modeling.backbone.resnet``), so detectron2's checkpoints and
:mod:`seg_plugins.modeling.convert_torchvision` outputs load unchanged. Only the per-block
stride and dilation differ. Stage res_i (i = 2..5) has stride s_i = min(4 * 2**(i - 2), OS);
a stage whose stride stops growing gets stride 1 and the dilation ``rate = 2**(i - 2) * 4 / s_i``
instead. Per block, exactly as torchvision's ``replace_stride_with_dilation`` (so its
weights convert one to one): the first block keeps the previous stage's rate, the others
take the new one. At OS 8: res4 [1, 2, 2, ...], res5 [2, 4, 4]; at OS 16: res5 [1, 2, 2].

Multi-Grid (MODEL.DILATED_RESNET.MULTI_GRID = (r_1, r_2, r_3), not all ones): res5's
blocks use rates ``rate * r_j``, as in the paper, detectron2's projects/DeepLab and
mmsegmentation ("when output_stride = 16 and Multi_Grid = (1, 2, 4), the three convolutions
will have rates = 2 * (1, 2, 4) = (2, 4, 8)"). All ones (the default) keeps torchvision's rule.

BasicBlock (ResNet-18/34): torchvision raises for dilation > 1. Here both 3x3 convs of a
block take the block's rate (:class:`DilatedBasicBlock`, parameters and names unchanged).

The input needs no padding for the stages to run (strided convs give ceil(H / 2)), but
features are exactly (H / s_i, W / s_i) only when H, W are multiples of OS:
``size_divisibility`` = the largest stride of the built stages (OS with res5).
"""

from collections.abc import Callable, Sequence

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem, BottleneckBlock, ResNet

from ..norm import check_norm

__all__ = [
    "DilatedBasicBlock",
    "DilatedResNet",
    "build_dilated_resnet_backbone",
    "stage_strides_and_dilations",
]

#: Depth -> blocks per stage res2..res5 (He et al. 2016, Table 1).
BLOCKS_PER_STAGE = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}
OUTPUT_STRIDES = (8, 16, 32)
STAGE_NAMES = ("res2", "res3", "res4", "res5")
FEATURE_NAMES = ("stem",) + STAGE_NAMES


class DilatedBasicBlock(BasicBlock):
    """detectron2's :class:`BasicBlock` whose two 3x3 convs are dilated by ``dilation``
    (padding = dilation keeps the size): (N, C_in, H, W) -> (N, C_out, H / stride, W / stride).
    Same parameters and state-dict keys as BasicBlock."""

    def __init__(self, in_channels, out_channels, *, stride=1, norm="BN", dilation=1):
        super().__init__(in_channels, out_channels, stride=stride, norm=norm)
        self.dilation = dilation
        # Dilation and padding are read by every forward, not by the constructor, so setting
        # them here is equivalent to building the convs dilated.
        for conv in (self.conv1, self.conv2):
            conv.dilation = (dilation, dilation)
            conv.padding = (dilation, dilation)


def stage_strides_and_dilations(
    output_stride: int, blocks_per_stage: Sequence[int], multi_grid: Sequence[int] = (1,)
) -> list[tuple[list[int], list[int]]]:
    """Per-block (strides, dilations) of res2..res5.

    Example::

        plan = stage_strides_and_dilations(8, (3, 4, 6, 3))
        assert plan[2] == ([1] * 6, [1, 2, 2, 2, 2, 2])  # res4
        assert plan[3] == ([1] * 3, [2, 4, 4])  # res5
        assert stage_strides_and_dilations(16, (3, 4, 6, 3), [1, 2, 4])[3][1] == [2, 4, 8]
    """
    use_multi_grid = any(r != 1 for r in multi_grid)
    plan = []
    stride, rate = 4, 1  # after the stem
    for i, n in enumerate(blocks_per_stage):
        previous_rate = rate
        first_stride = 1 if i == 0 else 2  # res2 follows the stem's max-pool at stride 4
        if first_stride == 2 and stride >= output_stride:
            first_stride, rate = 1, rate * 2
        stride *= first_stride
        dilations = [previous_rate] + [rate] * (n - 1)
        if i == len(blocks_per_stage) - 1 and use_multi_grid:
            dilations = [rate * r for r in multi_grid]
        plan.append(([first_stride] + [1] * (n - 1), dilations))
    return plan


class DilatedResNet(ResNet):
    """detectron2's :class:`ResNet` (stem "stem", stages "res2".."res5") with output stride
    8, 16 or 32 by dilation.

    ``forward(x)``: x of shape (N, C, H, W) -> {name: (N, C_i, ceil(H / s_i), ceil(W / s_i))}
    for the requested ``out_features``.

    Example::

        net = DilatedResNet(depth=18, in_channels=1, output_stride=8, stem_out_channels=16,
                            res2_out_channels=16, norm="BN")
        features = net(torch.randn(2, 1, 64, 64))
        assert features["res5"].shape == (2, 128, 8, 8)
        assert net.output_shape()["res5"].stride == 8 and net.size_divisibility == 8
    """

    @configurable
    def __init__(
        self,
        *,
        depth: int = 50,
        in_channels: int = 3,
        output_stride: int = 8,
        multi_grid: Sequence[int] = (1, 1, 1),
        out_features: Sequence[str] = STAGE_NAMES,
        norm: str | Callable | None = "BN",
        stem_out_channels: int = 64,
        res2_out_channels: int = 256,
        num_groups: int = 1,
        width_per_group: int = 64,
        stride_in_1x1: bool = False,
        freeze_at: int = 0,
    ):
        """
        Args:
            depth: 18, 34 (BasicBlock), 50, 101 or 152 (BottleneckBlock).
            in_channels: C, image channels.
            output_stride: OS, the stride of res5 (8, 16 or 32).
            multi_grid: unit rates of res5's blocks (all ones = torchvision's rates).
            out_features: subset of "stem", "res2".."res5"; stages after the last are not built.
            norm: see detectron2.layers.get_norm ("BN", "SyncBN", "FrozenBN", "GN", ...).
            stem_out_channels, res2_out_channels: widths; each later stage doubles.
            num_groups, width_per_group: res2's bottleneck width is their product (ResNeXt
                when num_groups > 1); BottleneckBlock only.
            stride_in_1x1: stride in the first 1x1 conv (MSRA / Caffe2) instead of the 3x3
                conv (torchvision, "ResNet v1.5"); BottleneckBlock only.
            freeze_at: number of leading stages (stem = 1, res2 = 2, ...) to freeze.
        """
        _check_args(depth, in_channels, output_stride, multi_grid, out_features, num_groups)
        check_norm(norm, stem_out_channels, "MODEL.RESNETS.NORM", "MODEL.RESNETS.STEM_OUT_CHANNELS")
        blocks_per_stage = BLOCKS_PER_STAGE[depth]
        plan = stage_strides_and_dilations(output_stride, blocks_per_stage, multi_grid)
        stem = BasicStem(in_channels=in_channels, out_channels=stem_out_channels, norm=norm)
        block_kwargs = {"norm": norm}
        if depth >= 50:
            block_class = BottleneckBlock
            block_kwargs["num_groups"] = num_groups
            block_kwargs["stride_in_1x1"] = stride_in_1x1
        else:
            block_class = DilatedBasicBlock
        c_in, c_out, c_bottleneck = (
            stem_out_channels,
            res2_out_channels,
            num_groups * width_per_group,
        )
        stages = []
        for n, (strides, dilations) in zip(blocks_per_stage, plan):
            if depth >= 50:
                block_kwargs["bottleneck_channels"] = c_bottleneck
            stages.append(
                ResNet.make_stage(
                    block_class,
                    n,
                    in_channels=c_in,
                    out_channels=c_out,
                    stride_per_block=strides,
                    dilation_per_block=dilations,
                    **block_kwargs,
                )
            )
            c_in, c_out, c_bottleneck = c_out, c_out * 2, c_bottleneck * 2
        super().__init__(stem, stages, out_features=list(out_features), freeze_at=freeze_at)
        self.depth = depth
        self.output_stride = output_stride

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec | None = None):
        in_channels = input_shape.channels if input_shape is not None else None
        if in_channels is None:
            in_channels = len(cfg.MODEL.PIXEL_MEAN)
        resnets, dres = cfg.MODEL.RESNETS, cfg.MODEL.DILATED_RESNET
        _check_unsupported_resnet_keys(resnets)
        return {
            "depth": resnets.DEPTH,
            "in_channels": in_channels,
            "output_stride": dres.OUTPUT_STRIDE,
            "multi_grid": list(dres.MULTI_GRID),
            "out_features": list(dres.OUT_FEATURES),
            "norm": resnets.NORM,
            "stem_out_channels": resnets.STEM_OUT_CHANNELS,
            "res2_out_channels": resnets.RES2_OUT_CHANNELS,
            "num_groups": resnets.NUM_GROUPS,
            "width_per_group": resnets.WIDTH_PER_GROUP,
            "stride_in_1x1": resnets.STRIDE_IN_1X1,
            "freeze_at": cfg.MODEL.BACKBONE.FREEZE_AT,
        }

    @property
    def size_divisibility(self) -> int:
        # Largest stride among the built stem and stages (those after the last requested
        # feature are not built), so that every feature is exactly (H / s_i, W / s_i).
        return max(self._out_feature_strides.values())

    def stage_dilations(self) -> dict[str, list[int]]:
        """{"res_i": dilation of each block's 3x3 conv}, for inspection."""
        return {
            name: [block.conv2.dilation[0] for block in stage]
            for name, stage in zip(self.stage_names, self.stages)
        }


def _check_args(depth, in_channels, output_stride, multi_grid, out_features, num_groups):
    """Raise with the config key to fix for arguments that cannot build the network."""
    if depth not in BLOCKS_PER_STAGE:
        raise ValueError(
            f"MODEL.RESNETS.DEPTH={depth!r} is not supported; use one of {list(BLOCKS_PER_STAGE)}"
        )
    if in_channels < 1:
        raise ValueError(f"in_channels={in_channels}; give MODEL.PIXEL_MEAN one value per channel")
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(
            f"MODEL.DILATED_RESNET.OUTPUT_STRIDE={output_stride!r}; use one of "
            f"{list(OUTPUT_STRIDES)}"
        )
    res5_blocks = BLOCKS_PER_STAGE[depth][-1]
    if any(int(r) != r or r < 1 for r in multi_grid):
        raise ValueError(
            f"MODEL.DILATED_RESNET.MULTI_GRID={list(multi_grid)} must hold integers >= 1"
        )
    if any(r != 1 for r in multi_grid) and len(multi_grid) != res5_blocks:
        raise ValueError(
            f"MODEL.DILATED_RESNET.MULTI_GRID={list(multi_grid)} has {len(multi_grid)} values but "
            f"res5 of ResNet-{depth} has {res5_blocks} blocks; give {res5_blocks} values "
            f"(or all ones to turn Multi-Grid off)"
        )
    unknown = [f for f in out_features if f not in FEATURE_NAMES]
    if not out_features or unknown:
        raise ValueError(
            f"MODEL.DILATED_RESNET.OUT_FEATURES={list(out_features)}: give a non-empty subset "
            f"of {list(FEATURE_NAMES)}"
        )
    if depth < 50 and num_groups != 1:
        raise ValueError(
            f"MODEL.RESNETS.NUM_GROUPS={num_groups} needs bottleneck blocks; set it to 1 for "
            f"ResNet-{depth} or MODEL.RESNETS.DEPTH to 50 or more"
        )


def _check_unsupported_resnet_keys(resnets) -> None:
    """MODEL.RESNETS keys of build_resnet_backbone that this builder does not read."""
    if resnets.RES5_DILATION != 1:
        raise ValueError(
            f"MODEL.RESNETS.RES5_DILATION={resnets.RES5_DILATION} is not read by "
            f"build_dilated_resnet_backbone; leave it at 1 and set "
            f"MODEL.DILATED_RESNET.OUTPUT_STRIDE (16 dilates res5, 8 res4 and res5)"
        )
    if any(resnets.DEFORM_ON_PER_STAGE):
        raise ValueError(
            "MODEL.RESNETS.DEFORM_ON_PER_STAGE is not supported by "
            "build_dilated_resnet_backbone; set it to [False, False, False, False]"
        )


@BACKBONE_REGISTRY.register()
def build_dilated_resnet_backbone(cfg, input_shape: ShapeSpec) -> DilatedResNet:
    """Build a :class:`DilatedResNet` from MODEL.RESNETS.{DEPTH, NORM, STRIDE_IN_1X1,
    NUM_GROUPS, WIDTH_PER_GROUP, STEM_OUT_CHANNELS, RES2_OUT_CHANNELS},
    MODEL.DILATED_RESNET.* and MODEL.BACKBONE.FREEZE_AT (MODEL.BACKBONE.NAME:
    "build_dilated_resnet_backbone"); ``input_shape.channels`` is the image's channel count."""
    return DilatedResNet(cfg, input_shape)
