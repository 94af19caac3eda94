"""COCO-format instance datasets (any user dataset), checked before use.

Layout (the same as COCO's ``instances_*.json``)::

    <image_root>/<file_name>     every image the JSON lists (file_name may hold sub-folders)
    <json_file>                  {"images": [{"id", "file_name", "height", "width"}, ...],
                                  "annotations": [{"id", "image_id", "category_id",
                                                   "bbox": [x, y, width, height],
                                                   "segmentation", "area", "iscrowd"}, ...],
                                  "categories": [{"id", "name"}, ...]}

A ``segmentation`` is a list of polygons ``[[x1, y1, x2, y2, ...], ...]``, an uncompressed RLE
``{"size": [height, width], "counts": [n0, n1, ...]}`` (column-major runs, background first;
COCO's crowd regions) or a compressed RLE ``{"size": ..., "counts": "<string>"}`` (written
by ``pycocotools.mask.encode``). Category ids may be any integers: ``thing_classes`` are the
category names sorted by id, and ids map to 0..K-1 in that order. Non-crowd RLE masks need
``INPUT.MASK_FORMAT bitmask`` (:func:`check_mask_format`); ``iscrowd`` 1 regions are left out
of training by detectron2's mapper and ignored by COCO evaluation.

:func:`register_coco_instances_checked` registers a dataset as detectron2's
``register_coco_instances`` does (lazily: nothing is read until ``DatasetCatalog.get``), and
its loader returns the same records as detectron2's ``load_coco_json``, after
:func:`check_coco_json` found the file usable. The JSON is parsed once, by the stdlib json
module (detectron2's loader would parse it again with pycocotools, and it silently drops
polygons of fewer than 3 points, or asserts, where this one names the problem):

- problems of the file (not JSON, truncated, not COCO's layout, unknown ids, duplicate ids)
  raise :class:`CocoJsonError` (a ``DataProblemError``): a broken file cannot be half-used;
- problems of single images (degenerate polygons, empty boxes, bad RLE, missing image files)
  raise ``DataProblemError`` naming each, or, with ``skip_bad=True`` at registration, their
  images are dropped, counted and logged.

What ``DatasetCatalog`` holds for such a dataset is a :class:`CheckedCocoLoader`: calling it
loads as registered, and its :meth:`~CheckedCocoLoader.load` takes the choice to skip as an
argument and returns what it dropped, as a value. The Trainer loads through
``seg_plugins.data.build.checked_dataset_dicts``, which calls ``load`` with
``DATASETS.SKIP_BAD_SAMPLES`` (overriding ``skip_bad``, both ways) and puts the dropped images
into its skip report.

Example::

    from seg_plugins.data.coco import register_coco_instances_checked

    register_coco_instances_checked(
        "cells_train", "data/cells/annotations/train.json", "data/cells/images"
    )
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pycocotools.mask as mask_util
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from .io import image_size
from .validation import DataProblemError, Problem, filter_bad_records, size_mismatch

__all__ = [
    "CheckedCocoLoader",
    "CocoJsonError",
    "CocoLoad",
    "check_coco_json",
    "check_mask_format",
    "load_coco_instances_checked",
    "register_coco_instances_checked",
]

logger = logging.getLogger(__name__)

_ANN_KEYS = ("iscrowd", "bbox", "keypoints", "category_id")  # copied into records, as detectron2
_SHOWN = 8  # ids named in one message
_FIX_FILE = (
    "The annotation file cannot be used as it is: fix it (or re-export it from the labelling "
    "tool); see datasets/README.md, 'COCO-format instance datasets'."
)
_REENCODE = "re-encode the mask with pycocotools.mask.encode(np.asfortranarray(mask))"


class CocoJsonError(DataProblemError):
    """A COCO JSON file that cannot be used at all (not JSON, truncated, not COCO's layout,
    unknown or duplicate ids): skipping samples cannot help, so the message says to fix it."""

    def __init__(self, problems: list[Problem], dataset_name: str = ""):
        super().__init__(problems, dataset_name)
        # DataProblemError's last line suggests DATASETS.SKIP_BAD_SAMPLES; not for a file.
        self.args = (str(self).rsplit("\n", 1)[0] + "\n" + _FIX_FILE,)


# --------------------------------------------------------------------------- reading
def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_size(value) -> bool:
    """A positive integral number (480 or 480.0: detectron2 and pycocotools take both)."""
    return _is_number(value) and value > 0 and float(value).is_integer()


def _ids(values) -> str:
    values = list(values)
    shown = ", ".join(str(v) for v in values[:_SHOWN])
    return shown + (f" ... ({len(values)} in all)" if len(values) > _SHOWN else "")


_PARTIAL_TOKEN = re.compile(r"-?\d*\.?\d*([eE][-+]?\d*)?")


def _json_error_message(err: json.JSONDecodeError) -> str:
    doc = err.doc
    if not doc.strip():
        return "the file is empty; write or copy the COCO JSON again"
    where = f"line {err.lineno}, column {err.colno}"
    tail = doc[err.pos :].strip()
    # The text stops inside a string, a number or a keyword, or where more must follow.
    cut = err.msg != "Extra data" and (
        not tail
        or err.msg.startswith("Unterminated string")
        or any(word.startswith(tail) for word in ("true", "false", "null"))
        or _PARTIAL_TOKEN.fullmatch(tail) is not None
    )
    if cut:
        end = len(doc.rstrip())
        line, column = doc.count("\n", 0, end) + 1, end - doc.rfind("\n", 0, end)
        return (
            f"the JSON ends early: the text stops at line {line}, column {column} ({err.msg} "
            f"at {where}); the file is truncated (an interrupted download, copy or write): "
            f"copy or write it again"
        )
    return (
        f"not valid JSON at {where} ({err.msg}); fix the file there (python -m json.tool "
        f"<file> points at the same place)"
    )


def _read_json(json_file: str) -> tuple[object, list[Problem]]:
    """(parsed JSON or None, problems)."""
    if not os.path.isfile(json_file):
        msg = "annotation file not found; give the path of the COCO JSON (json_file)"
        return None, [Problem("missing_file", json_file, msg)]
    try:
        with open(json_file, encoding="utf-8") as f:
            return json.load(f), []
    except json.JSONDecodeError as err:
        return None, [Problem("json_schema", json_file, _json_error_message(err))]
    except UnicodeDecodeError as err:
        msg = f"not UTF-8 text ({err.reason} at byte {err.start}): is it a JSON file at all?"
        return None, [Problem("json_schema", json_file, msg)]
    except OSError as err:
        return None, [Problem("unreadable", json_file, f"cannot read the annotation file: {err}")]


# --------------------------------------------------------------------------- file layout
def _check_top(data) -> list[str]:
    if isinstance(data, list):
        return [
            "the top level is a list: this looks like a COCO *results* file (predictions), "
            "not a dataset; give the instances JSON with 'images', 'annotations' and "
            "'categories'"
        ]
    if not isinstance(data, dict):
        return [f"the top level is a {type(data).__name__}, expected a JSON object"]
    errors = []
    for key in ("images", "annotations", "categories"):
        if key not in data:
            errors.append(
                f"no {key!r} list at the top level; a COCO instances file has 'images', "
                f"'annotations' and 'categories' (keys found: {sorted(data)[:_SHOWN]})"
            )
        elif not isinstance(data[key], list):
            errors.append(f"{key!r} is a {type(data[key]).__name__}, expected a list")
    return errors


def _check_images(images: list) -> tuple[list[str], dict, set]:
    """(errors, {id: image} of the usable entries, every id given); an annotation of an
    image whose entry is bad is not reported again as one of an unknown image."""
    errors, by_id, first = [], {}, {}
    known = {i.get("id") for i in images if isinstance(i, dict) and _is_int(i.get("id"))}
    fix = "every image needs 'id' (int), 'file_name', 'height' and 'width' (its pixel size)"
    for k, image in enumerate(images):
        if not isinstance(image, dict):
            errors.append(f"images[{k}] is a {type(image).__name__}, not an object; {fix}")
            continue
        name = f"images[{k}] (id {image.get('id', '?')})"
        missing = [key for key in ("id", "file_name", "height", "width") if key not in image]
        if missing:
            errors.append(f"{name} has no {missing}; {fix}")
            continue
        bad = [
            f"{key} {image[key]!r}"
            for key, ok in (
                ("id", _is_int(image["id"])),
                ("file_name", isinstance(image["file_name"], str) and image["file_name"] != ""),
                ("height", _is_size(image["height"])),
                ("width", _is_size(image["width"])),
            )
            if not ok
        ]
        if bad:
            errors.append(f"{name} has a bad {', '.join(bad)}; {fix}")
            continue
        if image["id"] in first:
            errors.append(
                f"image id {image['id']} is used by images[{first[image['id']]}] and "
                f"images[{k}]; image ids must be unique"
            )
            continue
        first[image["id"]] = k
        by_id[image["id"]] = image
    return errors, by_id, known


def _check_categories(categories: list) -> tuple[list[str], dict]:
    """(errors, {id: name})."""
    errors, names = [], {}
    if not categories:
        errors.append("'categories' is empty; list every class as {'id': int, 'name': str}")
    for k, cat in enumerate(categories):
        if not (
            isinstance(cat, dict) and _is_int(cat.get("id")) and isinstance(cat.get("name"), str)
        ):
            errors.append(f"categories[{k}] is {cat!r}; a category is {{'id': int, 'name': str}}")
        elif cat["id"] in names:
            errors.append(f"category id {cat['id']} is listed twice; category ids must be unique")
        else:
            names[cat["id"]] = cat["name"]
    return errors, names


def _annotation_errors(k: int, ann, images: set, categories: dict, ann_ids: set) -> list[str]:
    if not isinstance(ann, dict):
        return [f"annotations[{k}] is a {type(ann).__name__}, not an object"]
    name = f"annotation id {ann.get('id', '?')} (annotations[{k}])"
    missing = [key for key in ("id", "image_id", "category_id", "bbox") if key not in ann]
    if missing:
        return [
            f"{name} has no {missing}; every annotation needs 'id', 'image_id', "
            f"'category_id' and 'bbox' [x, y, width, height]"
        ]
    bad = [key for key in ("id", "image_id", "category_id") if not _is_int(ann[key])]
    if bad:
        return [f"{name} has a non-integer {', '.join(f'{key} {ann[key]!r}' for key in bad)}"]
    errors = []
    if ann["id"] in ann_ids:
        errors.append(f"annotation id {ann['id']} is used twice; annotation ids must be unique")
    ann_ids.add(ann["id"])
    if ann["image_id"] not in images:
        errors.append(
            f"{name} refers to image_id {ann['image_id']!r}, which is not in 'images'; add the "
            f"image or remove the annotation"
        )
    if categories and ann["category_id"] not in categories:
        errors.append(
            f"{name} has category_id {ann['category_id']!r}, which is not in 'categories' (ids "
            f"{_ids(sorted(categories))}); add the category or correct the id"
        )
    if ann.get("iscrowd", 0) not in (0, 1):
        errors.append(f"{name} has iscrowd {ann['iscrowd']!r}; it must be 0 or 1 (a crowd region)")
    if ann.get("ignore", 0):
        errors.append(
            f"{name} has 'ignore' {ann['ignore']!r}, which detectron2 does not support; mark "
            f"regions to ignore with iscrowd 1 instead"
        )
    return errors


def _check_layout(data, json_file: str) -> tuple[list[Problem], dict, dict]:
    """(file-level problems, {image id: image}, {image id: [annotation]})."""
    errors = _check_top(data)
    if errors:
        return [Problem("json_schema", json_file, e) for e in errors], {}, {}
    errors, images, known_images = _check_images(data["images"])
    cat_errors, categories = _check_categories(data["categories"])
    errors += cat_errors
    by_image, ann_ids, no_area = defaultdict(list), set(), []
    for k, ann in enumerate(data["annotations"]):
        ann_errors = _annotation_errors(k, ann, known_images, categories, ann_ids)
        errors += ann_errors
        if not ann_errors and ann["image_id"] in images:
            by_image[ann["image_id"]].append(ann)
            if "area" not in ann:
                no_area.append(ann["id"])
    problems = [Problem("json_schema", json_file, e) for e in errors]
    if no_area:
        msg = (
            f"{len(no_area)} annotation(s) have no 'area' (ids {_ids(no_area)}); training "
            f"works, but COCO evaluation (pycocotools) needs it: add 'area' = the mask's "
            f"pixel count"
        )
        problems.append(Problem("json_schema", json_file, msg, fatal=False))
    return problems, images, by_image


# --------------------------------------------------------------------------- one image
def _polygon_errors(seg: list, height: int, width: int) -> list[tuple[str, str]]:
    if not seg:
        return [
            (
                "polygon",
                "empty segmentation []; give polygons [[x1, y1, x2, y2, ...], ...] or an RLE, "
                "or remove the annotation",
            )
        ]
    if all(_is_number(v) for v in seg):
        return [
            (
                "polygon",
                "segmentation is one flat list of numbers; polygons are a list of lists: "
                "write it as [[x1, y1, x2, y2, ...]]",
            )
        ]
    errors = ((j, _polygon_error(poly, height, width)) for j, poly in enumerate(seg))
    return [("polygon", f"polygon #{j} {msg}") for j, msg in errors if msg]


def _polygon_error(poly, height: int, width: int) -> str | None:
    """What is wrong with one polygon [x1, y1, x2, y2, ...], or None."""
    try:
        xy = np.array(poly, dtype=np.float64) if isinstance(poly, list) else None
    except (TypeError, ValueError):
        xy = None
    if xy is None or xy.ndim != 1 or not np.isfinite(xy).all():
        return "is not a list of finite numbers [x1, y1, x2, y2, ...]"
    if xy.size < 6 or xy.size % 2:
        return (
            f"has {xy.size} coordinates; a polygon needs an even number, at least 6 (3 points "
            f"x1, y1, x2, y2, x3, y3); fix or remove it (detectron2 would drop it silently)"
        )
    x, y = xy[0::2], xy[1::2]
    # Points a little outside the image are clipped when rasterised; far outside is a
    # corrupt value (pycocotools' rasteriser overflows on coordinates such as 2**40).
    if x.min() < -width or x.max() > 2 * width or y.min() < -height or y.max() > 2 * height:
        return (
            f"has points far outside the {width}x{height} image (x in [{x.min():g}, "
            f"{x.max():g}], y in [{y.min():g}, {y.max():g}]); polygons are in pixels of the "
            f"image; fix or remove it"
        )
    # shoelace: twice the signed area
    twice_area = x[:-1] @ y[1:] - x[1:] @ y[:-1] + x[-1] * y[0] - x[0] * y[-1]
    if abs(twice_area) < 1e-6:
        return "has zero area (its points lie on one line); remove it, or the annotation"
    return None


def _rle_errors(seg: dict, height: int, width: int) -> list[tuple[str, str]]:
    size, counts = seg.get("size"), seg.get("counts")
    if size is None or counts is None:
        return [("annotation", "an RLE segmentation needs 'size' [height, width] and 'counts'")]
    if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) for v in size)):
        return [("annotation", f"RLE size {size!r} must be [height, width] (2 integers)")]
    if size != [height, width]:
        hint = " (written as [width, height]?)" if size == [width, height] else ""
        return [
            (
                "annotation",
                f"RLE size {size} differs from the image's [height, width] [{height}, {width}]"
                f"{hint}; {_REENCODE} of the image's size",
            )
        ]
    if isinstance(counts, list):
        if not all(_is_int(c) and c >= 0 for c in counts):
            return [("annotation", f"RLE counts must be non-negative integers; {_REENCODE}")]
        if sum(counts) != height * width:
            msg = (
                f"RLE counts sum to {sum(counts)} pixels, but a {height}x{width} mask has "
                f"{height * width}; {_REENCODE}"
            )
            return [("annotation", msg)]
        return []
    if not isinstance(counts, str) or not counts:
        msg = f"RLE counts must be a list of run lengths or a non-empty string; {_REENCODE}"
        return [("annotation", msg)]
    runs = _rle_string_runs(counts)
    if runs is None or min(runs) < 0:
        return [("annotation", f"compressed RLE counts {counts[:20]!r} are malformed; {_REENCODE}")]
    if sum(runs) != height * width:
        msg = (
            f"compressed RLE counts cover {sum(runs)} pixels, but a {height}x{width} mask has "
            f"{height * width}; {_REENCODE}"
        )
        return [("annotation", msg)]
    return []


def _rle_string_runs(counts: str) -> list[int] | None:
    """The run lengths of a compressed RLE string (pycocotools' rleFrString: 5 bits a
    character, offset 48, 0x20 = more, sign bit 0x10, runs after the 2nd as differences), or
    None when it is not one. pycocotools decodes strings unchecked (a string too short for
    the mask is filled up silently, ``decode`` of an empty one returns stale memory), so the
    runs are summed here."""
    runs, p = [], 0
    while p < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if p == len(counts):
                return None
            c = ord(counts[p]) - 48
            if not 0 <= c < 64:
                return None
            value |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            p, shift = p + 1, shift + 5
            if not more and c & 0x10:
                value |= -1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def _bbox_errors(bbox) -> list[tuple[str, str]]:
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
        return [("annotation", f"bbox {bbox!r} must be [x, y, width, height] (4 numbers)")]
    if bbox[2] <= 0 or bbox[3] <= 0:
        msg = (
            f"bbox {bbox} has width {bbox[2]} and height {bbox[3]}, both must be > 0 (COCO boxes "
            f"are [x, y, width, height], not [x1, y1, x2, y2]); correct it or remove the "
            f"annotation"
        )
        return [("annotation", msg)]
    return []


def _size_problem(image: dict, path: str, where: str) -> Problem | None:
    try:
        actual = tuple(image_size(path))  # the header, EXIF orientation applied
    except (OSError, ValueError) as err:
        return Problem("unreadable", path, f"cannot read the image file of {where}: {err}")
    return size_mismatch(path, actual, (image["height"], image["width"]), entry=where)


def _image_problems(
    image: dict, anns: list, json_file: str, image_root: str, masks_expected: bool = False
) -> list[Problem]:
    path = os.path.join(image_root, image["file_name"])
    where = f"image id {image['id']} of {json_file}"
    problems = []
    if not os.path.isfile(path):
        msg = (
            f"image file of {where} not found under image_root {image_root!r}; put it there, "
            f"correct its 'file_name' (relative to image_root), or register the dataset with "
            f"the image_root that holds it"
        )
        problems.append(Problem("missing_file", path, msg))
    else:
        # One header read: detectron2's mapper would stop training on a size that is not the
        # file's (SizeMismatchError), and masks are drawn at the entry's size.
        problem = _size_problem(image, path, where)
        if problem is not None:
            problems.append(problem)
    for ann in anns:
        errors = _bbox_errors(ann["bbox"])
        seg = ann.get("segmentation")
        if isinstance(seg, dict):
            errors += _rle_errors(seg, int(image["height"]), int(image["width"]))
        elif isinstance(seg, list):
            errors += _polygon_errors(seg, int(image["height"]), int(image["width"]))
        elif seg is not None:
            errors.append(
                ("annotation", f"segmentation is a {type(seg).__name__}; give polygons or an RLE")
            )
        elif masks_expected:
            # detectron2's mapper looks at the first object only: a later one without a mask
            # is a KeyError mid-training, an image without any gives Mask R-CNN no gt_masks
            errors.append(
                (
                    "annotation",
                    "has no segmentation, but other annotations of the file have one; give it "
                    "its polygons or RLE (Mask R-CNN needs a mask per object), or remove it",
                )
            )
        problems += [
            Problem(kind, path, f"annotation id {ann['id']} of {where}: {msg}")
            for kind, msg in errors
        ]
    return problems


def _check(json_file: str, image_root: str):
    """(parsed JSON, file problems, {image id: problems}, {id: image}, {image id: [ann]})."""
    data, problems = _read_json(json_file)
    if problems:
        return data, problems, {}, {}, {}
    problems, images, by_image = _check_layout(data, json_file)
    per_image = {}
    masks = any(a.get("segmentation") is not None for anns in by_image.values() for a in anns)
    for image_id, image in images.items():
        anns = by_image.get(image_id, [])
        image_problems = _image_problems(image, anns, json_file, image_root, masks)
        if image_problems:
            per_image[image_id] = image_problems
    return data, problems, per_image, images, by_image


def check_coco_json(
    json_file: str, image_root: str
) -> tuple[list[Problem], dict[int, list[Problem]]]:
    """The problems of a COCO instances JSON and of the images it lists.

    Returns:
        file_problems: kind "json_schema" (not JSON / truncated, with line and column; not
            COCO's layout; duplicate image / category / annotation ids; an annotation of an
            unknown image or category; iscrowd not 0/1), "missing_file" / "unreadable" for
            the JSON itself. ``fatal`` False: a warning (annotations without 'area').
        image_problems: {image id: problems}, kinds "polygon" (empty segmentation,
            < 6 or odd coordinates, zero area), "annotation" (bbox width / height <= 0, RLE
            size not the image's [height, width], RLE counts that do not decode) and
            "missing_file" (the image is not under ``image_root``).

    Every message names the JSON file, the image / annotation id and the fix.
    """
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    _, problems, per_image, _, _ = _check(json_file, image_root)
    return problems, per_image


# --------------------------------------------------------------------------- records
def _record(image: dict, anns: list, image_root: str, id_map: dict, convert: bool) -> dict:
    """detectron2's standard dict of one image, as detectron2's ``load_coco_json`` makes it
    (``convert`` False: no annotations, for an image that will be dropped or reported)."""
    record = {
        "file_name": os.path.join(image_root, image["file_name"]),
        "height": image["height"],
        "width": image["width"],
        "image_id": image["id"],
    }
    objs = []
    for ann in anns if convert else []:
        obj = {key: ann[key] for key in _ANN_KEYS if key in ann}
        seg = ann.get("segmentation")
        if seg:
            if isinstance(seg, dict) and isinstance(seg["counts"], list):
                seg = mask_util.frPyObjects(seg, *seg["size"])  # compressed, as detectron2
            obj["segmentation"] = seg
        if ann.get("keypoints"):
            # integer pixel indices -> continuous coordinates (pixel centres), as detectron2
            obj["keypoints"] = [
                v + 0.5 if i % 3 != 2 else v for i, v in enumerate(ann["keypoints"])
            ]
        obj["bbox_mode"] = BoxMode.XYWH_ABS
        obj["category_id"] = id_map[ann["category_id"]]
        objs.append(obj)
    record["annotations"] = objs
    return record


def _set_classes(dataset_name: str, categories: list, json_file: str) -> dict:
    """Set thing_classes (names sorted by category id) and thing_dataset_id_to_contiguous_id;
    returns the id map."""
    cats = sorted(categories, key=lambda c: c["id"])
    values = {
        "thing_classes": [c["name"] for c in cats],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(cats)},
    }
    set_json_metadata(dataset_name, values, json_file)
    return values["thing_dataset_id_to_contiguous_id"]


def set_json_metadata(dataset_name: str, values: dict, json_file: str) -> None:
    """Set metadata that the JSON's categories give; a different value set before (at
    registration) is an error naming both, never silently overwritten."""
    meta = MetadataCatalog.get(dataset_name)
    for key, value in values.items():
        old = meta.get(key, None)
        if old is not None and old != value:
            raise ValueError(
                f"dataset '{dataset_name}': metadata {key} is {old} but the categories of "
                f"{json_file} give {value}; do not pass {key} at registration (it comes from "
                f"the JSON), or correct the JSON's categories"
            )
    meta.set(**values)


class CocoLoad(NamedTuple):
    """What one load of a checked COCO dataset gave."""

    records: list[dict]  # detectron2's standard dicts of the images kept
    skipped: list[dict]  # [{"file_name", "problems": [...]}, ...] of the images dropped
    total: int  # images in the JSON, kept or not


@dataclass(frozen=True)
class CheckedCocoLoader:
    """The loader :func:`register_coco_instances_checked` registers in ``DatasetCatalog``.

    Calling it (what ``DatasetCatalog.get`` does) returns the records, dropping bad images
    when ``skip_bad`` (the registration's choice). :meth:`load` takes that choice as an
    argument and returns what was dropped, so a caller decides per load
    (``seg_plugins.data.build.checked_dataset_dicts``: ``DATASETS.SKIP_BAD_SAMPLES``) and
    gets the skipped images as a value; nothing is kept between loads.

    Example::

        loader = CheckedCocoLoader("train.json", "images", "cells_train", skip_bad=False)
        records = loader()  # raises DataProblemError on a bad image
        records, skipped, total = loader.load(skip=True)  # drops it, and says so
    """

    json_file: str
    image_root: str
    dataset_name: str
    skip_bad: bool = False

    def __call__(self) -> list[dict]:
        return self.load(self.skip_bad).records

    def load(self, skip: bool) -> CocoLoad:
        """The records of the JSON, checked first by :func:`check_coco_json`; sets the
        metadata's thing_classes and thing_dataset_id_to_contiguous_id.

        Raises:
            CocoJsonError: the file cannot be used (its problems, each with the fix).
            DataProblemError: images with problems, unless ``skip``, which drops them and
                logs a counted summary.
        """
        json_file, image_root = os.fspath(self.json_file), os.fspath(self.image_root)
        name = self.dataset_name
        data, problems, per_image, images, by_image = _check(json_file, image_root)
        for p in problems:
            if not p.fatal:
                logger.warning("dataset '%s': %s", name, p)
        fatal = [p for p in problems if p.fatal]
        if fatal:
            raise CocoJsonError(fatal, name)
        id_map = _set_classes(name, data["categories"], json_file)
        records = [
            _record(images[i], by_image.get(i, []), image_root, id_map, convert=i not in per_image)
            for i in sorted(images)
        ]
        index = {record["image_id"]: k for k, record in enumerate(records)}
        kept, skipped = filter_bad_records(
            name, records, {index[i]: ps for i, ps in per_image.items()}, skip=bool(skip)
        )
        logger.info(
            "dataset '%s': %d images, %d annotations from %s",
            name,
            len(kept),
            sum(len(r["annotations"]) for r in kept),
            json_file,
        )
        return CocoLoad(kept, skipped, len(records))


def load_coco_instances_checked(
    json_file: str, image_root: str, dataset_name: str, *, skip_bad: bool = False
) -> list[dict]:
    """detectron2's standard dicts of a COCO instances JSON (the same as detectron2's
    ``load_coco_json``, images sorted by id, category ids mapped to 0..K-1), checked first
    by :func:`check_coco_json`; sets the metadata's thing_classes and
    thing_dataset_id_to_contiguous_id. :meth:`CheckedCocoLoader.load` also returns what
    was skipped.

    Raises:
        CocoJsonError: the file cannot be used (its problems, each with the fix).
        DataProblemError: images with problems, unless ``skip_bad``, which drops them and
            logs a counted summary.
    """
    return CheckedCocoLoader(json_file, image_root, dataset_name, skip_bad)()


# --------------------------------------------------------------------------- registration
def register_coco_instances_checked(
    name: str,
    json_file: str,
    image_root: str,
    *,
    metadata: dict | None = None,
    evaluator_type: str = "coco",
    skip_bad: bool = False,
) -> None:
    """Register ``name``: the COCO instances ``json_file`` with its images under
    ``image_root``, loaded by a :class:`CheckedCocoLoader` on ``DatasetCatalog.get``
    (nothing is read now).

    Args:
        metadata: extra metadata (e.g. ``thing_colors``); thing_classes and
            thing_dataset_id_to_contiguous_id come from the JSON when it is loaded.
        evaluator_type: read by seg_plugins' Trainer; "coco" gives detectron2's
            COCOEvaluator (bbox, and segm with MODEL.MASK_ON).
        skip_bad: drop images with problems (counted and logged) instead of raising; the
            Trainer's ``DATASETS.SKIP_BAD_SAMPLES`` overrides it.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    metadata = dict(metadata or {})
    reserved = sorted({"json_file", "image_root", "evaluator_type"} & set(metadata))
    if reserved:
        raise ValueError(
            f"metadata must not set {reserved}: they are arguments of "
            f"register_coco_instances_checked"
        )
    json_file = os.path.expanduser(os.fspath(json_file))
    image_root = os.path.expanduser(os.fspath(image_root))
    DatasetCatalog.register(name, CheckedCocoLoader(json_file, image_root, name, bool(skip_bad)))
    MetadataCatalog.get(name).set(
        json_file=json_file, image_root=image_root, evaluator_type=evaluator_type, **metadata
    )


# --------------------------------------------------------------------------- mapper config
def check_mask_format(records: list[dict], mask_format: str, dataset_name: str) -> None:
    """Raise ValueError when ``records`` hold non-crowd RLE masks and ``mask_format``
    (``INPUT.MASK_FORMAT``) is "polygon": detectron2's DatasetMapper then fails with "Failed
    to use mask_format=='polygon' from the given annotations!". Crowd regions are dropped by
    the mapper, so crowd RLE (as in COCO itself) is fine with polygons."""
    if mask_format not in ("polygon", "bitmask"):
        raise ValueError(f"INPUT.MASK_FORMAT must be 'polygon' or 'bitmask', got {mask_format!r}")
    if mask_format == "bitmask":
        return
    rle = [
        record.get("file_name")
        for record in records
        for ann in record.get("annotations", ())
        if isinstance(ann.get("segmentation"), dict) and not ann.get("iscrowd", 0)
    ]
    if rle:
        raise ValueError(
            f"dataset '{dataset_name}' has RLE masks ({len(rle)} non-crowd annotations, the "
            f"first of image {rle[0]!r}), which INPUT.MASK_FORMAT 'polygon' cannot hold; set "
            f"INPUT.MASK_FORMAT bitmask (polygons are rasterised then too)"
        )
