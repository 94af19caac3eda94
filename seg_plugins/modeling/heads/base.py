"""The base of seg_plugins' semantic heads: detectron2's semantic head contract.

Shape shorthand: N images, K classes, h x w the size of the logits the head's layers
produce, s their stride (``common_stride``), H x W the targets' (padded input's) size.

The contract (detectron2's SemSegFPNHead, relied on by SemanticSegmentor, PanopticFPN and
PointRend's semantic head): attributes ``ignore_value``, ``common_stride``, ``loss_weight``;
``layers(features)`` gives logits; ``losses(logits, targets)``; ``forward(features, targets)``
returns ``(None, {"loss_sem_seg": loss})`` in training and ``(logits, {})`` in eval.

Also here, shared by the heads of every model: :func:`sem_seg_head_args` (their
MODEL.SEM_SEG_HEAD arguments), :func:`build_predictor` (the final 1x1 classifier) and
:func:`select_feature`.
"""

from collections.abc import Sequence

from detectron2.layers import Conv2d, ShapeSpec
from torch import Tensor, nn
from torch.nn import functional as F

from ..losses import build_sem_seg_loss, sem_seg_loss_options

__all__ = ["SemSegHeadBase", "build_predictor", "select_feature", "sem_seg_head_args"]


def select_feature(input_shape: dict[str, ShapeSpec], name: str, key: str) -> ShapeSpec:
    """``input_shape[name]``, or an error naming config ``key`` and the available features."""
    if name not in input_shape:
        raise ValueError(
            f"{key}={name!r}: the backbone has no such output; it returns {sorted(input_shape)} "
            f"(check MODEL.BACKBONE.NAME and its OUT_FEATURES)"
        )
    return input_shape[name]


def sem_seg_head_args(cfg) -> dict:
    """The MODEL.SEM_SEG_HEAD arguments of :class:`SemSegHeadBase` heads (num_classes,
    ignore_value, loss_weight, loss_type, class_weights, loss_options)."""
    head = cfg.MODEL.SEM_SEG_HEAD
    return {
        "num_classes": head.NUM_CLASSES,
        "ignore_value": head.IGNORE_VALUE,
        "loss_weight": head.LOSS_WEIGHT,
        "loss_type": head.LOSS_TYPE,
        "class_weights": list(head.CLASS_WEIGHTS),
        "loss_options": sem_seg_loss_options(cfg),
    }


def build_predictor(channels: int, num_classes: int) -> Conv2d:
    """The final 1x1 conv C -> K, initialised small as in detectron2's DeepLab heads
    (N(0, 0.001), zero bias), so that the initial loss is close to log K."""
    predictor = Conv2d(channels, num_classes, kernel_size=1)
    nn.init.normal_(predictor.weight, 0, 0.001)
    nn.init.constant_(predictor.bias, 0)
    return predictor


class SemSegHeadBase(nn.Module):
    """Base of heads whose logits have the stride ``common_stride`` (that of a feature): the
    contract's attributes, the loss (MODEL.SEM_SEG_HEAD.LOSS_TYPE and its options) and
    ``losses``.

    Subclasses build their layers and implement ``layers(features) -> (N, K, h, w)``.
    ``forward(features, targets)`` returns ``(None, {"loss_sem_seg": loss})`` in training and
    ``(logits of shape (N, K, s * h, s * w), {})`` in eval. A head whose logits cannot be
    resized to an arbitrary input size overrides ``forward`` and sets ``logits_at = None``.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        common_stride: int,
        ignore_value: int,
        loss_weight: float,
        loss_type: str,
        class_weights: Sequence[float] | None,
        loss_options: dict[str, object] | None = None,
    ):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes={num_classes}; set MODEL.SEM_SEG_HEAD.NUM_CLASSES >= 1")
        self.num_classes = num_classes
        self.common_stride = common_stride
        self.ignore_value = ignore_value
        self.loss_weight = loss_weight
        self.loss_fn = build_sem_seg_loss(
            loss_type,
            ignore_value,
            class_weights,
            num_classes=num_classes,
            **(loss_options or {}),
        )

    def layers(self, features: dict[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def forward(self, features: dict[str, Tensor], targets: Tensor | None = None):
        """
        Args:
            features: name -> tensor of shape (N, C_i, h_i, w_i).
            targets: of shape (N, H, W), int64 class ids or ``ignore_value``; required in
                training.

        Returns:
            In training ``(None, {"loss_sem_seg": scalar})``; in eval ``(logits, {})`` with
            logits of shape (N, K, common_stride * h, common_stride * w).
        """
        x = self.layers(features)
        if self.training:
            self._require_targets(targets)
            return None, self.losses(x, targets)
        if self.common_stride == 1:
            return x, {}
        size = (x.shape[-2] * self.common_stride, x.shape[-1] * self.common_stride)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False), {}

    def logits_at(self, features: dict[str, Tensor], size: Sequence[int]) -> Tensor:
        """Eval logits of shape (N, K, H, W) at exactly ``size`` (H, W): ``layers`` resized
        bilinearly (align_corners=False) to the input's own size, as torchvision's
        segmentation models do. The meta-architecture uses it on unpadded images, so that
        no padding enters the border convolutions or ASPP's image pooling; it asks for it only
        when ``callable(head.logits_at)`` (see ``EncoderDecoderSegmentor.exact_size``)."""
        x = self.layers(features)
        if tuple(x.shape[-2:]) == tuple(size):
            return x
        return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)

    def losses(self, predictions: Tensor, targets: Tensor) -> dict[str, Tensor]:
        """
        Args:
            predictions: logits of shape (N, K, h, w), resized here to (H, W) if they differ.
            targets: of shape (N, H, W), int64 class ids or ``ignore_value``.
        """
        predictions = predictions.float()  # https://github.com/pytorch/pytorch/issues/48163
        if predictions.shape[-2:] != targets.shape[-2:]:
            predictions = F.interpolate(
                predictions, size=targets.shape[-2:], mode="bilinear", align_corners=False
            )
        return {"loss_sem_seg": self.loss_fn(predictions, targets) * self.loss_weight}

    def _require_targets(self, targets: Tensor | None) -> None:
        if targets is None:
            raise ValueError(
                f"{type(self).__name__} needs targets in training; give inputs a 'sem_seg'"
            )
