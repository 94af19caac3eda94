"""``seg-plugins-stats``: what a registered dataset holds (class pixel frequencies, ignored
and out-of-range values, image sizes; instances and object sizes) and the loss class weights
it suggests (the command line is parsed by :mod:`seg_plugins_cli.stats`, whose ``--help``
documents the tables).
"""

import json
import logging
import time

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.logger import setup_logger
from tabulate import tabulate

from seg_plugins_cli.common import closest, fail

from ..data.statistics import (
    CLASS_WEIGHTS_KEY,
    instance_statistics,
    sem_seg_statistics,
    suggest_class_weights,
)
from ..engine.cli import ConfigError, setup_cfg
from ..utils.file_io import atomic_write_text

logger = logging.getLogger("seg_plugins.dataset_stats")

# The frequency each method is defined on (see suggest_class_weights).
_METHOD_FREQUENCY = {
    "median_frequency": "freq_in_present_images",
    "inverse_log": "pixel_freq",
}
_MAX_SIZES_SHOWN = 10
_QUARTILE_HEADERS = ["", "min", "q1", "median", "q3", "max"]


# ----------------------------------------------------------------------------- classes
def _config(args):
    """The config of ``--config-file`` and the overrides; None when neither is given (the
    classes then come from the dataset's metadata alone)."""
    if not args.config_file and not args.opts:
        return None
    return setup_cfg(args)


def _stuff_classes(meta, cfg) -> tuple[list, int]:
    """(class names, ignore label) of the semantic labels."""
    names = list(getattr(meta, "stuff_classes", None) or [])
    ignore = meta.get("ignore_label", None)
    if cfg is not None:
        k = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
        k = 2 if k == 1 else k  # binary models: one channel, classes [background, fg]
        if names and len(names) != k:
            logger.warning(
                "the dataset has %d stuff_classes, the config MODEL.SEM_SEG_HEAD.NUM_CLASSES "
                "%d: counting the dataset's",
                len(names),
                k,
            )
        names = names or [str(i) for i in range(k)]
        ignore = cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE if ignore is None else ignore
    if not names:
        raise ConfigError(
            f"dataset '{meta.name}' has no stuff_classes in its metadata; pass --config-file "
            "(its MODEL.SEM_SEG_HEAD.NUM_CLASSES) or set MetadataCatalog stuff_classes"
        )
    return [str(n) for n in names], 255 if ignore is None else int(ignore)


def _thing_classes(meta, records) -> list:
    names = list(getattr(meta, "thing_classes", None) or [])
    if not names:
        ids = [a["category_id"] for r in records for a in r.get("annotations") or []]
        names = [str(i) for i in range(max(ids, default=-1) + 1)]
    return [str(n) for n in names]


# ----------------------------------------------------------------------------- tables
def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def sem_seg_report(stats: dict, names: list, weights: list, method: str) -> str:
    columns = zip(
        stats["pixel_counts"],
        stats["pixel_freq"],
        stats["image_presence"],
        stats["freq_in_present_images"],
        weights,
    )
    rows = [
        [k, name, pixels, _pct(freq), images, _pct(freq_present), f"{weight:.4f}"]
        for k, (name, (pixels, freq, images, freq_present, weight)) in enumerate(
            zip(names, columns)
        )
    ]
    headers = ["id", "class", "pixels", "% labelled", "images", "% in its images", "weight"]
    per_class = tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True)
    sizes = ", ".join(
        f"{s['height']}x{s['width']} ({s['count']})"
        for s in stats["image_sizes"][:_MAX_SIZES_SHOWN]
    )
    more = len(stats["image_sizes"]) - _MAX_SIZES_SHOWN
    summary = [
        ["images read", f"{stats['num_images']} of {stats['num_records']}"],
        ["pixels", stats["total_pixels"]],
        [f"ignored (label {stats['ignore_label']})", f"{_pct(stats['ignore_fraction'])} %"],
        ["absent classes", ", ".join(names[k] for k in stats["absent_classes"]) or "none"],
        ["values out of range (value: pixels)", _out_of_range(stats)],
        ["image sizes HxW (images)", sizes + (f" and {more} more" if more > 0 else "")],
    ]
    values = f"[{', '.join(f'{w:.4f}' for w in weights)}]"
    head, key = CLASS_WEIGHTS_KEY.rsplit(".", 1)
    parents = head.split(".")
    yaml = "".join(f"\n{'  ' * (i + 2)}{part}:" for i, part in enumerate(parents))
    yaml += f"\n{'  ' * (len(parents) + 2)}{key}: {values}"
    return "\n".join(
        [
            tabulate(summary, headers=["", "value"], tablefmt="pipe", disable_numparse=True),
            "",
            per_class,
            "",
            f"Suggested class weights ({method}), as a command-line override:",
            "",
            f'    {CLASS_WEIGHTS_KEY} "{values}"',
            "",
            f"or in the config YAML:\n{yaml}",
        ]
    )


def _out_of_range(stats: dict) -> str:
    if not stats["out_of_range"]:
        return "none"
    values = ", ".join(f"{v}: {n}" for v, n in list(stats["out_of_range"].items())[:10])
    return f"{values} (in {stats['images_with_out_of_range']} images)"


def _quartile_row(name: str, q) -> list:
    if q is None:
        return [name, "-", "-", "-", "-", "-"]
    return [name, *(f"{q[key]:.1f}" for key in ("min", "q1", "median", "q3", "max"))]


def instance_report(stats: dict, names: list) -> str:
    rows = [
        [k, name, stats["instances_per_class"][k], stats["crowd_per_class"][k]]
        for k, name in enumerate(names)
    ]
    summary = [
        ["images read", stats["num_images"]],
        ["images without annotations", stats["images_without_annotations"]],
        ["instances (crowd included)", stats["num_instances"]],
        ["crowd regions", stats["num_crowd"]],
        ["category ids out of range", stats["out_of_range_categories"] or "none"],
    ]
    sizes = [
        _quartile_row("mask area (px)", stats["mask_area"]),
        _quartile_row("box area (px)", stats["bbox_area"]),
        _quartile_row("instances per image", stats["instances_per_image"]),
    ]
    return "\n".join(
        [
            tabulate(summary, headers=["", "value"], tablefmt="pipe", disable_numparse=True),
            "",
            tabulate(rows, headers=["id", "class", "instances", "crowd"], tablefmt="pipe"),
            "",
            tabulate(sizes, headers=_QUARTILE_HEADERS, tablefmt="pipe", disable_numparse=True),
        ]
    )


# ----------------------------------------------------------------------------- run
def compute(args) -> tuple[dict, list]:
    """(the JSON report, the text blocks to print)."""
    cfg = _config(args)
    registered = DatasetCatalog.list()
    if args.dataset not in registered:
        raise ConfigError(
            f"dataset '{args.dataset}' is not registered{closest(args.dataset, registered)}; "
            "register it in DatasetCatalog (see datasets/README.md) or pass --config-file "
            "with its DATASETS.SPECS"
        )
    meta = MetadataCatalog.get(args.dataset)
    records = DatasetCatalog.get(args.dataset)
    report, blocks = {"dataset": args.dataset, "num_records": len(records)}, []
    if any(r.get("sem_seg_file_name") for r in records):
        names, ignore = _stuff_classes(meta, cfg)
        stats = sem_seg_statistics(records, len(names), ignore, args.max_images)
        frequency = _METHOD_FREQUENCY[args.method]
        weights = suggest_class_weights(stats[frequency], args.method)
        stats.update(class_names=names, class_weights=weights, method=args.method)
        stats["weights_from"] = frequency
        report["sem_seg"] = stats
        text = sem_seg_report(stats, names, weights, args.method)
        blocks.append(f"## {args.dataset}: semantic labels\n\n{text}")
    if any("annotations" in r for r in records):
        names = _thing_classes(meta, records)
        stats = instance_statistics(records, len(names), args.max_images)
        stats["class_names"] = names
        report["instances"] = stats
        blocks.append(f"## {args.dataset}: instances\n\n" + instance_report(stats, names))
    if not blocks:
        raise ConfigError(
            f"dataset '{args.dataset}' has neither 'sem_seg_file_name' nor 'annotations' in "
            "its records: nothing to count"
        )
    return report, blocks


def run(args) -> int:
    """Count as ``args`` (:func:`seg_plugins_cli.stats.parse_args`) say; exit status."""
    setup_logger(name="seg_plugins")
    start = time.perf_counter()
    try:
        report, blocks = compute(args)
    except ConfigError as e:
        return fail(str(e))
    print("\n\n".join(blocks))
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
        logger.info("wrote %s", args.json)
    logger.info("%s: statistics in %.1f s", args.dataset, time.perf_counter() - start)
    return 0
