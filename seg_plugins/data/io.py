"""Reading images and semantic label maps, with errors that name the file.

Shapes: (H, W) for a label map of class indices, (H, W, C) for an image.

A label map is read *raw*: a palette ("P") PNG gives its palette indices, never the colours
the palette maps them to (``Image.convert("L")`` would turn index 3 of a palette into the
grey level of its colour, silently changing the classes); 16-bit PNGs keep their values.

Images of more than 8 bits per sample (16-bit PNG / TIFF, 32-bit float TIFF: CT, MRI,
microscopy) are read with their values intact as float32 -- detectron2's ``read_image``
converts them with PIL, which clips to 0..255 (mode "L") or truncates 48-bit PNGs to 8 bits,
a silent wrong answer. OpenCV decodes them instead (PIL has no 16-bit multi-channel modes).
"""

from __future__ import annotations

import cv2
import numpy as np
from detectron2.data import detection_utils
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["bits_per_sample", "read_image", "read_label"]

# PIL modes that hold one integer per pixel, i.e. a class index.
_INDEX_MODES = ("1", "L", "P", "I", "I;16", "I;16L", "I;16B", "I;16N")
# Errors PIL raises on missing, unreadable, truncated or corrupt files (PNG's chunk
# parser raises SyntaxError on some corrupt headers).
_READ_ERRORS = (OSError, ValueError, SyntaxError, UnidentifiedImageError)


def _read_error(path: str, what: str, err: Exception) -> OSError:
    """The error to raise instead of ``err``: same kind, message names the file."""
    message = f"cannot read {what} {path!r}: {err}"
    if isinstance(err, FileNotFoundError):
        return FileNotFoundError(message)
    return OSError(message + " (is the file truncated or not an image?)")


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TIFF_BITS_PER_SAMPLE = 258


def bits_per_sample(path: str) -> int:
    """Bits per sample of an image, from its header only (PNG: IHDR; TIFF: tag 258; any
    other format and PIL's 16/32-bit modes: from the PIL mode)."""
    try:
        with open(path, "rb") as f:
            head = f.read(26)
        if head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR":
            return head[24]
        with Image.open(path) as img:
            tags = getattr(img, "tag_v2", None)
            if tags is not None and _TIFF_BITS_PER_SAMPLE in tags:
                bits = tags[_TIFF_BITS_PER_SAMPLE]
                return int(max(bits) if isinstance(bits, tuple) else bits)
            return 32 if img.mode in ("I", "F") else 16 if img.mode.startswith("I;16") else 8
    except _READ_ERRORS as err:
        raise _read_error(path, "image", err) from err


def _read_high_depth(path: str, format: str | None) -> np.ndarray:
    """A > 8-bit image as float32 of shape (H, W, C), values unchanged, channels in
    ``format`` order ("L" needs a 1-channel file; "RGB" / "BGR" a 3-channel one)."""
    image = cv2.imread(path, cv2.IMREAD_UNCHANGED)  # BGR(A) order, native depth
    if image is None:
        raise OSError(f"cannot read image {path!r}: OpenCV could not decode it")
    if image.ndim == 2:
        image = image[:, :, None]
    channels = image.shape[2]
    if format == "L" and channels != 1:
        raise ValueError(
            f"image {path!r} has {channels} channels of {image.dtype} and INPUT.FORMAT is 'L': "
            f"a > 8-bit image is not converted to grey (that would mix its raw values); save "
            f"one channel, or set INPUT.FORMAT to 'BGR' / 'RGB' with {channels} PIXEL_MEAN values"
        )
    if format in ("RGB", "BGR"):
        if channels == 4:
            image = image[:, :, :3]  # alpha dropped, as detectron2 does for 8-bit RGBA
        if image.shape[2] != 3:
            raise ValueError(
                f"image {path!r} has {channels} channel(s) of {image.dtype} and INPUT.FORMAT "
                f"is {format!r}; set INPUT.FORMAT 'L' (1 channel) and one PIXEL_MEAN value"
            )
        if format == "RGB":
            image = image[:, :, ::-1]
    return np.ascontiguousarray(image, dtype=np.float32)


def read_image(path: str, format: str | None = None) -> np.ndarray:
    """Read an image with :func:`detectron2.data.detection_utils.read_image` (EXIF
    orientation applied; ``format`` is "RGB", "BGR", "L", ... as there); images of more than
    8 bits per sample with OpenCV, values unchanged (module docstring).

    Returns:
        np.ndarray of shape (H, W, C) (or (H, W, 1) for "L"), writable: uint8, or float32
        for > 8-bit images.

    Raises:
        FileNotFoundError / OSError naming ``path`` when it is missing or unreadable;
        ValueError when a > 8-bit image's channels do not fit ``format``.
    """
    if bits_per_sample(path) > 8:
        return _read_high_depth(path, format)
    try:
        image = detection_utils.read_image(path, format=format)
    except _READ_ERRORS as err:
        raise _read_error(path, "image", err) from err
    # np.asarray(PIL image) is read-only; torch.from_numpy (used by some fvcore transforms)
    # warns on read-only arrays.
    return np.require(image, requirements="W")


def read_label(path: str) -> np.ndarray:
    """Read a semantic label map of class indices, raw (no colour conversion).

    Accepted PIL modes: "P" (palette indices), "L" and "1" (values), "I;16*" and "I"
    (16/32-bit integers). EXIF orientation is applied, as
    :func:`detectron2.data.detection_utils.read_image` does for the image, so both stay
    aligned.

    Returns:
        np.ndarray of shape (H, W), writable: dtype uint8 when every value fits in 0..255 (the usual
        case, and what detectron2's own ``.astype("uint8")`` gives), otherwise int32.

    Raises:
        ValueError: the file is a colour (RGB/RGBA/...) or float image, which is not a map of
            class indices.
        FileNotFoundError / OSError naming ``path`` when it is missing or unreadable.
    """
    try:
        with Image.open(path) as img:
            img.load()  # decode now, so a truncated file fails here and names the path
            img = ImageOps.exif_transpose(img)
    except _READ_ERRORS as err:
        raise _read_error(path, "label map", err) from err
    if img.mode not in _INDEX_MODES:
        raise ValueError(
            f"label map {path!r} has PIL mode {img.mode!r} ({len(img.getbands())} "
            f"channel(s)), but a label map must be a single-channel image of integer class "
            f"indices (mode 'L' or 'P' for <= 256 classes, 'I;16' for more). If it is "
            f"colour-coded, map each colour to its class index and save the indices as a "
            f"single-channel PNG, e.g. Image.fromarray(index_array.astype(np.uint8)).save(...)."
        )
    label = np.array(img)  # a writable copy (np.asarray of a PIL image is read-only)
    if label.dtype == np.uint8:
        return label
    if label.dtype == bool:  # mode "1"
        return label.astype(np.uint8)
    label = label.astype(np.int32)  # also makes big-endian "I;16B" native
    if label.size and label.min() >= 0 and label.max() <= 255:
        return label.astype(np.uint8)
    return label
