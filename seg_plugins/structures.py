"""Conventions of the semantic logits shared by models, evaluators and the predictor.

Shape shorthand: N images, K classes, H x W pixels.

A semantic model's logits are of shape (K, H, W) per image (N, K, H, W for a batch) in one of
two modes, selected by MODEL.SEM_SEG_HEAD.NUM_CLASSES:

- K >= 2 channels (softmax): channel k holds class k's unnormalised score; the probabilities
  are their softmax over the K channels and the class is their argmax.
- ONE channel (binary mode, sigmoid; :func:`is_binary`): it holds the foreground logit x, the
  foreground probability is p = sigmoid(x), and the class is 1 (foreground) where
  p > threshold (MODEL.SEM_SEG_HEAD.BINARY_THRESHOLD), else 0 (background).

The rule is written once, here: the losses, the CRF of the meta-architecture, the evaluators
and the predictor read logits through these functions, so that a threshold or a tie is decided
the same way in training, evaluation and deployment. This module depends on torch only: it
sits below every other layer of the package (utils / compat / structures < config < data <
evaluation < modeling < engine).
"""

import math

import torch
from torch import Tensor

__all__ = [
    "binary_logits_to_two_class",
    "check_binary_threshold",
    "is_binary",
    "sem_seg_classes",
    "sem_seg_probabilities",
]


def is_binary(num_classes: int) -> bool:
    """Whether NUM_CLASSES selects the binary mode: one sigmoid channel, targets 0/1."""
    return int(num_classes) == 1


def check_binary_threshold(threshold: float) -> float:
    """Return ``threshold`` as a float, or raise unless it is a probability in (0, 1)."""
    threshold = float(threshold)
    if not 0.0 < threshold < 1.0:
        raise ValueError(
            f"binary threshold {threshold} is not a probability in (0, 1); set "
            f"MODEL.SEM_SEG_HEAD.BINARY_THRESHOLD to e.g. 0.5"
        )
    return threshold


def binary_logits_to_two_class(logits: Tensor, threshold: float = 0.5) -> Tensor:
    """Scores of shape (N, 2, H, W) (or (2, H, W)) from one-channel logits x of shape
    (N, 1, H, W) (or (1, H, W)): channel 0 is 0 and channel 1 is ``x - logit(threshold)``.

    Their argmax is 1 exactly where ``x > logit(threshold)``, i.e. where
    ``sigmoid(x) > threshold`` (up to the float rounding of the sigmoid); a tie goes to class 0,
    as ``torch.argmax`` returns the first maximum. Softmax of the scores is NOT the calibrated
    probability unless threshold = 0.5 (then it is [1 - sigmoid(x), sigmoid(x)]).
    """
    if logits.dim() < 3 or logits.shape[-3] != 1:
        raise ValueError(
            f"expected one-channel logits of shape (N, 1, H, W) or (1, H, W), got "
            f"{tuple(logits.shape)}"
        )
    return _two_class(logits, threshold, dim=-3)


def sem_seg_probabilities(logits: Tensor, dim: int = 0) -> Tensor:
    """Class probabilities of the same shape as ``logits`` (K, H, W) (``dim=0``) or
    (N, K, H, W) (``dim=1``): the softmax over the K channels on ``dim``; for one channel
    (binary mode) the foreground probability sigmoid(x), still one channel (the background's
    is 1 - sigmoid(x), not stored)."""
    _check_class_dim(logits, dim)
    return logits.sigmoid() if logits.shape[dim] == 1 else logits.softmax(dim=dim)


def sem_seg_classes(logits: Tensor, binary_threshold: float = 0.5, dim: int = 0) -> Tensor:
    """Class map (int64) of shape (H, W) from logits of shape (K, H, W) (``dim=0``), or of
    shape (N, H, W) from (N, K, H, W) (``dim=1``): the argmax over the K channels on ``dim``
    (a tie goes to the lower class, the first maximum). One channel (binary mode): 1 where
    sigmoid(x) > ``binary_threshold``, else 0 (a tie goes to 0); the argmax of
    :func:`binary_logits_to_two_class`'s scores, so the evaluators decide alike."""
    _check_class_dim(logits, dim)
    if logits.shape[dim] == 1:
        logits = _two_class(logits, binary_threshold, dim)
    return logits.argmax(dim=dim)


def _two_class(logits: Tensor, threshold: float, dim: int) -> Tensor:
    """[0, x - logit(threshold)] concatenated on ``dim`` (see binary_logits_to_two_class)."""
    offset = _logit(check_binary_threshold(threshold))
    return torch.cat([torch.zeros_like(logits), logits - offset], dim=dim)


def _check_class_dim(logits: Tensor, dim: int) -> None:
    """Raise unless ``dim`` is the class axis of (K, H, W) / (N, K, H, W) logits: the
    third-last one, followed by H and W."""
    ndim = logits.dim()
    if ndim < 3 or (dim + ndim if dim < 0 else dim) != ndim - 3:
        raise ValueError(
            f"expected logits of shape (K, H, W) (dim=0) or (N, K, H, W) (dim=1), the classes "
            f"on dim {dim} followed by H, W; got {tuple(logits.shape)}"
        )


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))
