"""VGG-16 (Simonyan & Zisserman, ICLR 2015, https://arxiv.org/abs/1409.1556), made fully
convolutional as in Long, Shelhamer & Darrell, "Fully Convolutional Networks for Semantic
Segmentation", CVPR 2015 / TPAMI 2016, https://arxiv.org/abs/1411.4038.

Shape shorthand: N images, C input channels, H x W pixels, B = base channels (64 in VGG-16),
F = fc channels (4096 in VGG-16).

Layers (names as in the FCN reference nets, so that checkpoints read like the paper):

    conv1_1 conv1_2 pool1 | conv2_1 conv2_2 pool2 | conv3_1..conv3_3 pool3 |
    conv4_1..conv4_3 pool4 | conv5_1..conv5_3 pool5 | fc6 drop6 | fc7 drop7

Every conv is 3x3, padding 1, + optional norm + ReLU; widths B, 2B, 4B, 8B, 8B. Pools are
2x2 max-pools, stride 2. fc6 is the ImageNet classifier's first fully connected layer as a
k x k conv (k = 7, F channels) and fc7 its second as a 1x1 conv (F channels), each + ReLU +
Dropout. Outputs (any subset, ``out_features``): "conv1".."conv5" (the last conv of a stage,
stride 1..16), "pool1".."pool5" (stride 2..32), "fc6", "fc7" (stride 32, after dropout).

Alignment. The Caffe FCNs pad conv1_1 by 100 pixels so that the unpadded 7x7 fc6 fits any
input, and then crop every score map by a per-layer offset (19 pixels for the output of
FCN-32s; 5, 9 and 31 in FCN-8s) to bring it back onto the input grid. Here every 3x3 conv is
padded by 1 and fc6 (k x k, odd k) by k // 2: each layer is centred, so no crop offsets
exist. With H, W multiples of 32 (``size_divisibility``; detectron2's ImageList pads the batch
so), cell i of a stride-s output is centred on pixel s * i + (s - 1) / 2 -- the half-pixel
convention of ``F.interpolate(align_corners=False)`` -- and the bilinear transposed convs of
:class:`~seg_plugins.modeling.heads.FCNSkipHead` map it back exactly (the tests check both,
with flip equivariance). The cost: fc6 sees zero padding at the border of pool5, which the
ImageNet classifier never did; the Caffe nets instead see 100 pixels of zero-valued image.
In exchange, a 224 x 224 input gives fc7's centre cell equal to torchvision's classifier, no
compute is spent on 100 pixels of padding per side (pad 100 nearly doubles the FLOPs of a
500 x 500 image), and no offset bookkeeping can go wrong.
"""

from collections.abc import Callable, Sequence

from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from fvcore.nn import weight_init
from torch import Tensor, nn
from torch.nn import functional as F

from ..norm import check_norm

__all__ = ["VGG16_FEATURES", "VGG16Backbone", "build_vgg16_backbone"]

#: (number of 3x3 convs, width as a multiple of base_channels) of the five VGG-16 stages.
_STAGES = ((2, 1), (2, 2), (3, 4), (3, 8), (3, 8))

#: Every output name, shallow to deep, with its stride.
VGG16_FEATURES: dict[str, int] = {
    **{f"conv{i + 1}": 2**i for i in range(5)},
    **{f"pool{i + 1}": 2 ** (i + 1) for i in range(5)},
    "fc6": 32,
    "fc7": 32,
}
# Order in which the blocks run (VGG16_FEATURES is sorted by kind, not by depth).
_BLOCK_ORDER = [name for i in range(1, 6) for name in (f"conv{i}", f"pool{i}")] + ["fc6", "fc7"]


class VGG16Backbone(Backbone):
    """VGG-16 conv1_1 .. fc7 as a detectron2 :class:`Backbone` (see the module docstring).

    ``forward(x)`` takes x of shape (N, C, H, W) and returns {name: (N, C_name, H / s, W / s)}
    for every name in ``out_features`` (stride s; exact when H, W are multiples of 32, floor
    otherwise). Only the layers up to the deepest requested output are built.

    Example::

        backbone = VGG16Backbone(in_channels=1, base_channels=8, fc_channels=32, fc6_kernel=3)
        features = backbone(torch.randn(2, 1, 64, 96))
        assert features["fc7"].shape == (2, 32, 2, 3)
        assert features["pool4"].shape == (2, 64, 4, 6)
        assert backbone.output_shape()["pool3"] == ShapeSpec(channels=32, stride=8)
    """

    @configurable
    def __init__(
        self,
        *,
        in_channels: int = 3,
        base_channels: int = 64,
        fc_channels: int = 4096,
        fc6_kernel: int = 7,
        dropout: float = 0.5,
        norm: str | Callable | None = "",
        out_features: Sequence[str] = ("pool3", "pool4", "fc7"),
    ):
        """
        Args:
            in_channels: C, channels of the input image (1 for grayscale).
            base_channels: B, width of conv1 (64 in VGG-16); later stages have 2B, 4B, 8B, 8B.
            fc_channels: F, width of fc6 and fc7 (4096 in VGG-16).
            fc6_kernel: odd kernel size of fc6 (7 in VGG-16: the 7x7 pool5 window of a 224
                image); padded by fc6_kernel // 2.
            dropout: dropout probability after fc6 and after fc7 (0.5 in VGG-16 and FCN).
            norm: normalisation after every conv, fc6 and fc7 included, as accepted by
                detectron2.layers.get_norm: "" (VGG-16, FCN) or "BN" (to train from scratch).
            out_features: names to return, a non-empty subset of :data:`VGG16_FEATURES`.
        """
        super().__init__()
        _check_args(in_channels, base_channels, fc_channels, fc6_kernel, dropout, out_features)
        widths = [base_channels * mult for _, mult in _STAGES]
        for channels in sorted(set(widths + [fc_channels])):
            check_norm(norm, channels, "MODEL.VGG.NORM", "MODEL.VGG.BASE_CHANNELS / FC_CHANNELS")
        self._dropout = dropout
        self._out_features: list[str] = [n for n in _BLOCK_ORDER if n in out_features]
        deepest = max(_BLOCK_ORDER.index(n) for n in out_features)
        self._blocks: dict[str, list[str]] = {}  # block name -> its module names, in order
        block_channels = {}
        channels = in_channels
        for block in _BLOCK_ORDER[: deepest + 1]:
            channels = self._add_block(block, channels, widths, fc_channels, fc6_kernel, norm)
            block_channels[block] = channels
        self._out_feature_channels = {n: block_channels[n] for n in self._out_features}
        self._out_feature_strides = {n: VGG16_FEATURES[n] for n in self._out_features}

    def _add_block(self, block, in_ch, widths, fc_channels, fc6_kernel, norm) -> int:
        """Create the modules of ``block``; return its output channels."""
        kind, index = block[:-1], block[-1]
        if kind == "pool":
            self.add_module(block, nn.MaxPool2d(kernel_size=2, stride=2))
            self._blocks[block] = [block]
            return in_ch
        if kind == "conv":
            num_convs, width = _STAGES[int(index) - 1][0], widths[int(index) - 1]
            names = [f"conv{index}_{j + 1}" for j in range(num_convs)]
            for j, name in enumerate(names):
                self.add_module(name, _conv(in_ch if j == 0 else width, width, 3, norm))
            self._blocks[block] = names
            return width
        kernel = fc6_kernel if block == "fc6" else 1
        self.add_module(block, _conv(in_ch, fc_channels, kernel, norm))
        self.add_module(f"drop{index}", nn.Dropout(self._dropout))
        self._blocks[block] = [block, f"drop{index}"]
        return fc_channels

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec | None = None):
        in_channels = input_shape.channels if input_shape is not None else None
        if in_channels is None:
            in_channels = len(cfg.MODEL.PIXEL_MEAN)
        vgg = cfg.MODEL.VGG
        return {
            "in_channels": in_channels,
            "base_channels": vgg.BASE_CHANNELS,
            "fc_channels": vgg.FC_CHANNELS,
            "fc6_kernel": vgg.FC6_KERNEL,
            "dropout": vgg.DROPOUT,
            "norm": vgg.NORM,
            "out_features": list(vgg.OUT_FEATURES),
        }

    @property
    def size_divisibility(self) -> int:
        # Every output stride is exact (and the cells centred, see the module docstring)
        # only when H and W are multiples of the coarsest one.
        return max(self._out_feature_strides.values())

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """
        Args:
            x: of shape (N, C, H, W).

        Returns:
            dict name -> tensor of shape (N, C_name, H / s_name, W / s_name) for every name
            in ``out_features``.
        """
        outputs = {}
        for block, names in self._blocks.items():
            for name in names:
                x = getattr(self, name)(x)
            if block in self._out_feature_strides:
                outputs[block] = x
        return outputs


def _conv(in_channels: int, out_channels: int, kernel: int, norm) -> Conv2d:
    """k x k conv (padding k // 2, keeps the size and the centre) + norm + ReLU."""
    conv = Conv2d(
        in_channels,
        out_channels,
        kernel_size=kernel,
        padding=kernel // 2,
        bias=not norm,  # a norm layer's shift makes the conv bias redundant
        norm=get_norm(norm, out_channels),
        activation=F.relu,
    )
    weight_init.c2_msra_fill(conv)  # kaiming normal, fan_out, zero bias
    return conv


def _check_args(in_channels, base_channels, fc_channels, fc6_kernel, dropout, out_features):
    """Raise with the config key to fix for arguments that cannot build a VGG-16."""
    checks = [
        (in_channels >= 1, "in_channels", in_channels, "MODEL.PIXEL_MEAN (one value per channel)"),
        (base_channels >= 1, "base_channels", base_channels, "MODEL.VGG.BASE_CHANNELS >= 1"),
        (fc_channels >= 1, "fc_channels", fc_channels, "MODEL.VGG.FC_CHANNELS >= 1"),
        (
            fc6_kernel >= 1 and fc6_kernel % 2 == 1,
            "fc6_kernel",
            fc6_kernel,
            (
                "MODEL.VGG.FC6_KERNEL to an odd size (7 in VGG-16; an even kernel cannot be "
                "centred, which would shift fc6 off the input grid)"
            ),
        ),
        (0 <= dropout < 1, "dropout", dropout, "MODEL.VGG.DROPOUT in [0, 1)"),
        (
            len(out_features) > 0 and all(n in VGG16_FEATURES for n in out_features),
            "out_features",
            list(out_features),
            f"MODEL.VGG.OUT_FEATURES to a non-empty subset of {list(VGG16_FEATURES)}",
        ),
    ]
    for ok, name, value, fix in checks:
        if not ok:
            raise ValueError(f"VGG16Backbone: invalid {name}={value!r}; set {fix}")


@BACKBONE_REGISTRY.register()
def build_vgg16_backbone(cfg, input_shape: ShapeSpec) -> VGG16Backbone:
    """Build a :class:`VGG16Backbone` from cfg.MODEL.VGG (MODEL.BACKBONE.NAME:
    "build_vgg16_backbone"); ``input_shape.channels`` is the image's channel count."""
    return VGG16Backbone(cfg, input_shape)
