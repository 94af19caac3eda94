#!/usr/bin/env python
"""Segment images with a trained seg_plugins model: label PNGs, overlays, probabilities.

    python tools/predict.py --config-file configs/shapes/unet_shapes.yaml \\
        --input datasets/shapes/val/images --output predictions \\
        --opts MODEL.WEIGHTS output/unet_shapes/model_final.pth
    python tools/predict.py --config-file X.yaml --input a.png 'scans/**/*.tif' \\
        --output out --probabilities --opts MODEL.WEIGHTS model.pth MODEL.DEVICE cuda

--input takes image files, folders (their image files, not recursive) and quoted glob
patterns (``**`` recurses), in any mix. Each image is read and mapped exactly as the
Trainer's test loader does (SemSegDatasetMapper with is_train=False: INPUT.FORMAT, the
test-time augmentations, none by default) and predicted at its original size. For an
image ``<stem>.<ext>`` it writes, into --output:

    <stem>.png          the class of every pixel: a palette PNG whose pixel values are the
                        class indices (read back with seg_plugins.data.io.read_label) and
                        whose colours are the dataset's stuff_colors (DATASETS.TEST[0]) or a
                        fixed palette; 16-bit grayscale beyond 256 classes
    <stem>_overlay.png  the prediction drawn on the image by detectron2's Visualizer
                        (class colours + names), at the image's size; images under 384
                        pixels are enlarged (to ~384, at most 4x) so names stay legible
    <stem>_prob.npy     with --probabilities: float16 array (K, H, W) of softmax
                        probabilities (np.load); binary models (NUM_CLASSES 1): (1, H, W),
                        the foreground probability sigmoid(logit)

Binary models are thresholded at MODEL.SEM_SEG_HEAD.BINARY_THRESHOLD (labels 0 / 1), as in
evaluation. MODEL.DEVICE "cuda" falls back to the CPU (with a log line) when CUDA is absent.
Command mistakes (config, overrides, inputs, weights) end with one line on stderr and exit
status 2; an image that cannot be read or predicted ends the run with status 1.
"""

import argparse
import logging
import os
import sys
import time
import warnings
from glob import glob
from types import SimpleNamespace

# detectron2 v0.6 scripts a few helpers with torch.jit.script, deprecated in torch 2.x.
warnings.filterwarnings(
    "ignore", message="`torch.jit.script` is deprecated", category=FutureWarning
)

import seg_plugins  # noqa: F401  first: repairs detectron2 where needed, registers models

# isort: split
import numpy as np
import torch
from detectron2.modeling import build_model
from detectron2.utils.logger import setup_logger
from PIL import Image

from seg_plugins.data import SemSegDatasetMapper
from seg_plugins.engine.checkpoint import SafeCheckpointer
from seg_plugins.engine.cli import ConfigError, setup_cfg
from seg_plugins.engine.trainer import model_outputs
from seg_plugins.evaluation.plots import save_label_png
from seg_plugins.evaluation.visualizer import (
    dataset_classes,
    display_scale,
    predicted_classes,
    read_display_image,
    render_sem_seg,
)
from seg_plugins.utils.file_io import atomic_open

logger = logging.getLogger("seg_plugins.predict")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
OUTPUT_SUFFIXES = (".png", "_overlay.png", "_prob.npy")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Segment images with a trained model (label PNGs, overlays, probabilities).",
        epilog="Example: tools/predict.py --config-file configs/shapes/unet_shapes.yaml "
        "--input datasets/shapes/val/images --output preds "
        "--opts MODEL.WEIGHTS output/unet_shapes/model_final.pth",
    )
    parser.add_argument("--config-file", required=True, metavar="FILE", help="yacs config")
    parser.add_argument(
        "--input",
        required=True,
        nargs="+",
        help="image files, folders and/or quoted glob patterns ('imgs/*.png', 'a/**/*.tif')",
    )
    parser.add_argument("--output", required=True, help="folder for the outputs (created)")
    parser.add_argument(
        "--probabilities",
        action="store_true",
        help="also write <stem>_prob.npy: float16 (K, H, W) class probabilities",
    )
    parser.add_argument(
        "--opts",
        default=[],
        nargs=argparse.REMAINDER,
        help="KEY VALUE config overrides, last on the line (e.g. MODEL.WEIGHTS model.pth)",
    )
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------- inputs
def _is_image(path: str) -> bool:
    return os.path.isfile(path) and path.lower().endswith(IMAGE_EXTENSIONS)


def collect_inputs(specs) -> list:
    """Image paths from files, folders and glob patterns, in order, without duplicates."""
    files = []
    for spec in specs:
        if any(c in spec for c in "*?["):
            matches = sorted(p for p in glob(spec, recursive=True) if _is_image(p))
            if not matches:
                raise ConfigError(
                    f"--input {spec!r}: no image file ({', '.join(IMAGE_EXTENSIONS)}) matches"
                )
        elif os.path.isdir(spec):
            matches = sorted(
                os.path.join(spec, n) for n in os.listdir(spec) if _is_image(os.path.join(spec, n))
            )
            if not matches:
                raise ConfigError(
                    f"--input {spec!r}: the folder has no image file "
                    f"({', '.join(IMAGE_EXTENSIONS)}); pass a glob such as '{spec}/**/*.png' "
                    "for subfolders"
                )
        elif os.path.isfile(spec):
            matches = [spec]
        else:
            raise ConfigError(f"--input {spec!r}: no such file or folder")
        files.extend(matches)
    return list(dict.fromkeys(os.path.normpath(f) for f in files))


def output_stems(files, output_dir: str) -> list:
    """Output path prefixes <output_dir>/<stem>; raise if two inputs share a stem or an
    output would overwrite an input."""
    stems, seen = [], {}
    inputs = {os.path.realpath(f) for f in files}
    for f in files:
        stem = os.path.splitext(os.path.basename(f))[0]
        if stem in seen:
            raise ConfigError(
                f"inputs {seen[stem]} and {f} have the same name {stem!r}, so their outputs "
                "would overwrite each other; predict them into different --output folders"
            )
        seen[stem] = f
        prefix = os.path.join(output_dir, stem)
        for suffix in OUTPUT_SUFFIXES:
            if os.path.realpath(prefix + suffix) in inputs:
                raise ConfigError(
                    f"output {prefix + suffix} would overwrite the input image of that name; "
                    "choose another --output folder"
                )
        stems.append(prefix)
    return stems


# ----------------------------------------------------------------------------- model
def build_predictor(cfg):
    """The model in eval mode with MODEL.WEIGHTS loaded; raise ConfigError when the weights
    are missing or do not fit the configured model."""
    if "sem_seg" not in model_outputs(cfg):
        raise ConfigError(
            f"MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE} predicts no semantic "
            "segmentation; tools/predict.py needs a semantic model (UNet, FCN, DeepLabV3, ...)"
        )
    weights = cfg.MODEL.WEIGHTS
    if not weights:
        final = os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
        hint = f" (e.g. {final})" if os.path.isfile(final) else ""
        raise ConfigError(f"no weights: pass --opts MODEL.WEIGHTS path/to/model.pth{hint}")
    model = build_model(cfg)
    checkpointer = SafeCheckpointer.from_config(cfg, model)  # weights_only unless trusted
    try:
        path = weights
        if not os.path.isfile(path) and "://" in path:  # detectron2://, https://
            path = checkpointer.path_manager.get_local_path(path)
        if not os.path.isfile(path):
            raise ConfigError(f"MODEL.WEIGHTS {weights}: no such file")
        # fvcore's load() only logs missing weights; a prediction from a half-random model
        # is worse than an error, so load in its two steps and check what it reports.
        incompatible = checkpointer._load_model(checkpointer._load_file(path))
    except ConfigError:
        raise
    except Exception as e:  # a corrupt file, not a checkpoint, a failed download
        raise ConfigError(f"cannot load MODEL.WEIGHTS {weights}: {e}") from e
    missing = list(getattr(incompatible, "missing_keys", []) or [])
    if missing:
        raise ConfigError(
            f"MODEL.WEIGHTS {weights} lacks {len(missing)} parameters of the configured "
            f"{cfg.MODEL.META_ARCHITECTURE} (e.g. {missing[:3]}); is --config-file the config "
            "these weights were trained with?"
        )
    logger.info("Loaded %s", weights)
    return model.eval()


# ----------------------------------------------------------------------------- outputs
def _save_rgb(array: np.ndarray, path: str) -> None:
    with atomic_open(path, "wb") as f:
        Image.fromarray(array).save(f, format="PNG")


def _save_probabilities(logits: torch.Tensor, path: str) -> None:
    if logits.shape[0] == 1:
        probs = logits.float().sigmoid()
    else:
        probs = logits.float().softmax(dim=0)
    with atomic_open(path, "wb") as f:
        np.save(f, probs.cpu().numpy().astype(np.float16))


class Predictor:
    """Runs the model on one image file and writes its outputs."""

    def __init__(self, cfg, model, probabilities: bool):
        self.model = model
        self.mapper = SemSegDatasetMapper(cfg, is_train=False)
        self.channels = len(cfg.MODEL.PIXEL_MEAN)
        self.format = cfg.INPUT.FORMAT
        self.threshold = cfg.MODEL.SEM_SEG_HEAD.BINARY_THRESHOLD
        self.probabilities = probabilities
        dataset = cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else None
        self.names, self.colors = dataset_classes(dataset, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)

    def load(self, path: str) -> dict:
        """The model input for one image file; OSError / ValueError naming the file."""
        inputs = self.mapper({"file_name": path})  # reads, checks, applies test-time augs
        if inputs["image"].shape[0] != self.channels:
            raise ValueError(
                f"{path}: read as {inputs['image'].shape[0]} channel(s) with INPUT.FORMAT "
                f"{self.format!r}, but the model takes {self.channels} (MODEL.PIXEL_MEAN); "
                "set INPUT.FORMAT to 'L' for 1 channel, 'RGB' / 'BGR' for 3, 'RAW' for any count"
            )
        inputs["display"] = read_display_image(path)
        return inputs

    def __call__(self, inputs: dict, prefix: str) -> None:
        display = inputs.pop("display")
        with torch.no_grad():
            logits = self.model([inputs])[0]["sem_seg"]
        label = predicted_classes(logits, self.threshold).cpu().numpy()
        save_label_png(label, prefix + ".png", self.colors)
        # Small images are enlarged (longer side ~384 px) so that the class names stay legible.
        scale = max(1.0, display_scale(*label.shape))
        overlay = render_sem_seg(display, label, self.names, self.colors, scale=scale)
        _save_rgb(overlay, prefix + "_overlay.png")
        if self.probabilities:
            _save_probabilities(logits, prefix + "_prob.npy")


def _setup(args):
    cfg = setup_cfg(SimpleNamespace(config_file=args.config_file, opts=args.opts, num_gpus=1))
    files = collect_inputs(args.input)
    prefixes = output_stems(files, args.output)
    return cfg, files, prefixes


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logger(name="seg_plugins")
    try:
        cfg, files, prefixes = _setup(args)
        model = build_predictor(cfg)
    except ConfigError as e:
        print(f"seg_plugins: error: {e}", file=sys.stderr)
        return 2
    if cfg.MODEL.DEVICE == "cpu" and not torch.cuda.is_available():
        logger.info(
            "CUDA is not available: running on the CPU (%d threads)", torch.get_num_threads()
        )
    os.makedirs(args.output, exist_ok=True)
    predictor = Predictor(cfg, model, args.probabilities)
    start = time.perf_counter()
    for i, (path, prefix) in enumerate(zip(files, prefixes), start=1):
        tic = time.perf_counter()
        try:
            inputs = predictor.load(path)
        except (OSError, ValueError) as e:  # both name the file
            print(f"seg_plugins: error: {e}", file=sys.stderr)
            return 1
        predictor(inputs, prefix)
        height, width = inputs["height"], inputs["width"]
        logger.info(
            "[%d/%d] %s (%dx%d) -> %s.png in %.2f s",
            i,
            len(files),
            path,
            width,
            height,
            prefix,
            time.perf_counter() - tic,
        )
    logger.info(
        "Predicted %d image(s) in %.1f s into %s",
        len(files),
        time.perf_counter() - start,
        args.output,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
