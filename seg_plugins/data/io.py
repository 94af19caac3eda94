"""Reading images and semantic label maps, with errors that name the file.

Shapes: (H, W) for a label map of class indices, (H, W, C) for an image.

A label map is read *raw*: a palette ("P") PNG gives its palette indices, never the colours
the palette maps them to (``Image.convert("L")`` would turn index 3 of a palette into the
grey level of its colour, silently changing the classes); 16-bit PNGs keep their values.

Images of more than 8 bits per sample (16-bit PNG / TIFF, 32-bit float TIFF: CT, MRI,
microscopy) are read with their values intact as float32 -- detectron2's ``read_image``
converts them with PIL, which clips to 0..255 (mode "L") or truncates 48-bit PNGs to 8 bits,
a silent wrong answer. OpenCV decodes them instead (PIL has no 16-bit multi-channel modes).

``INPUT.FORMAT "RAW"`` reads every channel as stored, with no colour conversion (multi-spectral,
RGB + depth / NIR, multi-sequence MRI): image files through OpenCV (colour files in file order
R, G, B(, A), not OpenCV's B, G, R), ``.npy`` arrays of shape (H, W) or (H, W, C) as saved. The
model's input channels are ``len(MODEL.PIXEL_MEAN)``; :func:`check_channels` compares them.
"RAW" is no PIL mode, so it cannot be mistaken for one of the PIL / detectron2 formats
("L", "RGB", "BGR", "RGBA", ...), which all convert colours.
"""

from __future__ import annotations

import os

import cv2
import numpy as np
from detectron2.data import detection_utils
from PIL import Image, ImageMode, ImageOps, UnidentifiedImageError

__all__ = [
    "MAX_SEGMENT_ID",
    "RAW_FORMAT",
    "bits_per_sample",
    "check_channels",
    "check_format_channels",
    "format_channels",
    "id2rgb",
    "image_size",
    "num_channels",
    "read_image",
    "read_label",
    "read_panoptic_ids",
    "rgb2id",
]

# INPUT.FORMAT for "every channel as stored, no colour conversion" (module docstring).
RAW_FORMAT = "RAW"
# Channels of the formats that convert colours (detectron2's read_image; other PIL modes:
# their bands).
_FORMAT_CHANNELS = {"L": 1, "RGB": 3, "BGR": 3, "YUV-BT.601": 3}

# PIL modes that hold one integer per pixel, i.e. a class index.
_INDEX_MODES = ("1", "L", "P", "I", "I;16", "I;16L", "I;16B", "I;16N")
# Errors PIL raises on missing, unreadable, truncated or corrupt files (PNG's chunk
# parser raises SyntaxError on some corrupt headers; a corrupt header can also claim more
# pixels than PIL.Image.MAX_IMAGE_PIXELS: DecompressionBombError, found by the fuzz tests).
_READ_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    UnidentifiedImageError,
    Image.DecompressionBombError,
    # Pillow's TIFF decoder on corrupted tag types: a RATIONAL or ASCII StripOffsets gives
    # "'IFDRational' object cannot be interpreted as an integer" / "'<' not supported
    # between 'str' and 'int'" (found by make fuzz, FUZZ_SEED=3). The try blocks that catch
    # these hold PIL calls only.
    TypeError,
)


def _read_error(path: str, what: str, err: Exception) -> OSError:
    """The error to raise instead of ``err``: same kind, message names the file."""
    message = f"cannot read {what} {path!r}: {err}"
    if isinstance(err, FileNotFoundError):
        return FileNotFoundError(message)
    return OSError(message + " (is the file truncated or not an image?)")


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_GREY_ALPHA = 4  # IHDR colour type of a grey + alpha PNG
_TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*")
_TIFF_WIDTH, _TIFF_LENGTH, _TIFF_BITS_PER_SAMPLE = 256, 257, 258
_ORIENTATION = 0x0112  # EXIF / TIFF tag
# numpy views that apply EXIF orientation k (2..8), as PIL's ImageOps.exif_transpose does.
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


def _is_npy(path: str) -> bool:
    return str(path).lower().endswith(".npy")


def _decode(path: str) -> np.ndarray:
    """The image as OpenCV decodes it with IMREAD_UNCHANGED: every channel, native depth,
    B, G, R(, A) order, EXIF orientation not applied (a TIFF's Orientation tag is)."""
    try:
        with open(path, "rb") as f:
            data = np.frombuffer(f.read(), np.uint8)
    except OSError as err:
        raise _read_error(path, "image", err) from err
    try:
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    except cv2.error:
        image = None
    if image is None:
        raise OSError(
            f"cannot read image {path!r}: OpenCV could not decode it (is the file truncated "
            f"or not an image?)"
        )
    return image


def _pil_bits(img: Image.Image) -> int:
    tags = getattr(img, "tag_v2", None)
    if tags is not None and _TIFF_BITS_PER_SAMPLE in tags:
        bits = tags[_TIFF_BITS_PER_SAMPLE]
        return int(max(bits) if isinstance(bits, tuple) else bits)
    return 32 if img.mode in ("I", "F") else 16 if img.mode.startswith("I;16") else 8


def bits_per_sample(path: str) -> int:
    """Bits per sample of an image, from its header only (PNG: IHDR; TIFF: tag 258; any
    other format and PIL's 16/32-bit modes: from the PIL mode). A TIFF that PIL cannot open
    (e.g. 3-channel float32) is decoded by OpenCV to tell."""
    head = b""
    try:
        with open(path, "rb") as f:
            head = f.read(26)
        if head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR" and len(head) > 24:
            return head[24]
        with Image.open(path) as img:
            return _pil_bits(img)
    except UnidentifiedImageError as err:
        if head[:4] not in _TIFF_SIGNATURES:
            raise _read_error(path, "image", err) from err
    except _READ_ERRORS as err:
        raise _read_error(path, "image", err) from err
    return _decode(path).dtype.itemsize * 8


def _pil_orientation(img: Image.Image) -> int:
    """EXIF orientation (1..8) known from the header: a TIFF's tag 274, or EXIF parsed with
    the header (JPEG, WebP; a PNG whose eXIf chunk precedes the pixels). ``img.getexif()``
    on any other PNG would decode the whole image to look for a trailing eXIf chunk."""
    tags = getattr(img, "tag_v2", None)
    if tags is not None:
        value = tags.get(_ORIENTATION, 1)
    elif "exif" in img.info:
        value = img.getexif().get(_ORIENTATION, 1)
    else:
        value = 1
    return value if value in _ORIENT else 1


def _oriented(image: np.ndarray, path: str) -> np.ndarray:
    """``image`` decoded by OpenCV turned as the header's EXIF orientation says, so that it
    matches :func:`image_size` and the label map (:func:`read_label` applies EXIF
    orientation too). OpenCV ignores EXIF with IMREAD_UNCHANGED, except that its TIFF
    decoder applies a TIFF's Orientation tag itself (cv2.imdecode; cv2.imread 5.0 fails on
    the transposing ones)."""
    try:
        with Image.open(path) as img:
            if getattr(img, "tag_v2", None) is not None:
                return image  # TIFF: OpenCV's decoder has applied its Orientation tag
            orientation = _pil_orientation(img)
    except _READ_ERRORS:
        return image  # a file only OpenCV reads (e.g. 3-channel float TIFF)
    return _ORIENT[orientation](image) if orientation in _ORIENT else image


def _to_float32(image: np.ndarray, path: str) -> np.ndarray:
    """``image`` as a writable, contiguous float32 array; NaN / inf are an error."""
    out = np.require(image, np.float32, ["C", "W"])  # copies only when needed
    if image.dtype.kind == "f" and not np.isfinite(out).all():
        bad = int(out.size - np.isfinite(out).sum())
        raise ValueError(
            f"image {path!r} holds {bad} NaN / infinite value(s) ({image.dtype}); one of them "
            f"makes the loss NaN. Replace them before training, e.g. np.nan_to_num(a, nan=0.0, "
            f"posinf=0.0, neginf=0.0), or mask those pixels in the label map."
        )
    return out


def _read_high_depth(path: str, format: str | None) -> np.ndarray:
    """A > 8-bit image as float32 of shape (H, W, C), values unchanged, channels in
    ``format`` order ("L" needs a 1-channel file; "RGB" / "BGR" a 3-channel one)."""
    image = _oriented(_decode(path), path)  # BGR(A) order, native depth
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
    return _to_float32(image, path)


def _png_colour_type(path: str) -> int | None:
    with open(path, "rb") as f:
        head = f.read(26)
    return head[25] if head[:8] == _PNG_SIGNATURE and len(head) == 26 else None


def _read_raw_file(path: str) -> np.ndarray:
    """An image file with every channel as stored (INPUT.FORMAT "RAW"), in file order."""
    image = _decode(path)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] == 4 and _png_colour_type(path) == _PNG_GREY_ALPHA:
        image = image[:, :, [0, 3]]  # OpenCV expands grey + alpha to B, G, R, A
    elif image.shape[2] in (3, 4):
        image = image[:, :, [2, 1, 0, 3][: image.shape[2]]]  # B, G, R(, A) -> file order
    image = _oriented(image, path)
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    return _to_float32(image, path)


def _npy_header(path: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of a ``.npy`` file from its header, which is all that is read."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            else:  # 2.0 and 3.0 share the header layout
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            data_start = f.tell()
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError as err:
        raise _read_error(path, "image", err) from err
    except Exception as err:  # noqa: BLE001
        # numpy parses the header with ast.literal_eval: a corrupt one raises anything from
        # ValueError to SyntaxError or tokenize.TokenError (found by the fuzz tests)
        raise OSError(
            f"cannot read image {path!r}: {type(err).__name__}: {err} (is it a .npy array "
            "written by np.save, and complete?)"
        ) from err
    # A header claiming more data than the file holds (cut short, or a corrupt shape) is
    # refused before np.load allocates what the header says.
    expected = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    if not dtype.hasobject and size - data_start < expected:  # (objects: _check_npy says)
        raise OSError(
            f"cannot read image {path!r}: its header says {shape} {dtype} ({expected} bytes) "
            f"but the file holds {size - data_start} after it (truncated?)"
        )
    return tuple(shape), dtype


def _check_npy(shape: tuple[int, ...], dtype: np.dtype, path: str) -> None:
    """Errors naming ``path`` for arrays that are not an (H, W) or (H, W, C) image."""
    if dtype.kind not in "biuf":
        raise ValueError(
            f"image {path!r} is an array of dtype {dtype}, not numbers; save the pixel values "
            f"as a numeric array (uint8, uint16, float32, ...), e.g. np.save(path, "
            f"np.asarray(pixels, dtype=np.float32))"
        )
    if len(shape) not in (2, 3) or 0 in shape:
        raise ValueError(
            f"image {path!r} is an array of shape {shape}; an image is (H, W) or (H, W, C) "
            f"with H, W, C >= 1 (one image per file)"
        )
    if len(shape) == 3 and shape[0] <= 4 < min(shape[1], shape[2]):
        raise ValueError(
            f"image {path!r} has shape {shape}, which looks channels-first (C, H, W); images "
            f"are (H, W, C): save np.moveaxis(array, 0, -1) instead"
        )


def _read_npy(path: str, format: str | None) -> np.ndarray:
    """A ``.npy`` image: (H, W, C) (C = 1 for (H, W)); uint8 kept, any other dtype float32."""
    shape, dtype = _npy_header(path)
    _check_npy(shape, dtype, path)
    channels = shape[2] if len(shape) == 3 else 1
    if format not in (None, RAW_FORMAT) and not (format == "L" and channels == 1):
        raise ValueError(
            f"image {path!r} is a .npy array of {channels} channel(s), read as stored (no "
            f"colour conversion), and INPUT.FORMAT is {format!r}; set INPUT.FORMAT to "
            f"'{RAW_FORMAT}' (or 'L' for a 1-channel array) and give MODEL.PIXEL_MEAN and "
            f"MODEL.PIXEL_STD {channels} value(s) each"
        )
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise OSError(f"cannot read image {path!r}: {err}") from err
    if array.ndim == 2:
        array = array[:, :, None]
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    return _to_float32(array, path)


def read_image(path: str, format: str | None = None) -> np.ndarray:
    """Read an image with :func:`detectron2.data.detection_utils.read_image` (EXIF
    orientation applied; ``format`` is "RGB", "BGR", "L", ... as there); images of more than
    8 bits per sample with OpenCV, values unchanged (module docstring).

    ``format`` "RAW" (:data:`RAW_FORMAT`): every channel as stored, no colour conversion:
    image files decoded by OpenCV, colour channels in file order (R, G, B(, A); grey + alpha
    PNGs give 2 channels; palette PNGs their colours), EXIF orientation applied. ``.npy``
    files (np.save of an (H, W) or (H, W, C) array, any channel count) are read as stored
    with format "RAW", None, or "L" (1-channel arrays only); any other format is an error,
    as a raw array has no colour order to convert from.

    Returns:
        np.ndarray of shape (H, W, C) (or (H, W, 1) for "L"), writable: uint8 for 8-bit
        files and uint8 arrays, otherwise float32 (> 8-bit files; arrays of other dtypes).

    Raises:
        FileNotFoundError / OSError naming ``path`` when it is missing or unreadable;
        ValueError naming ``path`` when its channels do not fit ``format``, a ``.npy`` array is
        not numeric or not (H, W[, C]), or float values are NaN / infinite.
    """
    if _is_npy(path):
        return _read_npy(path, format)
    if format == RAW_FORMAT:
        return _read_raw_file(path)
    if bits_per_sample(path) > 8:
        return _read_high_depth(path, format)
    try:
        image = detection_utils.read_image(path, format=format)
    except _READ_ERRORS as err:
        raise _read_error(path, "image", err) from err
    # np.asarray(PIL image) is read-only; torch.from_numpy (used by some fvcore transforms)
    # warns on read-only arrays.
    return np.require(image, requirements="W")


def image_size(path: str) -> tuple[int, int]:
    """(height, width) of the image :func:`read_image` returns, from the header only: PIL's
    header with EXIF orientation (JPEG / WebP EXIF, a TIFF's tag, a PNG's eXIf chunk when it
    precedes the pixels), or a ``.npy`` header (also checked as :func:`read_image` does).
    Files PIL cannot open (e.g. 3-channel float TIFF) are decoded by OpenCV instead.

    Raises:
        FileNotFoundError / OSError naming ``path``; ValueError for a ``.npy`` array that is
        not an image (dtype, shape).
    """
    if _is_npy(path):
        shape, dtype = _npy_header(path)
        _check_npy(shape, dtype, path)
        return shape[0], shape[1]
    try:
        with Image.open(path) as img:
            height, width, orientation = img.height, img.width, _pil_orientation(img)
            tags = getattr(img, "tag_v2", None)
            if tags is not None and _TIFF_WIDTH in tags and _TIFF_LENGTH in tags:
                # as stored: recent Pillow reports a TIFF's size already turned
                width, height = int(tags[_TIFF_WIDTH]), int(tags[_TIFF_LENGTH])
    except UnidentifiedImageError:
        return _oriented(_decode(path), path).shape[:2]
    except _READ_ERRORS as err:
        raise _read_error(path, "image", err) from err
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


def format_channels(format: str | None) -> int | None:
    """Channels of every image read with ``format``: "L" 1; "RGB" / "BGR" / "YUV-BT.601" 3;
    any other PIL mode its bands ("RGBA" 4); None for "RAW" and None (the file decides)."""
    if format in (None, RAW_FORMAT):
        return None
    if format in _FORMAT_CHANNELS:
        return _FORMAT_CHANNELS[format]
    try:
        return len(ImageMode.getmode(format).bands)
    except KeyError:
        raise ValueError(
            f"INPUT.FORMAT {format!r} is not a known image format; use 'RGB', 'BGR', 'L' or "
            f"'{RAW_FORMAT}' (every channel as stored)"
        ) from None


def num_channels(path: str, format: str | None = RAW_FORMAT) -> int:
    """Channels C of ``read_image(path, format)``, without decoding where the header tells:
    :func:`format_channels` for formats that convert colours; for "RAW" / None the file's
    own (``.npy`` header, PIL header; OpenCV decodes files PIL cannot open). Meant for
    dataset checks: :func:`check_channels` still checks each decoded image."""
    fixed = format_channels(format)
    if fixed is not None:
        return fixed
    if _is_npy(path):
        shape, dtype = _npy_header(path)
        _check_npy(shape, dtype, path)
        return shape[2] if len(shape) == 3 else 1
    try:
        with Image.open(path) as img:
            mode, info = img.mode, img.info
    except UnidentifiedImageError:
        return _read_raw_file(path).shape[2]
    except _READ_ERRORS as err:
        raise _read_error(path, "image", err) from err
    if mode == "P":  # OpenCV gives the palette's colours (+ alpha with a tRNS chunk)
        return 4 if "transparency" in info else 3
    if mode == "CMYK":  # OpenCV converts CMYK JPEGs to colour
        return 3
    return len(ImageMode.getmode(mode).bands)


def check_format_channels(image_format: str | None, expected: int) -> None:
    """Raise ValueError naming INPUT.FORMAT and MODEL.PIXEL_MEAN when ``image_format`` reads
    every image with a channel count other than ``expected`` (``len(MODEL.PIXEL_MEAN)``);
    for construction time ("RAW": the files decide, see :func:`check_channels`)."""
    fixed = format_channels(image_format)
    if fixed is not None and fixed != expected:
        raise ValueError(
            f"INPUT.FORMAT {image_format!r} reads images with {fixed} channel(s), but "
            f"MODEL.PIXEL_MEAN has {expected} value(s) (the model's input channels); give "
            f"MODEL.PIXEL_MEAN and MODEL.PIXEL_STD {fixed} value(s) each, or set INPUT.FORMAT "
            f"'{RAW_FORMAT}' to read every channel as stored"
        )


def check_channels(image: np.ndarray, expected: int, path: str) -> None:
    """Raise ValueError naming ``path``, both channel counts and the config keys when
    ``image`` (H, W, C) does not have ``expected`` channels (``len(MODEL.PIXEL_MEAN)``, the
    model's input channels)."""
    channels = image.shape[2] if image.ndim == 3 else 1
    if channels == expected:
        return
    hint = ""
    if image.ndim == 3 and image.shape[0] == expected:
        hint = (
            f" The array looks channels-first (C, H, W) = {image.shape}; images are "
            f"(H, W, C): save np.moveaxis(array, 0, -1)."
        )
    raise ValueError(
        f"image {path!r} has {channels} channel(s), but the model takes {expected} "
        f"(len(MODEL.PIXEL_MEAN)); give MODEL.PIXEL_MEAN and MODEL.PIXEL_STD {channels} "
        f"value(s) each, or set INPUT.FORMAT so that images are read with {expected} "
        f"channel(s) ('L' = 1, 'RGB' / 'BGR' = 3, '{RAW_FORMAT}' = as stored).{hint}"
    )


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


# --------------------------------------------------------------------------- panoptic PNGs
# COCO panoptic PNGs: a pixel's segment id is R + 256 G + 256^2 B, 0 = VOID (unlabelled).
MAX_SEGMENT_ID = 256**3 - 1  # the largest id an RGB colour encodes


def rgb2id(rgb: np.ndarray) -> np.ndarray:
    """Segment ids of shape (H, W), int64, of COCO panoptic pixels (H, W, 3) in RGB order."""
    rgb = np.asarray(rgb, dtype=np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """The RGB pixels (H, W, 3) uint8 of segment ids of shape (H, W) in 0..MAX_SEGMENT_ID."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() > MAX_SEGMENT_ID):
        lo, hi = int(ids.min()), int(ids.max())
        raise ValueError(f"segment ids must be in 0..{MAX_SEGMENT_ID}, got {lo}..{hi}")
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


def read_panoptic_ids(path: str) -> np.ndarray:
    """The segment ids (H, W) int64 of a COCO panoptic PNG (RGB), EXIF orientation applied
    as for the image.

    Raises:
        ValueError: the file is not an RGB image (a single-channel, palette or RGBA PNG).
        FileNotFoundError / OSError naming ``path`` when it is missing or unreadable.
    """
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
    except _READ_ERRORS as err:
        raise _read_error(path, "panoptic PNG", err) from err
    if img.mode != "RGB":
        raise ValueError(
            f"panoptic PNG {path!r} has PIL mode {img.mode!r}, but COCO panoptic PNGs are RGB "
            f"images of segment ids (id = R + 256 G + 256^2 B); save it as "
            f"Image.fromarray(panopticapi.utils.id2rgb(ids)) (RGBA: img.convert('RGB'))"
        )
    return rgb2id(np.asarray(img))
