"""Dataset dicts for the loaders, checked first (``DATASETS.CHECK``), with bad samples
stopping the run or skipped (``DATASETS.SKIP_BAD_SAMPLES``).

The Trainer calls :func:`checked_dataset_dicts` per dataset name (detectron2's
``get_detection_dataset_dicts`` concatenates names and would hide which dataset a bad
record came from), then hands the list to detectron2's ``build_detection_*_loader``.
"""

from __future__ import annotations

import logging
import os

from detectron2.data import MetadataCatalog, get_detection_dataset_dicts
from detectron2.utils import comm

from .coco import check_mask_format, pop_skipped, skip_bad_images
from .validation import check_dataset_records, filter_bad_records, write_skip_report

__all__ = ["checked_dataset_dicts", "skip_report", "write_skip_report_for"]

logger = logging.getLogger(__name__)

CHECK_LEVELS = ("off", "light", "full")
# dataset name -> {"total": N, "skipped": [...]}, for OUTPUT_DIR/skipped_samples.json
_SKIP_REPORT: dict[str, dict] = {}


def _model_outputs(cfg) -> set:
    from ..engine.trainer import model_outputs  # the engine imports this module

    return model_outputs(cfg)


def skip_report() -> dict:
    """What the checks of this process skipped so far, by dataset name."""
    return dict(_SKIP_REPORT)


def _check_level(cfg, is_train: bool) -> str:
    level = cfg.DATASETS.CHECK
    if level not in CHECK_LEVELS:
        raise ValueError(f"DATASETS.CHECK must be one of {CHECK_LEVELS}, got {level!r}")
    if not is_train and cfg.DATASETS.SKIP_BAD_SAMPLES and level != "off":
        # An evaluation cannot swap a bad image for another one at mapping time, as training
        # does; so its bad samples are all found first, by decoding each once.
        return "full"
    return level


def checked_dataset_dicts(cfg, names, *, is_train: bool) -> list[dict]:
    """The records of ``names`` (detectron2's filtering and proposals applied as its own
    loaders do), each dataset checked at ``DATASETS.CHECK``. Raises
    :class:`~seg_plugins.data.validation.DataProblemError` on bad samples unless
    ``DATASETS.SKIP_BAD_SAMPLES``, which drops them (counted, logged, :func:`skip_report`)."""
    if isinstance(names, str):
        names = [names]
    level = _check_level(cfg, is_train)
    records = []
    for name in names:
        proposals = None
        if cfg.MODEL.LOAD_PROPOSALS:
            key = "PROPOSAL_FILES_TRAIN" if is_train else "PROPOSAL_FILES_TEST"
            split = cfg.DATASETS.TRAIN if is_train else cfg.DATASETS.TEST
            proposals = [cfg.DATASETS[key][list(split).index(name)]]
        # a checked COCO loader drops bad images itself when skipping (coco.py)
        with skip_bad_images(cfg.DATASETS.SKIP_BAD_SAMPLES):
            dicts = get_detection_dataset_dicts(
                [name],
                filter_empty=is_train and cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
                min_keypoints=(
                    cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE
                    if is_train and cfg.MODEL.KEYPOINT_ON
                    else 0
                ),
                proposal_files=proposals,
            )
        loader_skip = pop_skipped(name)
        total = loader_skip["total"] if loader_skip else len(dicts)
        skipped = list(loader_skip["skipped"]) if loader_skip else []
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
            _SKIP_REPORT[name] = {"total": total, "level": level, "skipped": skipped}
        if is_train and cfg.MODEL.MASK_ON and "instances" in _model_outputs(cfg):
            check_mask_format(dicts, cfg.INPUT.MASK_FORMAT, name)
        records += dicts
    return records


def write_skip_report_for(output_dir: str) -> str | None:
    """Write :func:`skip_report` to ``output_dir/skipped_samples.json`` (main process, only
    when something was skipped); returns the path or None."""
    if not _SKIP_REPORT or not output_dir or not comm.is_main_process():
        return None
    path = os.path.join(output_dir, "skipped_samples.json")
    write_skip_report(path, _SKIP_REPORT)
    total = sum(len(v["skipped"]) for v in _SKIP_REPORT.values())
    logger.warning("%d bad sample(s) skipped; listed in %s", total, path)
    return path
