#!/usr/bin/env python
"""Check registered datasets file by file, before training on them.

    tools/check_dataset.py shapes_val
    tools/check_dataset.py polyps_train polyps_val --spec datasets/polyps.yaml
    tools/check_dataset.py cityscapes_fine_sem_seg_val --config-file configs/cityscapes/X.yaml
    tools/check_dataset.py NAME --level light --workers 2 --json problems.json

Level "full" (default) decodes every image and label map: missing files, unreadable or
truncated images, image/label size mismatches, colour / RGBA label maps, label values that
are neither a class nor the ignore value, and for instance datasets empty or degenerate
polygons, empty boxes, unknown categories and RLE of the wrong size. Annotation files that do
not follow their format (COCO JSON schema errors, ...) are reported when the dataset is
loaded. Every problem names the file and the fix.

Exit status: 0 no errors (warnings may be printed), 1 errors found, 2 a usage mistake (an
unknown dataset, a missing config file).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor

import seg_plugins  # noqa: F401  (registers models, datasets and config keys)

# isort: split
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.logger import setup_logger

from seg_plugins.config import add_seg_plugins_config
from seg_plugins.data.spec import DatasetSpecError, register_dataset_specs
from seg_plugins.data.validation import (
    DataProblemError,
    check_dataset_records,
    iter_problem_lines,
)
from seg_plugins.utils.file_io import atomic_write_text

logger = logging.getLogger("seg_plugins.check_dataset")


def _check_chunk(args):
    name, records, level, image_format = args
    return check_dataset_records(
        records, metadata=MetadataCatalog.get(name), level=level, image_format=image_format
    )


def check_one(name: str, level: str, image_format: str, workers: int) -> dict:
    """{"name", "records", "errors", "warnings", "by_kind", "lines"} of one dataset."""
    start = time.perf_counter()
    try:
        records = DatasetCatalog.get(name)
    except DataProblemError as err:  # the annotation file itself is broken
        problems = err.problems
        return {
            "name": name,
            "records": 0,
            "errors": len(problems),
            "warnings": 0,
            "by_kind": dict(Counter(p.kind for p in problems)),
            "lines": [f"error: {p}" for p in problems],
        }
    chunk = max(1, len(records) // max(1, workers * 8))
    starts = list(range(0, len(records), chunk))
    jobs = [(name, records[i : i + chunk], level, image_format) for i in starts]
    found = {}
    if workers > 1 and len(jobs) > 1:
        # fork: the children see this process' DatasetCatalog / MetadataCatalog
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_check_chunk, jobs))
    else:
        results = [_check_chunk(job) for job in jobs]
    for offset, result in zip(starts, results):
        found.update({offset + i: ps for i, ps in result.items()})
    flat = [p for ps in found.values() for p in ps]
    report = {
        "name": name,
        "records": len(records),
        "errors": sum(p.fatal for p in flat),
        "warnings": sum(not p.fatal for p in flat),
        "by_kind": dict(Counter(p.kind for p in flat)),
        "lines": list(iter_problem_lines(found, records)),
    }
    logger.info(
        "%s: %d records checked (level %s) in %.1f s",
        name,
        len(records),
        level,
        time.perf_counter() - start,
    )
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="+", help="registered dataset names")
    parser.add_argument(
        "--config-file", default="", help="config whose DATASETS.SPECS and INPUT.FORMAT to use"
    )
    parser.add_argument(
        "--spec",
        action="append",
        default=[],
        help="dataset spec file(s) to register first (YAML / JSON)",
    )
    parser.add_argument("--level", choices=("light", "full"), default="full")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--max-lines", type=int, default=50, help="problems printed per dataset")
    parser.add_argument("--json", default="", help="write the full report here")
    parser.add_argument("--opts", nargs="*", default=[], help="config overrides KEY VALUE ...")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logger(name="seg_plugins")
    setup_logger(name="detectron2")
    cfg = get_cfg()
    add_seg_plugins_config(cfg)
    try:
        if args.config_file:
            if not os.path.isfile(args.config_file):
                raise FileNotFoundError(f"config file not found: {args.config_file}")
            cfg.merge_from_file(args.config_file, allow_unsafe=False)
        cfg.merge_from_list(args.opts)
        register_dataset_specs(cfg)
        register_dataset_specs(args.spec)
    except (FileNotFoundError, DatasetSpecError, KeyError, ValueError, AssertionError) as err:
        print(f"check_dataset: error: {err}", file=sys.stderr)
        return 2
    unknown = [n for n in args.names if n not in DatasetCatalog.list()]
    if unknown:
        print(
            f"check_dataset: error: dataset(s) {unknown} are not registered; register them "
            f"(datasets/README.md) or pass --spec / --config-file",
            file=sys.stderr,
        )
        return 2
    reports = [check_one(n, args.level, cfg.INPUT.FORMAT, args.workers) for n in args.names]
    for rep in reports:
        for line in rep["lines"][: args.max_lines]:
            print(line)
        if len(rep["lines"]) > args.max_lines:
            print(f"... {len(rep['lines']) - args.max_lines} more (--json for all)")
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(rep["by_kind"].items())) or "none"
        print(
            f"{rep['name']}: {rep['records']} records, {rep['errors']} error(s), "
            f"{rep['warnings']} warning(s); by kind: {kinds}"
        )
    if args.json:
        atomic_write_text(args.json, json.dumps(reports, indent=1))
    return 1 if any(r["errors"] for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
