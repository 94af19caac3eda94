"""Start-up checks of a config's values and of combinations that cannot work.

yacs already rejects unknown keys and values of the wrong type when a file or the command
line is merged (:mod:`seg_plugins.engine.cli` turns those into one line with the closest key).
What it cannot see is a value out of range or keys that contradict each other; left alone,
those fail at iteration 10,000 (the first evaluation) or never, giving wrong numbers.
:func:`check_config` finds them in milliseconds, before a model is built or a process
started: ``Trainer.__init__`` and ``tools/train_net.py`` call it.

Checked:
- ranges: SOLVER.IMS_PER_BATCH, BASE_LR, MAX_ITER, CHECKPOINT_PERIOD,
  SKIP_NONFINITE_STEPS, TEST.EVAL_PERIOD, DATALOADER.NUM_WORKERS, and the choice of
  MODEL.WEIGHTS_SHAPE_MISMATCH (DATASETS.CHECK is checked when the loaders are built);
- semantic models: MODEL.SEM_SEG_HEAD.NUM_CLASSES against every dataset's ``stuff_classes``
  (binary mode, NUM_CLASSES 1, needs a 2-class dataset); the TEST.SEM_SEG inference node
  (sliding-window stride larger than the window, bad scales...);
- instance models: MODEL.ROI_HEADS.NUM_CLASSES not below the dataset's ``thing_classes``
  (a category id beyond the classifier fails mid-training).

Not checked here, because the model decides it: slide windows (TEST.SEM_SEG.CROP_SIZE) must be
multiples of the backbone's size divisibility (output stride); the model raises that when it
is built, still before the first iteration. Training crops (INPUT.CROP.SIZE) need not be:
batches are padded to the size divisibility, so any crop works.
"""

from __future__ import annotations

from detectron2.data import MetadataCatalog

from ..modeling.inference import SemSegInference
from .checkpoint import SHAPE_MISMATCH_POLICIES

__all__ = ["SEMANTIC_META_ARCHS", "check_config"]

SEMANTIC_META_ARCHS = {"SemanticSegmentor", "UNet", "FCN", "DeepLabV3", "DeepLabV3Plus"}
_INSTANCE_META_ARCHS = {"GeneralizedRCNN", "PanopticFPN"}


def _at_least(cfg, key: str, low, what: str = "") -> None:
    node, name = cfg, key
    for part in key.split("."):
        node = node[part]
    if not isinstance(node, (int, float)) or isinstance(node, bool) or node < low:
        raise ValueError(f"{name}={node!r}: must be >= {low}{what}")


def _dataset_names(cfg) -> list[str]:
    return list(dict.fromkeys([*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST]))


def _classes(name: str, field: str) -> list:
    try:
        return list(MetadataCatalog.get(name).get(field, None) or [])
    except AttributeError:
        return []


def _check_semantic(cfg) -> None:
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


def _check_instance(cfg) -> None:
    k = int(cfg.MODEL.ROI_HEADS.NUM_CLASSES)
    for name in cfg.DATASETS.TRAIN:
        n = len(_classes(name, "thing_classes"))
        if n > k:
            raise ValueError(
                f"MODEL.ROI_HEADS.NUM_CLASSES={k}, but dataset '{name}' has {n} thing classes; "
                f"set it to {n} (category ids >= {k} would break the box classifier)"
            )


def check_config(cfg) -> None:
    """Raise ValueError naming the key (and the fix) on an impossible config."""
    _at_least(cfg, "SOLVER.IMS_PER_BATCH", 1)
    _at_least(cfg, "SOLVER.MAX_ITER", 0)
    _at_least(cfg, "SOLVER.CHECKPOINT_PERIOD", 1)
    _at_least(cfg, "SOLVER.SKIP_NONFINITE_STEPS", 0)
    _at_least(cfg, "TEST.EVAL_PERIOD", 0, " (0 = only at the end)")
    _at_least(cfg, "DATALOADER.NUM_WORKERS", 0)
    lr = cfg.SOLVER.BASE_LR
    if not isinstance(lr, (int, float)) or not lr > 0 or lr != lr or lr == float("inf"):
        raise ValueError(f"SOLVER.BASE_LR={lr!r}: must be a positive finite number")
    if cfg.MODEL.WEIGHTS_SHAPE_MISMATCH not in SHAPE_MISMATCH_POLICIES:
        raise ValueError(
            f"MODEL.WEIGHTS_SHAPE_MISMATCH={cfg.MODEL.WEIGHTS_SHAPE_MISMATCH!r}; use one of "
            f"{list(SHAPE_MISMATCH_POLICIES)}"
        )
    arch = cfg.MODEL.META_ARCHITECTURE
    if arch in SEMANTIC_META_ARCHS:
        _check_semantic(cfg)
    if arch in _INSTANCE_META_ARCHS:
        _check_instance(cfg)
