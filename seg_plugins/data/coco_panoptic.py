"""COCO panoptic-format datasets (any user dataset), checked before use, and the format's
helpers: RGB <-> segment ids, segments from instance masks and stuff masks, and detectron2's
"separated" metadata.

Layout (the same as COCO's ``panoptic_*.json`` beside its PNG folder)::

    <image_root>/<file_name>          every image of "images"
    <panoptic_root>/<file_name>       one RGB PNG per annotation: a pixel's segment id is
                                      R + 256 G + 256^2 B; id 0 is VOID (unlabelled)
    <json_file>   {"images": [{"id", "file_name", "height", "width"}, ...],
                   "annotations": [{"image_id", "file_name",
                                    "segments_info": [{"id", "category_id", "iscrowd",
                                                       "bbox", "area"}, ...]}, ...],
                   "categories": [{"id", "name", "isthing", "color"}, ...]}
    <instances_json>                  optional: COCO instances of the same images (polygons
                                      or RLE), for Panoptic FPN's instance branch
    <sem_seg_root>/<file_name>        optional: Panoptic FPN's semantic labels (below)

Records follow detectron2's ``load_coco_panoptic_json``: ``file_name``, ``image_id``,
``pan_seg_file_name``, ``segments_info`` with each ``category_id`` made contiguous and
``isthing`` added; plus ``height`` / ``width`` from "images" (detectron2's loader has none,
and it assumes ".jpg" images; this one takes each image's own ``file_name``). With
``instances_json`` they also carry ``annotations`` (detectron2's instance records), with
``sem_seg_root`` a ``sem_seg_file_name``.

Metadata follow detectron2's "separated" convention (``register_coco_panoptic_separated``,
the Panoptic FPN paper's setting), since its PanopticFPN treats semantic label 0 as "thing":
``thing_classes`` are the thing categories by id (contiguous 0..T-1), ``stuff_classes`` are
``["things"]`` + the stuff categories by id, ``stuff_dataset_id_to_contiguous_id`` maps the
stuff ids to 1..S and 0 to 0 (as detectron2's COCO metadata). Semantic label maps in this
convention (detectron2's ``datasets/prepare_panoptic_fpn.py`` writes them from the PNGs): 0
= any thing, k = the k-th stuff category, 255 = VOID / ignored.

:func:`register_coco_panoptic_checked` registers a dataset lazily; its
:class:`CheckedCocoPanopticLoader` checks the JSON's layout first (a file that cannot be used
raises :class:`~seg_plugins.data.coco.CocoJsonError`). The segments themselves (ids, their
categories, duplicates, the PNGs) are checked with the records by
:func:`seg_plugins.data.validation.check_panoptic_record` (``DATASETS.CHECK``,
``tools/check_dataset.py``), so a bad segment names its PNG and can be skipped like any bad
sample.

Example::

    from seg_plugins.data.coco_panoptic import register_coco_panoptic_checked

    register_coco_panoptic_checked(
        "streets_val", "data/streets/panoptic_val.json", "data/streets/images",
        "data/streets/panoptic_val", instances_json="data/streets/instances_val.json",
    )
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog

from .coco import (
    CheckedCocoLoader,
    CocoJsonError,
    CocoLoad,
    _check_categories,
    _check_images,
    _ids,
    _is_int,
    _read_json,
    set_json_metadata,
)
from .io import MAX_SEGMENT_ID, id2rgb, rgb2id
from .validation import Problem

__all__ = [
    "MAX_SEGMENT_ID",
    "CheckedCocoPanopticLoader",
    "CocoPanopticJsonError",
    "convert_segments",
    "id2rgb",
    "panoptic_from_masks",
    "register_coco_panoptic_checked",
    "rgb2id",
    "separated_metadata",
]

logger = logging.getLogger(__name__)

VOID = 0
LABEL_DIVISOR = 1000  # segment id = category id * 1000 (+ k for the k-th thing), as Cityscapes
THINGS_COLOR = [82, 18, 128]  # detectron2's colour of the merged "things" class
_FIX_FILE = (
    "The panoptic annotation file cannot be used as it is: fix it (or export it again); see "
    "datasets/README.md, 'COCO panoptic-format datasets'."
)


class CocoPanopticJsonError(CocoJsonError):
    """A COCO panoptic JSON that cannot be used at all (not JSON, not the panoptic layout,
    unknown or duplicate ids), or an instances JSON that does not fit it."""

    def __init__(self, problems: list[Problem], dataset_name: str = ""):
        super().__init__(problems, dataset_name)
        self.args = (str(self).rsplit("\n", 1)[0] + "\n" + _FIX_FILE,)


# --------------------------------------------------------------------------- segments
def _bbox(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1]


def panoptic_from_masks(
    things: Sequence[tuple[int, np.ndarray]], stuff: Sequence[tuple[int, np.ndarray]]
) -> tuple[np.ndarray, list[dict]]:
    """A COCO panoptic id map and its ``segments_info`` from masks of one image.

    Args:
        things: (category id, bool mask (H, W)) per instance, in order: a later instance
            takes the pixels it shares with an earlier one.
        stuff: (category id, bool mask (H, W)) per stuff class; a stuff segment gets the
            pixels of its mask that no instance has.

    Returns:
        ids: (H, W) int64, 0 (VOID) where no mask covers a pixel; a thing's id is
            ``category * 1000 + k`` (its k-th instance, k >= 1), a stuff segment's
            ``category * 1000``.
        segments_info: [{"id", "category_id", "iscrowd": 0, "bbox": [x, y, w, h], "area"}]
            of the segments with pixels left, things first.
    """
    masks = [m for _, m in [*things, *stuff]]
    if not masks:
        raise ValueError("panoptic_from_masks needs at least one mask (it gives the size)")
    ids = np.zeros(masks[0].shape, np.int64)
    listed, count = [], {}
    for category, mask in things:
        count[category] = count.get(category, 0) + 1
        listed.append((category * LABEL_DIVISOR + count[category], category))
        ids[mask] = listed[-1][0]
    for category, mask in stuff:
        listed.append((category * LABEL_DIVISOR, category))
        ids[mask & (ids == VOID)] = listed[-1][0]
    if max(count.values(), default=0) >= LABEL_DIVISOR or ids.max() > MAX_SEGMENT_ID:
        raise ValueError(
            f"segment ids category * {LABEL_DIVISOR} + k overflow: at most "
            f"{LABEL_DIVISOR - 1} instances per category and category ids below "
            f"{MAX_SEGMENT_ID // LABEL_DIVISOR}"
        )
    segments = []
    for segment_id, category in listed:
        mask = ids == segment_id
        if mask.any():
            segments.append(
                {
                    "id": int(segment_id),
                    "category_id": int(category),
                    "iscrowd": 0,
                    "bbox": _bbox(mask),
                    "area": int(mask.sum()),
                }
            )
    return ids, segments


# --------------------------------------------------------------------------- metadata
def separated_metadata(categories: list[dict]) -> dict:
    """detectron2's "separated" metadata of COCO panoptic ``categories`` (module docstring):
    thing_classes, stuff_classes (``["things", ...]``), both id maps and, when every
    category has a ``color``, thing_colors and stuff_colors."""
    ordered = sorted(categories, key=lambda c: c["id"])
    things = [c for c in ordered if c["isthing"]]
    stuff = [c for c in ordered if not c["isthing"]]
    stuff_map = {c["id"]: i + 1 for i, c in enumerate(stuff)}
    if 0 not in stuff_map and all(c["id"] != 0 for c in things):
        stuff_map[0] = 0  # the merged "things" class, as detectron2's COCO metadata
    meta = {
        "thing_classes": [c["name"] for c in things],
        "stuff_classes": ["things"] + [c["name"] for c in stuff],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(things)},
        "stuff_dataset_id_to_contiguous_id": stuff_map,
    }
    if all(isinstance(c.get("color"), list) and len(c["color"]) == 3 for c in ordered):
        meta["thing_colors"] = [list(c["color"]) for c in things]
        meta["stuff_colors"] = [list(THINGS_COLOR)] + [list(c["color"]) for c in stuff]
    return meta


def convert_segments(segments: list, thing_map: dict, stuff_map: dict) -> list:
    """``segments_info`` in detectron2's record convention: a copy of each segment with its
    dataset ``category_id`` made contiguous and ``isthing`` added (a thing id wins, as in
    detectron2's loader). A segment of an unknown category keeps its dataset id and gets no
    ``isthing``: :func:`~seg_plugins.data.validation.check_panoptic_record` names it."""
    converted = []
    for segment in segments:
        if not isinstance(segment, dict):
            converted.append(segment)
            continue
        segment = dict(segment)
        category = segment.get("category_id")
        hashable = _is_int(category)
        if hashable and category in thing_map:
            segment["category_id"], segment["isthing"] = thing_map[category], True
        elif hashable and category in stuff_map:
            segment["category_id"], segment["isthing"] = stuff_map[category], False
        converted.append(segment)
    return converted


# --------------------------------------------------------------------------- file layout
def _category_errors(categories: list) -> list[str]:
    errors, _ = _check_categories(categories)
    for k, cat in enumerate(categories):
        if isinstance(cat, dict) and cat.get("isthing") not in (0, 1):  # True / False too
            errors.append(
                f"categories[{k}] (id {cat.get('id', '?')}) has isthing "
                f"{cat.get('isthing', 'missing')!r}; a panoptic category says whether it is "
                f"a thing (1: countable objects) or stuff (0)"
            )
    return errors


def _annotation_errors(annotations: list, images: set) -> tuple[list[str], list[dict]]:
    """(errors, the usable annotations)."""
    errors, usable, first = [], [], {}
    fix = "every annotation needs 'image_id' (int), 'file_name' (its PNG) and 'segments_info'"
    for k, ann in enumerate(annotations):
        if not isinstance(ann, dict):
            errors.append(f"annotations[{k}] is a {type(ann).__name__}, not an object; {fix}")
            continue
        name = f"annotations[{k}] (image_id {ann.get('image_id', '?')})"
        missing = [key for key in ("image_id", "file_name", "segments_info") if key not in ann]
        if missing:
            errors.append(f"{name} has no {missing}; {fix}")
        elif not _is_int(ann["image_id"]):
            errors.append(f"{name} has a non-integer image_id; {fix}")
        elif not (isinstance(ann["file_name"], str) and ann["file_name"]):
            errors.append(f"{name} has file_name {ann['file_name']!r}; {fix}")
        elif not isinstance(ann["segments_info"], list):
            errors.append(f"{name}: segments_info is a {type(ann['segments_info']).__name__}")
        elif any(not isinstance(s, dict) for s in ann["segments_info"]):
            errors.append(f"{name}: segments_info holds a non-object; a segment is {{'id', ...}}")
        elif ann["image_id"] not in images:
            errors.append(
                f"{name} refers to image_id {ann['image_id']}, which is not in 'images'; add "
                f"the image or remove the annotation"
            )
        elif ann["image_id"] in first:
            errors.append(
                f"image_id {ann['image_id']} has two annotations (annotations"
                f"[{first[ann['image_id']]}] and [{k}]); a panoptic file has one per image, "
                f"holding all its segments"
            )
        else:
            first[ann["image_id"]] = k
            usable.append(ann)
    return errors, usable


def _check_layout(data, json_file: str) -> tuple[list[Problem], dict, list[dict]]:
    """(file-level problems, {image id: image}, usable annotations)."""
    if not isinstance(data, dict):
        msg = f"the top level is a {type(data).__name__}, expected a JSON object"
        return [Problem("json_schema", json_file, msg)], {}, []
    errors = [
        f"no {key!r} list at the top level; a COCO panoptic file has 'images', 'annotations' "
        f"(with 'segments_info') and 'categories' (keys found: {sorted(data)[:8]})"
        for key in ("images", "annotations", "categories")
        if not isinstance(data.get(key), list)
    ]
    if errors:
        return [Problem("json_schema", json_file, e) for e in errors], {}, []
    errors, images, known = _check_images(data["images"])
    errors += _category_errors(data["categories"])
    ann_errors, annotations = _annotation_errors(data["annotations"], known)
    problems = [Problem("json_schema", json_file, e) for e in errors + ann_errors]
    unannotated = sorted(set(images) - {a["image_id"] for a in annotations})
    if unannotated:
        msg = (
            f"{len(unannotated)} image(s) have no annotation (ids {_ids(unannotated)}); they "
            f"are left out of the dataset"
        )
        problems.append(Problem("json_schema", json_file, msg, fatal=False))
    return problems, images, [a for a in annotations if a["image_id"] in images]


# --------------------------------------------------------------------------- loading
def _instances_by_file(loader: CheckedCocoPanopticLoader, meta: dict, skip: bool):
    """({image file: instance record}, skipped, image files of the instances JSON)."""
    load = CheckedCocoLoader(loader.instances_json, loader.image_root, loader.dataset_name).load(
        skip
    )
    inst = MetadataCatalog.get(loader.dataset_name)
    ours = (meta["thing_classes"], meta["thing_dataset_id_to_contiguous_id"])
    if (inst.thing_classes, inst.thing_dataset_id_to_contiguous_id) != ours:
        msg = (
            f"its categories {inst.thing_dataset_id_to_contiguous_id} ({inst.thing_classes}) "
            f"are not the thing categories of the panoptic JSON {loader.json_file} "
            f"{ours[1]} ({ours[0]}); both files must give the things the same ids and names"
        )
        problem = Problem("json_schema", loader.instances_json, msg)
        raise CocoPanopticJsonError([problem], loader.dataset_name)
    kept = {r["file_name"]: r for r in load.records}
    return kept, load.skipped, kept.keys() | {s["file_name"] for s in load.skipped}


@dataclass(frozen=True)
class CheckedCocoPanopticLoader(CheckedCocoLoader):
    """The loader :func:`register_coco_panoptic_checked` registers: ``json_file`` is the
    panoptic JSON. As :class:`~seg_plugins.data.coco.CheckedCocoLoader` (which the Trainer
    recognises): calling it loads as registered, :meth:`load` takes the choice to skip bad
    images of ``instances_json`` and returns what it dropped."""

    panoptic_root: str = ""
    instances_json: str | None = None
    sem_seg_root: str | None = None

    def load(self, skip: bool) -> CocoLoad:
        """The records (module docstring); sets the "separated" metadata.

        Raises:
            CocoJsonError: the panoptic JSON (or the instances JSON) cannot be used, or the
                two disagree on the things or the images.
            DataProblemError: images of ``instances_json`` with bad annotations, unless
                ``skip``, which drops them.
        """
        json_file, name = os.fspath(self.json_file), self.dataset_name
        data, problems = _read_json(json_file)
        images, annotations = {}, []
        if not problems:
            problems, images, annotations = _check_layout(data, json_file)
        for p in problems:
            if not p.fatal:
                logger.warning("dataset '%s': %s", name, p)
        if any(p.fatal for p in problems):
            raise CocoPanopticJsonError([p for p in problems if p.fatal], name)
        meta = separated_metadata(data["categories"])
        instances, skipped, listed = {}, [], None
        if self.instances_json:
            instances, skipped, listed = _instances_by_file(self, meta, skip)
        set_json_metadata(name, meta, json_file)
        records = []
        for ann in sorted(annotations, key=lambda a: a["image_id"]):
            record = self._record(images[ann["image_id"]], ann, meta)
            if listed is not None and record["file_name"] not in listed:
                msg = (
                    f"image id {ann['image_id']} ({record['file_name']}) of the panoptic JSON "
                    f"{json_file} is not in the instances JSON; both must list the same images"
                )
                problem = Problem("json_schema", self.instances_json, msg)
                raise CocoPanopticJsonError([problem], name)
            if listed is not None:
                if record["file_name"] not in instances:
                    continue  # a bad image of the instances JSON, dropped (skip)
                record["annotations"] = instances[record["file_name"]]["annotations"]
            records.append(record)
        logger.info("dataset '%s': %d images from %s", name, len(records), json_file)
        return CocoLoad(records, skipped, len(annotations))

    def _record(self, image: dict, ann: dict, meta: dict) -> dict:
        record = {
            "file_name": os.path.join(self.image_root, image["file_name"]),
            "height": image["height"],
            "width": image["width"],
            "image_id": image["id"],
            "pan_seg_file_name": os.path.join(self.panoptic_root, ann["file_name"]),
            "segments_info": convert_segments(
                ann["segments_info"],
                meta["thing_dataset_id_to_contiguous_id"],
                meta["stuff_dataset_id_to_contiguous_id"],
            ),
        }
        if self.sem_seg_root:
            record["sem_seg_file_name"] = os.path.join(self.sem_seg_root, ann["file_name"])
        return record


def register_coco_panoptic_checked(
    name: str,
    json_file: str,
    image_root: str,
    panoptic_root: str,
    *,
    instances_json: str | None = None,
    sem_seg_root: str | None = None,
    metadata: dict | None = None,
    evaluator_type: str | list[str] = "coco_panoptic_seg",
    skip_bad: bool = False,
) -> None:
    """Register ``name``: the COCO panoptic ``json_file`` with its PNGs under
    ``panoptic_root`` and its images under ``image_root``, loaded by a
    :class:`CheckedCocoPanopticLoader` on ``DatasetCatalog.get`` (nothing is read now).

    Args:
        instances_json: COCO instances of the same images: records get ``annotations``
            (Panoptic FPN's instance branch, COCO AP); metadata ``json_file``.
        sem_seg_root: a folder of semantic labels in the separated convention, one PNG per
            panoptic PNG, same file name: records get ``sem_seg_file_name``.
        metadata: extra metadata; the classes and id maps come from the JSON when loaded.
        evaluator_type: a string or a list, e.g. ["sem_seg", "coco", "coco_panoptic_seg"]
            for Panoptic FPN.
        skip_bad: drop images whose instance annotations are bad instead of raising; the
            Trainer's ``DATASETS.SKIP_BAD_SAMPLES`` overrides it.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    metadata = dict(metadata or {})
    own = {"panoptic_json", "panoptic_root", "image_root", "json_file", "sem_seg_root"}
    reserved = sorted((own | {"evaluator_type"}) & set(metadata))
    if reserved:
        raise ValueError(
            f"metadata must not set {reserved}: they are arguments of "
            f"register_coco_panoptic_checked"
        )

    def path(p):
        return None if p is None else os.path.expanduser(os.fspath(p))

    paths = {
        "panoptic_json": path(json_file),
        "image_root": path(image_root),
        "panoptic_root": path(panoptic_root),
        "json_file": path(instances_json),
        "sem_seg_root": path(sem_seg_root),
    }
    loader = CheckedCocoPanopticLoader(
        paths["panoptic_json"],
        paths["image_root"],
        name,
        bool(skip_bad),
        paths["panoptic_root"],
        paths["json_file"],
        paths["sem_seg_root"],
    )
    DatasetCatalog.register(name, loader)
    MetadataCatalog.get(name).set(
        **{k: v for k, v in paths.items() if v is not None},
        evaluator_type=evaluator_type,
        ignore_label=255,
        **metadata,
    )
