"""The base of seg_plugins' semantic heads: detectron2's semantic head contract.

Shape shorthand: N images, K classes, h x w the size of the logits the head's layers
produce, s their stride (``common_stride``), H x W the targets' (padded input's) size.

The contract (detectron2's SemSegFPNHead, relied on by SemanticSegmentor, PanopticFPN and
PointRend's semantic head): attributes ``ignore_value``, ``common_stride``, ``loss_weight``;
``layers(features)`` gives logits; ``losses(logits, targets)``; ``forward(features, targets)``
returns ``(None, {"loss_sem_seg": loss})`` in training and ``(logits, {})`` in eval.
"""

from collections.abc import Sequence

from detectron2.layers import ShapeSpec
from torch import Tensor, nn
from torch.nn import functional as F

from ..losses import build_sem_seg_loss

__all__ = ["SemSegHeadBase", "select_feature"]


def select_feature(input_shape: dict[str, ShapeSpec], name: str, key: str) -> ShapeSpec:
    """``input_shape[name]``, or an error naming config ``key`` and the available features."""
    if name not in input_shape:
        raise ValueError(
            f"{key}={name!r}: the backbone has no such output; it returns {sorted(input_shape)} "
            f"(check MODEL.BACKBONE.NAME and its OUT_FEATURES)"
        )
    return input_shape[name]


class SemSegHeadBase(nn.Module):
    """Base of heads whose logits have the stride ``common_stride`` (that of a feature).

    Subclasses build their layers and implement ``layers(features) -> (N, K, h, w)``.
    ``forward(features, targets)`` returns ``(None, {"loss_sem_seg": loss})`` in training and
    ``(logits of shape (N, K, s * h, s * w), {})`` in eval.
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
            if targets is None:
                raise ValueError(
                    f"{type(self).__name__} needs targets in training; give inputs a 'sem_seg'"
                )
            return None, self.losses(x, targets)
        if self.common_stride == 1:
            return x, {}
        size = (x.shape[-2] * self.common_stride, x.shape[-1] * self.common_stride)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False), {}

    def logits_at(self, features: dict[str, Tensor], size: Sequence[int]) -> Tensor:
        """Eval logits of shape (N, K, H, W) at exactly ``size`` (H, W): ``layers`` resized
        bilinearly (align_corners=False) to the input's own size, as torchvision's
        segmentation models do. The meta-architecture uses it on unpadded images, so that
        no padding enters the border convolutions or ASPP's image pooling."""
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
