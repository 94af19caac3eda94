"""Semantic segmentation losses: cross-entropy (with optional hard-pixel mining), Dice and
Dice + cross-entropy, for K-class softmax heads and for a one-channel binary (sigmoid) head.

Shape shorthand: N images, K classes, H x W pixels. Logits are of shape (N, K, H, W) and
targets of shape (N, H, W) (int64 class ids; ``ignore_value`` marks pixels without a label,
255 in detectron2's datasets).

``build_sem_seg_loss(loss_type, ignore_value, class_weights, **options)`` returns a callable
``loss(logits, targets) -> scalar``; heads call it from their ``losses()`` method. Every loss
here ignores the ``ignore_value`` pixels entirely and returns 0 (finite, still attached to the
graph, finite gradients) for a batch whose pixels are all ``ignore_value`` --
``F.cross_entropy(reduction="mean")`` returns NaN there (0 / 0), which would poison the
weights for the rest of training.

Binary mode (the convention of :mod:`seg_plugins.structures`): logits with ONE channel
(MODEL.SEM_SEG_HEAD.NUM_CLASSES: 1) hold the foreground logit x, p = sigmoid(x); targets are
0 (background), 1 (foreground) or ``ignore_value``. Its "classes" are these two: class weights
are [background, foreground], cross-entropy becomes binary cross-entropy with logits, and Dice
treats it exactly as the 2-class softmax on logits [0, x] (whose probabilities are
[1 - p, p]). For the foreground-only Dice of smp / MONAI's sigmoid mode, set
DICE_INCLUDE_BACKGROUND: False. A decision is ``p > threshold``
(MODEL.SEM_SEG_HEAD.BINARY_THRESHOLD); :func:`seg_plugins.structures.sem_seg_classes` makes
it, and :func:`~seg_plugins.structures.binary_logits_to_two_class` turns the logit into
2-class scores whose argmax is that decision, for code that argmaxes over classes.

Conventions:

- Cross-entropy (and BCE) with class weights w is PyTorch's weighted mean over the labelled
  pixels i: ``sum_i w[y_i] * ce_i / sum_i w[y_i]``.
- Hard-pixel mining is an option of the cross-entropy term, ``top_k_percent`` (DeepLab's
  bootstrapped CE, Wu et al. 2016, https://arxiv.org/abs/1605.06885, and
  ``top_k_percent_pixels`` of DeepLab): the weighted mean above over the
  ``ceil(top_k_percent * n)`` labelled pixels with the largest weighted loss ``w[y_i] * ce_i``
  (n = number of labelled pixels in the batch). 1.0 keeps every pixel. It applies to
  "cross_entropy" and to the CE term of "dice_ce". Counting pixels costs a host sync.
- Soft Dice (Milletari et al., "V-Net", 2016, https://arxiv.org/abs/1606.04797) on
  probabilities, computed over the WHOLE BATCH (sums over N, H, W -- "batch Dice", as smp and
  nnU-Net's batch_dice; not a mean of per-image Dice): per class c,
  ``D_c = (2 I_c + s) / (P_c + T_c + s)`` with I_c = sum of p_c over labelled pixels of class
  c, P_c = sum of p_c over labelled pixels, T_c = number of labelled pixels of class c, s the
  smoothing term. The loss is the (class-weighted) mean of ``1 - D_c`` over the classes
  (class 0 left out when ``include_background`` is False). A class absent from the targets
  that is not predicted scores D_c = s / (P_c + s) ~ 1, i.e. costs ~0. With s = 0 such a
  class scores D_c = 0 for any predicted mass P_c > 0 (a constant 1 in its term, without
  gradient) and D_c = 1 only when P_c + T_c = 0 exactly: keep s > 0 unless every batch holds
  every class. Why the batch: per-image Dice lets a class that is tiny or absent in one
  image dominate that image's loss, and batch Dice is closer to the dataset-level Dice the
  evaluator reports.
"""

import functools
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

from ..structures import is_binary

__all__ = [
    "SEM_SEG_LOSSES",
    "build_sem_seg_loss",
    "check_target_values",
    "sem_seg_cross_entropy",
    "sem_seg_dice",
    "sem_seg_dice_ce",
    "sem_seg_loss_options",
]


# ----------------------------------------------------------------------------- input checks


def _num_target_classes(logits: Tensor) -> int:
    """K for softmax logits; 2 (background, foreground) for one-channel binary logits."""
    return 2 if is_binary(logits.shape[1]) else logits.shape[1]


def _labelled(logits: Tensor, targets: Tensor, ignore_value: int) -> Tensor:
    """Check shapes and target values; return the labelled-pixel mask of shape (N, H, W)."""
    if logits.dim() != 4 or targets.dim() != 3 or logits.shape[-2:] != targets.shape[-2:]:
        raise ValueError(
            f"expected logits (N, K, H, W) and targets (N, H, W) of the same H, W; got "
            f"{tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    _check_binary_ignore(logits.shape[1], ignore_value)
    labelled = targets != ignore_value
    if targets.device.type == "cpu":
        check_target_values(targets, logits.shape[1], ignore_value)
    else:
        # No host-device sync in the step: an asynchronous device-side assert instead of the
        # ValueError. EncoderDecoderSegmentor runs check_target_values on the CPU targets
        # before moving them, so its users still get the full message first.
        k = _num_target_classes(logits)
        bad = labelled & ((targets < 0) | (targets >= k))
        torch._assert_async(
            ~bad.any(),
            f"targets contain values that are neither classes 0..{k - 1} nor the ignore value "
            f"{ignore_value}; fix the labels or MODEL.SEM_SEG_HEAD.NUM_CLASSES / IGNORE_VALUE",
        )
    return labelled


def _check_binary_ignore(num_logits: int, ignore_value: int) -> None:
    if is_binary(num_logits) and ignore_value in (0, 1):
        raise ValueError(
            f"binary mode (one logit channel) needs an ignore value other than 0 and 1, got "
            f"{ignore_value}; set MODEL.SEM_SEG_HEAD.IGNORE_VALUE to e.g. 255"
        )


def check_target_values(targets: Tensor, num_logits: int, ignore_value: int) -> None:
    """Raise a ValueError naming the bad values unless every target is a class id in
    [0, K) or ``ignore_value`` (K = ``num_logits``; 2 in binary mode, ``num_logits`` = 1).
    On an accelerator this reads the result back (a host sync): call it on CPU targets."""
    binary = is_binary(num_logits)
    k = 2 if binary else num_logits
    _check_binary_ignore(num_logits, ignore_value)
    bad = (targets != ignore_value) & ((targets < 0) | (targets >= k))
    if bool(bad.any()):  # a silent out-of-range id would corrupt the loss
        values = sorted(targets[bad].unique().tolist())[:10]
        hint = (
            "binary mode (NUM_CLASSES 1) expects 0 = background, 1 = foreground; map mask "
            "values such as 255 to 1 (and pick another ignore value)"
            if binary
            else "fix the labels or MODEL.SEM_SEG_HEAD.NUM_CLASSES / IGNORE_VALUE"
        )
        raise ValueError(
            f"targets contain {values}, which are neither classes 0..{k - 1} nor the ignore "
            f"value {ignore_value}; {hint}"
        )


def _class_weight_tensor(class_weights: Sequence[float] | None, logits: Tensor) -> Tensor | None:
    if class_weights is None or len(class_weights) == 0:
        return None
    k = _num_target_classes(logits)
    if len(class_weights) != k:
        binary = is_binary(logits.shape[1])
        what = "2 weights [background, foreground] in binary mode" if binary else "one per class"
        raise ValueError(
            f"got {len(class_weights)} class weights for logits of {logits.shape[1]} "
            f"channel(s); set MODEL.SEM_SEG_HEAD.CLASS_WEIGHTS to {what}"
        )
    return torch.as_tensor(class_weights, dtype=logits.dtype, device=logits.device)


def _check_top_k(top_k_percent: float) -> float:
    if not 0.0 < float(top_k_percent) <= 1.0:
        raise ValueError(
            f"MODEL.SEM_SEG_HEAD.TOP_K_PERCENT is a fraction in (0, 1], got {top_k_percent} "
            f"(1.0 = every labelled pixel, 0.2 = the hardest 20%)"
        )
    return float(top_k_percent)


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    # Clamping (not torch.where) keeps the gradient finite: with nothing counted both the
    # numerator and its gradient are 0, and 0 / tiny = 0.
    return num / den.clamp(min=torch.finfo(den.dtype).tiny)


# ----------------------------------------------------------------------------- cross-entropy


def _pixel_cross_entropy(logits: Tensor, targets: Tensor, labelled: Tensor) -> Tensor:
    """Unweighted per-pixel CE (or BCE for one channel) of shape (N, H, W); 0 where unlabelled."""
    safe_targets = targets.masked_fill(~labelled, 0)  # ignore_value may be out of range
    if is_binary(logits.shape[1]):
        ce = F.binary_cross_entropy_with_logits(
            logits[:, 0], safe_targets.to(logits.dtype), reduction="none"
        )
    else:
        ce = F.cross_entropy(logits, safe_targets, reduction="none")
    return ce * labelled


def _top_k_weighted_mean(
    pixel_loss: Tensor, pixel_weight: Tensor, labelled: Tensor, top_k_percent: float
) -> Tensor:
    """``sum w * loss / sum w`` over all labelled pixels, or over the ceil(top_k_percent * n)
    labelled pixels of largest ``w * loss``. Inputs of shape (N, H, W); unlabelled w = 0."""
    weighted = pixel_loss * pixel_weight
    if top_k_percent >= 1.0:
        return _safe_div(weighted.sum(), pixel_weight.sum())
    n = int(labelled.sum())
    if n == 0:
        return weighted.sum()  # 0, attached to the graph
    # - 1e-6 so that e.g. 0.1 * 30 = 3.0000000000000004 selects 3 pixels, not 4.
    k = min(n, max(1, math.ceil(top_k_percent * n - 1e-6)))
    scores = weighted.detach().masked_fill(~labelled, -math.inf).flatten()
    index = torch.topk(scores, k, sorted=False).indices
    return _safe_div(weighted.flatten()[index].sum(), pixel_weight.flatten()[index].sum())


def sem_seg_cross_entropy(
    logits: Tensor,
    targets: Tensor,
    *,
    ignore_value: int,
    class_weights: Sequence[float] | None = None,
    top_k_percent: float = 1.0,
) -> Tensor:
    """Pixel-wise cross-entropy averaged over the labelled pixels (binary cross-entropy with
    logits for one-channel logits), optionally over the hardest ``top_k_percent`` of them.

    Args:
        logits: of shape (N, K, H, W), unnormalised class scores; or (N, 1, H, W) foreground
            logits (binary mode).
        targets: of shape (N, H, W), int64 class ids in [0, K) (binary: 0 or 1) or
            ``ignore_value``.
        ignore_value: class id of pixels that do not contribute.
        class_weights: K non-negative weights (binary: [background, foreground]), or None.
        top_k_percent: fraction in (0, 1] of labelled pixels kept, largest weighted loss first.

    Returns:
        A scalar tensor; 0 when no pixel is labelled (or all labelled pixels weigh 0).
    """
    labelled = _labelled(logits, targets, ignore_value)
    weight = _class_weight_tensor(class_weights, logits)
    pixel_weight = labelled.to(logits.dtype)
    if weight is not None:
        pixel_weight = weight[targets.masked_fill(~labelled, 0)] * pixel_weight
    pixel_loss = _pixel_cross_entropy(logits, targets, labelled)
    return _top_k_weighted_mean(pixel_loss, pixel_weight, labelled, _check_top_k(top_k_percent))


# ----------------------------------------------------------------------------- Dice


def _dice_sums(logits: Tensor, targets: Tensor, labelled: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-class (intersection I, predicted mass P, target count T), each of shape (K,)
    (K = 2 in binary mode), summed over the labelled pixels of the whole batch.

    Memory: besides the probabilities (N, K, H, W) -- the same size as the logits, and what a
    softmax CE also holds -- only (N, H, W) tensors: I gathers the target class' probability
    and scatters it into its class, T counts with a scatter, and P is a masked contraction.
    No (N, K, H, W) one-hot is built.
    """
    mask = labelled.to(logits.dtype)
    safe_targets = targets.masked_fill(~labelled, 0)
    if is_binary(logits.shape[1]):  # [1 - p, p] = softmax([0, x]), written with the sigmoid
        p = torch.sigmoid(logits[:, 0]) * mask
        fg = safe_targets.to(logits.dtype) * mask
        inter_fg, mass_fg, count_fg = (p * fg).sum(), p.sum(), fg.sum()
        inter_bg = (mask - p - fg + p * fg).sum()  # sum (1 - p)(1 - y) over labelled pixels
        total = mask.sum()
        return (
            torch.stack([inter_bg, inter_fg]),
            torch.stack([total - mass_fg, mass_fg]),
            torch.stack([total - count_fg, count_fg]),
        )
    k = logits.shape[1]
    probs = F.softmax(logits, dim=1)
    p_target = probs.gather(1, safe_targets.unsqueeze(1)).squeeze(1) * mask
    flat_targets = safe_targets.flatten()
    zeros = logits.new_zeros(k)
    inter = zeros.index_add(0, flat_targets, p_target.flatten())
    count = zeros.index_add(0, flat_targets, mask.flatten())
    # (N, K, HW) @ (N, HW, 1): a masked sum without an (N, K, H, W) temporary.
    mass = torch.bmm(probs.flatten(2), mask.flatten(1).unsqueeze(2)).sum(dim=(0, 2))
    return inter, mass, count


# Smallest accepted non-zero Dice smoothing. The ratio is computed in float64 (below); its
# gradient has the denominator squared, >= s^2, which must not underflow (float64 normals
# reach 2.2e-308). Below 1e-12 a smoothing term does nothing a user could want: 0 means none.
MIN_DICE_SMOOTH = 1e-12


def _check_smooth(smooth: float) -> float:
    smooth = float(smooth)
    if not (math.isfinite(smooth) and (smooth == 0 or smooth >= MIN_DICE_SMOOTH)):
        raise ValueError(
            f"MODEL.SEM_SEG_HEAD.DICE_SMOOTH must be 0 (no smoothing) or a finite value >= "
            f"{MIN_DICE_SMOOTH:g}, got {smooth:g}"
        )
    return smooth


def sem_seg_dice(
    logits: Tensor,
    targets: Tensor,
    *,
    ignore_value: int,
    class_weights: Sequence[float] | None = None,
    smooth: float = 1.0,
    include_background: bool = True,
) -> Tensor:
    """Soft Dice loss on softmax (binary: sigmoid) probabilities over the whole batch; see the
    module docstring for the formula and conventions.

    Args:
        logits: of shape (N, K, H, W), or (N, 1, H, W) foreground logits (binary mode).
        targets: of shape (N, H, W), int64 class ids in [0, K) (binary: 0 or 1) or
            ``ignore_value``; ignored pixels are left out of I, P and T.
        ignore_value: class id of pixels that do not contribute.
        class_weights: K non-negative weights of the per-class ``1 - D_c`` in the mean
            (binary: [background, foreground]), or None for a plain mean.
        smooth: s >= 0 added to numerator and denominator.
        include_background: whether class 0 enters the mean.

    Returns:
        A scalar tensor in [0, 1]; 0 when no pixel is labelled.
    """
    labelled = _labelled(logits, targets, ignore_value)
    weight = _class_weight_tensor(class_weights, logits)
    smooth = _check_smooth(smooth)
    # A class absent from the targets (T = 0) whose predicted mass P is tiny (a saturated
    # softmax: P ~ 1e-40, a float32 denormal) made the gradient NaN while the value stayed
    # finite, twice over: d/dI = 2 / den overflowed float32 (and reached the ignored pixels,
    # which index class 0, as inf * 0), and -num / den^2 underflowed to 0 / 0. So I is held
    # at its true value 0 where T = 0 (it has no pixel), which stops that gradient, and the
    # ratio is taken in float64 (K numbers: it costs nothing).
    inter, mass, count = (t.double() for t in _dice_sums(logits, targets, labelled))
    inter = torch.where(count > 0, inter, torch.zeros_like(inter))
    den = mass + count + smooth
    empty = den <= 0  # only with smooth = 0: class neither labelled nor predicted
    ratio = (2 * inter + smooth) / den.masked_fill(empty, 1)  # finite gradient where empty
    dice = torch.where(empty, torch.ones_like(den), ratio)
    per_class = (1 - dice).clamp(min=0)  # rounding may give 2 I > P + T by an ulp
    if weight is None:
        weight = torch.ones_like(per_class)
    if not include_background:
        weight = torch.cat([weight.new_zeros(1), weight[1:]])
    weight = weight.to(per_class.dtype)
    return _safe_div((weight * per_class).sum(), weight.sum()).to(logits.dtype)


def sem_seg_dice_ce(
    logits: Tensor,
    targets: Tensor,
    *,
    ignore_value: int,
    class_weights: Sequence[float] | None = None,
    weights: Sequence[float] = (1.0, 1.0),
    smooth: float = 1.0,
    include_background: bool = True,
    top_k_percent: float = 1.0,
) -> Tensor:
    """``weights[0] * cross-entropy + weights[1] * Dice`` (the nnU-Net / mmseg "CE + Dice").

    Args: as :func:`sem_seg_cross_entropy` and :func:`sem_seg_dice` (``class_weights`` apply
    to both terms, ``top_k_percent`` to the CE term only); ``weights``: [w_ce, w_dice].
    """
    w_ce, w_dice = _check_pair(weights)
    ce = sem_seg_cross_entropy(
        logits,
        targets,
        ignore_value=ignore_value,
        class_weights=class_weights,
        top_k_percent=top_k_percent,
    )
    dice = sem_seg_dice(
        logits,
        targets,
        ignore_value=ignore_value,
        class_weights=class_weights,
        smooth=smooth,
        include_background=include_background,
    )
    return w_ce * ce + w_dice * dice


def _check_pair(weights: Sequence[float]) -> tuple[float, float]:
    values = [float(w) for w in weights]
    if len(values) != 2 or not all(math.isfinite(w) and w >= 0 for w in values):
        raise ValueError(
            f"MODEL.SEM_SEG_HEAD.DICE_CE_WEIGHTS must be 2 finite weights >= 0 [w_ce, w_dice], "
            f"got {list(weights)}"
        )
    return values[0], values[1]


# ----------------------------------------------------------------------------- registry


#: Loss type name (MODEL.SEM_SEG_HEAD.LOSS_TYPE) -> loss function.
SEM_SEG_LOSSES: dict[str, Callable[..., Tensor]] = {
    "cross_entropy": sem_seg_cross_entropy,
    "dice": sem_seg_dice,
    "dice_ce": sem_seg_dice_ce,
}

# build_sem_seg_loss option -> keyword of the loss functions that read it.
_OPTION_KEYWORDS = {
    "dice_smooth": "smooth",
    "dice_include_background": "include_background",
    "dice_ce_weights": "weights",
    "top_k_percent": "top_k_percent",
}
# Loss type -> the build_sem_seg_loss options it reads (a loss added to SEM_SEG_LOSSES
# elsewhere reads none).
_LOSS_OPTIONS = {
    "cross_entropy": ("top_k_percent",),
    "dice": ("dice_smooth", "dice_include_background"),
    "dice_ce": ("dice_smooth", "dice_include_background", "dice_ce_weights", "top_k_percent"),
}


def _check_class_weights(
    class_weights: Sequence[float] | None, num_classes: int | None
) -> tuple | None:
    """Return the weights as a tuple of floats (None when empty), or raise with the fix."""
    if class_weights is None or len(class_weights) == 0:
        return None
    weights = tuple(float(w) for w in class_weights)
    if num_classes is not None:
        expected = 2 if is_binary(num_classes) else num_classes
        if len(weights) != expected:
            what = (
                "2 weights [background, foreground] (binary mode)"
                if is_binary(num_classes)
                else "one weight per class"
            )
            raise ValueError(
                f"MODEL.SEM_SEG_HEAD.CLASS_WEIGHTS has {len(weights)} values but "
                f"MODEL.SEM_SEG_HEAD.NUM_CLASSES is {num_classes}; give {what} or [] for "
                f"uniform weights"
            )
    if not all(math.isfinite(w) and w >= 0 for w in weights):
        raise ValueError(
            f"MODEL.SEM_SEG_HEAD.CLASS_WEIGHTS must be finite and >= 0, got {list(weights)}"
        )
    return weights


def build_sem_seg_loss(
    loss_type: str,
    ignore_value: int,
    class_weights: Sequence[float] | None = None,
    *,
    num_classes: int | None = None,
    dice_smooth: float = 1.0,
    dice_include_background: bool = True,
    dice_ce_weights: Sequence[float] = (1.0, 1.0),
    top_k_percent: float = 1.0,
) -> Callable[[Tensor, Tensor], Tensor]:
    """Build ``loss(logits (N, K, H, W), targets (N, H, W) int64) -> scalar``.

    One-channel logits select the binary mode at call time (see the module docstring), so a
    head built with NUM_CLASSES 1 needs nothing else.

    Args:
        loss_type: one of ``SEM_SEG_LOSSES`` (MODEL.SEM_SEG_HEAD.LOSS_TYPE):
            "cross_entropy", "dice" or "dice_ce".
        ignore_value: class id that does not contribute (MODEL.SEM_SEG_HEAD.IGNORE_VALUE).
        class_weights: K weights, 2 in binary mode (MODEL.SEM_SEG_HEAD.CLASS_WEIGHTS);
            None or [] = uniform.
        num_classes: K (1 = binary), to check ``class_weights`` at construction rather than
            at the first training step.
        dice_smooth, dice_include_background: Dice's s and whether class 0 counts
            (DICE_SMOOTH, DICE_INCLUDE_BACKGROUND).
        dice_ce_weights: [w_ce, w_dice] of "dice_ce" (DICE_CE_WEIGHTS).
        top_k_percent: hard-pixel mining fraction of the CE term (TOP_K_PERCENT); < 1 is an
            error for "dice", which has no CE term.

    :func:`sem_seg_loss_options` reads the options from a config. Weights are kept as plain
    floats and moved to the logits' device on each call, so the callable works wherever the
    model lives and adds nothing to checkpoints.

    Example::

        loss_fn = build_sem_seg_loss("dice_ce", ignore_value=255, dice_ce_weights=[1.0, 0.5])
        loss = loss_fn(torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8)))
    """
    if loss_type not in SEM_SEG_LOSSES:
        raise ValueError(
            f"unknown loss type {loss_type!r}; set MODEL.SEM_SEG_HEAD.LOSS_TYPE to one of "
            f"{sorted(SEM_SEG_LOSSES)}"
        )
    options = {
        "dice_smooth": _check_smooth(dice_smooth),
        "dice_include_background": bool(dice_include_background),
        "dice_ce_weights": _check_pair(dice_ce_weights),
        "top_k_percent": _check_top_k(top_k_percent),
    }
    used = _LOSS_OPTIONS.get(loss_type, ())
    if options["top_k_percent"] < 1.0 and "top_k_percent" not in used:
        raise ValueError(
            f"MODEL.SEM_SEG_HEAD.TOP_K_PERCENT={top_k_percent} (hard-pixel mining) applies to "
            f"the cross-entropy of LOSS_TYPE 'cross_entropy' or 'dice_ce', not {loss_type!r}; "
            f"set TOP_K_PERCENT to 1.0 or change LOSS_TYPE"
        )
    return functools.partial(
        SEM_SEG_LOSSES[loss_type],
        ignore_value=int(ignore_value),
        class_weights=_check_class_weights(class_weights, num_classes),
        **{_OPTION_KEYWORDS[name]: options[name] for name in used},
    )


def sem_seg_loss_options(cfg) -> dict[str, object]:
    """The keyword options of :func:`build_sem_seg_loss` from MODEL.SEM_SEG_HEAD (keys added
    by :func:`seg_plugins.add_seg_plugins_config`). A head's ``from_config`` can forward them::

        build_sem_seg_loss(head.LOSS_TYPE, head.IGNORE_VALUE, head.CLASS_WEIGHTS,
                           num_classes=head.NUM_CLASSES, **sem_seg_loss_options(cfg))
    """
    head = cfg.MODEL.SEM_SEG_HEAD
    return {
        "dice_smooth": float(head.DICE_SMOOTH),
        "dice_include_background": bool(head.DICE_INCLUDE_BACKGROUND),
        "dice_ce_weights": [float(w) for w in head.DICE_CE_WEIGHTS],
        "top_k_percent": float(head.TOP_K_PERCENT),
    }
