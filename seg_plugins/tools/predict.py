"""``seg-plugins-predict``: label PNGs, overlays and probabilities for images, from a
trained semantic model (the command line is parsed by :mod:`seg_plugins_cli.predict`, whose
``--help`` documents the outputs).
"""

import json
import logging
import os
import time
from glob import glob

import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.utils.logger import setup_logger
from PIL import Image

from seg_plugins_cli.common import fail

from ..engine.cli import ConfigError, setup_cfg
from ..engine.predictor import InputReader, Predictor
from ..evaluation.panoptic import coco_panoptic_prediction
from ..evaluation.plots import save_label_png
from ..evaluation.visualizer import (
    dataset_classes,
    display_scale,
    read_display_image,
    render_panoptic,
    render_sem_seg,
)
from ..export import load_exported
from ..modeling.task import PanopticTask, SemanticTask, task_of
from ..utils.file_io import atomic_open, atomic_write_text
from ..utils.progress import progress_bar

logger = logging.getLogger("seg_plugins.predict")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
OUTPUT_SUFFIXES = (".png", "_overlay.png", "_prob.npy", "_panoptic.png")


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
def build_predictor(cfg) -> Predictor:
    """seg_plugins.Predictor of the config's semantic model with MODEL.WEIGHTS; ConfigError
    when the weights are missing or do not fit the configured model."""
    try:
        task = task_of(cfg)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if not isinstance(task, (SemanticTask, PanopticTask)):
        raise ConfigError(
            f"MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE} predicts instances only; "
            "seg-plugins-predict takes semantic models (UNet, FCN, DeepLabV3, ...) and "
            "Panoptic FPN; for Mask R-CNN use seg_plugins.Predictor from Python"
        )
    weights = cfg.MODEL.WEIGHTS
    if not weights:
        final = os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
        hint = f" (e.g. {final})" if os.path.isfile(final) else ""
        raise ConfigError(
            f"no weights: pass --weights path/to/model.pth (or MODEL.WEIGHTS path){hint}"
        )
    try:
        return Predictor(cfg)
    except Exception as e:  # a corrupt file, not a checkpoint, a failed download, a misfit
        raise ConfigError(f"cannot load MODEL.WEIGHTS {weights}: {e}") from e


class OnnxSemSeg:
    """An exported model (seg-plugins-export) run by onnxruntime, called like
    seg_plugins.Predictor: path -> {"sem_seg": logits (K, H, W)}."""

    def __init__(self, cfg, path: str):
        if not os.path.isfile(path):
            raise ConfigError(f"--onnx {path}: no such file")
        try:
            self.run = load_exported(path)
        except Exception as e:  # not an ONNX file, onnxruntime missing
            raise ConfigError(f"--onnx {path}: cannot load it: {e}") from e
        self.reader = InputReader(cfg)

    def __call__(self, path: str) -> dict:
        image = self.reader(path, name=path).astype(np.float32)
        logits = self.run(image.transpose(2, 0, 1)[None])[0]
        return {"sem_seg": torch.from_numpy(logits)}


# ----------------------------------------------------------------------------- outputs
def _save_rgb(array: np.ndarray, path: str) -> None:
    with atomic_open(path, "wb") as f:
        Image.fromarray(array).save(f, format="PNG")


def _save_probabilities(task: SemanticTask, logits: torch.Tensor, path: str) -> None:
    probs = task.probabilities(logits.float())
    with atomic_open(path, "wb") as f:
        np.save(f, probs.cpu().numpy().astype(np.float16))


class OutputWriter:
    """Writes one image's outputs: palette label PNG, overlay, optional probabilities."""

    def __init__(self, cfg, probabilities: bool):
        self.task = task_of(cfg)  # the rule from logits to classes / probabilities
        self.threshold = cfg.MODEL.SEM_SEG_HEAD.BINARY_THRESHOLD
        self.probabilities = probabilities
        dataset = cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else None
        self.names, self.colors = dataset_classes(dataset, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)

    def __call__(self, path: str, prediction: dict, prefix: str) -> None:
        logits = prediction["sem_seg"]
        label = self.task.classes(logits, self.threshold).cpu().numpy()
        save_label_png(label, prefix + ".png", self.colors)
        # Small images are enlarged (longer side ~384 px) so that the class names stay legible.
        scale = max(1.0, display_scale(*label.shape))
        overlay = render_sem_seg(
            read_display_image(path), label, self.names, self.colors, scale=scale
        )
        _save_rgb(overlay, prefix + "_overlay.png")
        if self.probabilities:
            _save_probabilities(self.task, logits, prefix + "_prob.npy")

    def finish(self, output_dir: str) -> None:
        """Nothing is left to write: each image's files are complete when it is done."""


class PanopticWriter:
    """Writes a Panoptic FPN prediction in the COCO panoptic format: ``<stem>_panoptic.png``
    (id = R + 256 G + 256^2 B, 0 VOID), an overlay (detectron2's ``draw_panoptic_seg``), and
    at the end ``panoptic.json`` with every image's ``segments_info`` (the dataset's
    category ids, DATASETS.TEST[0]'s metadata) and the categories."""

    def __init__(self, cfg):
        self.dataset = cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else None
        self.metadata = MetadataCatalog.get(self.dataset) if self.dataset else Metadata()
        self.annotations: list = []
        self.categories: list = []

    def __call__(self, path: str, prediction: dict, prefix: str) -> None:
        ids, info = prediction["panoptic_seg"]
        rgb, segments, self.categories = coco_panoptic_prediction(ids, info, self.dataset)
        _save_rgb(rgb, prefix + "_panoptic.png")
        scale = max(1.0, display_scale(*rgb.shape[:2]))
        image = read_display_image(path)
        _save_rgb(
            render_panoptic(image, ids, info, self.metadata, scale=scale), prefix + "_overlay.png"
        )
        stem = os.path.basename(prefix)
        self.annotations.append(
            {"image_id": stem, "file_name": stem + "_panoptic.png", "segments_info": segments}
        )

    def finish(self, output_dir: str) -> None:
        data = {"annotations": self.annotations, "categories": self.categories}
        atomic_write_text(os.path.join(output_dir, "panoptic.json"), json.dumps(data, indent=1))


def run(args) -> int:
    """Predict as ``args`` (:func:`seg_plugins_cli.predict.parse_args`) say; exit status."""
    setup_logger(name="seg_plugins")
    try:
        cfg = setup_cfg(args)
        files = collect_inputs(args.input)
        prefixes = output_stems(files, args.output)
        predictor = OnnxSemSeg(cfg, args.onnx) if args.onnx else build_predictor(cfg)
    except ConfigError as e:
        return fail(str(e))
    if cfg.MODEL.DEVICE == "cpu" and not torch.cuda.is_available():
        logger.info(
            "CUDA is not available: running on the CPU (%d threads)", torch.get_num_threads()
        )
    os.makedirs(args.output, exist_ok=True)
    if isinstance(task_of(cfg), PanopticTask):
        write = PanopticWriter(cfg)
    else:
        write = OutputWriter(cfg, args.probabilities)
    start = time.perf_counter()
    # Log lines go through tqdm while the bar runs, so the two never interleave.
    with progress_bar(total=len(files), unit="image") as progress:
        for path, prefix in zip(files, prefixes):
            tic = time.perf_counter()
            try:
                prediction = predictor(path)
            except (OSError, ValueError) as e:  # both name the file
                progress.close()
                return fail(str(e), status=1)
            write(path, prediction, prefix)
            progress.update()
            logger.debug("%s -> %s* in %.2f s", path, prefix, time.perf_counter() - tic)
    write.finish(args.output)
    logger.info(
        "Predicted %d image(s) in %.1f s into %s",
        len(files),
        time.perf_counter() - start,
        args.output,
    )
    return 0
