"""``seg-plugins-check``: check registered datasets file by file and report every problem
(the command line is parsed by :mod:`seg_plugins_cli.check`, whose ``--help`` documents the
checks and the exit statuses).
"""

import json
import logging
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.logger import setup_logger

from seg_plugins_cli.common import closest, fail

from ..data.spec import DatasetSpecError, register_dataset_specs
from ..data.validation import DataProblemError, check_dataset_records, iter_problem_lines
from ..engine.cli import ConfigError, setup_cfg
from ..utils.file_io import atomic_write_text

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


def setup(args):
    """The config of ``args``, after registering the ``--spec`` files; ConfigError on
    command mistakes (a missing file, an unknown dataset)."""
    try:
        # First: the config's DATASETS.TRAIN / TEST may name a dataset of a --spec file.
        register_dataset_specs(args.spec)
    except (FileNotFoundError, DatasetSpecError) as e:
        raise ConfigError(str(e)) from None
    cfg = setup_cfg(args)  # also registers the config's DATASETS.SPECS
    registered = DatasetCatalog.list()
    unknown = [f"{n}{closest(n, registered)}" for n in args.names if n not in registered]
    if unknown:
        raise ConfigError(
            f"dataset(s) not registered: {', '.join(unknown)}; register them "
            "(datasets/README.md) or pass --spec / --config-file"
        )
    return cfg


def print_report(report: dict, max_lines: int) -> None:
    for line in report["lines"][:max_lines]:
        print(line)
    if len(report["lines"]) > max_lines:
        print(f"... {len(report['lines']) - max_lines} more (--json for all)")
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(report["by_kind"].items())) or "none"
    print(
        f"{report['name']}: {report['records']} records, {report['errors']} error(s), "
        f"{report['warnings']} warning(s); by kind: {kinds}"
    )


def run(args) -> int:
    """Check as ``args`` (:func:`seg_plugins_cli.check.parse_args`) say; exit status."""
    setup_logger(name="seg_plugins")
    setup_logger(name="detectron2")
    try:
        cfg = setup(args)
    except ConfigError as e:
        return fail(str(e))
    reports = [check_one(n, args.level, cfg.INPUT.FORMAT, args.workers) for n in args.names]
    for report in reports:
        print_report(report, args.max_lines)
    if args.json:
        atomic_write_text(args.json, json.dumps(reports, indent=1))
    return 1 if any(r["errors"] for r in reports) else 0
