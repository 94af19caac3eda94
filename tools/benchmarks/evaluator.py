"""Benchmark: SemSegMetricsEvaluator vs detectron2's SemSegEvaluator, side by side.

Both evaluators receive the same (19, 1024, 2048) float32 logits per image and read the
same ground-truth PNGs from disk (as in real use); only their ``process`` and ``evaluate``
calls are timed. The predictions are random with structure (smooth random fields plus the
ground truth's one-hot plus noise), generated once per image and fed to every evaluator
instance in turn (one instance per repeat and evaluator, the order alternating), so
generation is never timed and both see the same inputs. The last class is never in the
ground truth but is predicted, so the absent-class convention matters; ours runs under the
installed detectron2's ("detectron2_v0.6" or "detectron2_main"). The script asserts that both
report identical numbers (mIoU, fwIoU, mACC, pACC, IoU-* and ACC-*: equal floats, or both
NaN) and exits 1 otherwise. detectron2 main's evaluator also computes Boundary IoU, which
ours does not: on main its time includes that work (the table says so).

    python tools/benchmark_evaluator.py [--images 50] [--repeats 3] [--device cuda] \
        [--markdown docs/benchmarks_evaluator.md]

With ``--device cuda`` the logits are CUDA tensors, as a model on the GPU hands them to its
evaluators (each timed call ends with a CUDA synchronisation).

Reported: median over repeats of the total time, per image; the ratio; the machine.
"""

import argparse
import math
import os
import shutil
import statistics
import sys
import tempfile
import time

import seg_plugins  # noqa: F401  (first: repairs detectron2 where needed)

# isort: split
import numpy as np
import torch
import torch.nn.functional as F
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import SemSegEvaluator
from PIL import Image

from seg_plugins.data.io import read_label
from seg_plugins.evaluation import SemSegMetricsEvaluator
from seg_plugins.evaluation.confusion import argmax_channels_numpy, image_confusion_numpy
from seg_plugins.evaluation.sem_seg_metrics import DETECTRON2_BOUNDARY_KEYS, detectron2_convention

from . import common

IGNORE = 255
CONVENTION = detectron2_convention()  # of the installed detectron2's SemSegEvaluator
DETECTRON2_LABEL = {
    "detectron2_v0.6": "detectron2 v0.6 SemSegEvaluator",
    "detectron2_main": "detectron2 main SemSegEvaluator (+ Boundary IoU)",
}[CONVENTION]
TARGET_SPEEDUP = 10.0
HEADER = """# Semantic evaluator: SemSegMetricsEvaluator vs detectron2's SemSegEvaluator

`python tools/benchmark_evaluator.py --markdown docs/benchmarks_evaluator.md` (target: the
same numbers, at least 10x faster). Both evaluators get the same float32 logits (smooth random
fields + 2 on the ground-truth class + noise; the last class predicted but never in the ground
truth) and read the same ground-truth PNGs (~12% ignored pixels); only `process` and
`evaluate` are timed, side by side in one run, image by image, the order alternating. Ours
runs with `absent_classes="{convention}"`, the convention of the installed detectron2.
"""


def make_ground_truth(i: int, k: int, h: int, w: int) -> np.ndarray:
    """(H, W) uint8 label map of classes 0..K-2 (K-1 is absent) with ignored regions."""
    g = torch.Generator().manual_seed(1000 + i)
    low = torch.randn(1, k - 1, 16, 32, generator=g)
    labels = F.interpolate(low, size=(h // 4, w // 4), mode="bilinear", align_corners=False)
    labels = labels[0].argmax(0).to(torch.uint8)
    holes = torch.randn(1, 1, 8, 16, generator=g)
    holes = F.interpolate(holes, size=(h // 4, w // 4), mode="bilinear", align_corners=False)
    labels[holes[0, 0] > 1.3] = IGNORE  # ~10% of the pixels, in blobs
    labels[-h // 40 :] = IGNORE  # a bottom band, like Cityscapes' ego vehicle
    return labels.repeat_interleave(4, 0).repeat_interleave(4, 1).numpy()


def make_logits(i: int, gt: np.ndarray, k: int) -> torch.Tensor:
    """(K, H, W) float32 logits: a smooth random field (errors in blobs, every class incl.
    the absent one), plus 2 on the ground-truth class, plus pixel noise."""
    g = torch.Generator().manual_seed(2000 + i)
    h, w = gt.shape
    low = torch.randn(1, k, 32, 64, generator=g)
    logits = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)[0]
    logits += 0.5 * torch.randn(k, h, w, generator=g)
    target = torch.from_numpy(np.where(gt == IGNORE, 0, gt).astype(np.int64))
    logits.scatter_add_(0, target[None], torch.full((1, h, w), 2.0))
    return logits.contiguous()


def register(name: str, root: str, n: int, k: int, h: int, w: int) -> list:
    os.makedirs(os.path.join(root, "gt"), exist_ok=True)
    records = []
    for i in range(n):
        gt_file = os.path.join(root, "gt", f"{i:03d}.png")
        Image.fromarray(make_ground_truth(i, k, h, w)).save(gt_file)
        records.append(
            {
                "file_name": os.path.join(root, f"{i:03d}.jpg"),
                "sem_seg_file_name": gt_file,
                "height": h,
                "width": w,
            }
        )
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(
        stuff_classes=[f"class{c}" for c in range(k)], ignore_label=IGNORE, evaluator_type="sem_seg"
    )
    return records


def same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def compare(ours: dict, theirs: dict) -> list:
    """Keys of detectron2's results whose values differ from ours (Boundary IoU, which only
    detectron2 main reports, left aside)."""
    return [
        key
        for key, value in theirs.items()
        if not key.startswith(DETECTRON2_BOUNDARY_KEYS) and not same(ours.get(key, math.nan), value)
    ]


def stage_ms(record: dict, logits: torch.Tensor, k: int) -> dict:
    """Our per-image stages, timed apart (not part of the totals)."""
    stages = {}
    start = time.perf_counter()
    gt = read_label(record["sem_seg_file_name"])
    stages["read ground truth PNG"] = time.perf_counter() - start
    start = time.perf_counter()
    pred = argmax_channels_numpy(logits.numpy())
    stages["argmax over channels"] = time.perf_counter() - start
    start = time.perf_counter()
    image_confusion_numpy(pred, gt, k, IGNORE, record["sem_seg_file_name"])
    stages["bincount + label check"] = time.perf_counter() - start
    return {key: 1000 * value for key, value in stages.items()}


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def run(args, records: list, name: str) -> dict:
    makers = {
        "seg_plugins SemSegMetricsEvaluator": lambda: SemSegMetricsEvaluator(
            name, distributed=False, absent_classes=CONVENTION
        ),
        DETECTRON2_LABEL: lambda: SemSegEvaluator(name, distributed=False),
    }
    evaluators = {key: [make() for _ in range(args.repeats)] for key, make in makers.items()}
    seconds = {key: [0.0] * args.repeats for key in makers}
    stages = []
    for evs in evaluators.values():
        for ev in evs:
            ev.reset()
    for i, record in enumerate(records):
        gt = np.asarray(Image.open(record["sem_seg_file_name"]))
        logits = make_logits(i, gt, args.classes)
        outputs = [{"sem_seg": logits.to(args.device)}]
        for r in range(args.repeats):
            order = list(makers) if (i + r) % 2 == 0 else list(reversed(makers))
            for key in order:
                start = time.perf_counter()
                evaluators[key][r].process([record], outputs)
                _sync(args.device)
                seconds[key][r] += time.perf_counter() - start
        stages.append(stage_ms(record, logits, args.classes))
        print(f"\rimage {i + 1}/{len(records)}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    results = {key: [] for key in makers}
    for r in range(args.repeats):
        for key in makers:
            start = time.perf_counter()
            results[key].append(evaluators[key][r].evaluate()["sem_seg"])
            seconds[key][r] += time.perf_counter() - start
    stages = {key: statistics.median(s[key] for s in stages) for key in stages[0]}
    return {"seconds": seconds, "results": results, "stages": stages}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--classes", type=int, default=19)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument(
        "--device", default="cpu", help="where the logits are: cpu (default) or cuda"
    )
    parser.add_argument(
        "--target",
        type=float,
        default=TARGET_SPEEDUP,
        help=f"speed-up below which the exit status is 1 (default {TARGET_SPEEDUP:.0f}; 0 = "
        "report only); different numbers always exit 1",
    )
    parser.add_argument("--markdown", help="also write the results to this Markdown file")
    args = parser.parse_args(argv)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    load_start = common.load_average()
    root = tempfile.mkdtemp(prefix="bench_evaluator_")
    name = f"bench_evaluator_{os.getpid()}"
    try:
        records = register(name, root, args.images, args.classes, args.height, args.width)
        out = run(args, records, name)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ours_key, d2_key = list(out["seconds"])
    mismatches = []
    for r in range(args.repeats):
        theirs = out["results"][d2_key][r]
        mismatches += compare(out["results"][ours_key][r], theirs)
        mismatches += compare(out["results"][ours_key][0], out["results"][ours_key][r])
    ms = {key: statistics.median(s) / args.images * 1000 for key, s in out["seconds"].items()}
    ratio = ms[d2_key] / ms[ours_key]
    res = out["results"][ours_key][0]
    identical = "yes" if not mismatches else f"**no**: {sorted(set(mismatches))[:5]}"
    total_s = {key: value * args.images / 1000 for key, value in ms.items()}
    evaluators = [
        (key, f"{ms[key]:.1f}", f"{total_s[key]:.2f}", f"{ms[d2_key] / ms[key]:.1f}x")
        for key in (d2_key, ours_key)
    ]
    stages = [(stage, f"{value:.1f}") for stage, value in out["stages"].items()]
    lines = [
        HEADER.format(convention=CONVENTION),
        f"Machine: {common.machine()}; {common.today()}; {common.load_note(load_start)}",
        f"{args.images} predictions of {args.classes}x{args.height}x{args.width} float32 "
        f"logits on {args.device}, ground truth read from PNGs; median of {args.repeats} "
        "repeats",
        "",
        *common.markdown_table(("evaluator", "ms / image", "total s", "speed-up"), evaluators),
        "",
        f"Identical numbers (mIoU, fwIoU, mACC, pACC, per-class IoU and ACC): {identical}. "
        f"mIoU {res['mIoU']:.4f}, fwIoU {res['fwIoU']:.4f}, mACC {res['mACC']:.4f}, "
        f"pACC {res['pACC']:.4f}.",
        "",
        "Where our time goes (median ms per image, each stage timed apart on one thread; "
        "`process` reads the PNG on a worker thread while the argmax runs, its rows split "
        "over the torch threads):",
        "",
        *common.markdown_table(("stage", "ms"), stages),
    ]
    common.emit(lines, args.markdown)
    if mismatches:
        print(f"FAIL: numbers differ: {sorted(set(mismatches))}")
        return 1
    print("PASS" if ratio >= args.target else f"below the {args.target:g}x target")
    return 0 if ratio >= args.target else 1


if __name__ == "__main__":
    sys.exit(main())
