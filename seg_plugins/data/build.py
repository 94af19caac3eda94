"""Dataset dicts for the loaders, checked first (``DATASETS.CHECK``), with bad samples
stopping the run or skipped (``DATASETS.SKIP_BAD_SAMPLES``).

The Trainer calls :func:`checked_dataset_dicts` per dataset name (detectron2's
``get_detection_dataset_dicts`` concatenates names and would hide which dataset a bad
record came from), hands the records to detectron2's ``build_detection_*_loader`` and writes
the :class:`SkipReport` it got back to ``OUTPUT_DIR/skipped_samples.json``. What was skipped
is a value returned to the caller, never kept in this module: a second run in the same
process starts from nothing.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Mapping

from detectron2.data import DatasetCatalog, MetadataCatalog, get_detection_dataset_dicts
from detectron2.data.build import (
    filter_images_with_few_keypoints,
    filter_images_with_only_crowd_annotations,
    load_proposals_into_dataset,
    print_instances_class_histogram,
)
from detectron2.utils import comm

from .coco import CheckedCocoLoader
from .validation import check_dataset_records, filter_bad_records, write_skip_report

__all__ = ["SKIP_REPORT_FILE", "SkipReport", "checked_dataset_dicts"]

logger = logging.getLogger(__name__)

CHECK_LEVELS = ("off", "light", "full")
SKIP_REPORT_FILE = "skipped_samples.json"


@dataclass(frozen=True)
class SkipReport:
    """What the dataset checks skipped, by dataset name: {name: {"total": N, "level": ...,
    "skipped": [{"file_name", "problems": [...]}, ...]}}.

    ``datasets`` holds the datasets with something skipped (a read-only copy); ``covered``
    names every dataset the report speaks for, skipped or not, so that :meth:`write` can
    remove what an earlier run wrote for a dataset that is clean now.

    Example::

        records, report = checked_dataset_dicts(cfg, cfg.DATASETS.TRAIN, is_train=True)
        if report:
            print(sorted(report.datasets))  # the datasets with skipped samples
        report.write(cfg.OUTPUT_DIR)
    """

    datasets: Mapping[str, dict] = field(default_factory=dict)
    covered: tuple[str, ...] = ()

    def __post_init__(self):
        entries = {name: dict(entry) for name, entry in self.datasets.items()}
        object.__setattr__(self, "datasets", MappingProxyType(entries))
        # a dataset with an entry is covered by the report, whether or not it is named
        object.__setattr__(self, "covered", tuple(dict.fromkeys((*self.covered, *entries))))

    def __bool__(self) -> bool:
        return any(entry["skipped"] for entry in self.datasets.values())

    def write(self, output_dir: str) -> str | None:
        """Update ``output_dir/skipped_samples.json`` (main process only; atomically): the
        entries of the covered datasets are replaced by this report's (removed for a dataset
        with nothing skipped), those of other datasets kept (the train and test loaders of a
        run write theirs one after the other); the file is deleted when no entry is left.
        Returns the path when this report skipped something, else None."""
        if not output_dir or not comm.is_main_process():
            return None
        path = os.path.join(output_dir, SKIP_REPORT_FILE)
        old = _read_skip_report(path)
        entries = {name: entry for name, entry in old.items() if name not in self.covered}
        entries.update(self.datasets)
        if entries and entries != old:
            write_skip_report(path, entries)
        elif not entries and os.path.exists(path):
            os.remove(path)
        if not self:
            return None
        count = sum(len(entry["skipped"]) for entry in self.datasets.values())
        logger.warning("%d bad sample(s) skipped; listed in %s", count, path)
        return path


def _read_skip_report(path: str) -> dict:
    """The entries of an existing skip report; {} when there is none or it is not one
    (it is rewritten then: it only lists what earlier runs skipped)."""
    try:
        with open(path, encoding="utf-8") as f:
            entries = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        logger.warning("%s is not a skip report (%s); it is replaced", path, err)
        return {}
    if not isinstance(entries, dict):
        logger.warning("%s is not a skip report (not a JSON object); it is replaced", path)
        return {}
    return entries


def _check_level(cfg, is_train: bool) -> str:
    level = cfg.DATASETS.CHECK
    if level not in CHECK_LEVELS:
        raise ValueError(f"DATASETS.CHECK must be one of {CHECK_LEVELS}, got {level!r}")
    if not is_train and cfg.DATASETS.SKIP_BAD_SAMPLES and level != "off":
        # An evaluation cannot swap a bad image for another one at mapping time, as training
        # does; so its bad samples are all found first, by decoding each once.
        return "full"
    return level


def _prepare(name: str, dicts: list[dict], *, filter_empty, min_keypoints, proposal_file):
    """What detectron2's ``get_detection_dataset_dicts([name], ...)`` does to the records of
    one dataset after loading them: proposals, crowd-only / few-keypoint images filtered,
    the class histogram logged. (Its metadata-consistency check compares several datasets;
    one agrees with itself.)"""
    if not dicts:
        raise ValueError(f"Dataset '{name}' is empty! Its annotation file lists no image.")
    if proposal_file is not None:
        dicts = load_proposals_into_dataset(dicts, proposal_file)
    has_instances = "annotations" in dicts[0]
    if filter_empty and has_instances:
        dicts = filter_images_with_only_crowd_annotations(dicts)
    if min_keypoints > 0 and has_instances:
        dicts = filter_images_with_few_keypoints(dicts, min_keypoints)
    classes = MetadataCatalog.get(name).get("thing_classes", None)
    if has_instances and classes is not None:
        print_instances_class_histogram(dicts, classes)
    if not dicts:
        raise ValueError(
            f"No valid data found in {name}: every image is without annotations or has crowd "
            f"regions only; set DATALOADER.FILTER_EMPTY_ANNOTATIONS False to keep them"
        )
    return dicts


def _load(cfg, name: str, is_train: bool) -> tuple[list[dict], list[dict], int | None]:
    """(records, images the loader skipped, images it read or None) of one dataset, with
    detectron2's filtering and proposals applied as its own loaders do."""
    proposals = None
    if cfg.MODEL.LOAD_PROPOSALS:
        key = "PROPOSAL_FILES_TRAIN" if is_train else "PROPOSAL_FILES_TEST"
        split = cfg.DATASETS.TRAIN if is_train else cfg.DATASETS.TEST
        proposals = cfg.DATASETS[key][list(split).index(name)]
    filter_empty = is_train and cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
    min_keypoints = (
        cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE
        if is_train and cfg.MODEL.KEYPOINT_ON
        else 0
    )
    # the registered function itself (DatasetCatalog is a dict; its get() would call it)
    loader = DatasetCatalog[name] if name in DatasetCatalog else None
    if not isinstance(loader, CheckedCocoLoader):
        dicts = get_detection_dataset_dicts(
            [name],
            filter_empty=filter_empty,
            min_keypoints=min_keypoints,
            proposal_files=None if proposals is None else [proposals],
        )
        return dicts, [], None
    # A checked COCO loader drops bad images itself: DATASETS.SKIP_BAD_SAMPLES decides, not
    # the skip_bad of its registration, and what it dropped comes back here.
    dicts, skipped, total = loader.load(skip=cfg.DATASETS.SKIP_BAD_SAMPLES)
    dicts = _prepare(
        name, dicts, filter_empty=filter_empty, min_keypoints=min_keypoints, proposal_file=proposals
    )
    return dicts, skipped, total if skipped else None


def checked_dataset_dicts(
    cfg,
    names,
    *,
    is_train: bool,
    check: Callable[[str, list[dict]], None] | None = None,
) -> tuple[list[dict], SkipReport]:
    """The records of ``names`` (detectron2's filtering and proposals applied as its own
    loaders do), each dataset checked at ``DATASETS.CHECK``, and the report of what was
    skipped. Raises :class:`~seg_plugins.data.validation.DataProblemError` on bad samples
    unless ``DATASETS.SKIP_BAD_SAMPLES``, which drops them (counted, logged, reported).

    Args:
        names: a dataset name or a list of them.
        is_train: the training loader's records (filtering, proposals; level "full" for a
            test set that skips).
        check: called as ``check(dataset_name, records)`` for each dataset once its records
            are checked and filtered; the checks that depend on the model (the Trainer's
            ``INPUT.MASK_FORMAT`` check) raise from there.

    Returns:
        (the records of all the datasets, in order; the :class:`SkipReport` of this call,
        covering every name in ``names``).
    """
    if isinstance(names, str):
        names = [names]
    level = _check_level(cfg, is_train)
    records, report = [], {}
    for name in names:
        dicts, skipped, total = _load(cfg, name, is_train)
        total = len(dicts) if total is None else total
        if level != "off":
            problems = check_dataset_records(
                dicts,
                metadata=MetadataCatalog.get(name),
                level=level,
                image_format=cfg.INPUT.FORMAT,
            )
            dicts, more = filter_bad_records(
                name, dicts, problems, skip=cfg.DATASETS.SKIP_BAD_SAMPLES
            )
            skipped += more
            logger.info(
                "dataset '%s': %d records checked (DATASETS.CHECK %s), %d skipped",
                name,
                total,
                level,
                len(skipped),
            )
        if skipped:
            report[name] = {"total": total, "level": level, "skipped": skipped}
        if check is not None:
            check(name, dicts)
        records += dicts
    return records, SkipReport(report, tuple(names))
