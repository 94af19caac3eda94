"""Semantic segmentation losses.

Shape shorthand: N images, K classes, H x W pixels. Logits are of shape (N, K, H, W) and
targets of shape (N, H, W) (int64 class ids; ``ignore_value`` marks pixels without a label,
255 in detectron2's datasets).

``build_sem_seg_loss(loss_type, ignore_value, class_weights)`` returns a callable
``loss(logits, targets) -> scalar``; heads call it from their ``losses()`` method. Every loss
here averages over the labelled pixels only and returns 0 (finite, still attached to the
graph) for a batch whose pixels are all ``ignore_value`` -- ``F.cross_entropy(reduction=
"mean")`` returns NaN there (0 / 0), which would poison the weights for the rest of training.

Cross-entropy with per-class weights follows PyTorch's weighted mean:
``sum_i w[y_i] * ce_i / sum_i w[y_i]`` over the labelled pixels i.
"""

import functools
import math
from typing import Callable, Dict, Optional, Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["build_sem_seg_loss", "sem_seg_cross_entropy", "SEM_SEG_LOSSES"]


def sem_seg_cross_entropy(
    logits: Tensor,
    targets: Tensor,
    *,
    ignore_value: int,
    class_weights: Optional[Sequence[float]] = None,
) -> Tensor:
    """Pixel-wise cross-entropy averaged over the labelled pixels.

    Args:
        logits: of shape (N, K, H, W), unnormalised class scores.
        targets: of shape (N, H, W), int64 class ids in [0, K) or ``ignore_value``.
        ignore_value: class id of pixels that do not contribute.
        class_weights: K non-negative weights, or None for uniform weights.

    Returns:
        A scalar tensor; 0 when no pixel is labelled (or all labelled pixels weigh 0).
    """
    if logits.dim() != 4 or targets.dim() != 3 or logits.shape[-2:] != targets.shape[-2:]:
        raise ValueError(
            f"expected logits (N, K, H, W) and targets (N, H, W) of the same H, W; got "
            f"{tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    weight = None
    if class_weights is not None:
        if len(class_weights) != logits.shape[1]:
            raise ValueError(
                f"got {len(class_weights)} class weights for logits of {logits.shape[1]} "
                f"classes; set MODEL.SEM_SEG_HEAD.CLASS_WEIGHTS to one weight per class"
            )
        weight = torch.as_tensor(class_weights, dtype=logits.dtype, device=logits.device)
    loss_sum = F.cross_entropy(
        logits, targets, weight=weight, ignore_index=ignore_value, reduction="sum"
    )
    labelled = targets != ignore_value
    if weight is None:
        denominator = labelled.sum().to(logits.dtype)
    else:
        safe_targets = targets.masked_fill(~labelled, 0)  # ignore_value may be out of range
        denominator = (weight[safe_targets] * labelled).sum()
    # Clamping (not torch.where) keeps the gradient finite: with no labelled pixel both the
    # sum and its gradient are 0, and 0 / tiny = 0.
    return loss_sum / denominator.clamp(min=torch.finfo(denominator.dtype).tiny)


#: Loss type name (MODEL.SEM_SEG_HEAD.LOSS_TYPE) -> loss function.
SEM_SEG_LOSSES: Dict[str, Callable[..., Tensor]] = {
    "cross_entropy": sem_seg_cross_entropy,
}


def _check_class_weights(
    class_weights: Optional[Sequence[float]], num_classes: Optional[int]
) -> Optional[tuple]:
    """Return the weights as a tuple of floats (None when empty), or raise with the fix."""
    if class_weights is None or len(class_weights) == 0:
        return None
    weights = tuple(float(w) for w in class_weights)
    if num_classes is not None and len(weights) != num_classes:
        raise ValueError(
            f"MODEL.SEM_SEG_HEAD.CLASS_WEIGHTS has {len(weights)} values but "
            f"MODEL.SEM_SEG_HEAD.NUM_CLASSES is {num_classes}; give one weight per class "
            f"or [] for uniform weights"
        )
    if not all(math.isfinite(w) and w >= 0 for w in weights):
        raise ValueError(
            f"MODEL.SEM_SEG_HEAD.CLASS_WEIGHTS must be finite and >= 0, got {list(weights)}"
        )
    return weights


def build_sem_seg_loss(
    loss_type: str,
    ignore_value: int,
    class_weights: Optional[Sequence[float]] = None,
    *,
    num_classes: Optional[int] = None,
) -> Callable[[Tensor, Tensor], Tensor]:
    """Build ``loss(logits (N, K, H, W), targets (N, H, W) int64) -> scalar``.

    Args:
        loss_type: one of ``SEM_SEG_LOSSES`` (MODEL.SEM_SEG_HEAD.LOSS_TYPE).
        ignore_value: class id that does not contribute (MODEL.SEM_SEG_HEAD.IGNORE_VALUE).
        class_weights: K weights (MODEL.SEM_SEG_HEAD.CLASS_WEIGHTS); None or [] = uniform.
        num_classes: K, to check ``class_weights`` at construction rather than at the first
            training step.

    The weights are kept as plain floats and moved to the logits' device on each call, so the
    callable works wherever the model lives and adds nothing to checkpoints.

    Example::

        loss_fn = build_sem_seg_loss("cross_entropy", ignore_value=255)
        loss = loss_fn(torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8)))
    """
    if loss_type not in SEM_SEG_LOSSES:
        raise ValueError(
            f"unknown loss type {loss_type!r}; set MODEL.SEM_SEG_HEAD.LOSS_TYPE to one of "
            f"{sorted(SEM_SEG_LOSSES)}"
        )
    weights = _check_class_weights(class_weights, num_classes)
    return functools.partial(
        SEM_SEG_LOSSES[loss_type], ignore_value=int(ignore_value), class_weights=weights
    )
