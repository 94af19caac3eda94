"""DeepLabV3 (Chen et al., "Rethinking Atrous Convolution for Semantic Image Segmentation",
2017, https://arxiv.org/abs/1706.05587) and DeepLabV3+ (Chen et al., "Encoder-Decoder with
Atrous Separable Convolution for Semantic Image Segmentation", ECCV 2018,
https://arxiv.org/abs/1802.02611) as detectron2 meta-architectures.

Shape shorthand: N images, C image channels, K classes, H x W pixels.

``MODEL.META_ARCHITECTURE: "DeepLabV3"`` / ``"DeepLabV3Plus"`` builds the backbone named by
MODEL.BACKBONE.NAME (usually "build_dilated_resnet_backbone") and the head the
meta-architecture fixes (MODEL.SEM_SEG_HEAD.NAME is not read): :class:`ASPPHead` /
:class:`ASPPPlusHead`, from MODEL.ASPP (and MODEL.DEEPLABV3PLUS). MODEL.AUX_HEAD adds a
training-only FCN head whose loss is ``loss_aux``. The rest is
:class:`EncoderDecoderSegmentor` (detectron2's SemanticSegmentor).

These are not detectron2.projects.deeplab's models (whose heads are "DeepLabV3Head" /
"DeepLabV3PlusHead" under "SemanticSegmentor"); both can be imported in one process.
"""

from detectron2.modeling import META_ARCH_REGISTRY

from ..heads.aspp_head import ASPPHead, ASPPPlusHead
from .base import EncoderDecoderSegmentor
from .build import encoder_decoder_args

__all__ = ["DeepLabV3", "DeepLabV3Plus"]


@META_ARCH_REGISTRY.register()
class DeepLabV3(EncoderDecoderSegmentor):
    """DeepLabV3: backbone -> :class:`ASPPHead` (+ auxiliary FCNHead in training).

    Inputs and outputs as :class:`EncoderDecoderSegmentor`: training returns
    ``{"loss_sem_seg": …}`` (+ ``"loss_aux"``); eval returns N dicts ``{"sem_seg": logits
    of shape (K, height_n, width_n)}``.

    Example::

        backbone = DilatedResNet(depth=18, output_stride=8, stem_out_channels=16,
                                 res2_out_channels=16, out_features=["res5"])
        head = ASPPHead(backbone.output_shape(), num_classes=3, channels=16)
        model = DeepLabV3(backbone=backbone, sem_seg_head=head,
                          pixel_mean=[128.0] * 3, pixel_std=[64.0] * 3)
        out = model.eval()([{"image": torch.randint(0, 256, (3, 45, 61))}])
        assert out[0]["sem_seg"].shape == (3, 45, 61)
    """

    @classmethod
    def from_config(cls, cfg):
        return encoder_decoder_args(cfg, ASPPHead)


@META_ARCH_REGISTRY.register()
class DeepLabV3Plus(EncoderDecoderSegmentor):
    """DeepLabV3+: backbone -> :class:`ASPPPlusHead` (+ auxiliary FCNHead in training).

    Inputs and outputs as :class:`DeepLabV3`.

    Example::

        backbone = DilatedResNet(depth=18, output_stride=16, stem_out_channels=16,
                                 res2_out_channels=16, out_features=["res2", "res5"])
        head = ASPPPlusHead(backbone.output_shape(), num_classes=3, channels=16,
                            decoder_channels=16, dilations=[6, 12, 18])
        model = DeepLabV3Plus(backbone=backbone, sem_seg_head=head,
                              pixel_mean=[128.0] * 3, pixel_std=[64.0] * 3)
        out = model.eval()([{"image": torch.randint(0, 256, (3, 45, 61))}])
        assert out[0]["sem_seg"].shape == (3, 45, 61)
    """

    @classmethod
    def from_config(cls, cfg):
        return encoder_decoder_args(cfg, ASPPPlusHead)
