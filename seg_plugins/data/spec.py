"""Register datasets from a YAML / JSON *dataset spec*, without writing Python.

A config names its spec files in ``DATASETS.SPECS``; they are registered when the config is
set up (``tools/train_net.py`` and the other tools, and ``Trainer(cfg)`` for a user's own
script), so ``DATASETS.TRAIN`` / ``TEST`` can use the names they define. A spec is read with
``yaml.safe_load`` (JSON is YAML too): nothing in it is executed.

Example (``datasets/polyps.yaml``)::

    name: polyps                 # registers polyps_train and polyps_val
    format: sem_seg_folder       # sem_seg_folder | coco_instances | coco_panoptic | cityscapes
    classes: [background, polyp]
    ignore_label: 255
    mask_values: "0/255"         # binary masks: "0/1" or "0/255" -- required for 2 classes
    root: /data/polyps           # optional; default: the spec file's folder
    splits:
      train: {images: train/images, masks: train/masks, image_ext: .jpg, mask_ext: _mask.png}
      val: {images: val/images, masks: val/masks, image_ext: .jpg, mask_ext: _mask.png}

Fields, by format (relative paths are relative to ``root``):

- every format: ``name`` (names are ``<name>_<split>``; for cityscapes
  ``<name>_sem_seg_<split>`` and ``<name>_instance_seg_<split>``), ``format``, ``splits``.
- ``sem_seg_folder``: ``classes`` (K names), ``ignore_label`` (255), ``evaluator``
  ("sem_seg"), ``reduce_zero_label`` (false), ``mask_values`` (2 classes: required, "0/1"
  or "0/255"), ``colors`` (optional K [r, g, b]); per split ``images``, ``masks``,
  ``image_ext`` (".png"), ``mask_ext`` (".png").
- ``coco_instances``: per split ``json`` and ``images`` (the image root); ``evaluator``
  ("coco"). Classes come from the JSON's categories.
- ``coco_panoptic``: per split ``json`` (the COCO panoptic JSON), ``images`` (the image
  root), ``panoptic`` (its PNG folder), optional ``instances`` (a COCO instances JSON of the
  same images: records get ``annotations``, for Panoptic FPN) and ``sem_seg`` (a folder of
  semantic labels in detectron2's "separated" convention, named as the PNGs); ``evaluator``
  ("coco_panoptic_seg"; a list for several, e.g. [sem_seg, coco, coco_panoptic_seg]).
  Classes come from the JSON's categories (:mod:`seg_plugins.data.coco_panoptic`).
- ``cityscapes``: ``root`` is the Cityscapes folder; ``splits`` a list, e.g. [train, val].
"""

from __future__ import annotations

import difflib
import logging
import os

import yaml
from detectron2.data import DatasetCatalog, MetadataCatalog

__all__ = [
    "DatasetSpecError",
    "load_dataset_spec",
    "register_dataset_spec",
    "register_dataset_specs",
]

logger = logging.getLogger(__name__)

FORMATS = ("sem_seg_folder", "coco_instances", "coco_panoptic", "cityscapes")
_COMMON = {"name", "format", "splits", "root", "description"}
_KEYS = {
    "sem_seg_folder": _COMMON
    | {"classes", "ignore_label", "evaluator", "reduce_zero_label", "mask_values", "colors"},
    "coco_instances": _COMMON | {"evaluator"},
    "coco_panoptic": _COMMON | {"evaluator"},
    "cityscapes": _COMMON,
}
_SPLIT_KEYS = {
    "sem_seg_folder": {"images", "masks", "image_ext", "mask_ext"},
    "coco_instances": {"json", "images"},
    "coco_panoptic": {"json", "images", "panoptic", "instances", "sem_seg"},
}
_REQUIRED_SPLIT_KEYS = {
    "sem_seg_folder": {"images", "masks"},
    "coco_instances": {"json", "images"},
    "coco_panoptic": {"json", "images", "panoptic"},
}


class DatasetSpecError(ValueError):
    """A mistake in a dataset spec; the message names the file and the field."""


def _fail(path: str, msg: str):
    raise DatasetSpecError(f"dataset spec {path!r}: {msg} (see datasets/README.md)")


def _check_keys(path: str, where: str, given, allowed: set[str], required: set[str]) -> None:
    if not isinstance(given, dict):
        _fail(path, f"{where} must be a mapping of fields, got {type(given).__name__}")
    for key in given:
        if key not in allowed:
            match = difflib.get_close_matches(str(key), sorted(allowed), n=1)
            hint = f" (did you mean {match[0]!r}?)" if match else ""
            _fail(path, f"unknown field {key!r} in {where}{hint}; allowed: {sorted(allowed)}")
    missing = sorted(required - set(given))
    if missing:
        _fail(path, f"{where} lacks required field(s) {missing}")


def _typed(path: str, spec: dict, key: str, kind, default=None):
    value = spec.get(key, default)
    if value is not None and not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        _fail(path, f"field {key!r} must be {names}, got {value!r}")
    return value


def load_dataset_spec(path: str) -> dict:
    """Read and validate a spec; returns it with ``root`` made absolute."""
    path = os.path.abspath(os.path.expanduser(str(path)))
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"dataset spec {path!r} (DATASETS.SPECS) not found; give the path of a YAML / JSON "
            f"spec file (relative paths are from the working directory)"
        )
    try:
        with open(path, encoding="utf-8") as f:
            spec = yaml.safe_load(f)
    except yaml.YAMLError as err:
        _fail(path, f"not valid YAML / JSON: {err}")
    if not isinstance(spec, dict):
        _fail(path, f"the top level must be a mapping of fields, got {type(spec).__name__}")
    fmt = spec.get("format")
    if fmt not in FORMATS:
        match = difflib.get_close_matches(str(fmt), FORMATS, n=1)
        hint = f" (did you mean {match[0]!r}?)" if match else ""
        _fail(path, f"field 'format' must be one of {list(FORMATS)}, got {fmt!r}{hint}")
    required = {"name", "format", "splits"} | ({"classes"} if fmt == "sem_seg_folder" else set())
    _check_keys(path, "the spec", spec, _KEYS[fmt], required)
    name = _typed(path, spec, "name", str)
    if not name or any(c.isspace() for c in name):
        _fail(path, f"field 'name' must be a non-empty name without spaces, got {name!r}")
    root = _typed(path, spec, "root", str, os.path.dirname(path))
    spec["root"] = os.path.normpath(os.path.join(os.path.dirname(path), os.path.expanduser(root)))
    splits = spec["splits"]
    if fmt == "cityscapes":
        if not (isinstance(splits, list) and splits and all(isinstance(s, str) for s in splits)):
            _fail(
                path,
                f"field 'splits' of a cityscapes spec is a list like [train, val], got {splits!r}",
            )
    else:
        if not isinstance(splits, dict) or not splits:
            _fail(path, f"field 'splits' must map split names to folders, got {splits!r}")
        for split, fields in splits.items():
            where = f"split {split!r}"
            _check_keys(path, where, fields, _SPLIT_KEYS[fmt], _REQUIRED_SPLIT_KEYS[fmt])
            bad = [key for key, value in fields.items() if not (value and isinstance(value, str))]
            if fmt == "coco_panoptic" and bad:
                _fail(path, f"field {bad[0]!r} of {where} must be a path, got {fields[bad[0]]!r}")
    if fmt == "sem_seg_folder":
        _check_sem_seg_fields(path, spec)
    if fmt == "coco_panoptic":
        evaluator = spec.get("evaluator", "coco_panoptic_seg")
        if not (
            isinstance(evaluator, str)
            or (isinstance(evaluator, list) and all(isinstance(e, str) for e in evaluator))
        ):
            _fail(path, f"field 'evaluator' must be a name or a list of names, got {evaluator!r}")
    spec["_path"] = path
    return spec


def _check_sem_seg_fields(path: str, spec: dict) -> None:
    classes = spec["classes"]
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        _fail(path, f"field 'classes' must be a non-empty list of names, got {classes!r}")
    _typed(path, spec, "ignore_label", int)
    _typed(path, spec, "reduce_zero_label", bool)
    _typed(path, spec, "evaluator", str)
    mask_values = spec.get("mask_values")
    if len(classes) == 2 and mask_values is None:
        _fail(
            path,
            "a 2-class (binary) dataset must say how its masks store the foreground: add "
            "mask_values: '0/1' (foreground pixels are 1) or '0/255' (foreground pixels are "
            "255); it is never guessed, since 255 is also the ignore value",
        )
    if mask_values is not None and len(classes) != 2:
        _fail(path, f"mask_values is for 2-class datasets; this one has {len(classes)} classes")
    if mask_values is not None and str(mask_values) not in ("0/1", "0/255"):
        _fail(path, f"field 'mask_values' must be '0/1' or '0/255', got {mask_values!r}")
    colors = spec.get("colors")
    if colors is not None and not (
        isinstance(colors, list)
        and len(colors) == len(classes)
        and all(isinstance(c, list) and len(c) == 3 for c in colors)
    ):
        _fail(path, f"field 'colors' must list one [r, g, b] per class ({len(classes)})")


def _names(spec: dict) -> list[str]:
    if spec["format"] == "cityscapes":
        return [
            f"{spec['name']}_{t}_{s}" for s in spec["splits"] for t in ("sem_seg", "instance_seg")
        ]
    return [f"{spec['name']}_{s}" for s in spec["splits"]]


def register_dataset_spec(path: str) -> list[str]:
    """Register the datasets of one spec file; returns their names. Calling it again with
    the same file does nothing; a name that something else registered is an error."""
    spec = load_dataset_spec(path)
    path = spec["_path"]
    names = _names(spec)
    # registered from this very file before (the catalogs remember it, not this module)
    if all(
        n in DatasetCatalog and MetadataCatalog.get(n).get("dataset_spec", None) == path
        for n in names
    ):
        return names
    taken = [n for n in names if n in DatasetCatalog.list()]
    if taken:
        _fail(path, f"dataset name(s) {taken} are already registered; change 'name'")
    root, fmt = spec["root"], spec["format"]

    def at(p: str) -> str:
        return os.path.normpath(os.path.join(root, os.path.expanduser(p)))

    if fmt == "sem_seg_folder":
        from .builtin import register_sem_seg_folder

        for split, fields in spec["splits"].items():
            name = f"{spec['name']}_{split}"
            register_sem_seg_folder(
                name,
                at(fields["images"]),
                at(fields["masks"]),
                stuff_classes=list(spec["classes"]),
                ignore_label=spec.get("ignore_label", 255),
                image_ext=fields.get("image_ext", ".png"),
                mask_ext=fields.get("mask_ext", ".png"),
                evaluator_type=spec.get("evaluator", "sem_seg"),
                reduce_zero_label=spec.get("reduce_zero_label", False),
                mask_values=None if spec.get("mask_values") is None else str(spec["mask_values"]),
            )
            if spec.get("colors"):
                MetadataCatalog.get(name).set(stuff_colors=[list(c) for c in spec["colors"]])
    elif fmt == "coco_panoptic":
        from .coco_panoptic import register_coco_panoptic_checked

        for split, fields in spec["splits"].items():
            optional = {"instances": "instances_json", "sem_seg": "sem_seg_root"}
            register_coco_panoptic_checked(
                f"{spec['name']}_{split}",
                at(fields["json"]),
                at(fields["images"]),
                at(fields["panoptic"]),
                evaluator_type=spec.get("evaluator", "coco_panoptic_seg"),
                **{arg: at(fields[key]) for key, arg in optional.items() if key in fields},
            )
    elif fmt == "coco_instances":
        from .coco import register_coco_instances_checked

        for split, fields in spec["splits"].items():
            register_coco_instances_checked(
                f"{spec['name']}_{split}",
                at(fields["json"]),
                at(fields["images"]),
                evaluator_type=spec.get("evaluator", "coco"),
            )
    else:
        from .cityscapes import register_cityscapes

        register_cityscapes(root, prefix=spec["name"], splits=tuple(spec["splits"]))
    for name in names:
        MetadataCatalog.get(name).set(dataset_spec=path)
    logger.info("registered %s from dataset spec %s", names, path)
    return names


def register_dataset_specs(cfg_or_paths) -> list[str]:
    """Register every spec of ``cfg.DATASETS.SPECS`` (or a list of paths)."""
    paths = cfg_or_paths
    if hasattr(cfg_or_paths, "DATASETS"):
        paths = cfg_or_paths.DATASETS.get("SPECS", [])
    names = []
    for path in paths:
        names += register_dataset_spec(path)
    return names
