"""What a configured model does — semantic, instance or panoptic segmentation — and what
follows from it: its outputs, dataset mapper, evaluators, config and dataset checks, and,
for semantic models, the rule from logits to classes and probabilities.

The task is derived from the registered meta-architecture's *class*, never from its name::

    detectron2 SemanticSegmentor and its subclasses (UNet, FCN, DeepLabV3, DeepLabV3Plus,
        EncoderDecoderSegmentor, a user's own)         -> SemanticTask   {"sem_seg"}
    detectron2 PanopticFPN and its subclasses           -> PanopticTask   {"sem_seg", "instances"}
    detectron2 GeneralizedRCNN, RetinaNet, subclasses   -> InstanceTask   {"instances"}

so a user's meta-architecture built on :class:`EncoderDecoderSegmentor` and registered under
any name gets the semantic mapper, evaluators, Predictor and export with no other change.
``MODEL.TASK`` ("semantic", "instance" or "panoptic"; "" = derived) states it explicitly,
for a meta-architecture that derives from none of those classes or to override the
derivation (as Mask2Former's ``INPUT.DATASET_MAPPER_NAME`` chooses a mapper explicitly).

The Trainer, Predictor, ``tools/predict.py``, ``tools/export_model.py`` and
``examples/train_with_plain_detectron2.py`` all ask :func:`task_of`. Evaluators are chosen by
the dataset's ``MetadataCatalog.get(name).evaluator_type`` (a string or a list), kept when the
task predicts what they score:

    "sem_seg"             SemSegMetricsEvaluator + SemSegVisualizer      (sem_seg)
    "cityscapes_sem_seg"  the same + the official Cityscapes pixel-level (sem_seg)
    "coco"                AtomicCOCOEvaluator: bbox, and segm with MASK_ON (instances)
    "cityscapes_instance" the official Cityscapes instance evaluation     (instances, masks)
"""

from __future__ import annotations

import difflib
from typing import List, Optional

from detectron2.data import DatasetMapper, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.modeling import (
    META_ARCH_REGISTRY,
    GeneralizedRCNN,
    PanopticFPN,
    RetinaNet,
    SemanticSegmentor,
)
from torch import Tensor

from ..data.coco import check_mask_format
from ..data.mapper import SemSegDatasetMapper
from ..evaluation import AtomicCOCOEvaluator, SemSegMetricsEvaluator
from ..evaluation.cityscapes import (
    CityscapesOfficialInstanceEvaluator,
    CityscapesOfficialSemSegEvaluator,
)
from ..evaluation.panoptic import (
    COCOPanopticOfficialEvaluator,
    PanopticQualityEvaluator,
    official_panoptic_available,
)
from ..evaluation.visualizer import SemSegVisualizer
from ..structures import sem_seg_classes, sem_seg_probabilities
from .inference import SemSegInference

__all__ = ["InstanceTask", "PanopticTask", "SemanticTask", "Task", "task_of"]


def _evaluator_types(dataset_name: str) -> List[str]:
    value = getattr(MetadataCatalog.get(dataset_name), "evaluator_type", None)
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _classes(dataset_name: str, field: str) -> list:
    try:
        return list(MetadataCatalog.get(dataset_name).get(field, None) or [])
    except AttributeError:
        return []


def _dataset_names(cfg) -> list[str]:
    return list(dict.fromkeys([*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST]))


class Task:
    """The base: a task's name and outputs, and the parts it supplies. Stateless; the
    methods take the config. Subclasses fill in what their outputs need."""

    name: str = ""
    outputs: frozenset = frozenset()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(outputs={sorted(self.outputs)})"

    def check_config(self, cfg) -> None:
        """Raise ValueError naming the key (and the fix) on a config this task cannot run."""

    def check_dataset(self, dataset_name: str, records: List[dict], cfg, is_train: bool) -> None:
        """Raise ValueError when ``records`` of ``dataset_name`` cannot feed this task's
        mapper (checks beyond :mod:`seg_plugins.data.validation`'s, which need the model)."""

    def mapper(self, cfg, is_train: bool, dataset_name: Optional[str] = None):
        """The dataset mapper for training or for evaluating ``dataset_name``."""
        raise NotImplementedError

    def exportable(self, cfg) -> bool:
        """Whether :mod:`seg_plugins.export` (tools/export_model.py) can export the model."""
        return False

    def evaluators(self, cfg, dataset_name: str, output_dir: str) -> List[DatasetEvaluator]:
        """Every evaluator that the dataset's ``evaluator_type`` asks for and this task can
        feed (module docstring); raises ValueError when there is none."""
        types = _evaluator_types(dataset_name)
        evaluators = self._evaluators(cfg, dataset_name, output_dir, types)
        if not evaluators:
            raise ValueError(
                f"no evaluator for dataset '{dataset_name}' (evaluator_type={types}) and model "
                f"{cfg.MODEL.META_ARCHITECTURE} (predicts {sorted(self.outputs)}); set the "
                "dataset's metadata evaluator_type to 'sem_seg', 'coco' and/or "
                "'coco_panoptic_seg', or evaluate "
                "another dataset"
            )
        return evaluators

    def _evaluators(self, cfg, dataset_name, output_dir, types) -> List[DatasetEvaluator]:
        return []

    # The rule from a "sem_seg" output to classes and probabilities; one logit channel is
    # binary mode (sigmoid, class 1 where it exceeds the threshold), K channels softmax.
    def classes(self, logits: Tensor, binary_threshold: float = 0.5) -> Tensor:
        """Class map of shape (H, W) of "sem_seg" logits of shape (K, H, W)."""
        return sem_seg_classes(logits, binary_threshold)

    def probabilities(self, logits: Tensor) -> Tensor:
        """Probabilities of "sem_seg" logits, same shape (K, H, W): softmax, or in binary
        mode the foreground's sigmoid, of shape (1, H, W)."""
        return sem_seg_probabilities(logits)


class SemanticTask(Task):
    """Semantic segmentation: outputs ``{"sem_seg": logits (K, H, W)}``, K = NUM_CLASSES (one
    channel = binary mode, :mod:`seg_plugins.structures`)."""

    name = "semantic"
    outputs = frozenset({"sem_seg"})

    def check_config(self, cfg) -> None:
        """MODEL.SEM_SEG_HEAD.NUM_CLASSES against every dataset's ``stuff_classes`` (binary
        mode, NUM_CLASSES 1, needs a 2-class dataset) and the TEST.SEM_SEG inference node."""
        k = int(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)
        if k < 1:
            raise ValueError(f"MODEL.SEM_SEG_HEAD.NUM_CLASSES={k}: must be >= 1 (1 = binary)")
        for name in _dataset_names(cfg):
            classes = _classes(name, "stuff_classes")
            n = len(classes)
            if not n or k == n or (k == 1 and n <= 2) or (k == 2 and n == 1):
                continue
            shown = ", ".join(map(str, classes[:6])) + (", ..." if n > 6 else "")
            if k == 1:
                raise ValueError(
                    f"MODEL.SEM_SEG_HEAD.NUM_CLASSES=1 is binary mode (one foreground channel), "
                    f"but dataset '{name}' has {n} classes ({shown}); set NUM_CLASSES to {n}"
                )
            raise ValueError(
                f"MODEL.SEM_SEG_HEAD.NUM_CLASSES={k}, but dataset '{name}' has {n} classes "
                f"({shown}); set NUM_CLASSES to {n}"
                + (" (or 1 for binary background/foreground)" if n == 2 else "")
            )
        SemSegInference.from_config(cfg)  # raises on an impossible TEST.SEM_SEG node

    def mapper(self, cfg, is_train: bool, dataset_name: Optional[str] = None):
        if is_train:
            return SemSegDatasetMapper(cfg, is_train=True)
        return SemSegDatasetMapper(cfg, is_train=False, dataset_name=dataset_name)

    def exportable(self, cfg) -> bool:
        return True

    def _evaluators(self, cfg, dataset_name, output_dir, types) -> List[DatasetEvaluator]:
        evaluators: List[DatasetEvaluator] = []
        if {"sem_seg", "cityscapes_sem_seg"} & set(types):  # ground truth in trainIds
            # from_config: TEST.SEM_SEG_EVAL.* and MODEL.SEM_SEG_HEAD.BINARY_THRESHOLD
            evaluators.append(SemSegMetricsEvaluator(cfg, dataset_name, output_dir=output_dir))
            # overlays of the first TEST.SEM_SEG_VIS.NUM_IMAGES images (a no-op when 0)
            evaluators.append(SemSegVisualizer(cfg, dataset_name, output_dir=output_dir))
        if "cityscapes_sem_seg" in types:
            # The official numbers beside ours, under "cityscapes_sem_seg" (one machine only).
            evaluators.append(CityscapesOfficialSemSegEvaluator(dataset_name))
        return evaluators


class InstanceTask(Task):
    """Instance segmentation / detection: outputs ``{"instances": Instances}`` (detectron2's
    GeneralizedRCNN, RetinaNet), fed by detectron2's ``DatasetMapper``."""

    name = "instance"
    outputs = frozenset({"instances"})

    def check_config(self, cfg) -> None:
        """MODEL.ROI_HEADS.NUM_CLASSES not below any training dataset's ``thing_classes``
        (a category id beyond the classifier fails mid-training)."""
        k = int(cfg.MODEL.ROI_HEADS.NUM_CLASSES)
        for name in cfg.DATASETS.TRAIN:
            n = len(_classes(name, "thing_classes"))
            if n > k:
                raise ValueError(
                    f"MODEL.ROI_HEADS.NUM_CLASSES={k}, but dataset '{name}' has {n} thing "
                    f"classes; set it to {n} (category ids >= {k} would break the box "
                    "classifier)"
                )

    def check_dataset(self, dataset_name: str, records: List[dict], cfg, is_train: bool) -> None:
        """RLE masks need INPUT.MASK_FORMAT bitmask (:func:`check_mask_format`)."""
        if is_train and cfg.MODEL.MASK_ON:
            check_mask_format(records, cfg.INPUT.MASK_FORMAT, dataset_name)

    def mapper(self, cfg, is_train: bool, dataset_name: Optional[str] = None):
        return DatasetMapper(cfg, is_train=is_train)

    def exportable(self, cfg) -> bool:
        """R-CNNs (through detectron2's TracingAdapter), not RetinaNet."""
        cls = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)
        return isinstance(cls, type) and issubclass(cls, GeneralizedRCNN)

    def _evaluators(self, cfg, dataset_name, output_dir, types) -> List[DatasetEvaluator]:
        evaluators: List[DatasetEvaluator] = []
        if "coco" in types:
            tasks = ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)
            evaluators.append(AtomicCOCOEvaluator(dataset_name, tasks=tasks, output_dir=output_dir))
        if "cityscapes_instance" in types and cfg.MODEL.MASK_ON:
            evaluators.append(CityscapesOfficialInstanceEvaluator(dataset_name))
        return evaluators


class PanopticTask(InstanceTask):
    """Panoptic FPN: instances plus ``"sem_seg"`` logits (K, H, W) of its semantic branch,
    fed by detectron2's ``DatasetMapper`` and evaluated by both kinds of evaluators."""

    name = "panoptic"
    outputs = frozenset({"sem_seg", "instances", "panoptic_seg"})

    def check_config(self, cfg) -> None:
        """The instance checks, and MODEL.SEM_SEG_HEAD.NUM_CLASSES equal to every training
        dataset's ``stuff_classes`` (detectron2's panoptic convention: 0 = all things, then
        the stuff classes): a semantic branch with more outputs trains on labels that never
        reach them, silently."""
        super().check_config(cfg)
        k = int(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)
        for name in cfg.DATASETS.TRAIN:
            classes = _classes(name, "stuff_classes")
            if classes and len(classes) != k:
                raise ValueError(
                    f"MODEL.SEM_SEG_HEAD.NUM_CLASSES={k}, but dataset '{name}' has "
                    f"{len(classes)} stuff classes {classes[:6]}; set it to {len(classes)} "
                    f"(the semantic branch predicts one channel per stuff class)"
                )

    def check_dataset(self, dataset_name: str, records: List[dict], cfg, is_train: bool) -> None:
        super().check_dataset(dataset_name, records, cfg, is_train)
        if is_train:
            _check_stock_sem_seg_labels(dataset_name, records, cfg)

    def mapper(self, cfg, is_train: bool, dataset_name: Optional[str] = None):
        mapper = super().mapper(cfg, is_train, dataset_name)
        return mapper if is_train else _KeepSemSegFileName(mapper)

    def exportable(self, cfg) -> bool:
        return False

    def _evaluators(self, cfg, dataset_name, output_dir, types) -> List[DatasetEvaluator]:
        semantic = SEMANTIC._evaluators(cfg, dataset_name, output_dir, types)
        evaluators = semantic + super()._evaluators(cfg, dataset_name, output_dir, types)
        if "coco_panoptic_seg" in types:  # PQ / SQ / RQ, no panopticapi needed
            evaluators.append(PanopticQualityEvaluator(dataset_name, output_dir=output_dir))
            if official_panoptic_available():  # detectron2's, beside ours
                evaluators.append(COCOPanopticOfficialEvaluator(dataset_name, output_dir))
        return evaluators


class _KeepSemSegFileName:
    """Wrap detectron2's test-time ``DatasetMapper``, which pops ``sem_seg_file_name`` from
    every record, so that the record keeps it: the semantic evaluators read the ground truth
    from it."""

    def __init__(self, mapper: DatasetMapper):
        self.mapper = mapper

    def __call__(self, record: dict) -> dict:
        mapped = self.mapper(record)
        if "sem_seg_file_name" in record:
            mapped["sem_seg_file_name"] = record["sem_seg_file_name"]
        return mapped


def _check_stock_sem_seg_labels(dataset_name: str, records: List[dict], cfg) -> None:
    """detectron2's ``DatasetMapper`` (PanopticFPN's semantic branch) reads label maps with
    PIL mode "L": a palette PNG would give the grey levels of its colours, a 16-bit map would
    be clipped, and a stated label convention (reduce_zero_label, 0/255 masks) would be
    ignored -- wrong labels without an error. Refuse such data, looking at the first
    labelled record's header (all records of a dataset share the format)."""
    from PIL import Image

    record = next((r for r in records if r.get("sem_seg_file_name")), None)
    if record is None:
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
            f"DatasetMapper, which reads label maps as 8-bit grey levels, but dataset "
            f"'{dataset_name}': {problem}; save the labels as single-channel 8-bit PNGs ('L') "
            f"of the final class indices (convert palette / 16-bit maps, apply "
            f"reduce_zero_label or 0/255 -> 0/1 first)"
        )


SEMANTIC, INSTANCE, PANOPTIC = SemanticTask(), InstanceTask(), PanopticTask()
TASKS = {task.name: task for task in (SEMANTIC, INSTANCE, PANOPTIC)}
# The derivation, most specific base first (PanopticFPN is a GeneralizedRCNN).
_BY_CLASS = (
    (PanopticFPN, PANOPTIC),
    (SemanticSegmentor, SEMANTIC),
    (GeneralizedRCNN, INSTANCE),
    (RetinaNet, INSTANCE),
)


def task_of(cfg) -> Task:
    """The task of the configured model: ``MODEL.TASK`` when set, else derived from the class
    that MODEL.META_ARCHITECTURE names in detectron2's META_ARCH_REGISTRY (module docstring).

    Raises:
        ValueError: MODEL.TASK is not a task; the meta-architecture is not registered; or its
            class derives from none of the known bases and MODEL.TASK is empty.
    """
    explicit = cfg.MODEL.get("TASK", "")
    if explicit:
        if explicit not in TASKS:
            raise ValueError(f"MODEL.TASK={explicit!r}: use one of {sorted(TASKS)} or ''")
        return TASKS[explicit]
    arch = cfg.MODEL.META_ARCHITECTURE
    registered = [name for name, _ in META_ARCH_REGISTRY]
    if arch not in registered:
        match = difflib.get_close_matches(arch, registered, n=1, cutoff=0.6)
        hint = f" (did you mean {match[0]}?)" if match else ""
        raise ValueError(
            f"MODEL.META_ARCHITECTURE={arch!r} is not registered in detectron2's "
            f"META_ARCH_REGISTRY{hint}; import the module that registers it first"
        )
    cls = META_ARCH_REGISTRY.get(arch)
    for base, task in _BY_CLASS:
        if isinstance(cls, type) and issubclass(cls, base):
            return task
    raise ValueError(
        f"MODEL.META_ARCHITECTURE={arch!r} ({getattr(cls, '__module__', '?')}."
        f"{getattr(cls, '__qualname__', cls)}) derives from none of SemanticSegmentor, "
        "PanopticFPN, GeneralizedRCNN and RetinaNet, so its task is unknown; set MODEL.TASK to "
        "'semantic', 'instance' or 'panoptic'"
    )
