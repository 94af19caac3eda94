"""Cityscapes fine annotations (semantic and instance) for a Cityscapes tree anywhere.

detectron2 registers ``cityscapes_fine_{sem_seg,instance_seg}_{train,val,test}`` on
``$DETECTRON2_DATASETS/cityscapes`` (default ``./datasets/cityscapes``).
:func:`register_cityscapes` registers the same two tasks, with detectron2's loaders and the
same metadata, for a tree somewhere else, under a prefix of your choice::

    root/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    root/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_polygons.json
        ..._gtFine_labelIds.png, ..._gtFine_instanceIds.png   (both in gtFine_trainvaltest.zip)
        ..._gtFine_labelTrainIds.png   (semantic only; python datasets/prepare_cityscapes.py)

Semantic records (``load_cityscapes_semantic``): ``file_name``, ``sem_seg_file_name`` (the
labelTrainIds PNG: trainIds 0..18, 255 = ignore), ``height``, ``width``. Instance records
(``load_cityscapes_instances(from_json=True, to_polygons=True)``): ``file_name``,
``image_id``, ``height``, ``width``, ``annotations`` with polygons in XYXY_ABS boxes,
``category_id`` 0..7 (``thing_classes``) and ``iscrowd`` for "group" polygons (e.g.
"cargroup"). Both sorted by ``file_name``. The instance loader needs shapely.

Registration reads nothing. ``DatasetCatalog.get`` first checks the layout that detectron2's
loaders assume (they would stop on an ``assert`` or a ``KeyError``) and raises
FileNotFoundError / ValueError naming the path and the fix; see datasets/README.md.

Example::

    from seg_plugins.data.cityscapes import register_cityscapes

    names = register_cityscapes("/data/cityscapes", prefix="my_cityscapes")
    # ['my_cityscapes_sem_seg_train', 'my_cityscapes_instance_seg_train',
    #  'my_cityscapes_sem_seg_val', 'my_cityscapes_instance_seg_val']
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shlex

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.cityscapes import (
    load_cityscapes_instances,
    load_cityscapes_semantic,
)

from .. import compat
from .validation import DataProblemError, Problem

__all__ = ["register_cityscapes"]

logger = logging.getLogger(__name__)

IGNORE_LABEL = 255
IMAGE_SUFFIX = "_leftImg8bit.png"
_SHOWN = 5  # files named in an error message
_DOWNLOAD = (
    "Download {archive} from https://www.cityscapes-dataset.com/downloads/ (free account; "
    "or csDownload {archive}) and unzip it in {root!r}; see datasets/README.md."
)
_ARCHIVES = {"leftImg8bit": "leftImg8bit_trainvaltest.zip", "gtFine": "gtFine_trainvaltest.zip"}
# What each task reads per image; detectron2's loaders also assert that the first image's
# labelIds / instanceIds exist, and the official evaluators read them for every image.
_GTFINE_KINDS = ("polygons.json", "labelIds.png", "instanceIds.png")
_TRAIN_IDS = "labelTrainIds.png"


def _first(items: list[str]) -> str:
    shown = ", ".join(repr(i) for i in items[:_SHOWN])
    return shown + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def _list_images(root: str, split: str, dataset_name: str) -> list[str]:
    """Every ``leftImg8bit/<split>/<city>/*_leftImg8bit.png``, sorted, after checking that the
    image folder holds city folders of such files only (detectron2 asserts it)."""
    image_dir = os.path.join(root, "leftImg8bit", split)
    for top in ("leftImg8bit", "gtFine"):
        folder = os.path.join(root, top, split)
        if not os.path.isdir(folder):
            raise FileNotFoundError(
                f"dataset '{dataset_name}': folder {folder!r} not found. "
                + _DOWNLOAD.format(archive=_ARCHIVES[top], root=root)
            )
    images, stray = [], []
    for city in sorted(os.listdir(image_dir)):
        city_dir = os.path.join(image_dir, city)
        if not os.path.isdir(city_dir):
            stray.append(city_dir)
            continue
        for name in sorted(os.listdir(city_dir)):
            path = os.path.join(city_dir, name)
            (images if name.endswith(IMAGE_SUFFIX) else stray).append(path)
    if stray:
        raise ValueError(
            f"dataset '{dataset_name}': {image_dir!r} must hold <city>/ folders of "
            f"*{IMAGE_SUFFIX} files only (detectron2's loader stops on anything else); move "
            f"these away: {_first(stray)}"
        )
    if not images:
        raise FileNotFoundError(
            f"dataset '{dataset_name}': no <city>/*{IMAGE_SUFFIX} in {image_dir!r}. "
            + _DOWNLOAD.format(archive=_ARCHIVES["leftImg8bit"], root=root)
        )
    return images


def _gt_file(image_file: str, root: str, split: str, kind: str) -> str:
    """``gtFine/<split>/<city>/<stem>_gtFine_<kind>`` of a leftImg8bit image."""
    city = os.path.basename(os.path.dirname(image_file))
    stem = os.path.basename(image_file)[: -len(IMAGE_SUFFIX)]
    return os.path.join(root, "gtFine", split, city, f"{stem}_gtFine_{kind}")


def _require_gt(images, root, split, kinds, dataset_name, fix) -> None:
    missing = [
        path
        for image in images
        for path in (_gt_file(image, root, split, kind) for kind in kinds)
        if not os.path.isfile(path)
    ]
    if missing:
        raise FileNotFoundError(
            f"dataset '{dataset_name}': {len(missing)} ground-truth file(s) for the "
            f"{len(images)} images of {os.path.join(root, 'leftImg8bit', split)!r} are "
            f"missing: {_first(missing)}. {fix}"
        )


def _check_split(root: str, split: str, dataset_name: str, semantic: bool) -> int:
    """Raise, naming the path and the fix, where detectron2's loader would fail; returns
    the number of images."""
    images = _list_images(root, split, dataset_name)
    extract = "gtFine is incomplete: " + _DOWNLOAD.format(archive=_ARCHIVES["gtFine"], root=root)
    _require_gt(images, root, split, _GTFINE_KINDS, dataset_name, extract)
    if semantic:
        prepare = (
            f"Write them from the polygons with: python datasets/prepare_cityscapes.py "
            f"{shlex.quote(root)} --splits {split} (or cityscapesscripts' "
            f"csCreateTrainIdLabelImgs)."
        )
        _require_gt(images, root, split, (_TRAIN_IDS,), dataset_name, prepare)
    return len(images)


def _polygon_file_problems(root: str, split: str, dataset_name: str) -> list[Problem]:
    """Every ``*_gtFine_polygons.json`` of the split that does not parse or lacks the keys
    detectron2's loaders read (imgHeight, imgWidth, objects), named with the fix."""
    fix = "re-extract it from " + _ARCHIVES["gtFine"]
    problems = []
    for image in _list_images(root, split, dataset_name):
        path = _gt_file(image, root, split, "polygons.json")
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            missing = [k for k in ("imgHeight", "imgWidth", "objects") if k not in data]
        except (OSError, ValueError, TypeError) as err:  # JSONDecodeError, UnicodeDecodeError
            msg = f"not a readable JSON file ({err}); {fix}"
            problems.append(Problem("json_schema", path, msg))
            continue
        if missing:
            problems.append(Problem("json_schema", path, f"has no {missing}; {fix}"))
    return problems


def _load(root: str, split: str, dataset_name: str, semantic: bool) -> list[dict]:
    num_images = _check_split(root, split, dataset_name, semantic)
    image_dir = os.path.join(root, "leftImg8bit", split)
    gt_dir = os.path.join(root, "gtFine", split)
    try:
        if semantic:
            records = load_cityscapes_semantic(image_dir, gt_dir)
        else:
            records = load_cityscapes_instances(
                image_dir, gt_dir, from_json=True, to_polygons=True
            )
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        # detectron2's loaders stop at the first broken polygons JSON with a bare parser
        # error; the files are only scanned on that failure path, to name each one
        problems = _polygon_file_problems(root, split, dataset_name)
        if not problems:
            raise
        raise DataProblemError(problems, dataset_name, num_images) from err
    assert len(records) == num_images, (len(records), num_images)  # the same listing
    records.sort(key=lambda r: r["file_name"])  # detectron2 keeps os.listdir's order
    logger.info("dataset '%s': %d images from %s", dataset_name, len(records), image_dir)
    return records


def _taken(name: str) -> bool:
    if name in DatasetCatalog.list():
        return True
    # MetadataCatalog.get() creates an empty entry on a mere lookup; only a filled one counts.
    return name in MetadataCatalog.list() and set(MetadataCatalog.get(name).as_dict()) != {"name"}


def _check_args(prefix, splits) -> None:
    if not isinstance(prefix, str) or not prefix:
        raise ValueError(f"prefix must be a non-empty string, got {prefix!r}")
    if isinstance(splits, str) or not splits:
        raise ValueError(
            f"splits must be a non-empty sequence of split names, got {splits!r}; "
            f"e.g. splits=('val',)"
        )
    bad = [s for s in splits if not isinstance(s, str) or not s or os.sep in s]
    if bad or len(set(splits)) != len(splits):
        raise ValueError(
            f"splits must be distinct folder names under leftImg8bit/ and gtFine/ "
            f"('train', 'val', 'test'), got {list(splits)!r}"
        )


def register_cityscapes(root, *, prefix: str, splits=("train", "val")) -> list[str]:
    """Register ``{prefix}_sem_seg_{split}`` and ``{prefix}_instance_seg_{split}`` for each
    split of the Cityscapes tree at ``root`` (see the module docstring for the layout).

    Metadata as detectron2 gives ``cityscapes_fine_*``: ``thing_classes`` (8),
    ``stuff_classes`` (19, trainId order), ``image_dir`` (``root/leftImg8bit/<split>``),
    ``gt_dir`` (``root/gtFine/<split>``), ``evaluator_type`` "cityscapes_sem_seg" (plus
    ``ignore_label`` 255) or "cityscapes_instance".

    Nothing is read here; ``DatasetCatalog.get(name)`` lists the files and raises
    FileNotFoundError / ValueError naming the path and the fix when a folder, the images,
    the gtFine files or (semantic) the labelTrainIds PNGs are missing.

    Returns:
        The registered names, per split: semantic, then instance.

    Raises:
        ValueError: a name is already registered (detectron2 itself registers the prefix
            "cityscapes_fine" on $DETECTRON2_DATASETS/cityscapes), or bad arguments.
    """
    _check_args(prefix, splits)
    root = os.path.expanduser(os.fspath(root))
    tasks = (("sem_seg", True), ("instance_seg", False))
    names = [
        (f"{prefix}_{task}_{split}", split, semantic)
        for split in splits
        for task, semantic in tasks
    ]
    taken = [name for name, _, _ in names if _taken(name)]
    if taken:
        raise ValueError(
            f"dataset name(s) {taken} already registered (detectron2 registers "
            f"cityscapes_fine_* on $DETECTRON2_DATASETS/cityscapes itself); pass another "
            f"prefix, or DatasetCatalog.remove(name) and MetadataCatalog.remove(name) first"
        )
    for name, split, semantic in names:
        DatasetCatalog.register(name, functools.partial(_load, root, split, name, semantic))
        meta = {
            "image_dir": os.path.join(root, "leftImg8bit", split),
            "gt_dir": os.path.join(root, "gtFine", split),
            "evaluator_type": "cityscapes_sem_seg" if semantic else "cityscapes_instance",
            **compat.cityscapes_metadata(),
        }
        if semantic:
            meta["ignore_label"] = IGNORE_LABEL
        MetadataCatalog.get(name).set(**meta)
    return [name for name, _, _ in names]
