"""Conv blocks shared by backbones and heads.

Shape shorthand: N images, C_in / C_out channels, H x W pixels.

Blocks live here, not in the file of the model that first used them, so that a backbone and
a head of different models can share one without importing each other (the layout of smp's
``base/modules.py``). Module names inside a block (``conv1``, ``conv2``) are part of the
checkpoint format of every model that holds one.
"""

from typing import Callable, Union

import fvcore.nn.weight_init as weight_init
from detectron2.layers import Conv2d, get_norm
from torch import nn
from torch.nn import functional as F

__all__ = ["DoubleConv"]


class DoubleConv(nn.Sequential):
    """Two (3x3 conv - norm - ReLU) layers, ``conv1`` and ``conv2``: a U-Net stage (Ronneberger
    et al., MICCAI 2015, https://arxiv.org/abs/1505.04597), also the U-Net decoder's and the
    DeepLabV3+ decoder's fusion block.

    Maps (N, C_in, H, W) to (N, C_out, H, W) (padded convs: the size is kept).

    Example::

        block = DoubleConv(3, 8, norm="BN")
        assert block(torch.randn(2, 3, 45, 61)).shape == (2, 8, 45, 61)
    """

    def __init__(self, in_channels: int, out_channels: int, norm: Union[str, Callable, None]):
        """
        Args:
            in_channels: C_in.
            out_channels: C_out, the width of both convs.
            norm: normalisation after each conv (see detectron2.layers.get_norm); "" = none,
                and then the convs have a bias.
        """
        super().__init__()
        for name, c_in in (("conv1", in_channels), ("conv2", out_channels)):
            conv = Conv2d(
                c_in,
                out_channels,
                kernel_size=3,
                padding=1,
                bias=not norm,  # a norm layer's shift makes the conv bias redundant
                norm=get_norm(norm, out_channels),
                activation=F.relu,
            )
            weight_init.c2_msra_fill(conv)  # kaiming normal, fan_out, zero bias
            self.add_module(name, conv)
