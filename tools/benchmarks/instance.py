"""Benchmark: Mask R-CNN and PanopticFPN (our semantic head as its semantic branch) trained
from scratch on `shapes` with their CPU configs, end to end through tools/train_net.py.

Reports the wall time against the 30-minute budget, shapes_val mask AP against the 50 target
(box AP beside it) and, for PanopticFPN, the mIoU of its semantic branch and the panoptic
quality (PQ, SQ, RQ; PQ of things and stuff) from the same run, with the machine it ran on.
Each run gets a fresh OUTPUT_DIR; the figures are read from the run's metrics.json
(detectron2's EvalHook writes the final evaluation there).

    python tools/benchmark_instance.py [--cases mask_rcnn panoptic_fpn] [--markdown FILE]

Runs alone on the machine give honest times: on 2 cores a second CPU-heavy job slows
training several-fold (OpenMP threads contend).
"""

import argparse
import os
import sys

from . import common

CASES = {
    "mask_rcnn": "configs/shapes/mask_rcnn_R18_FPN_GN_shapes.yaml",
    "panoptic_fpn": "configs/shapes/panoptic_fpn_R18_FPN_GN_shapes.yaml",
}
BUDGET_S = 30 * 60
TARGET_MASK_AP = 50.0
COLUMNS = (
    "case", "config", "iterations", "train+eval min (of 30)", "shapes_val mask AP (of 50)",
    "box AP", "mIoU (semantic branch)", "PQ / SQ / RQ", "PQ things / stuff", "within targets",
)  # fmt: skip
PANOPTIC = ("PQ", "SQ", "RQ", "PQ_th", "PQ_st")


def train(name: str, config: str, opts: list) -> dict:
    out = os.path.join(common.REPO, "output", "bench_instance", name)
    res = common.train_net(config, out, opts)
    if "error" in res:
        return res
    metrics = common.final_metrics(out)
    return {
        **res,
        "mask_ap": metrics.get("segm/AP", float("nan")),
        "box_ap": metrics.get("bbox/AP", float("nan")),
        "miou": metrics.get("sem_seg/mIoU", float("nan")),
        **{key: metrics.get(f"panoptic_seg/{key}", float("nan")) for key in PANOPTIC},
        "iters": common.load_config(config, opts).SOLVER.MAX_ITER,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES))
    parser.add_argument("--markdown", help="also write the table to this Markdown file")
    parser.add_argument("opts", nargs="*", help="config overrides for every run (KEY VALUE)")
    args = parser.parse_args(argv)
    rows, ok = [], True
    load_before = common.load_average()
    for name in args.cases:
        res = train(name, CASES[name], args.opts)
        if "error" in res:
            ok = False
            cells = (name, f"`{CASES[name]}`", f"failed: {res['error']}", *[""] * 7)
            rows.append(common.markdown_row(cells))
            print(rows[-1], flush=True)
            continue
        passed = res["wall_s"] <= BUDGET_S and res["mask_ap"] >= TARGET_MASK_AP
        ok &= passed
        miou = "" if res["miou"] != res["miou"] else f"{res['miou']:.2f}"
        pq = "" if res["PQ"] != res["PQ"] else " / ".join(f"{res[k]:.2f}" for k in PANOPTIC[:3])
        pq_split = "" if res["PQ"] != res["PQ"] else f"{res['PQ_th']:.2f} / {res['PQ_st']:.2f}"
        cells = (
            name,
            f"`{CASES[name]}`",
            res["iters"],
            f"{res['wall_s'] / 60:.1f} ({res['wall_s'] / BUDGET_S:.2f})",
            f"{res['mask_ap']:.2f} ({res['mask_ap'] / TARGET_MASK_AP:.2f})",
            f"{res['box_ap']:.2f}",
            miou,
            pq,
            pq_split,
            "yes" if passed else "NO",
        )
        rows.append(common.markdown_row(cells))
        print(rows[-1], flush=True)
    lines = [
        f"Machine: {common.machine()}; one run per case, {common.today()}; "
        f"1-minute load average {load_before:.1f} before, {common.load_average():.1f} after",
        "",
        *common.markdown_table(COLUMNS),
        *rows,
    ]
    common.emit(lines, args.markdown)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
