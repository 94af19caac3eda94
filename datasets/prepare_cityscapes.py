#!/usr/bin/env python
"""Write Cityscapes' *_gtFine_labelTrainIds.png from *_gtFine_polygons.json.

    python datasets/prepare_cityscapes.py                    # $DETECTRON2_DATASETS/cityscapes
    python datasets/prepare_cityscapes.py /data/cityscapes --splits train val test --workers 8

The label maps detectron2's Cityscapes semantic loader reads (trainIds 0..18, 255 = ignore),
drawn by cityscapesscripts itself (``json2labelImg(json, png, "trainIds")`` with its
labels.py): the files its ``csCreateTrainIdLabelImgs`` writes, pixel for pixel. Unlike that
script this one converts only gtFine of the splits asked for, skips files already there
(``--overwrite`` redoes them), writes each file under a temporary name in the same folder and
renames it (an interrupted run leaves no truncated PNG), runs a process pool, and logs its
progress. A missing folder or a file that fails to convert ends with one line on stderr and
exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import multiprocessing
import os
import sys
import time

logger = logging.getLogger("prepare_cityscapes")

DOWNLOAD = (
    "download gtFine_trainvaltest.zip (241 MB) from https://www.cityscapes-dataset.com/downloads/ "
    "(free account; or csDownload gtFine_trainvaltest.zip) and unzip it in {root!r}, or pass "
    "the folder that holds gtFine/ as ROOT"
)
POLYGONS = "_gtFine_polygons.json"
TRAIN_IDS = "_gtFine_labelTrainIds.png"


def default_root() -> str:
    """``$DETECTRON2_DATASETS/cityscapes`` (default ``datasets/cityscapes``), as detectron2."""
    return os.path.join(
        os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")), "cityscapes"
    )


def find_polygons(root: str, splits) -> list[str]:
    """Every ``gtFine/<split>/<city>/*_gtFine_polygons.json`` of ``splits``, sorted.

    Raises:
        FileNotFoundError: gtFine, a split folder, or any polygons file is missing.
    """
    gt_root = os.path.join(root, "gtFine")
    if not os.path.isdir(gt_root):
        raise FileNotFoundError(f"{gt_root!r} not found: " + DOWNLOAD.format(root=root))
    files = []
    for split in splits:
        split_dir = os.path.join(gt_root, split)
        if not os.path.isdir(split_dir):
            present = sorted(
                d for d in os.listdir(gt_root) if os.path.isdir(os.path.join(gt_root, d))
            )
            raise FileNotFoundError(
                f"{split_dir!r} not found (gtFine holds {present}); pass --splits with the "
                f"splits you have, or " + DOWNLOAD.format(root=root)
            )
        found = [
            os.path.join(split_dir, city, name)
            for city in sorted(os.listdir(split_dir))
            if os.path.isdir(os.path.join(split_dir, city))
            for name in sorted(os.listdir(os.path.join(split_dir, city)))
            if name.endswith(POLYGONS)
        ]
        if not found:
            raise FileNotFoundError(
                f"no <city>/*{POLYGONS} in {split_dir!r}: " + DOWNLOAD.format(root=root)
            )
        files += found
    return files


def convert(json_file: str) -> str:
    """Write the labelTrainIds PNG of one polygons file (atomically); returns its path."""
    from cityscapesscripts.preparation.json2labelImg import json2labelImg

    out = json_file[: -len(POLYGONS)] + TRAIN_IDS
    folder, name = os.path.split(out)
    # Same folder (os.replace is atomic within a file system), unique per process, ".png" so
    # that PIL picks the format, and created by PIL (normal permissions, unlike mkstemp).
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.tmp.png")
    printed = io.StringIO()  # cityscapesscripts prints its errors ("Label 'x' not known.")
    try:
        with contextlib.redirect_stdout(printed):
            json2labelImg(json_file, tmp, "trainIds")
        os.replace(tmp, out)
    except (Exception, SystemExit) as err:
        # SystemExit: cityscapesscripts exits on an unknown label; in a pool worker that
        # would kill the worker and leave the pool waiting for its result forever.
        if os.path.exists(tmp):
            os.remove(tmp)
        said = [line for line in printed.getvalue().splitlines() if line.strip()][:1]
        detail = "; ".join(said + [f"{type(err).__name__}: {err}"])
        raise RuntimeError(f"cannot convert {json_file!r}: {detail}") from None
    return out


def prepare_cityscapes(
    root: str,
    splits=("train", "val"),
    *,
    workers: int = 1,
    overwrite: bool = False,
    log_every: int = 500,
) -> dict:
    """Write the missing (``overwrite``: all) labelTrainIds PNGs of ``splits`` under
    ``root``, with ``workers`` processes (1: in this process). Returns the counts
    {"written", "skipped", "total"}."""
    try:
        import cityscapesscripts.preparation.json2labelImg  # noqa: F401
    except ImportError as err:
        raise ImportError("needs cityscapesscripts: pip install 'cityscapesscripts>=2.2'") from err
    files = find_polygons(root, splits)
    todo = [f for f in files if overwrite or not os.path.isfile(f[: -len(POLYGONS)] + TRAIN_IDS)]
    skipped = len(files) - len(todo)
    logger.info(
        "%s: %d polygons files in gtFine/{%s}; %d labelTrainIds PNGs already there (%s); "
        "writing %d with %d worker(s)",
        root,
        len(files),
        ",".join(splits),
        skipped,
        "overwritten" if overwrite else "skipped, --overwrite redoes them",
        len(todo),
        workers,
    )
    start, written = time.perf_counter(), 0
    if workers > 1 and len(todo) > 1:
        with multiprocessing.Pool(min(workers, len(todo))) as pool:
            for _ in pool.imap_unordered(convert, todo, chunksize=8):
                written = _progress(written + 1, len(todo), log_every, start)
    else:
        for json_file in todo:
            convert(json_file)
            written = _progress(written + 1, len(todo), log_every, start)
    return {"written": written, "skipped": len(files) - len(todo), "total": len(files)}


def _progress(done: int, total: int, every: int, start: float) -> int:
    if done % every == 0 or done == total:
        logger.info("%d/%d written (%.1f s)", done, total, time.perf_counter() - start)
    return done


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "root",
        nargs="?",
        default=None,
        help="the Cityscapes folder that holds gtFine/ (default: $DETECTRON2_DATASETS/"
        "cityscapes, else datasets/cityscapes)",
    )
    parser.add_argument("--splits", nargs="+", default=["train", "val"], help="gtFine/<split>")
    parser.add_argument(
        "--workers",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="processes (default: min(8, CPU count)); 1 converts in this process",
    )
    parser.add_argument("--overwrite", action="store_true", help="rewrite existing PNGs too")
    parser.add_argument(
        "--log-every", type=int, default=500, metavar="N", help="log progress every N files"
    )
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.workers < 1 or args.log_every < 1:
        print("prepare_cityscapes: error: --workers and --log-every must be >= 1", file=sys.stderr)
        return 2
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logger.setLevel(logging.INFO)
    root = os.path.expanduser(args.root) if args.root else default_root()
    try:
        counts = prepare_cityscapes(
            root,
            args.splits,
            workers=args.workers,
            overwrite=args.overwrite,
            log_every=args.log_every,
        )
    except (OSError, RuntimeError, ImportError) as err:
        print(f"prepare_cityscapes: error: {err}", file=sys.stderr)
        return 2
    logger.info("done: written %(written)d, skipped %(skipped)d, total %(total)d", counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
