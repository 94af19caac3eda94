"""The Trainer: detectron2's DefaultTrainer wired to seg_plugins' parts, so that one
train_net.py serves semantic models (U-Net, FCN, DeepLab), detectron2's instance models
(Mask R-CNN) and Panoptic FPN alike.

What each part is comes from elsewhere; this module only connects them:

- the model's task (:func:`seg_plugins.modeling.task.task_of`): dataset mapper, evaluators,
  config and dataset checks;
- the checked dataset records and their skip report (:mod:`seg_plugins.data.build`);
- the run loop (:class:`~seg_plugins.engine.loop.TrainLoop`: AMP on any device, non-finite
  steps), checkpoints and resume state (:mod:`seg_plugins.engine.checkpoint`), optimizers and
  LR schedules (:mod:`seg_plugins.engine.solver`), speed options
  (:mod:`seg_plugins.engine.acceleration`).
"""

from __future__ import annotations

import functools
import logging
import os
import weakref

import torch
from detectron2.data import build_detection_test_loader
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import DatasetEvaluator, DatasetEvaluators
from detectron2.utils import comm

from .. import compat
from ..data.build import checked_dataset_dicts
from ..data.resumable import ResumableTrainLoader, build_train_loader
from ..data.spec import register_dataset_specs
from ..data.validation import SkipBadSamples
from ..modeling.task import task_of
from ..utils.memory import keep_freed_memory
from . import solver
from .acceleration import InferenceRunner, apply_speed_options
from .checkpoint import (
    AtomicCheckpointer,
    load_resume_state,
    resume_state,
    trim_metrics_for_resume,
)
from .config_check import check_config
from .loop import TrainLoop, amp_dtype, with_amp

__all__ = ["Trainer"]

logger = logging.getLogger(__name__)


class Trainer(DefaultTrainer):
    """``DefaultTrainer`` with the parts of the model's task, checked datasets, atomic and
    exactly-resumable checkpoints, AMP on any device and ``SOLVER.OPTIMIZER``.

    Args:
        cfg: the config. ``Trainer(cfg)`` registers its DATASETS.SPECS and checks it
            (:func:`~seg_plugins.engine.config_check.check_config`) first; ``prepared=True``
            says that this process already did both (``tools/train_net.py`` does, before it
            starts any process).
    """

    def __init__(self, cfg, *, prepared: bool = False):
        if not prepared:
            register_dataset_specs(cfg)  # (a no-op for specs already registered)
            check_config(cfg)  # impossible values and combinations, before anything is built
        if cfg.SOLVER.CPU_KEEP_FREED_MEMORY and torch.device(cfg.MODEL.DEVICE).type == "cpu":
            keep_freed_memory()
        # the config as given (before the AMP switch below and detectron2's
        # auto_scale_workers): what every checkpoint carries, what reproduces the run
        self._given_cfg = cfg
        amp = cfg.SOLVER.AMP.ENABLED
        if amp:
            # detectron2 v0.6 would build its AMPTrainer (CUDA-only, float16 only): build the
            # plain SimpleTrainer; TrainLoop below adds autocast on any device.
            cfg = with_amp(cfg, False)
        super().__init__(cfg)
        if amp:
            self.cfg = with_amp(self.cfg, True)
        loop = TrainLoop.taking_over(
            compat.run_loop(self),
            precision=cfg.SOLVER.AMP.PRECISION if amp else None,
            max_skipped_steps=cfg.SOLVER.SKIP_NONFINITE_STEPS,
            last_checkpoint=self._last_checkpoint_path,
        )
        compat.replace_run_loop(self, loop)

    @property
    def run_loop(self) -> TrainLoop:
        """The :class:`TrainLoop` that runs each step (DefaultTrainer delegates to it)."""
        return compat.run_loop(self)

    def _last_checkpoint_path(self) -> str:
        if not self.checkpointer.has_checkpoint():
            return ""
        return self.checkpointer.get_checkpoint_file()

    # ------------------------------------------------------------------ checkpoints, resume
    def build_hooks(self):
        """detectron2's hooks, saving through :class:`AtomicCheckpointer` (a kill or a full
        disk during a save never leaves a truncated checkpoint or ``last_checkpoint``; every
        checkpoint carries the run's config, as given to the Trainer), which also loads
        safely (MODEL.WEIGHTS_TRUSTED, MODEL.WEIGHTS_SHAPE_MISMATCH)."""
        self.checkpointer = AtomicCheckpointer.from_config(
            self._given_cfg,
            self.checkpointer.model,
            self.cfg.OUTPUT_DIR,
            trainer=weakref.proxy(self),
        )
        return super().build_hooks()

    def resume_or_load(self, resume=True):
        """detectron2's; on resume, metrics.json is cut back to the checkpoint's iteration
        and the resumable loader continues at the resumed iteration."""
        super().resume_or_load(resume=resume)
        if self.start_iter > 0 and comm.is_main_process():
            metrics = os.path.join(self.cfg.OUTPUT_DIR, "metrics.json")
            removed = trim_metrics_for_resume(metrics, self.start_iter)
            if removed:
                logger.info(
                    f"{metrics}: removed {removed} line(s) logged after the checkpoint "
                    f"(iteration >= {self.start_iter}, or cut short by the kill)"
                )
        loader = self.run_loop.data_loader
        if isinstance(loader, ResumableTrainLoader):
            loader.start_iter = self.start_iter

    def state_dict(self):
        """detectron2's trainer state plus :func:`~seg_plugins.engine.checkpoint.resume_state`
        (optimizer, scheduler, RNG states, data seed): a resumed run continues exactly."""
        loop = self.run_loop
        return {**super().state_dict(), **resume_state(loop, self.scheduler, loop.data_loader)}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        loop = self.run_loop
        load_resume_state(state, loop, self.scheduler, loop.data_loader)

    # ------------------------------------------------------------------ parts
    @classmethod
    def build_model(cls, cfg):
        """detectron2's ``build_model`` plus the speed options MODEL.CHANNELS_LAST and
        MODEL.COMPILE.* (docs/speed.md)."""
        return apply_speed_options(super().build_model(cfg), cfg)

    @classmethod
    def build_train_loader(cls, cfg):
        """detectron2's train loader on the checked records of DATASETS.TRAIN (DATASETS.CHECK;
        their skip report goes to OUTPUT_DIR/skipped_samples.json) with the task's mapper;
        with DATASETS.SKIP_BAD_SAMPLES, samples that fail while being read are replaced by
        others (counted, logged); DATALOADER.RESUMABLE: a loader that resumes exactly."""
        task = task_of(cfg)
        check = functools.partial(task.check_dataset, cfg=cfg, is_train=True)
        dataset, skipped = checked_dataset_dicts(
            cfg, cfg.DATASETS.TRAIN, is_train=True, check=check
        )
        skipped.write(cfg.OUTPUT_DIR)
        mapper = task.mapper(cfg, is_train=True)
        if cfg.DATASETS.SKIP_BAD_SAMPLES:
            mapper = SkipBadSamples(mapper)
        return build_train_loader(cfg, dataset, mapper)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        """detectron2's test loader on the checked records of ``dataset_name`` (with
        DATASETS.SKIP_BAD_SAMPLES they are checked by decoding, level "full") and the task's
        mapper."""
        task = task_of(cfg)
        check = functools.partial(task.check_dataset, cfg=cfg, is_train=False)
        dataset, skipped = checked_dataset_dicts(cfg, dataset_name, is_train=False, check=check)
        skipped.write(cfg.OUTPUT_DIR)
        mapper = task.mapper(cfg, is_train=False, dataset_name=dataset_name)
        return build_detection_test_loader(
            dataset, mapper=mapper, num_workers=cfg.DATALOADER.NUM_WORKERS
        )

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None) -> DatasetEvaluator:
        """The task's evaluators for the dataset's ``evaluator_type`` (a string or a list;
        :mod:`seg_plugins.modeling.task`), writing under OUTPUT_DIR/inference/<dataset>."""
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        evaluators = task_of(cfg).evaluators(cfg, dataset_name, output_folder)
        return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """detectron2's evaluation of every TEST dataset, with the model run under
        ``torch.inference_mode`` and, with TEST.AMP.ENABLED, autocast to
        SOLVER.AMP.PRECISION (outputs cast back to float32)."""
        dtype = None
        if cfg.TEST.AMP.ENABLED:
            dtype = amp_dtype(cfg.SOLVER.AMP.PRECISION, torch.device(cfg.MODEL.DEVICE).type)
        return super().test(cfg, InferenceRunner(model, dtype), evaluators)

    @classmethod
    def build_optimizer(cls, cfg, model):
        """:func:`seg_plugins.engine.solver.build_optimizer` (SGD or AdamW, aux-head LR)."""
        return solver.build_optimizer(cfg, model, default=super().build_optimizer)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        """:func:`seg_plugins.engine.solver.build_lr_scheduler` (detectron2's + WarmupPolyLR)."""
        return solver.build_lr_scheduler(cfg, optimizer, default=super().build_lr_scheduler)
