"""``seg-plugins-export``: a trained model to ONNX / TorchScript, each file verified against
PyTorch (the command line is parsed by :mod:`seg_plugins_cli.export`, whose ``--help``
documents the files).
"""

import logging
import os
import time

import torch
from detectron2.modeling import build_model
from detectron2.utils.logger import setup_logger

from seg_plugins_cli.common import fail

from ..engine.checkpoint import SafeCheckpointer
from ..engine.cli import ConfigError, setup_cfg
from ..export import (
    export_instance_model,
    export_onnx,
    export_torchscript,
    instance_max_abs_difference,
    max_abs_difference,
)
from ..modeling.task import task_of

logger = logging.getLogger("seg_plugins.export")

EXPORTERS = {"onnx": ("model.onnx", export_onnx), "torchscript": ("model.ts", export_torchscript)}


def build(cfg, random_weights: bool = False):
    try:
        task = task_of(cfg)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if not task.exportable(cfg):
        raise ConfigError(
            f"MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE} ({task.name} "
            "segmentation): this tool exports the semantic models and R-CNNs (Mask R-CNN, "
            "GeneralizedRCNN), not this one"
        )
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"  # exported and verified on the CPU
    cfg.freeze()
    model = build_model(cfg).eval()
    if cfg.MODEL.WEIGHTS:
        try:
            SafeCheckpointer.from_config(cfg, model).load(cfg.MODEL.WEIGHTS)
        except Exception as e:
            raise ConfigError(f"cannot load MODEL.WEIGHTS {cfg.MODEL.WEIGHTS}: {e}") from e
    elif random_weights:
        logger.warning("--random-weights: exporting the model's initial (untrained) weights")
    else:
        raise ConfigError(
            "no weights: pass --weights path/to/model.pth, or --random-weights to export the "
            "untrained model on purpose"
        )
    return model


def run(args) -> int:
    """Export as ``args`` (:func:`seg_plugins_cli.export.parse_args`) say; exit status."""
    setup_logger(name="seg_plugins")
    try:
        cfg = setup_cfg(args)
        model = build(cfg, args.random_weights)
    except ConfigError as e:
        return fail(str(e))
    os.makedirs(args.output, exist_ok=True)
    worst = 0.0
    instance = task_of(cfg).name == "instance"
    with torch.no_grad():
        for fmt in args.format:
            name, export = EXPORTERS[fmt]
            path = os.path.join(args.output, name)
            tic = time.perf_counter()
            if instance:  # detectron2's TracingAdapter: inference before postprocessing
                export_instance_model(model, path, fmt, args.example_size)
            else:
                export(model, path, args.example_size)
            logger.info("%s: wrote %s in %.1f s", fmt, path, time.perf_counter() - tic)
            verify = instance_max_abs_difference if instance else max_abs_difference
            diffs = verify(path, model, args.verify_size)
            for (height, width), diff in diffs.items():
                ok = "ok" if diff <= args.tolerance else "TOO LARGE"
                print(f"{fmt}: {height}x{width} max |exported - PyTorch| = {diff:.2e} ({ok})")
            worst = max(worst, *diffs.values())
    if worst > args.tolerance:
        return fail(
            f"exported outputs differ from PyTorch's by {worst:.2e} > {args.tolerance:.0e}",
            status=1,
        )
    return 0
