"""The Trainer: detectron2's DefaultTrainer, choosing mapper, evaluators and optimizer by
config and by the dataset's metadata, so that one train_net.py serves semantic models
(U-Net, FCN, DeepLab) and detectron2's instance models (Mask R-CNN) alike.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import weakref
from typing import List, Set

import numpy as np
import torch
from detectron2.data import (
    DatasetMapper,
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import COCOEvaluator, DatasetEvaluator, DatasetEvaluators
from detectron2.solver import LRMultiplier
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from detectron2.solver.lr_scheduler import WarmupParamScheduler
from detectron2.utils import comm
from fvcore.common.param_scheduler import PolynomialDecayParamScheduler

from .. import compat
from ..data import SemSegDatasetMapper
from ..data.build import checked_dataset_dicts, skip_report, write_skip_report_for
from ..data.resumable import ResumableTrainLoader
from ..data.spec import register_dataset_specs
from ..data.validation import SkipBadSamples
from ..evaluation import SemSegMetricsEvaluator
from ..evaluation.cityscapes import (
    CityscapesOfficialInstanceEvaluator,
    CityscapesOfficialSemSegEvaluator,
)
from ..evaluation.visualizer import SemSegVisualizer
from ..utils.file_io import AtomicWritesPathManager
from ..utils.memory import keep_freed_memory
from .acceleration import InferenceRunner, compile_model, to_channels_last
from .checkpoint import AtomicCheckpointer, trim_metrics_for_resume
from .config_check import SEMANTIC_META_ARCHS, check_config
from .loop import TrainLoop, amp_dtype

__all__ = ["Trainer", "model_outputs"]

logger = logging.getLogger(__name__)

# Meta-architectures whose output is {"sem_seg": ...} only.
# evaluator_type values that SemSegMetricsEvaluator serves (ground truth in trainIds).
SEMANTIC_TYPES = {"sem_seg", "cityscapes_sem_seg"}


def model_outputs(cfg) -> Set[str]:
    """What the configured model predicts: a subset of {"sem_seg", "instances"}."""
    arch = cfg.MODEL.META_ARCHITECTURE
    if arch in SEMANTIC_META_ARCHS:
        return {"sem_seg"}
    if arch == "PanopticFPN":
        return {"sem_seg", "instances"}
    return {"instances"}


def _evaluator_types(dataset_name: str) -> List[str]:
    value = getattr(MetadataCatalog.get(dataset_name), "evaluator_type", None)
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


class AtomicCOCOEvaluator(COCOEvaluator):
    """detectron2's COCOEvaluator whose output files (coco_instances_results.json,
    instances_predictions.pth) are written atomically: during its ``evaluate`` the
    ``PathManager`` of detectron2's coco_evaluation module opens files for writing through
    :func:`seg_plugins.utils.file_io.atomic_open` (a temporary file renamed into place)."""

    def evaluate(self, img_ids=None):
        module = sys.modules[COCOEvaluator.__module__]
        real = module.PathManager
        module.PathManager = AtomicWritesPathManager(real)
        try:
            return super().evaluate(img_ids)
        finally:
            module.PathManager = real


class _SeenImagesCOCOEvaluator(AtomicCOCOEvaluator):
    """COCOEvaluator scored on the images it was given only. Used when bad test images were
    skipped (DATASETS.SKIP_BAD_SAMPLES): COCOEvaluator reads its ground truth from the
    dataset's JSON, where the skipped images' objects would count as missed detections."""

    def _eval_predictions(self, predictions, img_ids=None):
        if img_ids is None:
            img_ids = sorted({p["image_id"] for p in predictions})
        return super()._eval_predictions(predictions, img_ids=img_ids)


class _KeepSemSegFileName:
    """Wrap detectron2's test-time ``DatasetMapper``, which pops ``sem_seg_file_name`` from
    every record, so that the record keeps it: the semantic evaluators read the ground truth
    from it (PanopticFPN predicts "sem_seg" beside "instances")."""

    def __init__(self, mapper: DatasetMapper):
        self.mapper = mapper

    def __call__(self, record: dict) -> dict:
        mapped = self.mapper(record)
        if "sem_seg_file_name" in record:
            mapped["sem_seg_file_name"] = record["sem_seg_file_name"]
        return mapped


def _check_stock_sem_seg_labels(dataset: List[dict], cfg) -> None:
    """detectron2's ``DatasetMapper`` (instance models; PanopticFPN's semantic branch) reads
    label maps with PIL mode "L": a palette PNG would give the grey levels of its colours, a
    16-bit map would be clipped, and a stated label convention (reduce_zero_label, 0/255
    masks) would be ignored -- wrong labels without an error. Refuse such data, looking at
    the first labelled record's header (all records of a dataset share the format)."""
    from PIL import Image

    record = next((r for r in dataset if r.get("sem_seg_file_name")), None)
    if record is None or "sem_seg" not in model_outputs(cfg):
        return
    path = record["sem_seg_file_name"]
    problem = None
    if record.get("sem_seg_label_transform"):
        problem = f"its records state the label convention {record['sem_seg_label_transform']}"
    else:
        with Image.open(path) as img:
            if img.mode not in ("L", "1"):
                problem = f"its label maps are PIL mode {img.mode!r} (e.g. {path!r})"
    if problem is not None:
        raise ValueError(
            f"{cfg.MODEL.META_ARCHITECTURE} trains its semantic branch with detectron2's "
            f"DatasetMapper, which reads label maps as 8-bit grey levels, but {problem}; "
            f"save the labels as single-channel 8-bit PNGs ('L') of the final class indices "
            f"(convert palette / 16-bit maps, apply reduce_zero_label or 0/255 -> 0/1 first)"
        )


def _rng_state() -> dict:
    """This process' python, numpy and torch (CPU and CUDA) RNG states, in types that
    ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(_as_tuples(state["python"]))
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value):
    """random.setstate wants tuples; a checkpoint round trip may give lists."""
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuples(v) for v in value)
    return value


def _with_amp(cfg, enabled: bool):
    """A copy of ``cfg`` with SOLVER.AMP.ENABLED = ``enabled`` (frozen if ``cfg`` was)."""
    cfg = cfg.clone()
    frozen = cfg.is_frozen()
    cfg.defrost()
    cfg.SOLVER.AMP.ENABLED = enabled
    if frozen:
        cfg.freeze()
    return cfg


class Trainer(DefaultTrainer):
    """``DefaultTrainer`` plus: the semantic mapper for semantic models, evaluators chosen
    from ``MetadataCatalog.get(name).evaluator_type`` (a string or a list) intersected with
    what the model predicts, and ``SOLVER.OPTIMIZER`` ("SGD" or "AdamW")."""

    def __init__(self, cfg):
        register_dataset_specs(cfg)  # DATASETS.SPECS (a no-op for specs already registered)
        check_config(cfg)  # impossible values and combinations, before anything is built
        if cfg.SOLVER.CPU_KEEP_FREED_MEMORY and torch.device(cfg.MODEL.DEVICE).type == "cpu":
            keep_freed_memory()
        amp = cfg.SOLVER.AMP.ENABLED
        if amp:
            # detectron2 v0.6 would build its AMPTrainer (CUDA-only, float16 only): build the
            # plain SimpleTrainer; TrainLoop below adds autocast on any device.
            cfg = _with_amp(cfg, False)
        super().__init__(cfg)
        if amp:
            self.cfg = _with_amp(self.cfg, True)
        compat.replace_run_loop(self, TrainLoop.taking_over(
            compat.run_loop(self),
            precision=cfg.SOLVER.AMP.PRECISION if amp else None,
            max_skipped_steps=cfg.SOLVER.SKIP_NONFINITE_STEPS,
            last_checkpoint=self._last_checkpoint_path,
        ))

    @property
    def run_loop(self) -> TrainLoop:
        """The :class:`TrainLoop` that runs each step (DefaultTrainer delegates to it)."""
        return compat.run_loop(self)

    def _last_checkpoint_path(self) -> str:
        if not self.checkpointer.has_checkpoint():
            return ""
        return self.checkpointer.get_checkpoint_file()

    def build_hooks(self):
        """detectron2's hooks, saving through :class:`AtomicCheckpointer` (a kill or a full
        disk during a save never leaves a truncated checkpoint or ``last_checkpoint``), which
        also loads safely (MODEL.WEIGHTS_TRUSTED, MODEL.WEIGHTS_SHAPE_MISMATCH)."""
        self.checkpointer = AtomicCheckpointer.from_config(
            self.cfg, self.checkpointer.model, self.cfg.OUTPUT_DIR, trainer=weakref.proxy(self)
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
        """detectron2's trainer state (iteration, hooks) plus the optimizer (and gradient
        scaler, skipped-step count), the LR scheduler, the RNG states of this process (dropout
        and anything else drawn in the main process) and the training data's seed, so that a
        resumed run continues exactly as the uninterrupted one (DATALOADER.RESUMABLE)."""
        state = super().state_dict()
        # detectron2 v0.6's DefaultTrainer saves neither the optimizer (its SimpleTrainer's
        # state) nor a scheduler that is not a private ``_LRScheduler`` subclass (its
        # LRScheduler hook skips those): a resume restarted AdamW's moments / SGD's momentum.
        # Official main saves the run loop's state under this same key (the same value).
        state["_trainer"] = self.run_loop.state_dict()
        if hasattr(self.scheduler, "state_dict"):
            state["lr_scheduler"] = self.scheduler.state_dict()
        state["rng"] = _rng_state()
        loader = self.run_loop.data_loader
        if isinstance(loader, ResumableTrainLoader):
            state["data_seed"] = loader.seed
        return state

    def load_state_dict(self, state):
        super().load_state_dict(state)
        if "_trainer" in state:
            self.run_loop.load_state_dict(state["_trainer"])
        if "lr_scheduler" in state:
            self.scheduler.load_state_dict(state["lr_scheduler"])
        if "rng" in state:
            _set_rng_state(state["rng"])
        loader = self.run_loop.data_loader
        if "data_seed" in state and isinstance(loader, ResumableTrainLoader):
            loader.seed = int(state["data_seed"])

    @classmethod
    def build_model(cls, cfg):
        """detectron2's ``build_model`` plus the speed options MODEL.CHANNELS_LAST and
        MODEL.COMPILE.* (docs/speed.md)."""
        model = super().build_model(cfg)
        if cfg.MODEL.CHANNELS_LAST:
            to_channels_last(model)
        if cfg.MODEL.COMPILE.ENABLED:
            compile_model(model, backend=cfg.MODEL.COMPILE.BACKEND, mode=cfg.MODEL.COMPILE.MODE)
        return model

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
    def build_train_loader(cls, cfg):
        """detectron2's train loader on the records of DATASETS.TRAIN, checked first
        (DATASETS.CHECK); the semantic mapper for semantic models, detectron2's own
        DatasetMapper otherwise; with DATASETS.SKIP_BAD_SAMPLES, samples that fail while
        being read are replaced by others (counted, logged)."""
        dataset = checked_dataset_dicts(cfg, cfg.DATASETS.TRAIN, is_train=True)
        write_skip_report_for(cfg.OUTPUT_DIR)
        if "instances" in model_outputs(cfg):
            _check_stock_sem_seg_labels(dataset, cfg)
            mapper = DatasetMapper(cfg, is_train=True)
        else:
            mapper = SemSegDatasetMapper(cfg, is_train=True)
        if cfg.DATASETS.SKIP_BAD_SAMPLES:
            mapper = SkipBadSamples(mapper)
        if cfg.DATALOADER.RESUMABLE:
            if cfg.DATALOADER.SAMPLER_TRAIN == "TrainingSampler":
                return ResumableTrainLoader(
                    dataset,
                    mapper,
                    cfg.SOLVER.IMS_PER_BATCH,
                    seed=cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed(),
                    num_workers=cfg.DATALOADER.NUM_WORKERS,
                    aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
                )
            logger.warning(
                f"DATALOADER.SAMPLER_TRAIN={cfg.DATALOADER.SAMPLER_TRAIN}: detectron2's loader, "
                f"which restarts its stream on --resume (DATALOADER.RESUMABLE supports "
                f"TrainingSampler only)"
            )
        return build_detection_train_loader(cfg, mapper=mapper, dataset=dataset)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        """detectron2's test loader on the checked records of ``dataset_name``; with
        DATASETS.SKIP_BAD_SAMPLES they are checked by decoding (level "full") first."""
        dataset = checked_dataset_dicts(cfg, dataset_name, is_train=False)
        write_skip_report_for(cfg.OUTPUT_DIR)
        outputs = model_outputs(cfg)
        if "instances" in outputs:
            mapper = DatasetMapper(cfg, is_train=False)
            if "sem_seg" in outputs:  # PanopticFPN: its semantic output is evaluated too
                mapper = _KeepSemSegFileName(mapper)
        else:
            mapper = SemSegDatasetMapper(cfg, is_train=False, dataset_name=dataset_name)
        return build_detection_test_loader(
            dataset, mapper=mapper, num_workers=cfg.DATALOADER.NUM_WORKERS
        )

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None) -> DatasetEvaluator:
        """Every evaluator that the dataset's ``evaluator_type`` asks for and the model can
        feed: "sem_seg" -> SemSegMetricsEvaluator; "cityscapes_sem_seg" -> the same plus the
        official Cityscapes pixel-level evaluation; "coco" -> COCOEvaluator;
        "cityscapes_instance" -> the official Cityscapes instance evaluation (masks, so
        MODEL.MASK_ON). List several types (e.g. ["cityscapes_instance", "coco"]) to get
        several; results keys: "sem_seg", "cityscapes_sem_seg", "bbox"/"segm",
        "cityscapes_instance"."""
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        types = _evaluator_types(dataset_name)
        outputs = model_outputs(cfg)
        evaluators: List[DatasetEvaluator] = []
        if SEMANTIC_TYPES & set(types) and "sem_seg" in outputs:
            # from_config: TEST.SEM_SEG_EVAL.* and MODEL.SEM_SEG_HEAD.BINARY_THRESHOLD
            evaluators.append(SemSegMetricsEvaluator(cfg, dataset_name, output_dir=output_folder))
            # overlays of the first TEST.SEM_SEG_VIS.NUM_IMAGES images (a no-op when 0)
            evaluators.append(SemSegVisualizer(cfg, dataset_name, output_dir=output_folder))
        if "cityscapes_sem_seg" in types and "sem_seg" in outputs:
            # The official numbers beside ours, under "cityscapes_sem_seg" (one machine only).
            evaluators.append(CityscapesOfficialSemSegEvaluator(dataset_name))
        if "coco" in types and "instances" in outputs:
            tasks = ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)
            skipped = dataset_name in skip_report()  # bad test images were left out
            coco = _SeenImagesCOCOEvaluator if skipped else AtomicCOCOEvaluator
            evaluators.append(coco(dataset_name, tasks=tasks, output_dir=output_folder))
        if "cityscapes_instance" in types and "instances" in outputs and cfg.MODEL.MASK_ON:
            evaluators.append(CityscapesOfficialInstanceEvaluator(dataset_name))
        if not evaluators:
            raise ValueError(
                f"no evaluator for dataset '{dataset_name}' (evaluator_type={types}) and model "
                f"{cfg.MODEL.META_ARCHITECTURE} (predicts {sorted(outputs)}); set the dataset's "
                "metadata evaluator_type to 'sem_seg' and/or 'coco', or evaluate another dataset"
            )
        return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)

    @classmethod
    def build_optimizer(cls, cfg, model):
        """detectron2's SGD (SOLVER.OPTIMIZER "SGD") or AdamW, with detectron2's parameter
        groups (SOLVER.WEIGHT_DECAY_NORM, BIAS_LR_FACTOR, WEIGHT_DECAY_BIAS); the auxiliary
        head's groups at MODEL.AUX_HEAD.LR_FACTOR x their learning rate (torchvision's
        reference recipe trains its aux classifier at 10x)."""
        optimizer = cls._build_optimizer(cfg, model)
        factor = float(cfg.MODEL.AUX_HEAD.LR_FACTOR)
        aux = getattr(getattr(model, "module", model), "aux_head", None)
        if factor != 1.0 and aux is not None:
            # detectron2 merges parameters with equal hyper-parameters into one group: split
            # each group into its aux-head part (lr x factor) and the rest (no step taken yet,
            # so there is no optimizer state to move)
            aux_ids = {id(p) for p in aux.parameters()}
            groups, optimizer.param_groups = optimizer.param_groups, []
            for group in groups:
                for is_aux in (False, True):
                    params = [p for p in group["params"] if (id(p) in aux_ids) == is_aux]
                    if params:
                        lr = group["lr"] * (factor if is_aux else 1.0)
                        optimizer.add_param_group({**group, "params": params, "lr": lr})
        return optimizer

    @classmethod
    def _build_optimizer(cls, cfg, model):
        name = cfg.SOLVER.OPTIMIZER
        if name == "SGD":
            return super().build_optimizer(cfg, model)
        if name != "AdamW":
            raise ValueError(f"SOLVER.OPTIMIZER must be 'SGD' or 'AdamW', got {name!r}")
        params = get_default_optimizer_params(
            model,
            base_lr=cfg.SOLVER.BASE_LR,
            weight_decay=cfg.SOLVER.WEIGHT_DECAY,
            weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
            bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
            weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
        )
        return maybe_add_gradient_clipping(cfg, torch.optim.AdamW)(
            params,
            lr=cfg.SOLVER.BASE_LR,
            betas=tuple(cfg.SOLVER.BETAS),
            weight_decay=cfg.SOLVER.WEIGHT_DECAY,
        )

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        """detectron2's schedules plus "WarmupPolyLR": lr = base * (1 - t / T) ** power
        (SOLVER.POLY_LR_POWER, 0.9 in DeepLab / mmsegmentation), after the usual warm-up.
        detectron2 v0.6 has it only inside projects/deeplab; fvcore's polynomial decay and
        detectron2's warm-up wrapper compose it."""
        if cfg.SOLVER.LR_SCHEDULER_NAME != "WarmupPolyLR":
            return super().build_lr_scheduler(cfg, optimizer)
        sched = PolynomialDecayParamScheduler(1.0, cfg.SOLVER.POLY_LR_POWER)
        sched = WarmupParamScheduler(
            sched,
            cfg.SOLVER.WARMUP_FACTOR,
            min(cfg.SOLVER.WARMUP_ITERS / cfg.SOLVER.MAX_ITER, 1.0),
            cfg.SOLVER.WARMUP_METHOD,
        )
        return LRMultiplier(optimizer, multiplier=sched, max_iter=cfg.SOLVER.MAX_ITER)
