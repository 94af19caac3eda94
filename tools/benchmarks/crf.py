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

``--scaling`` measures the filters instead, with no model: on matplotlib's sample photograph
(grace_hopper.jpg, resized) and synthetic logits of a coarse network (a few colour clusters of
the 1/8 image as classes, upsampled bilinearly, plus noise), DeepLab-v2's defaults, 10
iterations: (1) the permutohedral lattice's bilateral messages against the exact sums
(all pixels where the exact sum is feasible, sampled rows above); (2) the mean field with the
lattice, the window and pydensecrf2 against the exact CRF (label agreement, mean |dQ|);
(3) seconds per image of the torch lattice and pydensecrf2 (built locally where no wheel
exists) from 128x128 to 1024x1024, their ratio, microseconds per pixel and label agreement.

    python tools/benchmark_crf.py --scaling --threads 1 [--sizes 128 256 512 1024]
        [--classes 2 21] [--exact-sizes 48 64 128] [--repeats 3] [--window-sizes 1024]
        [--markdown out.md]
"""

import argparse
import importlib.metadata
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
from seg_plugins.modeling.postprocessing import crf as crf_module

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


# ----------------------------------------------------------------------------- --scaling
PHOTO = "grace_hopper.jpg"  # matplotlib's sample data (512 x 600 RGB), a dependency already
PRESENT_CLASSES = 4  # colour clusters that become classes (VOC images show a few of 21)
LOGIT_STRIDE = 8  # the synthetic network's output stride
SAMPLED_ROWS = 256  # rows of the exact message compared above the exact sizes


def photo(size: int) -> torch.Tensor:
    """The sample photograph resized to size x size, (3, H, W) float of 0-255 integers."""
    from matplotlib import cbook

    path = str(cbook.get_sample_data(PHOTO, asfileobj=False))
    rgb = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
    interpolation = cv2.INTER_AREA if size < min(rgb.shape[:2]) else cv2.INTER_CUBIC
    resized = cv2.resize(rgb, (size, size), interpolation=interpolation)
    return torch.from_numpy(resized).permute(2, 0, 1).float()


def coarse_logits(image: torch.Tensor, num_classes: int, seed: int = 0) -> torch.Tensor:
    """Logits (K, H, W) of a synthetic coarse network: k-means of the 1/8 image's colours into
    a few clusters, spread over the K classes (score -|I - centre|^2 / 2 30^2 + noise), the
    other classes at -4 + noise, upsampled bilinearly (blurry boundaries)."""
    height, width = image.shape[1:]
    small = torch.nn.functional.interpolate(
        image[None], size=(height // LOGIT_STRIDE, width // LOGIT_STRIDE), mode="area"
    )[0]
    pixels = small.reshape(3, -1).T.contiguous().numpy()
    present = min(PRESENT_CLASSES, num_classes)
    cv2.setRNGSeed(seed)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5)
    _, _, centres = cv2.kmeans(pixels, present, None, criteria, 3, cv2.KMEANS_PP_CENTERS)
    distance = torch.cdist(torch.from_numpy(pixels), torch.from_numpy(centres)) ** 2
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(num_classes, *small.shape[1:], generator=gen) - 4.0
    classes = torch.linspace(0, num_classes - 1, present).round().long()
    scores = -distance.T.reshape(present, *small.shape[1:]) / (2 * 30.0**2)
    logits[classes] = scores + torch.randn(scores.shape, generator=gen)
    return torch.nn.functional.interpolate(
        logits[None], size=(height, width), mode="bilinear", align_corners=False
    )[0]


def agreement(q: torch.Tensor, reference: torch.Tensor) -> float:
    """Percentage of pixels with the same label (argmax over classes)."""
    return (q.argmax(0) == reference.argmax(0)).double().mean().item() * 100


def message_errors(size: int, crf: DenseCRF, rows: int) -> dict:
    """The lattice's and the window's bilateral messages for Q = softmax(logits) (K = 21)
    against the exact sums on ``rows`` evenly spaced pixels (all of them if rows >= N):
    relative error (Frobenius) and the ratio of the sums."""
    image = photo(size)
    q = torch.softmax(coarse_logits(image, 21), 0).reshape(21, -1).T.contiguous()
    features = crf_module._bilateral_features(
        image, crf.bilateral_xy_std, crf.bilateral_intensity_std
    )
    n = size * size
    index = torch.linspace(0, n - 1, min(rows, n)).round().long()
    exact = torch.zeros(len(index), 21)
    for start in range(0, len(index), 16):  # 16 rows of the N x N kernel at a time
        block = index[start : start + 16]
        dist = torch.cdist(features[block], features, compute_mode="donot_use_mm_for_euclid_dist")
        exact[start : start + 16] = torch.exp(-0.5 * dist.square()) @ q - q[block]
    out = {}
    for name, bilateral_filter in (("lattice", "permutohedral"), ("window", "window")):
        approx = DenseCRF(max_exact_pixels=0, bilateral_filter=bilateral_filter)
        message = approx._bilateral_message_fn(image)(q)[index]
        relative = ((message - exact).norm() / exact.norm()).item()
        out[name] = (relative, (message.sum() / exact.sum()).item())
    return {"rows": len(index), **out}


def exact_comparison(size: int, num_classes: int, has_pydensecrf: bool) -> dict:
    """Mean field with each filter against the exact CRF on one image."""
    image = photo(size)
    logits = coarse_logits(image, num_classes)
    exact = DenseCRF(max_exact_pixels=10**9)(logits, image)
    runs = {
        "lattice": DenseCRF(max_exact_pixels=0)(logits, image),
        "window": DenseCRF(max_exact_pixels=0, bilateral_filter="window")(logits, image),
        "unary": torch.softmax(logits, 0),
    }
    if has_pydensecrf:
        runs["pydensecrf2"] = DenseCRF(backend="pydensecrf2")(logits, image)
    return {
        name: (agreement(q, exact), (q - exact).abs().mean().item()) for name, q in runs.items()
    }


def timing(size: int, num_classes: int, repeats: int, has_pydensecrf: bool, window: bool):
    """Median seconds per image of the torch lattice (and pydensecrf2, and the window once)
    and the label agreement of the two, with the lattice's vertices per pixel."""
    image = photo(size)
    logits = coarse_logits(image, num_classes)
    crfs = {"torch": DenseCRF(max_exact_pixels=0)}
    if has_pydensecrf:
        crfs["pydensecrf2"] = DenseCRF(backend="pydensecrf2")
    out = {key: None for key in crfs}

    def call(key):
        def run():
            out[key] = crfs[key](logits, image)

        return run

    seconds = common.time_calls({key: call(key) for key in crfs}, warmup=0, repeats=repeats)
    stds = (crfs["torch"].bilateral_xy_std, crfs["torch"].bilateral_intensity_std)
    features = crf_module._bilateral_features(image, *stds)
    vertices = crf_module.PermutohedralLattice(features).num_vertices / (size * size)
    res = {"seconds": seconds, "vertices": vertices}
    if has_pydensecrf:
        res["agreement"] = agreement(out["torch"], out["pydensecrf2"])
    if window:
        start = time.perf_counter()
        DenseCRF(max_exact_pixels=0, bilateral_filter="window")(logits, image)
        res["window_s"] = time.perf_counter() - start
    return res


def harder_images(size: int, num_classes: int, has_pydensecrf: bool) -> list:
    """One run each of the torch lattice and pydensecrf2 on the photograph with per-pixel
    noise (std 8) and on uniformly random colours (the lattice's worst case: nearly every
    pixel its own simplex): (name, vertices per pixel, torch s, pydensecrf2 s, agreement)."""
    photograph = photo(size)
    logits = coarse_logits(photograph, num_classes)
    gen = torch.Generator().manual_seed(0)
    noisy = (photograph + torch.randn(photograph.shape, generator=gen) * 8).clamp(0, 255).round()
    random = torch.randint(0, 256, photograph.shape, generator=gen).float()
    rows = []
    for name, image in (("photograph + noise of std 8", noisy), ("uniform random colours", random)):
        torch_crf = DenseCRF(max_exact_pixels=0)
        stds = (torch_crf.bilateral_xy_std, torch_crf.bilateral_intensity_std)
        features = crf_module._bilateral_features(image, *stds)
        vertices = crf_module.PermutohedralLattice(features).num_vertices / (size * size)
        start = time.perf_counter()
        q = torch_crf(logits, image)
        seconds = [time.perf_counter() - start]
        if has_pydensecrf:
            start = time.perf_counter()
            reference = DenseCRF(backend="pydensecrf2")(logits, image)
            seconds.append(time.perf_counter() - start)
            seconds.append(agreement(q, reference))
        rows.append((name, vertices, *seconds))
    return rows


def scaling(args) -> int:
    """The --scaling report (see the module docstring)."""
    try:
        import pydensecrf.densecrf  # noqa: F401

        has_pydensecrf = True
        try:
            pdc = f"pydensecrf2 {importlib.metadata.version('pydensecrf2')}"
        except importlib.metadata.PackageNotFoundError:
            pdc = "pydensecrf (not the pydensecrf2 distribution)"
    except ImportError:
        has_pydensecrf, pdc = False, "pydensecrf2 not installed (its columns are empty)"
    load = common.load_average()
    log = common.stderr_logger("crf --scaling")
    lines = ["Bilateral messages against the exact sums (DeepLab-v2: theta_a 67, theta_b 3):", ""]
    rows = []
    for size in [*args.exact_sizes, max(args.sizes)]:
        res = message_errors(size, DenseCRF(), SAMPLED_ROWS if size > 128 else size * size)
        rows.append(
            (
                f"{size}x{size}",
                res["rows"],
                *(f"{res[k][i]:.3f}" for k in ("lattice", "window") for i in (0, 1)),
            )
        )
        log(str(rows[-1]))
    header = (
        "image",
        "pixels compared",
        "lattice rel. error",
        "lattice / exact sum",
        "window r=10 rel. error",
        "window / exact sum",
    )
    lines += [*common.markdown_table(header, rows), ""]
    lines += ["Mean field (10 iterations) against the exact CRF: labels agreeing, mean |dQ|:", ""]
    rows = []
    names = ["lattice", "window", "pydensecrf2", "unary"]
    for size in args.exact_sizes:
        for num_classes in args.classes:
            res = exact_comparison(size, num_classes, has_pydensecrf)
            cells = [f"{res[k][0]:.2f}% / {res[k][1]:.4f}" if k in res else "-" for k in names]
            rows.append((f"{size}x{size}", num_classes, *cells))
            log(str(rows[-1]))
    header = (
        "image",
        "K",
        "torch lattice",
        "torch window r=10",
        "pydensecrf2",
        "softmax(logits), no CRF",
    )
    lines += [*common.markdown_table(header, rows), ""]
    lines += [
        f"Seconds per image (median of {args.repeats}), whole CRF (lattice built per image):",
        "",
    ]
    rows = []
    for size in args.sizes:
        for num_classes in args.classes:
            res = timing(size, num_classes, args.repeats, has_pydensecrf, size in args.window_sizes)
            torch_s = res["seconds"]["torch"]
            pdc_s = res["seconds"].get("pydensecrf2")
            per_pixel = 1e6 / (size * size)
            rows.append(
                (
                    f"{size}x{size}",
                    num_classes,
                    f"{torch_s:.3f}",
                    f"{pdc_s:.3f}" if pdc_s else "-",
                    f"{torch_s / pdc_s:.2f}" if pdc_s else "-",
                    f"{torch_s * per_pixel:.2f}",
                    f"{pdc_s * per_pixel:.2f}" if pdc_s else "-",
                    f"{res['agreement']:.2f}%" if pdc_s else "-",
                    f"{res['vertices']:.2f}",
                    f"{res['window_s']:.1f}" if "window_s" in res else "-",
                )
            )
            log(str(rows[-1]))
    header = (
        "image", "K", "torch lattice s", "pydensecrf2 s", "ratio", "torch us/pixel",
        "pydensecrf2 us/pixel", "labels agreeing", "lattice vertices / pixel", "torch window s",
    )  # fmt: skip
    lines += [*common.markdown_table(header, rows), ""]
    size, num_classes = max(args.sizes), max(args.classes)
    lines += [f"Harder images, {size}x{size}, K = {num_classes}, one run each:", ""]
    rows = []
    for name, vertices, *res in harder_images(size, num_classes, has_pydensecrf):
        cells = [f"{res[0]:.2f}", "-", "-", "-"]
        if len(res) == 3:
            cells[1:] = [f"{res[1]:.2f}", f"{res[0] / res[1]:.2f}", f"{res[2]:.2f}%"]
        rows.append((name, f"{vertices:.2f}", *cells))
        log(str(rows[-1]))
    header = (
        "image", "lattice vertices / pixel", "torch lattice s", "pydensecrf2 s", "ratio",
        "labels agreeing",
    )  # fmt: skip
    lines += [*common.markdown_table(header, rows), ""]
    lines += [
        f"Machine: {common.machine()}; torch threads: {torch.get_num_threads()}; {pdc}; "
        f"{common.today()}; {common.load_note(load)}"
    ]
    common.emit(lines, args.markdown)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", default="configs/shapes/deeplabv3_R18_shapes.yaml")
    parser.add_argument("--weights", default="output/tune_dl3/model_final.pth")
    parser.add_argument("--grid-images", type=int, default=20)
    parser.add_argument("--exact-images", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = default")
    parser.add_argument("--markdown", help="also write the tables to this Markdown file")
    parser.add_argument("--scaling", action="store_true", help="time and check the filters")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512, 1024])
    parser.add_argument("--classes", type=int, nargs="+", default=[2, 21])
    parser.add_argument("--exact-sizes", type=int, nargs="+", default=[48, 64, 128])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--window-sizes", type=int, nargs="*", default=[], help="also time the window once"
    )
    args = parser.parse_args(argv)
    os.chdir(common.REPO)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.scaling:
        return scaling(args)
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

    def window(**params):
        return DenseCRF(max_exact_pixels=0, bilateral_filter="window", **params)

    # Grid on the first images (window approximation, DeepLab-v2's other values).
    grid = []
    for values in itertools.product(*GRID.values()):
        params = dict(zip(GRID, values))
        grid.append((params, run(window(**params), tuning)))
        print(f"grid {params}: {grid[-1][1]}", flush=True)
    best, _ = max(grid, key=lambda item: (item[1]["bIoU"], item[1]["mIoU"]))
    best_name = ", ".join(f"{k}={v:g}" for k, v in best.items())
    # MODEL.CRF as configured (the defaults for shapes configs) with the window filter, what
    # docs/crf.md's shapes tables measured; the default filter is now the lattice.
    cfg_crf = DenseCRF(cfg, bilateral_filter="window")
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
            (f"best of grid: {best_name} (window)", window(**best)),
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
        (f"{best_name}, window", window(**best)),
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
