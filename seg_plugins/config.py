"""Config keys added by seg_plugins. One comment per key.

``add_seg_plugins_config(cfg)`` is idempotent and may run before or after other projects'
``add_*_config`` functions and before ``cfg.merge_from_file``.
"""
from detectron2.config import CfgNode as CN

__all__ = ["add_seg_plugins_config"]


def _setdefault(node: CN, key: str, value) -> None:
    """Add ``key`` unless the node has it already (keeps the call idempotent and lets a
    user or another project set a value before this runs)."""
    if key not in node:
        node[key] = value


def add_seg_plugins_config(cfg: CN) -> CN:
    """Add every key seg_plugins reads to ``cfg`` (in place; also returned)."""
    was_frozen = cfg.is_frozen()
    cfg.defrost()

    # --- U-Net (Ronneberger et al., 2015) -------------------------------------------------
    _setdefault(cfg.MODEL, "UNET", CN())
    unet = cfg.MODEL.UNET
    _setdefault(unet, "BASE_CHANNELS", 64)  # channels of the first encoder stage
    _setdefault(unet, "DEPTH", 4)  # number of 2x downsamplings; size_divisibility = 2**DEPTH
    _setdefault(unet, "CHANNEL_MULTIPLIER", 2)  # channel growth per stage (64,128,256,...)
    _setdefault(unet, "MAX_CHANNELS", 1024)  # cap on channels of any stage
    _setdefault(unet, "NORM", "BN")  # "", "BN", "SyncBN", "GN", ... (detectron2.layers.get_norm)
    _setdefault(unet, "UPSAMPLE", "bilinear")  # "bilinear" (+conv) or "transposed" (2x2 deconv)

    # --- semantic segmentation head / loss ------------------------------------------------
    # detectron2 already has MODEL.SEM_SEG_HEAD.{NUM_CLASSES, IGNORE_VALUE, LOSS_WEIGHT, NORM}.
    _setdefault(cfg.MODEL.SEM_SEG_HEAD, "LOSS_TYPE", "cross_entropy")  # loss of the head
    _setdefault(cfg.MODEL.SEM_SEG_HEAD, "CLASS_WEIGHTS", [])  # per-class CE weights; [] = none

    # --- data -----------------------------------------------------------------------------
    _setdefault(cfg.INPUT, "SEM_SEG", CN())
    # Train-time augmentation of the semantic mapper: random scale of the whole image in
    # this ratio range (1.0, 1.0 = off), then INPUT.CROP, then INPUT.RANDOM_FLIP.
    _setdefault(cfg.INPUT.SEM_SEG, "RESIZE_RATIO_RANGE", [1.0, 1.0])
    # Reject a random crop whose largest class covers more than this fraction (DeepLab's
    # "category area" constraint); 1.0 = off.
    _setdefault(cfg.INPUT.SEM_SEG, "CROP_SINGLE_CATEGORY_MAX_AREA", 1.0)

    # --- solver ---------------------------------------------------------------------------
    _setdefault(cfg.SOLVER, "OPTIMIZER", "SGD")  # "SGD" (detectron2's) or "AdamW"
    _setdefault(cfg.SOLVER, "BETAS", [0.9, 0.999])  # AdamW betas

    if was_frozen:
        cfg.freeze()
    return cfg
