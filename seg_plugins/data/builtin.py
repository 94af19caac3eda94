"""Datasets the reference configs name that detectron2 v0.6 does not register itself, and
``register_sem_seg_folder`` for any "images folder + masks folder" semantic dataset.

detectron2 registers, under ``$DETECTRON2_DATASETS`` (default ``./datasets``),
``cityscapes_fine_sem_seg_{train,val}`` (evaluator_type "cityscapes_sem_seg") and
``ade20k_sem_seg_{train,val}`` ("sem_seg"). ``import seg_plugins`` adds, under the same root:

- ``voc_2012_sem_seg_train`` / ``voc_2012_sem_seg_val``: PASCAL VOC 2012 segmentation,
  ``VOCdevkit/VOC2012/{JPEGImages, SegmentationClass, ImageSets/Segmentation/{train,val}.txt}``.
- ``voc_2012_aug_sem_seg_train``: mmsegmentation's "voc12aug" training set (10,582 images):
  ``train.txt`` with ``SegmentationClass`` plus ``aug.txt`` with ``SegmentationClassAug``, both
  written by mmsegmentation's ``tools/dataset_converters/voc_aug.py`` from SBD.
- ``medical_binary_train`` / ``medical_binary_val``: ``medical_binary/{train,val}/{images,masks}/
  <case>.png``, classes ["background", "foreground"].

Label maps are single-channel PNGs of class indices (255 = ignore), read raw by
:func:`seg_plugins.data.read_label` (VOC's palette PNGs give their indices). Registration
lists no files: folders are listed when ``DatasetCatalog.get`` is called (as detectron2 does),
and a missing folder raises FileNotFoundError then, naming the path and what belongs there.
Records: ``file_name``, ``sem_seg_file_name``, ``height``, ``width`` (from the image header),
``image_id`` (the file stem). See datasets/README.md.

Example::

    from seg_plugins.data import register_sem_seg_folder

    register_sem_seg_folder(
        "polyps_train", "data/polyps/train/images", "data/polyps/train/masks",
        stuff_classes=["background", "polyp"], image_ext=".jpg", mask_ext="_mask.png",
    )
"""

from __future__ import annotations

import functools
import logging
import os

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog

from .io import image_size, read_label
from .labels import label_transform_for
from .shapes import _default_root

__all__ = [
    "MEDICAL_BINARY_CLASSES",
    "VOC_CLASSES",
    "load_sem_seg_folder",
    "load_voc_sem_seg",
    "register_builtin_datasets",
    "register_medical_binary",
    "register_sem_seg_folder",
    "register_voc_2012_sem_seg",
]

logger = logging.getLogger(__name__)

IGNORE_LABEL = 255
# fmt: off
VOC_CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
]
# fmt: on
MEDICAL_BINARY_CLASSES = ["background", "foreground"]
_SHOWN = 5  # unmatched / missing files named in an error message
_README = "see datasets/README.md"
_VOC_FIX = (
    "Download VOCtrainval_11-May-2012.tar from http://host.robots.ox.ac.uk/pascal/VOC/voc2012/ "
    "and extract it in {root} (it creates VOCdevkit/VOC2012), or set DETECTRON2_DATASETS to "
    "the folder that holds VOCdevkit; " + _README + "."
)
_VOC_AUG_FIX = (
    "Build it from SBD (https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/"
    "semantic_contours/benchmark.tgz) with mmsegmentation's tools/dataset_converters/"
    "voc_aug.py <VOCdevkit> <benchmark_RELEASE>, which writes SegmentationClassAug/ and "
    "ImageSets/Segmentation/aug.txt; " + _README + "."
)


# --------------------------------------------------------------------------- records
def _voc_colormap(n: int) -> list[list[int]]:
    """The PASCAL VOC palette: the colours its SegmentationClass PNGs show for indices 0..n-1."""
    colors = []
    for index in range(n):
        rgb, c = [0, 0, 0], index
        for shift in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((c >> channel) & 1) << shift
            c >>= 3
        colors.append(rgb)
    return colors


def _records(
    pairs: list[tuple[str, str]], label_transform: dict | None = None, dataset_name: str = ""
) -> list[dict]:
    """One record per (image, mask) pair, with the image's size from its header. An image
    whose header cannot be read keeps its record without a size instead of stopping the
    listing: the dataset checks (DATASETS.CHECK, run when a loader is built, and
    tools/check_dataset.py) then name it in their report with every other problem, in the
    same words whichever path reads it first, and DATASETS.SKIP_BAD_SAMPLES skips and counts
    it like any bad sample."""
    records, unreadable = [], []
    for image_file, mask_file in pairs:
        record = {
            "file_name": image_file,
            "sem_seg_file_name": mask_file,
            "image_id": os.path.splitext(os.path.basename(image_file))[0],
        }
        try:
            record["height"], record["width"] = image_size(image_file)
        except (OSError, ValueError):
            unreadable.append(image_file)
        if label_transform is not None:
            record["sem_seg_label_transform"] = dict(label_transform)
        records.append(record)
    if unreadable:
        logger.warning(
            "dataset '%s': %d image(s) could not be read while listing, e.g. %r; the dataset "
            "check names each one (tools/check_dataset.py %s)",
            dataset_name, len(unreadable), unreadable[0], dataset_name,
        )
    return records


def _first(items: list[str]) -> str:
    shown = ", ".join(repr(i) for i in items[:_SHOWN])
    return shown + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def _require_dir(path: str, dataset_name: str, what: str, fix: str) -> None:
    if not os.path.isdir(path):
        raise FileNotFoundError(f"dataset '{dataset_name}': {what} {path!r} not found. {fix}")


# --------------------------------------------------------------------------- folder pairs
def _stems(folder: str, ext: str) -> dict[str, str]:
    """{stem: file name} of the files in ``folder`` whose name ends with ``ext`` (any case)."""
    ext = ext.lower()
    return {
        name[: -len(ext)]: name
        for name in sorted(os.listdir(folder))
        if name.lower().endswith(ext) and len(name) > len(ext) and not name.startswith(".")
    }


def _check_pairs(image_dir, mask_dir, images, masks, image_ext, mask_ext, dataset_name) -> None:
    if not images:
        raise FileNotFoundError(
            f"dataset '{dataset_name}': no '*{image_ext}' files in {image_dir!r}; put the images "
            f"there or register the dataset with the image_ext they have."
        )
    no_mask = sorted(images.keys() - masks.keys())
    no_image = sorted(masks.keys() - images.keys())
    if not (no_mask or no_image):
        return
    lines = [f"dataset '{dataset_name}': images and masks are paired by file stem, but"]
    if no_mask:
        names = [images[s] for s in no_mask]
        lines.append(
            f"  {len(names)} image(s) in {image_dir!r} have no '<stem>{mask_ext}' in "
            f"{mask_dir!r}: {_first(names)}"
        )
    if no_image:
        names = [masks[s] for s in no_image]
        lines.append(
            f"  {len(names)} mask(s) in {mask_dir!r} have no '<stem>{image_ext}' in "
            f"{image_dir!r}: {_first(names)}"
        )
    lines.append(
        "Give every image exactly one mask with the same stem (remove or add files), or "
        "register the dataset with the image_ext / mask_ext the files have (mask_ext may "
        "include a suffix such as '_mask.png')."
    )
    raise ValueError("\n".join(lines))


def _warn_if_0_255_binary(records: list[dict], ignore_label: int, dataset_name: str) -> None:
    """A binary mask saved as 0/255 would silently become "background + ignore" when 255 is
    the ignore label; look at the first mask (one read) and say so."""
    if not records or ignore_label != 255:
        return
    try:
        values = set(np.unique(read_label(records[0]["sem_seg_file_name"])).tolist())
    except (OSError, ValueError):
        return  # an unreadable mask: the dataset check names it with the other problems
    if 255 in values and values <= {0, 255}:
        logger.warning(
            "dataset '%s': mask %r holds only 0 and 255; 255 is the ignore label, so its "
            "foreground would be ignored. Register the dataset with mask_values='0/255' "
            "(dataset spec: mask_values: '0/255'), or save foreground as 1.",
            dataset_name,
            records[0]["sem_seg_file_name"],
        )


def load_sem_seg_folder(
    image_dir: str,
    mask_dir: str,
    *,
    image_ext: str = ".png",
    mask_ext: str = ".png",
    dataset_name: str = "",
    num_classes: int = 0,
    ignore_label: int = IGNORE_LABEL,
    label_transform: dict | None = None,
) -> list[dict]:
    """Records of the images in ``image_dir`` paired by stem with the masks in ``mask_dir``
    (``<stem><image_ext>`` with ``<stem><mask_ext>``), in file-name order.

    ``num_classes`` and ``ignore_label`` only shape the messages (and, for 2 classes without
    a stated ``label_transform``, a warning when the first mask looks like a 0/255 mask).
    ``label_transform`` (:mod:`seg_plugins.data.labels`) is stored in every record.

    Raises:
        FileNotFoundError: a folder is missing, or holds no ``*<image_ext>`` file.
        ValueError: an image has no mask or a mask no image (the first few are named).
    """
    indices = f" 0..{num_classes - 1}" if num_classes > 0 else ""
    fix = (
        f"Expected images <case>{image_ext} in {image_dir!r} and their label maps "
        f"<case>{mask_ext} in {mask_dir!r} (single-channel PNGs of class indices{indices}, "
        f"{ignore_label} = ignore); put them there or register the dataset with the folders "
        f"where they are; {_README}."
    )
    _require_dir(image_dir, dataset_name, "image folder", fix)
    _require_dir(mask_dir, dataset_name, "mask folder", fix)
    images, masks = _stems(image_dir, image_ext), _stems(mask_dir, mask_ext)
    _check_pairs(image_dir, mask_dir, images, masks, image_ext, mask_ext, dataset_name)
    pairs = [(os.path.join(image_dir, images[s]), os.path.join(mask_dir, masks[s])) for s in images]
    records = _records(pairs, label_transform, dataset_name)
    if num_classes == 2 and label_transform is None:
        _warn_if_0_255_binary(records, ignore_label, dataset_name)
    logger.info("dataset '%s': %d image/mask pairs from %s", dataset_name, len(records), image_dir)
    return records


def register_sem_seg_folder(
    name: str,
    image_dir: str,
    mask_dir: str,
    *,
    stuff_classes: list[str],
    ignore_label: int = IGNORE_LABEL,
    image_ext: str = ".png",
    mask_ext: str = ".png",
    evaluator_type: str = "sem_seg",
    reduce_zero_label: bool = False,
    mask_values: str | None = None,
) -> None:
    """Register ``name``: the images of ``image_dir`` paired by file stem with the label maps
    of ``mask_dir`` (see :func:`load_sem_seg_folder`). Nothing is listed until
    ``DatasetCatalog.get(name)``.

    Args:
        stuff_classes: the K class names; label value k is ``stuff_classes[k]``. A binary
            task has two, ["background", <foreground>] (models: MODEL.SEM_SEG_HEAD.NUM_CLASSES
            1 or 2).
        ignore_label: label value of unlabelled pixels (not a class index).
        image_ext, mask_ext: what follows the stem in image / mask file names, e.g. ".png",
            ".jpg", "_mask.png" (matched case-insensitively).
        evaluator_type: metadata read by seg_plugins' Trainer ("sem_seg").
        reduce_zero_label: labels are 0..K with 0 = not labelled (ADE20K's raw
            annotations): read as 0 -> ignore_label, k -> k - 1.
        mask_values: for a binary dataset, how its masks store foreground: "0/1" or "0/255"
            (255 read as 1). None: label values are class indices as stored.
    """
    label_transform = label_transform_for(
        reduce_zero_label=reduce_zero_label, mask_values=mask_values, ignore_label=ignore_label
    )
    if mask_values is not None and len(stuff_classes) != 2:
        raise ValueError(
            f"mask_values {mask_values!r} describes binary masks, but {len(stuff_classes)} "
            f"classes were given; give 2 classes (['background', <foreground>])"
        )
    if not stuff_classes or not all(isinstance(c, str) for c in stuff_classes):
        raise ValueError(f"stuff_classes must be a non-empty list of names, got {stuff_classes!r}")
    if 0 <= ignore_label < len(stuff_classes):
        raise ValueError(
            f"ignore_label {ignore_label} is the index of class {stuff_classes[ignore_label]!r}; "
            f"use a value outside 0..{len(stuff_classes) - 1}, e.g. 255"
        )
    if not image_ext or not mask_ext:
        raise ValueError(
            f"image_ext and mask_ext must be non-empty, got {image_ext!r}, {mask_ext!r}"
        )
    image_dir, mask_dir = os.path.expanduser(str(image_dir)), os.path.expanduser(str(mask_dir))
    loader = functools.partial(
        load_sem_seg_folder,
        image_dir,
        mask_dir,
        image_ext=image_ext,
        mask_ext=mask_ext,
        dataset_name=name,
        num_classes=len(stuff_classes),
        ignore_label=ignore_label,
        label_transform=label_transform,
    )
    DatasetCatalog.register(name, loader)
    MetadataCatalog.get(name).set(
        stuff_classes=list(stuff_classes),
        ignore_label=ignore_label,
        evaluator_type=evaluator_type,
        image_root=image_dir,
        sem_seg_root=mask_dir,
        reduce_zero_label=bool(reduce_zero_label),
        mask_values=mask_values,
    )


# --------------------------------------------------------------------------- PASCAL VOC
def _read_split(path: str, dataset_name: str, fix: str) -> list[str]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"dataset '{dataset_name}': split file {path!r} not found. {fix}")
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def load_voc_sem_seg(voc_dir: str, splits: list[tuple[str, str]], dataset_name: str) -> list[dict]:
    """Records of PASCAL VOC 2012 segmentation: for each (split file name under
    ``ImageSets/Segmentation``, label folder), ``JPEGImages/<id>.jpg`` with ``<folder>/<id>.png``.

    Raises:
        FileNotFoundError naming the missing folder / split file / listed files, and the fix.
    """
    root = os.path.dirname(os.path.dirname(voc_dir.rstrip(os.sep)))
    voc_fix = _VOC_FIX.format(root=repr(root))
    _require_dir(voc_dir, dataset_name, "folder", voc_fix)
    image_dir = os.path.join(voc_dir, "JPEGImages")
    _require_dir(image_dir, dataset_name, "image folder", voc_fix)
    pairs = []
    for split_file, label_folder in splits:
        fix = _VOC_AUG_FIX if label_folder == "SegmentationClassAug" else voc_fix
        mask_dir = os.path.join(voc_dir, label_folder)
        _require_dir(mask_dir, dataset_name, "label folder", fix)
        split_path = os.path.join(voc_dir, "ImageSets", "Segmentation", split_file)
        ids = _read_split(split_path, dataset_name, fix)
        join = os.path.join
        pairs += [(join(image_dir, f"{i}.jpg"), join(mask_dir, f"{i}.png")) for i in ids]
    missing = [path for pair in pairs for path in pair if not os.path.isfile(path)]
    if missing:
        raise FileNotFoundError(
            f"dataset '{dataset_name}': {len(missing)} file(s) listed in the split file(s) "
            f"{[s for s, _ in splits]} are missing: {_first(missing)}. The download or the "
            f"conversion is incomplete; {_README}."
        )
    logger.info("dataset '%s': %d images from %s", dataset_name, len(pairs), voc_dir)
    return _records(pairs, dataset_name=dataset_name)


def register_voc_2012_sem_seg(root: str | None = None, *, prefix: str = "voc_2012") -> list[str]:
    """Register ``{prefix}_sem_seg_train``, ``{prefix}_sem_seg_val`` and
    ``{prefix}_aug_sem_seg_train`` on ``<root>/VOCdevkit/VOC2012`` (``root`` defaults to
    ``$DETECTRON2_DATASETS`` or ``datasets``). Returns the names."""
    root = _default_root() if root is None else os.path.expanduser(str(root))
    voc_dir = os.path.join(root, "VOCdevkit", "VOC2012")
    splits = {
        f"{prefix}_sem_seg_train": [("train.txt", "SegmentationClass")],
        f"{prefix}_sem_seg_val": [("val.txt", "SegmentationClass")],
        # mmsegmentation's voc12aug: VOC's own train labels + SBD's for the 9,118 others
        f"{prefix}_aug_sem_seg_train": [
            ("train.txt", "SegmentationClass"),
            ("aug.txt", "SegmentationClassAug"),
        ],
    }
    for name, name_splits in splits.items():
        DatasetCatalog.register(
            name, functools.partial(load_voc_sem_seg, voc_dir, name_splits, name)
        )
        MetadataCatalog.get(name).set(
            stuff_classes=list(VOC_CLASSES),
            stuff_colors=_voc_colormap(len(VOC_CLASSES)),
            ignore_label=IGNORE_LABEL,
            evaluator_type="sem_seg",
            image_root=os.path.join(voc_dir, "JPEGImages"),
            sem_seg_root=os.path.join(voc_dir, name_splits[-1][1]),
        )
    return list(splits)


# --------------------------------------------------------------------------- medical
def register_medical_binary(
    root: str | None = None, *, prefix: str = "medical_binary"
) -> list[str]:
    """Register ``{prefix}_train`` / ``{prefix}_val``: the folder pairs
    ``<root>/medical_binary/{train,val}/{images,masks}/<case>.png`` (8- or 16-bit images; masks 0 =
    background, 1 = foreground, 255 = ignore). Returns the names."""
    root = _default_root() if root is None else os.path.expanduser(str(root))
    names = []
    for split in ("train", "val"):
        split_dir = os.path.join(root, "medical_binary", split)
        name = f"{prefix}_{split}"
        register_sem_seg_folder(
            name,
            os.path.join(split_dir, "images"),
            os.path.join(split_dir, "masks"),
            stuff_classes=list(MEDICAL_BINARY_CLASSES),
        )
        names.append(name)
    return names


def register_builtin_datasets(root: str | None = None) -> list[str]:
    """Register the VOC and medical datasets above (called on ``import seg_plugins``)."""
    return register_voc_2012_sem_seg(root) + register_medical_binary(root)
