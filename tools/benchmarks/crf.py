"""Benchmark: DeepLab's dense CRF (MODEL.CRF) on a trained shapes model, with and without.

Runs the model once per shapes_val image, then applies the CRF to its logits as the
meta-architecture does (``EncoderDecoderSegmentor._crf_logits``) and prints, per setting:
mIoU (SemSegMetricsEvaluator), Boundary IoU (Cheng et al., "Boundary IoU: Improving
Object-Centric Image Segmentation Evaluation", CVPR 2021, https://arxiv.org/abs/2103.16562;
per class, the band of ``d`` pixels inside each mask's contour, d = 2% of the image diagonal),
the boundary F-score (contour pixels matched within 2 px; Csurka et al. 2013) and the median
seconds per image of the network and of the CRF, with the machine it ran on.

Settings: none; the DeepLab-v2 defaults (MODEL.CRF.* defaults: at 128x128 the window
approximation, MAX_EXACT_PIXELS 4096) and their Gaussian term alone; a grid over the
bilateral kernel, the best by Boundary IoU on the first --grid-images images, reported on all
images and on the held-out rest; and both again with the exact fully connected sum on the
first --exact-images images.

    python tools/benchmark_crf.py [--config-file ...] [--weights ...] [--threads 1]
        [--grid-images 20] [--exact-images 20] [--markdown out.md]
"""

import argparse
import itertools
import os
import statistics
import sys
import time

import seg_plugins  # noqa: F401  (before detectron2: repairs detectron2 where needed)

# isort: split
import cv2
import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model

from seg_plugins.data import SemSegDatasetMapper, read_label
from seg_plugins.evaluation import SemSegMetricsEvaluator
from seg_plugins.modeling.postprocessing import DenseCRF

from . import common

DATASET = "shapes_val"
BOUNDARY_RATIO = 0.02  # Boundary IoU's d as a fraction of the image diagonal (the paper's)
F_TOLERANCE = 2  # pixels
COLUMNS = (
    "CRF", "mIoU", "Boundary IoU", "boundary F (2 px)", "network s/img", "CRF s/img",
    "total s/img",
)  # fmt: skip
# The grid: bilateral intensity std (the images carry per-pixel noise of std 4-12 per
# channel, so DeepLab's 3 makes almost every pair dissimilar), bilateral weight, window radius.
GRID = {
    "bilateral_intensity_std": [3.0, 10.0, 20.0, 40.0],
    "bilateral_weight": [2.0, 4.0, 8.0],
    "window_radius": [5, 10, 20],
}


def load(config_file: str, weights: str):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = common.load_config(config_file, ["MODEL.WEIGHTS", weights, "MODEL.DEVICE", device])
    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(weights)
    return cfg, model


def predict(cfg, model):
    """Per image: (input dict, logits of shape (K, H, W) without CRF, network seconds)."""
    mapper = SemSegDatasetMapper(cfg, is_train=False)
    model.crf = None
    out = []
    for record in DatasetCatalog.get(DATASET):
        inputs = mapper(record)
        with torch.no_grad():
            start = time.perf_counter()
            logits = model([inputs])[0]["sem_seg"]
            seconds = _sync_elapsed(start, logits.device)
        out.append((inputs, logits, seconds))
    return out


def _sync_elapsed(start: float, device) -> float:
    common.synchronize(device)
    return time.perf_counter() - start


def refine(model, predictions, crf, indices):
    """{i: (logits of shape (K, H, W) after ``crf`` (None: unchanged), CRF seconds)}."""
    model.crf = crf
    out = {}
    for i in indices:
        inputs, logits, _ = predictions[i]
        if crf is None:
            out[i] = (logits, 0.0)
            continue
        with torch.no_grad():
            start = time.perf_counter()
            refined = model._crf_logits(logits, logits.shape[-2:], inputs["image"])
            out[i] = (refined, _sync_elapsed(start, refined.device))
    model.crf = None
    return out


def check_forward(model, prediction, crf) -> None:
    """The logits ``refine`` gives are what the model's own forward returns with ``crf``."""
    inputs, _, _ = prediction
    model.crf = crf
    with torch.no_grad():
        expected = model([inputs])[0]["sem_seg"]
    model.crf = None
    refined = refine(model, [prediction], crf, [0])[0][0]
    torch.testing.assert_close(refined, expected)


def boundary_band(mask: np.ndarray, d: int) -> np.ndarray:
    """The pixels of ``mask`` within d pixels of its contour (the image border counts as
    outside, as in Cheng et al.'s reference)."""
    kernel = np.ones((3, 3), np.uint8)
    inner = cv2.erode(mask, kernel, iterations=d, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return mask & (1 - inner)


def boundary_counts(pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore: int):
    """Per class: Boundary IoU's (intersection, union) and the boundary F-score's (matched
    predicted, predicted, matched true, true) contour pixel counts, for one image."""
    d = max(1, round(BOUNDARY_RATIO * float(np.hypot(*gt.shape))))
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * F_TOLERANCE + 1,) * 2)
    valid = (gt != ignore).astype(np.uint8)
    counts = np.zeros((num_classes, 6), np.int64)
    for c in range(num_classes):
        g, p = (gt == c).astype(np.uint8), (pred == c).astype(np.uint8)
        gb, pb = boundary_band(g, d) & valid, boundary_band(p, d) & valid
        gc, pc = boundary_band(g, 1) & valid, boundary_band(p, 1) & valid  # 1-px contours
        counts[c] = [
            (gb & pb).sum(),
            (gb | pb).sum(),
            (pc & cv2.dilate(gc, disk)).sum(),
            pc.sum(),
            (gc & cv2.dilate(pc, disk)).sum(),
            gc.sum(),
        ]
    return counts


def evaluate(predictions, refined, indices, num_classes: int, ignore: int) -> dict:
    evaluator = SemSegMetricsEvaluator(DATASET, distributed=False)
    counts = np.zeros((num_classes, 6), np.int64)
    for i in indices:
        inputs, (logits, _) = predictions[i][0], refined[i]
        evaluator.process([inputs], [{"sem_seg": logits}])
        pred = logits.argmax(0).cpu().numpy()
        counts += boundary_counts(
            pred, read_label(inputs["sem_seg_file_name"]), num_classes, ignore
        )
    with np.errstate(invalid="ignore", divide="ignore"):
        biou = counts[:, 0] / counts[:, 1]
        precision, recall = counts[:, 2] / counts[:, 3], counts[:, 4] / counts[:, 5]
        f_score = 2 * precision * recall / (precision + recall)
    return {
        "mIoU": evaluator.evaluate()["sem_seg"]["mIoU"],
        "bIoU": float(np.nanmean(biou) * 100),
        "bF": float(np.nanmean(f_score) * 100),
        "crf_s": statistics.median(refined[i][1] for i in indices),
    }


def row(name: str, res: dict, net_s: float) -> str:
    """The line of one setting: its scores, the network's, the CRF's and the total s/img."""
    seconds = (net_s, res["crf_s"], net_s + res["crf_s"])
    scores = (f"{res[key]:.2f}" for key in ("mIoU", "bIoU", "bF"))
    return common.markdown_row((name, *scores, *(f"{s:.3f}" for s in seconds)))


def grid_table(grid) -> list:
    """Markdown lines of the grid ((params or None for no CRF, results) pairs)."""
    rows = []
    for params, res in grid:
        if params:
            settings = [f"{params[k]:g}" for k in GRID]
        else:
            settings = ["no CRF"] + ["-"] * (len(GRID) - 1)
        scores = [f"{res[key]:.2f}" for key in ("mIoU", "bIoU", "bF")]
        rows.append((*settings, *scores, f"{res['crf_s']:.3f}"))
    header = (*GRID, "mIoU", "Boundary IoU", "boundary F", "CRF s/img")
    return common.markdown_table(header, rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", default="configs/shapes/deeplabv3_R18_shapes.yaml")
    parser.add_argument("--weights", default="output/tune_dl3/model_final.pth")
    parser.add_argument("--grid-images", type=int, default=20)
    parser.add_argument("--exact-images", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = default")
    parser.add_argument("--markdown", help="also write the tables to this Markdown file")
    args = parser.parse_args(argv)
    os.chdir(common.REPO)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg, model = load(args.config_file, args.weights)
    meta = MetadataCatalog.get(DATASET)
    num_classes, ignore = len(meta.stuff_classes), getattr(meta, "ignore_label", 255)
    predictions = predict(cfg, model)
    n = len(predictions)
    net_s = statistics.median(s for _, _, s in predictions)
    every, tuning, held_out = range(n), range(args.grid_images), range(args.grid_images, n)
    exact = range(min(args.exact_images, n))

    def run(crf, indices):
        refined = refine(model, predictions, crf, indices)
        return evaluate(predictions, refined, indices, num_classes, ignore)

    # Grid on the first images (window approximation, DeepLab-v2's other values).
    grid = []
    for values in itertools.product(*GRID.values()):
        params = dict(zip(GRID, values))
        grid.append((params, run(DenseCRF(max_exact_pixels=0, **params), tuning)))
        print(f"grid {params}: {grid[-1][1]}", flush=True)
    best, _ = max(grid, key=lambda item: (item[1]["bIoU"], item[1]["mIoU"]))
    best_name = ", ".join(f"{k}={v:g}" for k, v in best.items())
    cfg_crf = DenseCRF(cfg)  # MODEL.CRF as configured: the defaults for shapes configs
    check_forward(model, predictions[0], cfg_crf)

    header = common.markdown_table(COLUMNS)
    lines = [
        f"Machine: {common.machine()}; {common.today()}; {args.config_file}, {args.weights}",
        "",
    ]
    for title, indices in (
        (f"All {n} {DATASET} images", every),
        (f"Held-out {len(held_out)} images (not used to pick the grid setting)", held_out),
    ):
        lines += [f"{title}:", "", *header]
        for name, crf in (
            ("none", None),
            ("DeepLab-v2 defaults (window r=10)", cfg_crf),
            ("only its Gaussian term (bilateral weight 0)", DenseCRF(bilateral_weight=0.0)),
            (f"best of grid: {best_name} (window)", DenseCRF(max_exact_pixels=0, **best)),
        ):
            lines.append(row(name, run(crf, indices), net_s))
            print(lines[-1], flush=True)
        lines.append("")
    lines += [f"First {len(exact)} images, exact fully connected sum vs window:", "", *header]
    exact_params = {k: v for k, v in best.items() if k != "window_radius"}
    for name, crf in (
        ("none", None),
        ("DeepLab-v2 defaults, window r=10", cfg_crf),
        ("DeepLab-v2 defaults, exact", DenseCRF(max_exact_pixels=10**9)),
        (f"{best_name}, window", DenseCRF(max_exact_pixels=0, **best)),
        (f"{best_name} (radius unused), exact", DenseCRF(max_exact_pixels=10**9, **exact_params)),
    ):
        lines.append(row(name, run(crf, exact), net_s))
        print(lines[-1], flush=True)
    lines += ["", f"Grid on the first {len(tuning)} images (window):", ""]
    lines += grid_table([(None, run(None, tuning))] + grid)
    common.emit(lines, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
