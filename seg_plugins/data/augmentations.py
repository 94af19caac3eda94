"""Training augmentations of the semantic mapper that detectron2 v0.6 lacks.

Shapes: image (H, W, C) uint8 or float32, label map (H, W) uint8 / float32 (class indices).

- :class:`PhotometricDistortion`: mmsegmentation's ``PhotoMetricDistortion`` (brightness,
  contrast, saturation, hue; image only).
- :class:`PadToSize`: pad bottom / right up to a fixed size, the label map with the ignore
  value (mmsegmentation's ``Pad`` after ``RandomCrop``).
- :class:`MultiChannelResizeTransform`: ``T.ResizeTransform`` for uint8 images of any channel
  count (INPUT.FORMAT "RAW").
"""

from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np
from detectron2.data import transforms as T
from fvcore.transforms.transform import PadTransform

__all__ = [
    "MultiChannelResizeTransform",
    "PadToSize",
    "PhotometricDistortion",
    "PhotometricTransform",
    "build_pad_to_crop",
    "build_photometric_distortion",
]

_KEY = "INPUT.SEM_SEG.PHOTOMETRIC."
_HSV_FORMATS = {
    "RGB": (cv2.COLOR_RGB2HSV, cv2.COLOR_HSV2RGB),
    "BGR": (cv2.COLOR_BGR2HSV, cv2.COLOR_HSV2BGR),
}


# --------------------------------------------------------------------------- photometric
class PhotometricTransform(T.Transform):
    """Brightness, contrast, saturation and hue changes drawn by
    :class:`PhotometricDistortion`; a step whose value is None is skipped. Segmentation,
    boxes and polygons are unchanged.

    Arithmetic is in float32: uint8 images are clipped to 0..255 after every step (as
    mmsegmentation does) and rounded once at the end (mmsegmentation truncates after every
    step, a bias of up to -1 per step); float images keep their dtype and are not clipped.
    Saturation and hue use OpenCV's float HSV (hue in degrees, so ``hue`` in OpenCV's 0..180
    8-bit units is doubled), which needs non-negative values.
    """

    def __init__(
        self,
        brightness: float | None = None,
        contrast: float | None = None,
        contrast_first: bool = True,
        saturation: float | None = None,
        hue: float | None = None,
        image_format: str = "RGB",
    ):
        """
        Args:
            brightness: added to every value.
            contrast: every value multiplied by it, before (``contrast_first``) or after the
                HSV steps.
            saturation: HSV saturation multiplied by it (then clipped to 0..1).
            hue: added to OpenCV's 8-bit hue (0..180 = one turn), wrapping.
            image_format: channel order of 3-channel images for the HSV steps, "RGB" or "BGR".
        """
        super().__init__()
        if (saturation is not None or hue is not None) and image_format not in _HSV_FORMATS:
            raise ValueError(
                f"saturation / hue need image_format 'RGB' or 'BGR', got {image_format!r}"
            )
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        if img.dtype != np.uint8 and img.dtype.kind != "f":
            raise TypeError(f"expected a uint8 or float image, got dtype {img.dtype}")
        clip = img.dtype == np.uint8
        x = img.astype(np.float32)
        if self.brightness is not None:
            x = self._clip(x + self.brightness, clip)
        if self.contrast is not None and self.contrast_first:
            x = self._clip(x * self.contrast, clip)
        if self.saturation is not None or self.hue is not None:
            x = self._clip(self._hsv(x), clip)
        if self.contrast is not None and not self.contrast_first:
            x = self._clip(x * self.contrast, clip)
        if clip:
            return np.rint(x).astype(np.uint8)
        return x.astype(img.dtype, copy=False)

    @staticmethod
    def _clip(x: np.ndarray, clip: bool) -> np.ndarray:
        return np.clip(x, 0.0, 255.0, out=x) if clip else x

    def _hsv(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 3 or x.shape[2] != 3:
            raise ValueError(
                f"saturation / hue need a 3-channel {self.image_format} image, got shape {x.shape}"
            )
        to_hsv, from_hsv = _HSV_FORMATS[self.image_format]
        hsv = cv2.cvtColor(x, to_hsv)  # float32: H in degrees [0, 360), S in [0, 1], V = max
        if self.saturation is not None:
            hsv[:, :, 1] = np.clip(hsv[:, :, 1] * self.saturation, 0.0, 1.0)
        if self.hue is not None:
            hsv[:, :, 0] = np.mod(hsv[:, :, 0] + 2.0 * self.hue, 360.0)
        return cv2.cvtColor(hsv, from_hsv)

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return segmentation

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords

    def inverse(self) -> T.Transform:
        return T.NoOpTransform()  # as detectron2's ColorTransform: geometry is unchanged


def _check_range(name: str, values: Sequence[float]) -> tuple[float, float]:
    values = tuple(float(v) for v in values)
    if len(values) != 2 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"{_KEY}{name} must be [low, high], got {list(values)}")
    if not 0 <= values[0] <= values[1]:
        raise ValueError(
            f"{_KEY}{name} must be [low, high] with 0 <= low <= high, got {list(values)}; "
            f"[1.0, 1.0] turns the step off"
        )
    return values


class PhotometricDistortion(T.Augmentation):
    """mmsegmentation's ``PhotoMetricDistortion``: brightness, then contrast either before or
    after saturation and hue (a coin flip), each step with probability 0.5. Saturation and
    hue only for 3-channel images of ``image_format`` "RGB" / "BGR"; any other format or
    channel count gets brightness and contrast only.

    Values are in image units: 0..255 for 8-bit images (and INPUT.INTENSITY_NORM "window" /
    "percentile", which rescale to 0..255); scale BRIGHTNESS_DELTA to other ranges.

    Example::

        aug = PhotometricDistortion(brightness_delta=32, image_format="RGB")
        aug_input = T.AugInput(image, sem_seg=label)  # image (H, W, 3) uint8, label (H, W)
        transform = aug(aug_input)  # aug_input.image changed, aug_input.sem_seg unchanged
    """

    def __init__(
        self,
        brightness_delta: float = 32.0,
        contrast_range: Sequence[float] = (0.5, 1.5),
        saturation_range: Sequence[float] = (0.5, 1.5),
        hue_delta: float = 18.0,
        image_format: str = "RGB",
    ):
        """
        Args:
            brightness_delta: add U(-d, d) (INPUT.SEM_SEG.PHOTOMETRIC.BRIGHTNESS_DELTA).
            contrast_range: multiply by U(lo, hi) (.CONTRAST_RANGE).
            saturation_range: multiply HSV saturation by U(lo, hi) (.SATURATION_RANGE).
            hue_delta: add U(-d, d) to OpenCV's 0..180 hue, wrapping (.HUE_DELTA).
            image_format: the images' channel order (INPUT.FORMAT).
        """
        super().__init__()
        brightness_delta, hue_delta = float(brightness_delta), float(hue_delta)
        if not 0 <= brightness_delta < math.inf:
            raise ValueError(f"{_KEY}BRIGHTNESS_DELTA must be >= 0, got {brightness_delta}")
        if not 0 <= hue_delta <= 180:
            raise ValueError(
                f"{_KEY}HUE_DELTA must be in [0, 180] (OpenCV hue units; 180 = one turn), got "
                f"{hue_delta}"
            )
        contrast_range = _check_range("CONTRAST_RANGE", contrast_range)
        saturation_range = _check_range("SATURATION_RANGE", saturation_range)
        self._init(locals())

    @staticmethod
    def _draw(low: float, high: float, off: float) -> float | None:
        """U(low, high) with probability 0.5, else None; None also when the step is a no-op."""
        if np.random.rand() >= 0.5 or low == high == off:
            return None
        return float(np.random.uniform(low, high))

    def get_transform(self, image: np.ndarray) -> T.Transform:
        d = self.brightness_delta
        brightness = self._draw(-d, d, 0.0)
        contrast_first = bool(np.random.rand() < 0.5)
        contrast = self._draw(*self.contrast_range, 1.0)
        hsv = self.image_format in _HSV_FORMATS and image.ndim == 3 and image.shape[2] == 3
        saturation = self._draw(*self.saturation_range, 1.0) if hsv else None
        hue = self._draw(-self.hue_delta, self.hue_delta, 0.0) if hsv else None
        if brightness is contrast is saturation is hue is None:
            return T.NoOpTransform()
        return PhotometricTransform(
            brightness, contrast, contrast_first, saturation, hue, self.image_format
        )


def build_photometric_distortion(cfg) -> PhotometricDistortion | None:
    """:class:`PhotometricDistortion` from INPUT.SEM_SEG.PHOTOMETRIC.* and INPUT.FORMAT;
    None when INPUT.SEM_SEG.PHOTOMETRIC.ENABLED is False. Raises ValueError naming the key
    of a bad value."""
    photo = cfg.INPUT.SEM_SEG.PHOTOMETRIC
    if not photo.ENABLED:
        return None
    aug = PhotometricDistortion(
        brightness_delta=photo.BRIGHTNESS_DELTA,
        contrast_range=photo.CONTRAST_RANGE,
        saturation_range=photo.SATURATION_RANGE,
        hue_delta=photo.HUE_DELTA,
        image_format=cfg.INPUT.FORMAT,
    )
    hsv_on = aug.saturation_range != (1.0, 1.0) or aug.hue_delta > 0
    norm = cfg.INPUT.INTENSITY_NORM.MODE
    if norm == "zscore" and cfg.INPUT.FORMAT in _HSV_FORMATS and hsv_on:
        raise ValueError(
            f"{_KEY}SATURATION_RANGE / HUE_DELTA work in HSV, which needs non-negative "
            f"intensities, but INPUT.INTENSITY_NORM.MODE 'zscore' makes them ~N(0, 1); set "
            f"{_KEY}SATURATION_RANGE [1.0, 1.0] and HUE_DELTA 0 (and BRIGHTNESS_DELTA to "
            f"z-score units, e.g. 0.1), or use INTENSITY_NORM.MODE 'window' / 'percentile'"
        )
    return aug


# --------------------------------------------------------------------------- padding
class _LabelSafePadTransform(PadTransform):
    """fvcore's PadTransform, but a label map whose dtype cannot hold ``seg_pad_value``
    (uint8 and an ignore label of 65535) is widened first: np.pad would wrap it silently."""

    def apply_segmentation(self, img: np.ndarray) -> np.ndarray:
        dtype = np.promote_types(img.dtype, np.min_scalar_type(self.seg_pad_value))
        return super().apply_segmentation(img.astype(dtype, copy=False))


class PadToSize(T.Augmentation):
    """Pad the bottom and right of an image smaller than ``size`` = (h, w) up to it: the
    image with ``pad_value``, the label map with ``seg_pad_value`` (the ignore label, so
    the padding adds no loss). Larger sides are left alone. Works on (H, W) and (H, W, C)
    arrays of any dtype.

    For INPUT.CROP.TYPE "absolute", whose crops are smaller than INPUT.CROP.SIZE on smaller
    images (:func:`build_pad_to_crop`).

    Example::

        pad = PadToSize((512, 512), seg_pad_value=255)
        aug_input = T.AugInput(image, sem_seg=label)  # (300, 400, 3), (300, 400)
        pad(aug_input)  # image (512, 512, 3) zero-padded, label (512, 512) 255-padded
    """

    def __init__(self, size: Sequence[int], pad_value: float = 0.0, seg_pad_value: int = 255):
        """
        Args:
            size: (h, w) to pad up to, positive integers (INPUT.CROP.SIZE).
            pad_value: value of padded image pixels.
            seg_pad_value: value of padded label pixels (the dataset's ignore label).
        """
        super().__init__()
        size = tuple(size)
        if len(size) != 2 or not all(int(s) == s and s > 0 for s in size):
            raise ValueError(f"expected size (h, w) of positive integers, got {list(size)}")
        size = (int(size[0]), int(size[1]))
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> T.Transform:
        h, w = image.shape[:2]
        pad_h, pad_w = max(self.size[0] - h, 0), max(self.size[1] - w, 0)
        if pad_h == pad_w == 0:
            return T.NoOpTransform()
        return _LabelSafePadTransform(
            0,
            0,
            pad_w,
            pad_h,
            orig_w=w,
            orig_h=h,
            pad_value=self.pad_value,
            seg_pad_value=self.seg_pad_value,
        )


def build_pad_to_crop(cfg, ignore_label: int) -> PadToSize | None:
    """:class:`PadToSize` to INPUT.CROP.SIZE, label padded with ``ignore_label``, when
    INPUT.SEM_SEG.PAD_TO_CROP and INPUT.CROP.ENABLED are set and INPUT.CROP.TYPE is
    "absolute"; otherwise None. The "relative*" and "absolute_range" crop types have no
    fixed output size to pad to (their crops also never exceed the image, so padding is
    not needed for them to work); the model pads each batch to its size_divisibility."""
    if not (cfg.INPUT.SEM_SEG.PAD_TO_CROP and cfg.INPUT.CROP.ENABLED):
        return None
    if cfg.INPUT.CROP.TYPE != "absolute":
        return None
    return PadToSize(tuple(cfg.INPUT.CROP.SIZE), pad_value=0.0, seg_pad_value=ignore_label)


# --------------------------------------------------------------------------- resize
class MultiChannelResizeTransform(T.ResizeTransform):
    """detectron2's ResizeTransform for uint8 images of any channel count.

    ``T.ResizeTransform`` resizes uint8 arrays with PIL, which takes (H, W, 2) / (H, W, 4)
    as "LA" / "RGBA" and resamples them with premultiplied alpha (so the other channels
    change where the last one is below 255) and rejects 5 or more channels. Such images
    (INPUT.FORMAT "RAW") are resized here one channel at a time as PIL "L" images, which
    is what PIL does for each band of an RGB image; everything else is resized as by
    ``T.ResizeTransform``.
    """

    def apply_image(self, img: np.ndarray, interp=None) -> np.ndarray:
        if img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] not in (1, 3):
            resize = super().apply_image  # bound here: a comprehension has no zero-arg super
            return np.stack([resize(img[:, :, c], interp) for c in range(img.shape[2])], axis=2)
        return super().apply_image(img, interp)

    def inverse(self) -> T.Transform:
        return MultiChannelResizeTransform(self.new_h, self.new_w, self.h, self.w, self.interp)
