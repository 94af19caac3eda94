"""Start-up checks of a config's values and of combinations that cannot work.

yacs already rejects unknown keys and values of the wrong type when a file or the command
line is merged (:mod:`seg_plugins.engine.cli` turns those into one line with the closest key).
What it cannot see is a value out of range or keys that contradict each other; left alone,
those fail at iteration 10,000 (the first evaluation) or never, giving wrong numbers.
:func:`check_config` finds them in milliseconds, before a model is built or a process
started: the Trainer calls it (and ``tools/train_net.py`` through it, before starting
processes).

Checked here (any model): SOLVER.IMS_PER_BATCH, BASE_LR, MAX_ITER, CHECKPOINT_PERIOD,
SKIP_NONFINITE_STEPS, OPTIMIZER, TEST.EVAL_PERIOD, DATALOADER.NUM_WORKERS, and the choice of
MODEL.WEIGHTS_SHAPE_MISMATCH (DATASETS.CHECK is checked when the loaders are built). Then the
model's task (:func:`seg_plugins.modeling.task.task_of`) checks what depends on it:

- semantic models: MODEL.SEM_SEG_HEAD.NUM_CLASSES against every dataset's ``stuff_classes``
  (binary mode, NUM_CLASSES 1, needs a 2-class dataset); the TEST.SEM_SEG inference node
  (sliding-window stride larger than the window, bad scales...);
- instance and panoptic models: MODEL.ROI_HEADS.NUM_CLASSES not below the dataset's
  ``thing_classes`` (a category id beyond the classifier fails mid-training).

Not checked here, because the model decides it: slide windows (TEST.SEM_SEG.CROP_SIZE) must be
multiples of the backbone's size divisibility (output stride); the model raises that when it
is built, still before the first iteration. Training crops (INPUT.CROP.SIZE) need not be:
batches are padded to the size divisibility, so any crop works.
"""

from __future__ import annotations

from ..modeling.task import task_of
from .checkpoint import SHAPE_MISMATCH_POLICIES
from .solver import OPTIMIZERS

__all__ = ["check_config"]


def _at_least(cfg, key: str, low, what: str = "") -> None:
    node, name = cfg, key
    for part in key.split("."):
        node = node[part]
    if not isinstance(node, (int, float)) or isinstance(node, bool) or node < low:
        raise ValueError(f"{name}={node!r}: must be >= {low}{what}")


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
    if cfg.SOLVER.OPTIMIZER not in OPTIMIZERS:
        raise ValueError(
            f"SOLVER.OPTIMIZER={cfg.SOLVER.OPTIMIZER!r}: use one of {list(OPTIMIZERS)}"
        )
    task_of(cfg).check_config(cfg)
