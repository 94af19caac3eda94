"""One image's confusion counts: class ids from logits, then one bincount.

Shapes: K classes (channels); H, W an image's height and width.

Two implementations of the same numbers. On a GPU (or any non-CPU device) everything runs
in PyTorch on the prediction's device (:func:`argmax_channels_torch`,
:func:`image_confusion_torch`). On the CPU they run in NumPy, because PyTorch's CPU
``argmax(dim=0)`` over (K, H, W) logits is slow: 0.33 s of CPU time for 19x1024x2048 on a
2-core EPYC, against 0.027 s for :func:`argmax_channels_numpy` (per-band max, then the
first channel reaching it); the argmax is the main cost of an evaluation
(docs/benchmarks_evaluator.md).

Ignored pixels: the ground truth indexes the rows of a per-image histogram with one row per
possible ground-truth value (256 for a uint8 label map), so ignored pixels fall into their
own row, which is dropped, and a value that is neither a class nor the ignore label is found
in the rows beyond K-1 without a separate pass over the image.
"""

from __future__ import annotations

from concurrent.futures import Executor

import numpy as np
import torch

__all__ = [
    "argmax_channels_numpy",
    "argmax_channels_torch",
    "image_confusion_numpy",
    "image_confusion_torch",
]

# Pixels per band in argmax_channels_numpy: 64 rows of 2048 (10 MB of 19 float32 channels)
# stay in a 32 MB L3 cache between the max and the comparisons (16 to 128 rows measured
# within 10% of each other).
_BAND_PIXELS = 64 * 2048


def argmax_channels_numpy(
    logits: np.ndarray, pool: Executor | None = None, chunks: int = 1
) -> np.ndarray:
    """Index of the first maximum over channels, equal to ``torch.argmax(dim=0)``.

    Band by band (cache-sized): the max over channels, then, per channel c, the pixels where
    c reaches it score K - c; the highest score is the lowest such channel. Every step is
    a plain vectorised ufunc (``np.copyto(where=)`` would be 5x slower; a running max with
    ``np.putmask`` or PyTorch's ``masked_fill_`` 3x slower, measured).

    Args:
        logits: float array of shape (K, H, W).
        pool: threads to share the rows with (NumPy's ufuncs release the GIL); the result
            does not depend on it. None = this thread only.
        chunks: row ranges handed to ``pool`` (about 2 per thread, so that a thread busy
            with something else does not hold back the end); at most one per band.

    Returns:
        (H, W) array, uint8 if K < 256 (uint16 / int64 for more classes).

    Raises:
        FloatingPointError: some logit is NaN (argmax would be meaningless).
    """
    k, h, w = logits.shape
    dtype = np.dtype(np.uint8 if k < 256 else np.uint16 if k < 65536 else np.int64)
    out = np.empty((h, w), dtype=dtype)
    rows = max(1, min(h, _BAND_PIXELS // max(w, 1)))
    chunks = min(chunks, -(-h // rows)) if pool is not None else 1
    if chunks <= 1:
        _argmax_rows(logits, out, 0, h, rows)
        return out
    bounds = np.linspace(0, h, chunks + 1).round().astype(int).tolist()
    futures = [
        pool.submit(_argmax_rows, logits, out, r0, r1, rows)
        for r0, r1 in zip(bounds[:-1], bounds[1:])
    ]
    for future in futures:
        future.result()  # re-raises a chunk's FloatingPointError
    return out


def _argmax_rows(logits: np.ndarray, out: np.ndarray, start: int, stop: int, rows: int) -> None:
    """:func:`argmax_channels_numpy` of rows [start, stop), written into ``out``."""
    k, _, w = logits.shape
    dtype = out.dtype
    best = np.empty((rows, w), dtype=logits.dtype)
    is_max = np.empty((rows, w), dtype=bool)
    score, tmp = np.empty((rows, w), dtype=dtype), np.empty((rows, w), dtype=dtype)
    for r0 in range(start, stop, rows):
        band = logits[:, r0 : min(r0 + rows, stop)]
        n = band.shape[1]
        m, eq, s, t = best[:n], is_max[:n], score[:n], tmp[:n]
        # max over channels as K-1 binary maxima: equally fast alone, and unlike the
        # reduction np.max(axis=0), which holds the GIL, they run in parallel in threads
        np.maximum(band[0], band[min(1, k - 1)], out=m)
        for c in range(2, k):
            np.maximum(m, band[c], out=m)
        if np.isnan(m).any():
            raise FloatingPointError("the prediction contains NaN logits")
        s.fill(0)
        for c in range(k):
            np.equal(band[c], m, out=eq)
            np.multiply(eq.view(np.uint8), dtype.type(k - c), out=t)
            np.maximum(s, t, out=s)
        np.subtract(dtype.type(k), s, out=out[r0 : r0 + n])


def argmax_channels_torch(logits: torch.Tensor) -> torch.Tensor:
    """``logits.argmax(dim=0)`` of a (K, H, W) tensor, raising on NaN like the NumPy path."""
    if bool(torch.isnan(logits).any()):
        raise FloatingPointError("the prediction contains NaN logits")
    return logits.argmax(dim=0)


def _label_error(gt_file: str, values, k: int, ignore_label: int) -> ValueError:
    binary = " (binary: 0 = background, 1 = foreground)" if k == 2 else ""
    return ValueError(
        f"{gt_file}: label values {sorted(values)[:10]} are neither classes 0..{k - 1}{binary} "
        f"nor the ignore label {ignore_label}; fix the labels or the dataset's ignore_label"
    )


def _rows_and_labels(gt: np.ndarray, k: int, ignore_label: int, gt_file: str):
    """(number of histogram rows, label map to index them, row of the ignore label). A
    uint8 map is used as is (256 rows); a wider one is checked here and its ignored pixels
    moved to row K."""
    if gt.dtype == np.uint8:
        return max(256, k), gt, ignore_label
    outside = (gt < 0) | (gt >= k)
    if outside.any():
        values = set(np.unique(gt[outside]).tolist()) - {ignore_label}
        if values:
            raise _label_error(gt_file, values, k, ignore_label)
        gt = np.where(outside, k, gt)
    return k + 1, gt, k if ignore_label >= k or ignore_label < 0 else ignore_label


def _checked(counts, k: int, ignore_row: int, ignore_label: int, gt_file: str):
    """The (K, K) block of a (rows, K) per-image histogram, after checking that the rows
    beyond K-1 (ground-truth values that are not classes) hold only the ignored pixels."""
    extra = counts[k:].sum(1)
    if 0 <= ignore_row - k < len(extra):
        extra[ignore_row - k] = 0
    if bool((extra > 0).any()):
        values = (np.flatnonzero(np.asarray(extra.tolist())) + k).tolist()
        raise _label_error(gt_file, values, k, ignore_label)
    conf = counts[:k]
    if 0 <= ignore_label < k:  # an ignore label that is also a class id: drop its row
        conf[ignore_label] = 0
    return conf


def image_confusion_numpy(
    pred: np.ndarray, gt: np.ndarray, k: int, ignore_label: int, gt_file: str
) -> np.ndarray:
    """(K, K) int64 counts, rows = ground truth, of (H, W) class ids ``pred`` (< K) against
    the (H, W) label map ``gt``. Raises ValueError naming ``gt_file`` on a label value that
    is neither a class nor ``ignore_label``."""
    rows, labels, ignore_row = _rows_and_labels(gt, k, ignore_label, gt_file)
    dtype = np.uint16 if rows * k <= np.iinfo(np.uint16).max else np.int64
    index = labels.astype(dtype)
    index *= k
    np.add(index, pred, out=index, casting="unsafe")  # pred < K, so index < rows * K
    counts = np.bincount(index.ravel(), minlength=rows * k).reshape(rows, k)
    return _checked(counts, k, ignore_row, ignore_label, gt_file)


def image_confusion_torch(
    pred: torch.Tensor, gt: np.ndarray, k: int, ignore_label: int, gt_file: str
) -> torch.Tensor:
    """Same as :func:`image_confusion_numpy`, on ``pred``'s device: (K, K) int64 tensor."""
    rows, labels, ignore_row = _rows_and_labels(gt, k, ignore_label, gt_file)
    if labels.dtype != np.uint8:  # torch has few uint16/uint32 kernels
        labels = labels.astype(np.int64)
    # out of place: on the CPU, from_numpy(...).long() may share memory with ``gt``
    index = torch.from_numpy(labels).to(pred.device).long() * k + pred
    counts = torch.bincount(index.view(-1), minlength=rows * k).view(rows, k)
    return _checked(counts, k, ignore_row, ignore_label, gt_file)
