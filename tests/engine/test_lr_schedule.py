"""SOLVER.LR_SCHEDULER_NAME "WarmupPolyLR" (DeepLab / mmsegmentation's poly decay)."""
import seg_plugins  # noqa: F401  (first: repairs detectron2 where needed)

# isort: split
import pytest
import torch
from detectron2.config import get_cfg

from seg_plugins import add_seg_plugins_config
from seg_plugins.engine import Trainer


def _lrs(name, steps, **solver):
    cfg = get_cfg()
    add_seg_plugins_config(cfg)
    cfg.SOLVER.LR_SCHEDULER_NAME = name
    cfg.SOLVER.MAX_ITER = 100
    for k, v in solver.items():
        cfg.SOLVER[k] = v
    opt = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.1)
    sched = Trainer.build_lr_scheduler(cfg, opt)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_poly_lr_follows_the_formula():
    lrs = _lrs("WarmupPolyLR", 100, WARMUP_ITERS=0, POLY_LR_POWER=0.9)
    for t in (0, 10, 50, 99):
        assert lrs[t] == pytest.approx(0.1 * (1 - t / 100) ** 0.9, rel=1e-6)


def test_poly_lr_warms_up_first():
    lrs = _lrs("WarmupPolyLR", 20, WARMUP_ITERS=10, WARMUP_FACTOR=0.01, WARMUP_METHOD="linear")
    assert lrs[0] == pytest.approx(0.1 * 0.01 * (1 - 0 / 100) ** 0.9, rel=1e-6)
    assert lrs[0] < lrs[5] < lrs[9] and lrs[11] > lrs[19]


def test_detectron2_schedules_unchanged():
    lrs = _lrs("WarmupCosineLR", 100, WARMUP_ITERS=0)
    assert lrs[50] == pytest.approx(0.05, rel=1e-6)
