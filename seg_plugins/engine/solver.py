"""Optimizers and learning-rate schedules beyond detectron2's: ``SOLVER.OPTIMIZER`` "AdamW",
the auxiliary head's ``MODEL.AUX_HEAD.LR_FACTOR`` and ``SOLVER.LR_SCHEDULER_NAME``
"WarmupPolyLR". Everything else is detectron2's ``build_optimizer`` / ``build_lr_scheduler``,
which the Trainer passes in as ``default``.
"""

from __future__ import annotations

from typing import Callable

import torch
from detectron2.solver import LRMultiplier
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from detectron2.solver.lr_scheduler import WarmupParamScheduler
from fvcore.common.param_scheduler import PolynomialDecayParamScheduler

__all__ = ["OPTIMIZERS", "build_lr_scheduler", "build_optimizer"]

OPTIMIZERS = ("SGD", "AdamW")


def build_optimizer(cfg, model: torch.nn.Module, default: Callable) -> torch.optim.Optimizer:
    """detectron2's SGD (SOLVER.OPTIMIZER "SGD", built by ``default(cfg, model)``) or AdamW,
    with detectron2's parameter groups (SOLVER.WEIGHT_DECAY_NORM, BIAS_LR_FACTOR,
    WEIGHT_DECAY_BIAS); the auxiliary head's groups at MODEL.AUX_HEAD.LR_FACTOR x their
    learning rate (torchvision's reference recipe trains its aux classifier at 10x)."""
    name = cfg.SOLVER.OPTIMIZER
    if name not in OPTIMIZERS:
        raise ValueError(f"SOLVER.OPTIMIZER must be one of {OPTIMIZERS}, got {name!r}")
    optimizer = default(cfg, model) if name == "SGD" else _adamw(cfg, model)
    factor = float(cfg.MODEL.AUX_HEAD.LR_FACTOR)
    aux = getattr(getattr(model, "module", model), "aux_head", None)
    if factor != 1.0 and aux is not None:
        # detectron2 merges parameters with equal hyper-parameters into one group: split each
        # group into its aux-head part (lr x factor) and the rest (no step taken yet, so there
        # is no optimizer state to move)
        aux_ids = {id(p) for p in aux.parameters()}
        groups, optimizer.param_groups = optimizer.param_groups, []
        for group in groups:
            for is_aux in (False, True):
                params = [p for p in group["params"] if (id(p) in aux_ids) == is_aux]
                if params:
                    lr = group["lr"] * (factor if is_aux else 1.0)
                    optimizer.add_param_group({**group, "params": params, "lr": lr})
    return optimizer


def _adamw(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
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


def build_lr_scheduler(cfg, optimizer: torch.optim.Optimizer, default: Callable):
    """detectron2's schedules (``default(cfg, optimizer)``) plus "WarmupPolyLR": lr = base *
    (1 - t / T) ** power (SOLVER.POLY_LR_POWER, 0.9 in DeepLab / mmsegmentation), after the
    usual warm-up. detectron2 v0.6 has it only inside projects/deeplab; fvcore's polynomial
    decay and detectron2's warm-up wrapper compose it."""
    if cfg.SOLVER.LR_SCHEDULER_NAME != "WarmupPolyLR":
        return default(cfg, optimizer)
    sched = PolynomialDecayParamScheduler(1.0, cfg.SOLVER.POLY_LR_POWER)
    sched = WarmupParamScheduler(
        sched,
        cfg.SOLVER.WARMUP_FACTOR,
        min(cfg.SOLVER.WARMUP_ITERS / cfg.SOLVER.MAX_ITER, 1.0),
        cfg.SOLVER.WARMUP_METHOD,
    )
    return LRMultiplier(optimizer, multiplier=sched, max_iter=cfg.SOLVER.MAX_ITER)
