"""The training / evaluation entry point behind ``tools/train_net.py``.

Same flags as detectron2's tools/train_net.py (``--config-file``, ``--eval-only``,
``--resume``, ``--num-gpus``, ``--num-machines``, ``--machine-rank``, ``--dist-url`` and
trailing ``KEY VALUE`` overrides), started by :func:`seg_plugins.engine.launch.launch`: NCCL
processes on GPUs as in detectron2, gloo processes on the CPU (where ``--num-gpus N``, alias
``--num-processes N``, starts N processes), or under torchrun (docs/distributed.md).
Mistakes in the command (a missing config file, an unknown or mistyped key, an unregistered
dataset, impossible launch flags) end with one line on stderr naming the problem and exit
status 2, before any process is started.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import List, Optional

import torch
import yaml
from detectron2.config import CfgNode, get_cfg
from detectron2.data import DatasetCatalog
from detectron2.engine import default_argument_parser, default_setup
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from seg_plugins_cli import train as train_cli
from seg_plugins_cli.common import closest

from .. import compat, model_zoo
from ..config import add_seg_plugins_config
from ..data.spec import DatasetSpecError, register_dataset_specs
from .checkpoint import (
    CheckpointError,
    SafeCheckpointer,
    log_config_difference,
    merge_saved_config,
    no_config_message,
    saved_config,
)
from .config_check import check_config
from .launch import LaunchError, check_launch_args, launch, torchrun_env
from .trainer import Trainer

__all__ = ["main", "setup_cfg", "ConfigError"]

logger = logging.getLogger("seg_plugins")


# The figures of the "Final <task>: ..." lines: semantic, COCO AP, panoptic quality.
SUMMARY_KEYS = ("mIoU", "fwIoU", "mACC", "pACC", "mDice", "AP", "AP50", "PQ", "SQ", "RQ")


class ConfigError(Exception):
    """A mistake in the command line or config; reported as one line, exit status 2."""


def _all_keys(node: CfgNode, prefix: str = "") -> List[str]:
    keys = []
    for k, v in node.items():
        full = f"{prefix}{k}"
        keys.append(full)
        if isinstance(v, CfgNode):
            keys.extend(_all_keys(v, full + "."))
    return keys


def _translate_yacs_error(exc: Exception, cfg: CfgNode, source: str) -> ConfigError:
    msg = str(exc).strip("'\"")
    for marker in ("Non-existent config key: ", "Non-existent key: "):
        if marker in msg:
            key = msg.split(marker, 1)[1].strip()
            return ConfigError(
                f"unknown config key {key} in {source}{closest(key, _all_keys(cfg))}"
            )
    if msg.startswith("Type mismatch"):
        return ConfigError(f"wrong value type in {source}: {msg}")
    return ConfigError(f"invalid config in {source}: {msg}")


def _yaml_error(path: str, exc: Exception) -> str:
    where = getattr(exc, "problem_mark", None)
    at = f" (line {where.line + 1})" if where is not None else ""
    if isinstance(exc, yaml.constructor.ConstructorError):
        return (
            f"{path}{at}: a YAML tag asks to build a Python object ({exc.problem}); config "
            "files may hold plain values only, and nothing in them is executed"
        )
    return f"{path}{at}: not valid YAML: {getattr(exc, 'problem', None) or exc}"


def resolve_config_file(name: str) -> str:
    """``name`` if it is a file, else the shipped config of that name
    (:func:`seg_plugins.model_zoo.get_config_file`); ConfigError if neither."""
    if os.path.isfile(name):
        return name
    try:
        path = model_zoo.get_config_file(name)
    except FileNotFoundError as e:
        raise ConfigError(f"config file not found: {name}; {e}") from None
    logger.info("--config-file %s: the config shipped with seg_plugins, %s", name, path)
    return path


def _merge_file(cfg: CfgNode, path: str) -> None:
    try:
        # allow_unsafe=False: detectron2's default (True) falls back to yaml.unsafe_load,
        # which builds any Python object a "!!python/..." tag names; refused here.
        cfg.merge_from_file(path, allow_unsafe=False)
    except yaml.YAMLError as e:
        raise ConfigError(_yaml_error(path, e)) from None
    except (KeyError, ValueError, AssertionError) as e:
        raise _translate_yacs_error(e, cfg, path) from None
    except FileNotFoundError as e:  # a missing _BASE_
        raise ConfigError(f"{path}: {e.strerror}: {e.filename}") from None


def _merge_checkpoint_config(cfg: CfgNode, weights: str, config_file: Optional[str]) -> None:
    """The config saved in the checkpoint ``weights``: merged when no config file was given;
    else compared with the file's (which wins), the keys that differ logged."""
    if config_file:
        base = get_cfg()
        add_seg_plugins_config(base)
        log_config_difference(cfg, config_file, weights, saved=base)
        return
    try:
        saved = saved_config(weights)
        if saved is None:
            raise CheckpointError(no_config_message(weights))
        merge_saved_config(cfg, saved, weights)
    except CheckpointError as e:
        raise ConfigError(str(e)) from None


def setup_cfg(args) -> CfgNode:
    """Build the frozen config from ``args`` (``config_file``, ``opts``; optional ``weights``,
    a checkpoint whose saved config serves when there is no ``config_file``, and
    ``num_gpus``); raises :class:`ConfigError` on user mistakes."""
    cfg = get_cfg()
    add_seg_plugins_config(cfg)
    config_file = resolve_config_file(args.config_file) if args.config_file else None
    if config_file:
        # A shipped config's name becomes its path, for what reads the file again later
        # (detectron2's default_setup logs and copies it).
        args.config_file = config_file
        _merge_file(cfg, config_file)
    weights = getattr(args, "weights", None)
    if weights:
        if not os.path.isfile(weights):
            raise ConfigError(f"--weights {weights}: no such file")
        _merge_checkpoint_config(cfg, weights, config_file)
    if len(args.opts) % 2:
        raise ConfigError(f"overrides must be KEY VALUE pairs, got an odd list: {args.opts}")
    try:
        cfg.merge_from_list(args.opts)
    except (KeyError, ValueError, AssertionError) as e:
        raise _translate_yacs_error(e, cfg, "the command-line overrides") from None
    try:
        register_dataset_specs(cfg)  # DATASETS.SPECS: datasets without Python
    except (FileNotFoundError, DatasetSpecError) as e:
        raise ConfigError(str(e)) from None
    _check_datasets(cfg)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        # A GPU config must still run on a CPU-only machine; _main_worker logs the switch.
        cfg.MODEL.DEVICE = "cpu"
    # On the CPU (no CUDA, or MODEL.DEVICE cpu) --num-gpus N starts N gloo processes.
    on_gpus = cfg.MODEL.DEVICE.startswith("cuda")
    num_gpus = getattr(args, "num_gpus", 1)
    if on_gpus and num_gpus > 1 and torch.cuda.device_count() < num_gpus:
        raise ConfigError(
            f"--num-gpus {num_gpus} needs {num_gpus} CUDA GPUs, found {torch.cuda.device_count()}"
        )
    if weights:
        cfg.MODEL.WEIGHTS = weights
    cfg.freeze()
    return cfg


def _check_datasets(cfg: CfgNode) -> None:
    registered = DatasetCatalog.list()
    for key in ("TRAIN", "TEST"):
        for name in cfg.DATASETS[key]:
            if name not in registered:
                raise ConfigError(
                    f"DATASETS.{key}: dataset '{name}' is not registered"
                    f"{closest(name, registered)}"
                    "; register it in DatasetCatalog (see datasets/README.md)"
                )


def _main_worker(args, cfg: CfgNode, parent_pid: int):
    """One process of the run, on the config that :func:`main` set up and checked. The
    parent process registered DATASETS.SPECS; a process it started (a new interpreter, with
    an empty DatasetCatalog) registers them again. Nothing else is repeated."""
    prepared = os.getpid() == parent_pid
    if not prepared:
        register_dataset_specs(cfg)
    default_setup(cfg, args)
    # default_setup configures the "detectron2" and "fvcore" loggers; ours too.
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="seg_plugins")
    if cfg.MODEL.DEVICE == "cpu" and not torch.cuda.is_available():
        logger.info(
            "CUDA is not available: running on the CPU (%d threads)", torch.get_num_threads()
        )
    if args.eval_only:
        model = Trainer.build_model(cfg)
        checkpointer = SafeCheckpointer.from_config(cfg, model, save_dir=cfg.OUTPUT_DIR)
        if not cfg.MODEL.WEIGHTS and not (args.resume and checkpointer.has_checkpoint()):
            logger.warning("--eval-only with no MODEL.WEIGHTS: evaluating an untrained model")
        checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        results = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, results)
    else:
        trainer = Trainer(cfg, prepared=True)  # checked by main() before any process started
        trainer.resume_or_load(resume=args.resume)
        trainer.train()
        results = compat.last_eval_results(trainer)
    if comm.is_main_process() and results:
        _log_summary(results)
    return results


def _log_summary(results) -> None:
    """One "Final ..." line per dataset and task. detectron2's ``test`` returns {task:
    metrics} for one dataset and {dataset: {task: metrics}} for several."""
    several = all(
        isinstance(res, dict) and any(isinstance(v, dict) for v in res.values())
        for res in results.values()
    )
    for dataset, res in results.items() if several else [("", results)]:
        for task, metrics in res.items():
            if not isinstance(metrics, dict):
                continue
            keys = [k for k in SUMMARY_KEYS if k in metrics]
            figures = "  ".join(f"{k} {metrics[k]:.2f}" for k in keys)
            logger.info("Final %s%s: %s", f"{dataset} " if dataset else "", task, figures)


def _check_batch_split(cfg: CfgNode, args) -> None:
    """SOLVER.IMS_PER_BATCH is the total over all processes (as in detectron2); each loads
    an equal share. Checked here, not as an assertion inside every started process."""
    env = torchrun_env()
    processes = env["WORLD_SIZE"] if env else args.num_gpus * args.num_machines
    batch = cfg.SOLVER.IMS_PER_BATCH
    if args.eval_only or cfg.SOLVER.REFERENCE_WORLD_SIZE or batch % processes == 0:
        return  # (REFERENCE_WORLD_SIZE: DefaultTrainer rescales the batch itself)
    fit = processes * max(1, batch // processes)
    raise ConfigError(
        f"SOLVER.IMS_PER_BATCH {batch} is the total over all {processes} processes and must "
        f"divide among them; set it to a multiple of {processes}, e.g. {fit}"
    )


def argument_parser() -> argparse.ArgumentParser:
    """The parser of ``seg-plugins-train`` / ``tools/train_net.py``: detectron2's flags, plus
    ``--num-processes`` (an alias of ``--num-gpus``, clearer on the CPU) and ``--opts``;
    ``--dist-url`` is None when not given (see :func:`run`)."""
    return train_cli.build_parser()


def main(argv: Optional[List[str]] = None):
    """``seg-plugins-train`` / ``tools/train_net.py``: parse ``argv``, then :func:`run`."""
    return train_cli.main(argv)


def run(args: argparse.Namespace):
    """Train or evaluate as ``args`` (parsed by :func:`argument_parser`) say; returns the
    evaluation results."""
    try:
        cfg = setup_cfg(args)  # validate once, before any process starts
        try:  # impossible values / combinations for training and evaluating this config
            check_config(cfg)  # (not in setup_cfg: the other tools ignore DATASETS)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        backend = "nccl" if cfg.MODEL.DEVICE.startswith("cuda") else "gloo"
        check_launch_args(
            args.num_gpus, args.num_machines, args.machine_rank, args.dist_url, backend
        )
        _check_batch_split(cfg, args)
    except (ConfigError, LaunchError) as e:
        print(f"seg_plugins: error: {e}", file=sys.stderr)
        sys.exit(2)
    if args.dist_url is None:
        # One machine: detectron2's fixed per-user port (a leftover process shows as "port
        # in use" instead of hiding); several machines were refused above.
        args.dist_url = default_argument_parser().get_default("dist_url")
    return launch(
        _main_worker,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args, cfg, os.getpid()),
        backend=backend,
    )
