"""Inference modes of the semantic models: whole image, sliding window, test-time augmentation.

Shape shorthand: C image channels, K classes (K = 1 in binary mode: one foreground logit),
H x W an image, h x w a window, B windows in one forward pass.

Every function here works on ONE normalised image of shape (C, H, W) and a ``logits_fn``
that maps a batch of shape (B, C, h, w) -- h, w multiples of the backbone's
``size_divisibility`` -- to logits of shape (B, K, h, w) (backbone + head in eval). They
return scores of shape (K, H, W), float32, at the image's resolution:

- whole image (:func:`whole_inference`): the image padded with zeros to a multiple of
  ``size_divisibility`` (as detectron2's ImageList pads a batch) in one pass; memory grows
  with H x W. The meta-architecture passes 1 for heads that resize their logits to any
  input size (all but FCN-8s on VGG), so nothing is padded then.
- sliding window (:func:`slide_inference`; mmsegmentation's "slide" mode, MONAI's
  sliding_window_inference): windows of ``crop_size`` every ``stride`` pixels, the last
  window of a row / column shifted inside the image, B windows per pass; the logits of
  overlapping windows are averaged, uniformly or with Gaussian weights that favour window
  centres (nnU-Net, Isensee et al. 2021, https://arxiv.org/abs/1809.10486: sigma = 1/8 of
  the window). Memory: the image, the (K, H, W) accumulator, an (H, W) weight sum and B
  windows' activations -- bounded by the window, not the image.
- test-time augmentation (:meth:`SemSegInference.__call__`): the image resized by every
  ratio in ``scales`` (and horizontally flipped if ``flip``), each view run through the
  whole / slide mode, its logits un-flipped and resized back to (H, W); the views' class
  probabilities (softmax; sigmoid in binary mode) are averaged.

What comes back is always logits, as detectron2's semantic contract says: without TTA the
model's own (window-averaged) logits; with TTA (more than one view) ``log(p)`` of the
averaged probabilities p (softmax of it is p, argmax the most probable class) and, in
binary mode, ``logit(p) = log(p) - log(1 - p)`` of the averaged foreground probability
(sigmoid of it is p, so the evaluator's ``sigmoid(x) > threshold`` thresholds p).
"""

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = [
    "MODES",
    "WEIGHTINGS",
    "SemSegInference",
    "average_probabilities",
    "axis_weights",
    "slide_inference",
    "whole_inference",
    "window_starts",
    "window_weights",
]

LogitsFn = Callable[[Tensor], Tensor]  # (B, C, h, w) normalised -> (B, K, h, w) logits
MODES = ("whole", "slide")
WEIGHTINGS = ("uniform", "gaussian")
# Smallest Gaussian window weight (the centre weighs 1; each side's 1-D weight is floored at
# its square root): pixels that only window borders cover (image corners) keep a weight sum
# >= this, so the division stays well conditioned.
GAUSSIAN_FLOOR = 1e-3


def _ceil_to(value: int, divisor: int) -> int:
    return -(-value // divisor) * divisor


def _pad_to(image: Tensor, height: int, width: int) -> Tensor:
    """Zero-pad an image of shape (C, H, W) at the bottom / right to at least (height, width)."""
    pad_h, pad_w = max(height - image.shape[-2], 0), max(width - image.shape[-1], 0)
    return F.pad(image, (0, pad_w, 0, pad_h)) if pad_h or pad_w else image


def _run(logits_fn: LogitsFn, batch: Tensor) -> Tensor:
    """logits_fn on a batch of shape (B, C, h, w); checks it returns (B, K, h, w)."""
    logits = logits_fn(batch)
    expected = (len(batch), *batch.shape[-2:])
    if logits.dim() != 4 or (logits.shape[0], *logits.shape[-2:]) != expected:
        raise ValueError(
            f"the model returned logits of shape {tuple(logits.shape)} for an input of shape "
            f"{tuple(batch.shape)}; its head must return (B, K, h, w) at the input's h, w"
        )
    return logits.float()


def whole_inference(logits_fn: LogitsFn, image: Tensor, size_divisibility: int = 1) -> Tensor:
    """Logits of shape (K, H, W) from one pass over the image of shape (C, H, W), zero-padded
    to multiples of ``size_divisibility`` (and cropped back)."""
    height, width = image.shape[-2:]
    div = max(int(size_divisibility), 1)
    padded = _pad_to(image, _ceil_to(height, div), _ceil_to(width, div))
    return _run(logits_fn, padded[None])[0, :, :height, :width]


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows of size ``window`` every ``stride`` along ``length`` (>=
    window) pixels; the last one is shifted to end at the border, so all are covered."""
    if not 0 < window <= length or stride < 1:
        raise ValueError(f"window {window}, length {length}, stride {stride}: need 0 < w <= l")
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


def axis_weights(n: int, weighting: str, sigma_scale: float = 0.125) -> Tensor:
    """Weights of shape (n,) along one window side: ones ("uniform") or a Gaussian centred
    on the side, sigma = ``sigma_scale`` x n, peak 1, floored at sqrt(``GAUSSIAN_FLOOR``)."""
    if weighting == "uniform":
        return torch.ones(n)
    offset = torch.arange(n, dtype=torch.float64) - (n - 1) / 2
    gauss = torch.exp(-0.5 * (offset / (sigma_scale * n)) ** 2)
    return (gauss / gauss.max()).clamp_(min=math.sqrt(GAUSSIAN_FLOOR)).float()


def window_weights(size: Sequence[int], weighting: str, sigma_scale: float = 0.125) -> Tensor:
    """Weights of shape (h, w) of a window's logits: the outer product of the two sides'
    :func:`axis_weights` (ones, or a Gaussian with peak 1 and minimum >= GAUSSIAN_FLOOR)."""
    rows, cols = (axis_weights(n, weighting, sigma_scale) for n in size)
    return rows[:, None] * cols[None, :]


def _coverage(length: int, starts: Sequence[int], weights: Tensor) -> Tensor:
    """Sum of shape (length,) of 1-D window ``weights`` placed at ``starts``."""
    total = weights.new_zeros(length)
    for start in starts:
        total[start : start + len(weights)] += weights
    return total


def slide_inference(
    logits_fn: LogitsFn,
    image: Tensor,
    crop_size: Sequence[int],
    stride: Sequence[int],
    *,
    size_divisibility: int = 1,
    weighting: str = "uniform",
    gaussian_sigma_scale: float = 0.125,
    window_batch_size: int = 1,
) -> Tensor:
    """Logits of shape (K, H, W) of the image of shape (C, H, W), averaged over windows.

    A window is ``crop_size`` (h, w), or the image side rounded up to ``size_divisibility``
    where that is smaller (then the image is zero-padded to it, exactly as whole-image
    inference pads it: a window covering the image IS whole-image inference). Windows start
    every ``stride`` (<= crop_size) pixels, the last one shifted inside the image; they run
    ``window_batch_size`` at a time. Overlaps are averaged with :func:`window_weights`. The
    windows form a grid (row starts x column starts) and the weights are separable, so the
    weight sum is the outer product of two 1-D sums: no (H, W) buffer besides the output.
    """
    _check_crop_divisible(crop_size, size_divisibility)
    height, width = image.shape[-2:]
    div = max(int(size_divisibility), 1)
    window = tuple(min(c, _ceil_to(n, div)) for c, n in zip(crop_size, (height, width)))
    image = _pad_to(image, *window)
    starts = [window_starts(n, w, s) for n, w, s in zip(image.shape[-2:], window, stride)]
    axes = [axis_weights(n, weighting, gaussian_sigma_scale).to(image.device) for n in window]
    weights = None if weighting == "uniform" else axes[0][:, None] * axes[1][None, :]
    boxes = [(y, x) for y in starts[0] for x in starts[1]]
    out = None
    for first in range(0, len(boxes), window_batch_size):
        chunk = boxes[first : first + window_batch_size]
        crops = torch.stack([image[:, y : y + window[0], x : x + window[1]] for y, x in chunk])
        logits = _run(logits_fn, crops)
        if out is None:
            out = logits.new_zeros((logits.shape[1], *image.shape[-2:]))
        _accumulate(out, logits, chunk, weights)
    out.div_(_coverage(image.shape[-2], starts[0], axes[0])[:, None])
    out.div_(_coverage(image.shape[-1], starts[1], axes[1])[None, :])
    return out[:, :height, :width]


def _accumulate(out: Tensor, logits: Tensor, boxes, weights: Optional[Tensor]) -> None:
    """Add window logits of shape (B, K, h, w), times ``weights`` of shape (h, w) (None = 1),
    to ``out`` of shape (K, H, W) at their ``boxes`` (B (y, x) corners)."""
    h, w = logits.shape[-2:]
    for (y, x), window in zip(boxes, logits):
        out[:, y : y + h, x : x + w] += window if weights is None else window * weights


def average_probabilities(logits: Iterable[Tensor]) -> Tensor:
    """Average the class probabilities of several predictions of one image.

    Args:
        logits: predictions of shape (K, H, W) (softmax over K) or (1, H, W) (binary:
            sigmoid); consumed one at a time, so only one is held in memory.

    Returns:
        ``log(mean p)`` of shape (K, H, W), or ``logit(mean p)`` of shape (1, H, W) in
        binary mode: logits whose softmax / sigmoid is the averaged probability. Computed in
        log space (``logaddexp``), so probabilities that underflow float32 stay finite.
    """
    total, count, binary = None, 0, False
    for view in logits:
        binary = view.shape[0] == 1
        # binary: log-probabilities of [background, foreground] = logsigmoid([-x, x])
        log_p = F.logsigmoid(torch.cat([-view, view])) if binary else F.log_softmax(view, 0)
        total = log_p if total is None else torch.logaddexp(total, log_p)
        count += 1
    if total is None:
        raise ValueError("average_probabilities needs at least one prediction")
    if binary:
        return total[1:] - total[:1]  # log(sum p) - log(sum (1 - p)): the count cancels
    return total - math.log(count)


def _check_crop_divisible(crop_size: Sequence[int], size_divisibility: int) -> None:
    div = max(int(size_divisibility), 1)
    if any(c % div for c in crop_size):
        raise ValueError(
            f"TEST.SEM_SEG.CROP_SIZE={list(crop_size)} is not a multiple of the backbone's "
            f"size_divisibility {div}; set it to {[_ceil_to(c, div) for c in crop_size]}"
        )


def _pair(value, key: str) -> tuple[int, int]:
    values = tuple(int(v) for v in value)
    if len(values) != 2 or min(values) < 1:
        raise ValueError(f"{key}={list(value)}; give two positive integers [height, width]")
    return values


@dataclass(frozen=True)
class SemSegInference:
    """How a semantic model predicts one image at test time (the TEST.SEM_SEG config node).

    Attributes (config key in brackets):
        mode: "whole" or "slide" (MODE).
        crop_size, stride: slide windows' (h, w) and step (CROP_SIZE, STRIDE).
        weighting: "uniform" or "gaussian" averaging of overlaps (WEIGHTING).
        gaussian_sigma_scale: Gaussian sigma / window side (GAUSSIAN_SIGMA_SCALE).
        window_batch_size: windows per forward pass (WINDOW_BATCH_SIZE).
        flip: add horizontally flipped views (FLIP).
        scales: resize ratios of the views; (1.0,) = no rescaling (SCALES).

    ``__call__(logits_fn, image, size_divisibility)`` maps a normalised image of shape
    (C, H, W) to logits of shape (K, H, W) (see the module docstring).

    Example::

        inference = SemSegInference(mode="slide", crop_size=(64, 64), stride=(48, 48),
                                    weighting="gaussian", flip=True, scales=(0.75, 1.0))
        conv = torch.nn.Conv2d(3, 4, 1)
        logits = inference(conv, torch.randn(3, 100, 150), size_divisibility=16)
        assert logits.shape == (4, 100, 150)
    """

    mode: str = "whole"
    crop_size: tuple[int, int] = (512, 512)
    stride: tuple[int, int] = (341, 341)
    weighting: str = "uniform"
    gaussian_sigma_scale: float = 0.125
    window_batch_size: int = 1
    flip: bool = False
    scales: tuple[float, ...] = (1.0,)

    def __post_init__(self):
        crop = _pair(self.crop_size, "TEST.SEM_SEG.CROP_SIZE")
        stride = _pair(self.stride, "TEST.SEM_SEG.STRIDE")
        object.__setattr__(self, "crop_size", crop)
        object.__setattr__(self, "stride", stride)
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))
        self._check_choices()
        if stride[0] > crop[0] or stride[1] > crop[1]:
            raise ValueError(
                f"TEST.SEM_SEG.STRIDE={list(stride)} exceeds TEST.SEM_SEG.CROP_SIZE="
                f"{list(crop)}: windows would leave gaps; set STRIDE <= CROP_SIZE (e.g. 2/3 of it)"
            )
        if not self.scales or min(self.scales) <= 0:
            raise ValueError(
                f"TEST.SEM_SEG.SCALES={list(self.scales)}; give positive resize ratios, "
                f"[1.0] for none"
            )
        if self.gaussian_sigma_scale <= 0 or self.window_batch_size < 1:
            raise ValueError(
                f"TEST.SEM_SEG.GAUSSIAN_SIGMA_SCALE={self.gaussian_sigma_scale} and "
                f"WINDOW_BATCH_SIZE={self.window_batch_size} must be > 0 and >= 1 (e.g. 0.125, 1)"
            )

    def _check_choices(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"TEST.SEM_SEG.MODE={self.mode!r}; use one of {list(MODES)}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(
                f"TEST.SEM_SEG.WEIGHTING={self.weighting!r}; use one of {list(WEIGHTINGS)}"
            )

    @classmethod
    def from_config(cls, cfg) -> "SemSegInference":
        node = cfg.TEST.SEM_SEG
        return cls(
            mode=node.MODE,
            crop_size=tuple(node.CROP_SIZE),
            stride=tuple(node.STRIDE),
            weighting=node.WEIGHTING,
            gaussian_sigma_scale=node.GAUSSIAN_SIGMA_SCALE,
            window_batch_size=node.WINDOW_BATCH_SIZE,
            flip=bool(node.FLIP),
            scales=tuple(node.SCALES),
        )

    @property
    def is_plain(self) -> bool:
        """Whole image, one view: the model's own batched forward does exactly this."""
        return self.mode == "whole" and not self.flip and self.scales == (1.0,)

    def check_size_divisibility(self, size_divisibility: int) -> None:
        """Raise unless slide windows are multiples of the backbone's size_divisibility."""
        if self.mode == "slide":
            _check_crop_divisible(self.crop_size, size_divisibility)

    def __call__(self, logits_fn: LogitsFn, image: Tensor, size_divisibility: int = 1) -> Tensor:
        """Logits of shape (K, H, W) of the normalised image of shape (C, H, W)."""
        views = [(s, f) for s in self.scales for f in ((False, True) if self.flip else (False,))]
        div = size_divisibility
        predictions = (self.predict_view(logits_fn, image, s, f, div) for s, f in views)
        if len(views) == 1:
            return next(predictions)  # one view: the model's logits, no probability round trip
        return average_probabilities(predictions)

    def predict_view(
        self, logits_fn: LogitsFn, image: Tensor, scale: float, flip: bool, size_divisibility: int
    ) -> Tensor:
        """Logits of shape (K, H, W) of the image of shape (C, H, W) resized by ``scale`` and
        flipped if ``flip``, run through the mode, un-flipped and resized back to (H, W)."""
        size = tuple(image.shape[-2:])
        view = image
        if scale != 1.0:
            scaled = tuple(max(1, round(n * scale)) for n in size)
            view = F.interpolate(
                image[None], size=scaled, mode="bilinear", align_corners=False, antialias=scale < 1
            )[0]
        if flip:
            view = view.flip(-1)
        logits = self.run_mode(logits_fn, view, size_divisibility)
        if flip:
            logits = logits.flip(-1)
        if logits.shape[-2:] != size:
            logits = F.interpolate(logits[None], size=size, mode="bilinear", align_corners=False)[0]
        return logits

    def run_mode(self, logits_fn: LogitsFn, image: Tensor, size_divisibility: int) -> Tensor:
        """Logits of shape (K, H, W) of the image of shape (C, H, W), whole or sliding."""
        if self.mode == "whole":
            return whole_inference(logits_fn, image, size_divisibility)
        return slide_inference(
            logits_fn,
            image,
            self.crop_size,
            self.stride,
            size_divisibility=size_divisibility,
            weighting=self.weighting,
            gaussian_sigma_scale=self.gaussian_sigma_scale,
            window_batch_size=self.window_batch_size,
        )
