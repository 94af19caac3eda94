"""Dataset checks: every problem names the file and the fix; bad samples stop the run or,
when the user asks for it, are skipped, counted and logged.

Two levels (``DATASETS.CHECK``):

- ``"light"`` (run whenever a loader is built): files exist; image and label headers are
  readable; PNG / JPEG files end with their end marker (a truncated download); image and
  label sizes agree (from the headers, nothing is decoded); a label map is a single-channel
  image of indices, not a colour image; instance annotations have a known category and
  usable geometry (no empty or degenerate polygon, no empty box, RLE of the image's size).
- ``"full"`` (``tools/check_dataset.py``): also decodes every image and label map and checks
  the label values against the classes and the ignore value.

A "light" check reads a few header bytes per file (about 0.2 ms); decoding is left to the
mapper, which raises the same :class:`DataProblemError` for a sample whose pixels are bad
(truncated stream, label values out of range) -- or, with ``DATASETS.SKIP_BAD_SAMPLES``,
returns None so detectron2's ``MapDataset`` draws another sample (:class:`SkipBadSamples`).

Problem kinds: see :data:`PROBLEM_KINDS`.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Callable, Iterable

import numpy as np
from PIL import Image

from .io import (
    _INDEX_MODES,
    _READ_ERRORS,
    MAX_SEGMENT_ID,
    image_size,
    read_image,
    read_label,
    read_panoptic_ids,
)
from .labels import apply_label_transform

__all__ = [
    "PROBLEM_KINDS",
    "DataProblemError",
    "Problem",
    "SkipBadSamples",
    "check_dataset_records",
    "check_instance_record",
    "check_label_values",
    "check_panoptic_record",
    "check_sem_seg_record",
    "filter_bad_records",
    "write_skip_report",
]

logger = logging.getLogger(__name__)

PROBLEM_KINDS = {
    "missing_file": "a file named by a record does not exist",
    "unreadable": "a file is not a readable image, or is truncated",
    "size_mismatch": "image and label map (or record height/width) disagree in size",
    "label_values": "label values that are neither a class index nor the ignore value",
    "label_mode": "a label map that is a colour / RGBA / float image instead of indices",
    "image_mode": "an image whose mode loses information when read (palette, alpha)",
    "polygon": "an empty or degenerate polygon",
    "annotation": "an annotation with a bad box, category or RLE",
    "json_schema": "an annotation file that does not follow its format",
    "channels": "an image whose channel count does not fit INPUT.FORMAT / PIXEL_MEAN",
    "panoptic_mode": "a COCO panoptic PNG that is not an RGB image of segment ids",
    "segment_id": "a listed segment id that no PNG can hold: 0 (VOID), < 0, >= 256^3",
    "segment_duplicate": "a segment id listed twice in a record's segments_info",
    "segment_category": "a segment whose category is not one of the dataset's",
    "segment_missing": "a segment listed in segments_info with no pixel in its PNG",
    "segment_unlisted": "segment ids in a panoptic PNG that segments_info does not list",
    "segment_area": "a segment whose 'area' is not its pixel count (a warning)",
}
_SHOWN = 10  # problems named in an error message
_SKIP_FIX = (
    "Fix or remove the files named above; or set DATASETS.SKIP_BAD_SAMPLES True to train "
    "without them (they are counted and listed in OUTPUT_DIR/skipped_samples.json); "
    "tools/check_dataset.py <dataset> lists every problem."
)


@dataclass(frozen=True)
class Problem:
    """One problem with one file. ``fatal`` False: reported, the sample is kept."""

    kind: str
    file: str
    message: str
    fatal: bool = True

    def __str__(self) -> str:
        return f"[{self.kind}] {self.file}: {self.message}"


class DataProblemError(ValueError):
    """Bad data: ``problems`` lists each one (file, kind, message with the fix)."""

    def __init__(self, problems: list[Problem], dataset_name: str = "", total: int | None = None):
        self.problems = list(problems)
        self.dataset_name = dataset_name
        counts = Counter(p.kind for p in self.problems)
        where = f"dataset '{dataset_name}': " if dataset_name else ""
        of = f" (in {total} records)" if total is not None else ""
        summary = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
        lines = [f"{where}{len(self.problems)} data problem(s){of}: {summary}"]
        lines += [f"  {p}" for p in self.problems[:_SHOWN]]
        if len(self.problems) > _SHOWN:
            lines.append(f"  ... and {len(self.problems) - _SHOWN} more")
        lines.append(_SKIP_FIX)
        super().__init__("\n".join(lines))


# --------------------------------------------------------------------------- files
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"
_JPEG_START, _JPEG_END = b"\xff\xd8", b"\xff\xd9"


def _truncated(path: str) -> bool:
    """True when a PNG / JPEG file lacks its end marker (a cut-off download or copy): two
    small reads instead of decoding. JPEGs may carry trailing bytes after the marker, so the
    last 64 bytes are searched."""
    with open(path, "rb") as f:
        head = f.read(8)
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 64))
        tail = f.read()
    if head.startswith(_PNG_SIGNATURE):
        return not tail.endswith(_PNG_END)
    if head.startswith(_JPEG_START):
        return _JPEG_END not in tail
    return False


def _truncated_msg(what: str) -> str:
    return (
        f"{what} is truncated (it ends before its end-of-image marker): the file was cut off "
        f"while downloading or copying; copy it again"
    )


def _header(path: str, what: str) -> tuple[list[Problem], tuple[int, int] | None, str | None]:
    """(problems, (h, w) from the header, PIL mode) of an image / label file."""
    if not os.path.isfile(path):
        fix = "restore it, or remove the record (re-register the dataset)"
        return [Problem("missing_file", path, f"{what} not found; {fix}")], None, None
    if path.lower().endswith(".npy"):
        try:
            shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
        except (OSError, ValueError) as err:
            return [Problem("unreadable", path, f"cannot read {what} (.npy): {err}")], None, None
        return [], (tuple(shape[:2]) if len(shape) >= 2 else None), "npy"
    try:
        with Image.open(path) as img:
            size, mode = (img.height, img.width), img.mode
    except _READ_ERRORS as err:
        if "truncated" in str(err).lower():
            return [Problem("unreadable", path, _truncated_msg(what))], None, None
        msg = f"cannot read {what}: {err}; re-export or re-download it"
        return [Problem("unreadable", path, msg)], None, None
    if _truncated(path):
        return [Problem("unreadable", path, _truncated_msg(what))], size, mode
    return [], size, mode


def check_label_values(
    label: np.ndarray, num_classes: int, ignore_label: int, path: str
) -> Problem | None:
    """A Problem when ``label`` holds values other than 0..num_classes-1 and ignore_label."""
    if label.dtype == np.uint8:
        counts = np.bincount(label.ravel(), minlength=256)
        values = np.flatnonzero(counts)
    else:
        values = np.unique(label)
    bad = [int(v) for v in values if not (0 <= v < num_classes or v == ignore_label)]
    if not bad:
        return None
    shown = bad[:8] + (["..."] if len(bad) > 8 else [])
    hint = ""
    if set(bad) <= {255} and num_classes == 2:
        hint = " (a 0/255 binary mask: register it with mask_values '0/255')"
    elif 0 < min(bad) and max(bad) == num_classes:
        hint = " (labels 1..K with 0 = unlabelled: register it with reduce_zero_label)"
    msg = (
        f"label values {shown} are neither a class index (0..{num_classes - 1}) nor the "
        f"ignore value {ignore_label}{hint}; fix the label map, or the dataset's classes"
    )
    return Problem("label_values", path, msg)


def check_sem_seg_record(
    record: dict,
    *,
    num_classes: int | None = None,
    ignore_label: int = 255,
    level: str = "light",
    image_format: str | None = None,
) -> list[Problem]:
    """The problems of one semantic record (``file_name``, optional ``sem_seg_file_name``).

    Args:
        num_classes: K; label values are checked at level "full" when given.
        level: "light" (headers) or "full" (also decode; label values).
        image_format: INPUT.FORMAT used to decode at level "full".

    The record's ``sem_seg_label_transform`` (:mod:`seg_plugins.data.labels`) is applied
    before the value check, as the mapper and the evaluator do.
    """
    image_file = record["file_name"]
    problems, image_size, image_mode = _header(image_file, "image")
    if image_mode == "P":
        msg = (
            "image is a palette PNG: it is read as the colours of its palette; if it is a "
            "label map, it is in the image folder by mistake"
        )
        problems.append(Problem("image_mode", image_file, msg, fatal=False))
    if image_size is not None and "height" in record and "width" in record:
        if (record["height"], record["width"]) not in (image_size, image_size[::-1]):
            msg = (
                f"image is {image_size[0]}x{image_size[1]} (HxW) but its record says "
                f"{record['height']}x{record['width']}; the file changed after the dataset "
                f"was listed (re-register it)"
            )
            problems.append(Problem("size_mismatch", image_file, msg))
    label_file = record.get("sem_seg_file_name")
    if label_file is not None:
        label_problems, label_size, label_mode = _header(label_file, "label map")
        problems += label_problems
        if label_mode is not None and label_mode != "npy" and label_mode not in _INDEX_MODES:
            msg = (
                f"label map has PIL mode {label_mode!r}: a colour / alpha / float image, "
                f"not a map of class indices. Map each colour to its class index and save a "
                f"single-channel PNG (mode 'L' or 'P', 'I;16' for > 256 classes)"
            )
            problems.append(Problem("label_mode", label_file, msg))
        if image_size is not None and label_size is not None:
            if image_size != label_size and image_size[::-1] != label_size:
                msg = (
                    f"label map is {label_size[0]}x{label_size[1]} (HxW) but its image "
                    f"{image_file!r} is {image_size[0]}x{image_size[1]}; they must match "
                    f"(was one of them resized?)"
                )
                problems.append(Problem("size_mismatch", label_file, msg))
    if level != "full" or any(p.fatal for p in problems):
        return problems
    try:
        image = read_image(image_file, format=image_format)
    except (OSError, ValueError) as err:
        return problems + [Problem("unreadable", image_file, str(err))]
    if label_file is None:
        return problems
    try:
        label = read_label(label_file)
    except (OSError, ValueError) as err:
        kind = "label_mode" if isinstance(err, ValueError) else "unreadable"
        return problems + [Problem(kind, label_file, str(err))]
    if label.shape != image.shape[:2]:
        msg = f"label map is {label.shape} but its decoded image is {image.shape[:2]}"
        problems.append(Problem("size_mismatch", label_file, msg))
    label = apply_label_transform(label, record.get("sem_seg_label_transform"))
    if num_classes:
        problem = check_label_values(label, num_classes, ignore_label, label_file)
        if problem is not None:
            problems.append(problem)
    return problems


def _polygon_area(xy: np.ndarray) -> float:
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _record_size_problem(
    record: dict, level: str, image_format: str | None, header_size: tuple[int, int]
) -> Problem | None:
    """A size_mismatch when the image is not the record's ``height`` x ``width``: from the
    header (EXIF orientation applied, as the readers do) at level "light", from the decoded
    image at "full". detectron2's mapper would stop training on it (SizeMismatchError), and
    masks drawn from polygons / RLE at the record's size would not fit the image."""
    h, w = record.get("height"), record.get("width")
    if h is None or w is None:
        return None
    image_file = record["file_name"]
    if level != "full" and tuple(header_size) == (int(h), int(w)):
        return None  # the common case, with no second read (EXIF can only swap the two)
    try:
        if level == "full":
            actual = tuple(read_image(image_file, format=image_format).shape[:2])
        else:
            actual = tuple(image_size(image_file))
    except (OSError, ValueError) as err:
        return Problem("unreadable", image_file, f"cannot read image: {err}")
    return size_mismatch(image_file, actual, (int(h), int(w)))


_ANY_ENTRY = 'the annotation file (a COCO JSON\'s "images")'


def size_mismatch(path: str, actual, stated, entry: str = "") -> Problem | None:
    """The size_mismatch Problem of an image of size ``actual`` (H, W) whose record / COCO
    entry states ``stated``, or None. One wording for every path that finds it (the COCO
    loader, the dataset checks); ``entry`` names the annotation file's entry where known."""
    actual, stated = tuple(int(v) for v in actual), tuple(int(v) for v in stated)
    if actual == stated:
        return None
    hint = " (height and width swapped?)" if actual == stated[::-1] else ""
    msg = (
        f"image is {actual[0]}x{actual[1]} (HxW) but its record says {stated[0]}x{stated[1]}"
        f"{hint}; correct 'height' / 'width' of its entry in {entry or _ANY_ENTRY}, or the image"
    )
    return Problem("size_mismatch", path, msg)


def check_instance_record(
    record: dict,
    num_categories: int | None = None,
    *,
    level: str = "light",
    image_format: str | None = None,
) -> list[Problem]:
    """The problems of the annotations of one instance record (detectron2's standard dict:
    ``annotations`` with ``bbox``, ``bbox_mode``, ``category_id`` (contiguous) and optional
    ``segmentation`` as polygons or RLE). Files are checked with :func:`_header`; the image's
    size against the record's ``height`` / ``width`` from the header ("light") or decoded
    ("full", with ``image_format``)."""
    image_file = record["file_name"]
    problems, image_size_hw, _ = _header(image_file, "image")
    if image_size_hw is not None and not any(p.fatal for p in problems):
        size_problem = _record_size_problem(record, level, image_format, image_size_hw)
        if size_problem is not None:
            problems.append(size_problem)
    h, w = record.get("height"), record.get("width")
    for k, ann in enumerate(record.get("annotations", [])):
        where = f"annotation #{k} (id {ann.get('id', '?')})"
        cat = ann.get("category_id")
        if (
            not isinstance(cat, (int, np.integer))
            or cat < 0
            or (num_categories is not None and cat >= num_categories)
        ):
            limit = f"0..{num_categories - 1}" if num_categories else ">= 0"
            msg = f"{where}: category_id {cat!r} is not a known category ({limit})"
            problems.append(Problem("annotation", image_file, msg))
        bbox = ann.get("bbox")
        if bbox is not None:
            if len(bbox) != 4 or not all(np.isfinite(bbox)):
                msg = f"{where}: bbox {bbox!r} must be 4 finite numbers"
                problems.append(Problem("annotation", image_file, msg))
            elif (
                _box_wh(bbox, ann.get("bbox_mode")) is not None
                and min(_box_wh(bbox, ann.get("bbox_mode"))) <= 0
            ):
                msg = f"{where}: bbox {list(bbox)} has no area (width or height <= 0)"
                problems.append(Problem("annotation", image_file, msg))
        seg = ann.get("segmentation")
        if seg is None:
            continue
        if isinstance(seg, dict):  # RLE
            size = seg.get("size")
            if size is None or "counts" not in seg:
                msg = f"{where}: RLE segmentation needs 'size' [h, w] and 'counts'"
                problems.append(Problem("annotation", image_file, msg))
            elif h is not None and list(size) != [h, w]:
                msg = f"{where}: RLE size {list(size)} differs from the image's [{h}, {w}]"
                problems.append(Problem("annotation", image_file, msg))
            continue
        if not isinstance(seg, list) or not seg:
            msg = (
                f"{where}: empty segmentation; give a polygon list [[x1, y1, x2, y2, ...]] "
                f"or an RLE, or drop the annotation"
            )
            problems.append(Problem("polygon", image_file, msg))
            continue
        for j, poly in enumerate(seg):
            coords = np.asarray(poly, dtype=np.float64).ravel()
            if coords.size < 6 or coords.size % 2:
                msg = (
                    f"{where}, polygon #{j}: {coords.size} coordinates; a polygon needs an "
                    f"even number, at least 6 (3 points)"
                )
                problems.append(Problem("polygon", image_file, msg))
            elif not np.all(np.isfinite(coords)):
                problems.append(Problem("polygon", image_file, f"{where}, polygon #{j}: NaN/inf"))
            elif _polygon_area(coords.reshape(-1, 2)) <= 0:
                msg = f"{where}, polygon #{j}: zero area (all points on a line or identical)"
                problems.append(Problem("polygon", image_file, msg))
    return problems


def _box_wh(bbox, mode) -> tuple[float, float] | None:
    from detectron2.structures import BoxMode

    if mode in (None, BoxMode.XYWH_ABS, int(BoxMode.XYWH_ABS)):
        return float(bbox[2]), float(bbox[3])
    if mode in (BoxMode.XYXY_ABS, int(BoxMode.XYXY_ABS)):
        return float(bbox[2] - bbox[0]), float(bbox[3] - bbox[1])
    return None


# --------------------------------------------------------------------------- panoptic
_PNG_FIX = (
    "the PNG holds the segments' ids (R + 256 G + 256^2 B) and segments_info lists them: "
    "correct the annotation file's segments_info, or export the PNG again"
)


def _is_id(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _segment_category_problem(segment: dict, where: str, path: str, classes) -> Problem | None:
    """A segment_category Problem when ``segment``'s category is unknown. ``classes``:
    (thing_classes, stuff_classes, dataset category ids), each None when unknown."""
    things, stuff, dataset_ids = classes
    category, isthing = segment.get("category_id"), segment.get("isthing")
    if isthing is None:  # not converted: a dataset id, known only through the id maps
        if _is_id(category) and (dataset_ids is None or category in dataset_ids):
            return None
        known = f"the dataset's category ids {sorted(dataset_ids)}" if dataset_ids else "an id"
        msg = (
            f"{where} has category_id {category!r}, which is not one of {known}; correct the "
            f"segment's category_id in the panoptic JSON, or add the category to its "
            f"'categories'"
        )
        return Problem("segment_category", path, msg)
    names, field = (things, "thing_classes") if isthing else (stuff, "stuff_classes")
    known = _is_id(category) and 0 <= category and (names is None or category < len(names))
    # detectron2's "separated" stuff class 0 is every thing merged: no segment's category
    merged = known and not isthing and names is not None and names[category] == "things"
    if known and not merged:
        return None
    limit = f"0..{len(names) - 1}" if names else ">= 0"
    msg = (
        f"{where} has contiguous category_id {category!r} (isthing {bool(isthing)}), not a "
        f"class of the metadata's {field} ({limit}"
        + (", where 'things' is every thing merged, no category" if merged else "")
        + "); correct the segment's category_id in the panoptic JSON, or its 'categories'"
    )
    return Problem("segment_category", path, msg)


def _segment_problems(segments, path: str, classes) -> tuple[list[Problem], dict]:
    """(problems of a record's ``segments_info`` itself, {valid segment id: segment})."""
    if segments is None:
        segments = []
    if not isinstance(segments, list):
        msg = f"segments_info is a {type(segments).__name__}, not a list of segments"
        return [Problem("segment_id", path, msg)], {}
    problems, valid, first = [], {}, {}
    for k, segment in enumerate(segments):
        if not isinstance(segment, dict):
            msg = f"segments_info[{k}] is a {type(segment).__name__}, not a segment {{'id', ...}}"
            problems.append(Problem("segment_id", path, msg))
            continue
        sid = segment.get("id")
        where = f"segment id {sid!r} (segments_info[{k}])"
        if not _is_id(sid):
            msg = (
                f"{where}: a segment id is an integer 1..{MAX_SEGMENT_ID}, the colour "
                f"R + 256 G + 256^2 B of its pixels; give the segment its pixels' id"
            )
            problems.append(Problem("segment_id", path, msg))
        elif sid == 0:
            msg = (
                f"{where}: id 0 is VOID (unlabelled pixels) in COCO panoptic PNGs, never a "
                f"segment; give the segment the id of its pixels, or remove it to leave them "
                f"unlabelled"
            )
            problems.append(Problem("segment_id", path, msg))
        elif not 0 < sid <= MAX_SEGMENT_ID:
            msg = (
                f"{where} is outside 1..{MAX_SEGMENT_ID} (256^3 - 1): no RGB colour encodes "
                f"it; renumber the segment and its pixels"
            )
            problems.append(Problem("segment_id", path, msg))
        elif sid in first:
            msg = (
                f"{where} is listed twice (also segments_info[{first[sid]}]): each pixel holds "
                f"one id, so two segments cannot share one (overlapping segments must be "
                f"split); give one of them its own id and pixels, or merge them"
            )
            problems.append(Problem("segment_duplicate", path, msg))
        else:
            first[sid] = k
            valid[int(sid)] = segment
        problem = _segment_category_problem(segment, where, path, classes)
        if problem is not None:
            problems.append(problem)
    return problems, valid


def _panoptic_header_problems(record: dict, path: str) -> list[Problem]:
    """The PNG's existence, header, mode and size (against the record's height / width, or
    its image's header when the record has none, as detectron2's panoptic records)."""
    problems, size, mode = _header(path, "panoptic PNG")
    if mode is not None and mode != "RGB":
        fix = "img.convert('RGB')" if mode == "RGBA" else "Image.fromarray(id2rgb(ids))"
        msg = (
            f"panoptic PNG has PIL mode {mode!r}; COCO panoptic PNGs are RGB images of segment "
            f"ids (id = R + 256 G + 256^2 B): save it as RGB ({fix})"
        )
        problems.append(Problem("panoptic_mode", path, msg))
    if size is None:
        return problems
    stated = None
    if record.get("height") is not None and record.get("width") is not None:
        stated, what = (int(record["height"]), int(record["width"])), "its record says"
    elif os.path.isfile(record["file_name"]):
        try:
            stated, what = tuple(image_size(record["file_name"])), "its image is"
        except (OSError, ValueError):
            pass  # the image's own check names it
    if stated is not None and tuple(size) != stated:
        msg = (
            f"panoptic PNG is {size[0]}x{size[1]} (HxW) but {what} {stated[0]}x{stated[1]} "
            f"({record['file_name']!r}); they must match (a PNG of ids cannot be resized "
            f"with interpolation: export it again at the image's size)"
        )
        problems.append(Problem("size_mismatch", path, msg))
    return problems


def _pixel_problems(ids: np.ndarray, valid: dict, path: str) -> list[Problem]:
    """Listed segments without pixels, pixels of unlisted ids, areas that differ."""
    present, counts = np.unique(ids, return_counts=True)
    area = dict(zip(present.tolist(), counts.tolist()))
    problems = []
    for sid, segment in valid.items():
        if sid not in area:
            msg = (
                f"segment id {sid} (category_id {segment.get('category_id')!r}) is listed in "
                f"segments_info, but no pixel of the PNG has that id (RGB "
                f"{sid % 256}, {sid // 256 % 256}, {sid // 65536}); {_PNG_FIX}"
            )
            problems.append(Problem("segment_missing", path, msg))
        elif _is_id(segment.get("area")) and segment["area"] != area[sid]:
            msg = (
                f"segment id {sid} has 'area' {segment['area']} but {area[sid]} pixels in the "
                f"PNG; panoptic quality uses the annotation file's area: correct it"
            )
            problems.append(Problem("segment_area", path, msg, fatal=False))
    unlisted = [v for v in area if v != 0 and v not in valid]
    if unlisted:
        shown = ", ".join(f"{v} ({area[v]} px)" for v in unlisted[:8])
        more = f" ... ({len(unlisted)} ids in all)" if len(unlisted) > 8 else ""
        msg = (
            f"segment id(s) {shown}{more} are in the PNG but segments_info lists no segment "
            f"with that id; add their segments (id, category_id), or paint those pixels 0 "
            f"(VOID) if they are unlabelled; {_PNG_FIX}"
        )
        problems.append(Problem("segment_unlisted", path, msg))
    return problems


def check_panoptic_record(
    record: dict,
    *,
    thing_classes: list | None = None,
    stuff_classes: list | None = None,
    dataset_ids: set | None = None,
    level: str = "light",
) -> list[Problem]:
    """The problems of the panoptic ground truth of one record (``pan_seg_file_name``,
    ``segments_info`` as detectron2's ``load_coco_panoptic_json`` makes them).

    Level "light": the PNG exists, its header is readable, it is an RGB image of the
    record's (or its image's) size; every segment has an id in 1..256^3-1 (0 is VOID),
    listed once, and a known category: a contiguous ``category_id`` of ``thing_classes`` /
    ``stuff_classes`` by its ``isthing`` (not the separated convention's merged "things"),
    or, for a segment without ``isthing``, a dataset id in ``dataset_ids``. Level "full"
    also decodes the PNG: every listed segment has pixels, every id of the PNG but 0 is
    listed, and (a warning) each ``area`` is the pixel count.
    The image itself is checked by :func:`check_sem_seg_record` /
    :func:`check_instance_record`.
    """
    path = record["pan_seg_file_name"]
    problems = _panoptic_header_problems(record, path)
    classes = (thing_classes, stuff_classes, dataset_ids)
    segment_problems, valid = _segment_problems(record.get("segments_info"), path, classes)
    problems += segment_problems
    if level != "full" or any(p.kind in _FILE_KINDS + ("panoptic_mode",) for p in problems):
        return problems
    try:
        ids = read_panoptic_ids(path)
    except ValueError as err:
        return problems + [Problem("panoptic_mode", path, str(err))]
    except OSError as err:
        return problems + [Problem("unreadable", path, str(err))]
    return problems + _pixel_problems(ids, valid, path)


# --------------------------------------------------------------------------- datasets
_FILE_KINDS = ("missing_file", "unreadable", "size_mismatch")


def _same_problem(a: Problem, b: Problem) -> bool:
    """One problem found by both the semantic and the instance check of a record: the same
    file missing, unreadable or of the wrong size (in their own words), or the same line."""
    return a == b or (a.kind == b.kind and a.file == b.file and a.kind in _FILE_KINDS)


def check_dataset_records(
    records: list[dict],
    *,
    metadata=None,
    level: str = "light",
    image_format: str | None = None,
) -> dict[int, list[Problem]]:
    """{record index: problems} for every record with a problem. Semantic records
    (``sem_seg_file_name``), instance records (``annotations``) and panoptic records
    (``pan_seg_file_name``) are told apart per record; a record with several gets each
    check."""
    if level not in ("light", "full"):
        raise ValueError(f"DATASETS.CHECK must be 'off', 'light' or 'full', got {level!r}")
    stuff = metadata.get("stuff_classes", None) if metadata is not None else None
    things = metadata.get("thing_classes", None) if metadata is not None else None
    ignore = metadata.get("ignore_label", 255) if metadata is not None else 255
    panoptic = _panoptic_classes(metadata)
    found = {}
    for i, record in enumerate(records):
        problems = []
        if "sem_seg_file_name" in record or "annotations" not in record:
            problems += check_sem_seg_record(
                record,
                num_classes=len(stuff) if stuff else None,
                ignore_label=ignore,
                level=level,
                image_format=image_format,
            )
        if "annotations" in record:  # records with both (Panoptic FPN) get both checks
            for problem in check_instance_record(
                record, len(things) if things else None, level=level, image_format=image_format
            ):
                if not any(_same_problem(problem, p) for p in problems):
                    problems.append(problem)
        if "pan_seg_file_name" in record:
            problems += check_panoptic_record(record, **panoptic, level=level)
        if problems:
            found[i] = problems
    return found


def _panoptic_classes(metadata) -> dict:
    """check_panoptic_record's class arguments from a dataset's metadata."""
    if metadata is None:
        return {}
    things, stuff = metadata.get("thing_classes", None), metadata.get("stuff_classes", None)
    maps = [
        metadata.get(key, None) or {}
        for key in ("thing_dataset_id_to_contiguous_id", "stuff_dataset_id_to_contiguous_id")
    ]
    # the separated convention's merged "things" (dataset id 0) is no category of a segment
    merged = {k for k, v in maps[1].items() if stuff and v in range(len(stuff))}
    merged = {k for k in merged if stuff[maps[1][k]] == "things"}
    dataset_ids = (set(maps[0]) | set(maps[1])) - merged
    return {"thing_classes": things, "stuff_classes": stuff, "dataset_ids": dataset_ids or None}


def filter_bad_records(
    dataset_name: str,
    records: list[dict],
    problems: dict[int, list[Problem]],
    *,
    skip: bool,
) -> tuple[list[dict], list[dict]]:
    """Apply the result of :func:`check_dataset_records`.

    Non-fatal problems are logged as warnings. With fatal ones: ``skip`` False raises
    :class:`DataProblemError` naming them; ``skip`` True drops their records and logs a
    counted summary.

    Returns:
        (kept records, skipped: [{"file_name", "problems": [...]}, ...]).
    """
    warnings = [p for ps in problems.values() for p in ps if not p.fatal]
    for p in warnings[:_SHOWN]:
        logger.warning("dataset '%s': %s", dataset_name, p)
    if len(warnings) > _SHOWN:
        logger.warning("dataset '%s': ... %d more warnings", dataset_name, len(warnings) - _SHOWN)
    bad = {i: ps for i, ps in problems.items() if any(p.fatal for p in ps)}
    if not bad:
        return records, []
    if not skip:
        fatal = [p for ps in bad.values() for p in ps if p.fatal]
        raise DataProblemError(fatal, dataset_name, total=len(records))
    skipped = [
        {"file_name": records[i].get("file_name"), "problems": [asdict(p) for p in ps]}
        for i, ps in sorted(bad.items())
    ]
    counts = Counter(p.kind for ps in bad.values() for p in ps if p.fatal)
    logger.warning(
        "dataset '%s': skipped %d of %d records with problems (%s); first: %s",
        dataset_name,
        len(bad),
        len(records),
        ", ".join(f"{n} {k}" for k, n in sorted(counts.items())),
        next(str(p) for p in bad[min(bad)] if p.fatal),
    )
    kept = [r for i, r in enumerate(records) if i not in bad]
    if not kept:
        raise DataProblemError(
            [p for ps in bad.values() for p in ps if p.fatal], dataset_name, total=len(records)
        )
    return kept, skipped


def write_skip_report(path: str, report: dict) -> None:
    """Write ``{dataset name: {"total", "skipped": [...]}}`` as JSON, atomically."""
    from ..utils.file_io import atomic_write_text

    atomic_write_text(path, json.dumps(report, indent=1))


# --------------------------------------------------------------------------- mapping time
_SKIPPABLE = (OSError, ValueError)


class SkipBadSamples:
    """Wrap a mapper: a sample whose reading or mapping raises OSError / ValueError (a
    truncated stream, label values out of range, ...) is logged and counted, and None is
    returned, which makes detectron2's ``MapDataset`` draw another sample. For training
    loaders only: an evaluation must not replace one image by another."""

    def __init__(self, mapper: Callable[[dict], dict], max_logged: int = 20):
        self.mapper = mapper
        self.max_logged = max_logged
        self.skipped = 0  # per process (each data-loader worker counts its own)

    def __call__(self, dataset_dict: dict):
        try:
            return self.mapper(dataset_dict)
        except _SKIPPABLE as err:
            self.skipped += 1
            if isinstance(err, DataProblemError):
                err = "; ".join(str(p) for p in err.problems)
            if self.skipped <= self.max_logged:
                logger.warning(
                    "skipped bad sample %r (%d skipped by this loader process; "
                    "DATASETS.SKIP_BAD_SAMPLES is True): %s",
                    dataset_dict.get("file_name"),
                    self.skipped,
                    err,
                )
            return None


def iter_problem_lines(problems: dict[int, list[Problem]], records: list[dict]) -> Iterable[str]:
    """One line per problem, for tools/check_dataset.py."""
    for i, ps in sorted(problems.items()):
        for p in ps:
            level = "error" if p.fatal else "warning"
            yield f"{level}: record {i} ({records[i].get('file_name')}): {p}"
