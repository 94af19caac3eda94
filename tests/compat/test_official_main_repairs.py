"""The repairs for official detectron2 main built from source (with its ``_C``), and the
per-build table of repairs (docs/compat.md).

Each test asserts the repair where this detectron2 needs it and the no-op where it does
not: the suite runs on both the PyPI v0.6 fallback (no ``_C``) and official main.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys

import seg_plugins  # noqa: F401  (first: applies the compat repairs)

# isort: split
import pytest
import torch
from detectron2.layers import DeformConv, ModulatedDeformConv

from seg_plugins import compat

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMPILED = compat.has_compiled_ops()
INTERNAL = "deeplearning.projects.cityscapesApi.cityscapesscripts"


def _source(module: str) -> str:
    with open(importlib.util.find_spec(module).origin, encoding="utf-8") as f:
        return f.read()


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")


# ------------------------------------------------------------------------- deformable conv
def test_deform_conv_on_cpu_is_routed_where_detectron2_refuses_it():
    from detectron2.layers import deform_conv as module

    refuses_cpu = COMPILED and "not supported on CPUs" in _source(module.__name__)
    repairs = compat.applied_repairs()
    assert ("deform_conv_cpu" in repairs) == refuses_cpu
    if refuses_cpu:
        # the original stays reachable, and is what CUDA tensors get
        assert module.deform_conv.__wrapped__ == module._DeformConv.apply
        assert module.modulated_deform_conv.__wrapped__ == module._ModulatedDeformConv.apply
    else:  # no _C: the missing-extension repair sends every device to torchvision
        assert "deform_conv" in repairs and not COMPILED


@pytest.mark.skipif(not COMPILED, reason="detectron2 without _C: nothing to refuse on CPU")
def test_plain_detectron2_refuses_deform_conv_backward_on_cpu():
    # The breakage the repair exists for, in a process without seg_plugins.
    r = _run(
        "import torch\n"
        "from detectron2.layers import DeformConv\n"
        "conv = DeformConv(2, 2, 3, padding=1)\n"
        "x = torch.randn(1, 2, 5, 5, requires_grad=True)\n"
        "conv(x, torch.zeros(1, 18, 5, 5)).sum().backward()\n"
    )
    assert r.returncode != 0 and "not supported on CPUs" in r.stderr, r.stderr[-1000:]


def test_deform_conv_trains_on_cpu():
    torch.manual_seed(0)
    conv = ModulatedDeformConv(3, 4, kernel_size=3, padding=1)
    x = torch.randn(2, 3, 7, 7, requires_grad=True)
    offset = torch.randn(2, 18, 7, 7, requires_grad=True)
    mask = torch.rand(2, 9, 7, 7, requires_grad=True)
    conv(x, offset, mask).square().mean().backward()
    for t in (x, offset, mask, conv.weight, conv.bias):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_deform_conv_cuda_equals_cpu():
    torch.manual_seed(0)
    conv = DeformConv(4, 6, kernel_size=3, padding=1, bias=False).double()
    x = torch.randn(2, 4, 9, 11, dtype=torch.float64)
    offset = torch.randn(2, 18, 9, 11, dtype=torch.float64)
    cpu = conv(x, offset)
    cuda = conv.cuda()(x.cuda(), offset.cuda()).cpu()
    torch.testing.assert_close(cuda, cpu, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------- Cityscapes path
def test_cityscapes_internal_path_resolves_where_detectron2_imports_it():
    uses_internal = INTERNAL in _source("detectron2.evaluation.cityscapes_evaluation")
    assert ("cityscapes_internal_import" in compat.applied_repairs()) == uses_internal
    if uses_internal:
        internal = importlib.import_module(INTERNAL + ".helpers.labels")
        public = importlib.import_module("cityscapesscripts.helpers.labels")
        assert internal is public  # the same module: patches and globals are shared
        assert public.__spec__.name == "cityscapesscripts.helpers.labels"  # its own spec
        script = ".evaluation.evalPixelLevelSemanticLabeling"
        evaluation = importlib.import_module(INTERNAL + script)
        assert evaluation is sys.modules["cityscapesscripts" + script]
    else:
        assert importlib.util.find_spec("deeplearning") is None  # nothing was invented


def test_plain_detectron2_main_cannot_import_its_cityscapes_scripts():
    # The breakage (only on a detectron2 whose evaluators use the internal path).
    if INTERNAL not in _source("detectron2.evaluation.cityscapes_evaluation"):
        pytest.skip("this detectron2 imports the public cityscapesscripts: nothing to repair")
    r = _run(f"import {INTERNAL}.helpers.labels")
    assert r.returncode != 0 and "deeplearning" in r.stderr


def test_cityscapes_metadata_is_cityscapesscripts_label_table():
    from cityscapesscripts.helpers.labels import labels

    train = sorted((lb for lb in labels if 0 <= lb.trainId < 255), key=lambda lb: lb.trainId)
    meta = compat.cityscapes_metadata()
    assert meta["stuff_classes"] == [lb.name for lb in train]
    assert meta["thing_classes"] == [lb.name for lb in train if lb.hasInstances]
    if "stuff_colors" in meta:
        assert [tuple(c) for c in meta["stuff_colors"]] == [tuple(lb.color) for lb in train]


def _stock_trainer(tmp_path, prefix: str):
    """detectron2's own DefaultTrainer on a tiny U-Net and a tiny "shapes" (CPU)."""
    from detectron2.config import get_cfg
    from detectron2.engine import DefaultTrainer

    from seg_plugins import add_seg_plugins_config
    from seg_plugins.data import register_shapes

    names = register_shapes(prefix, root=str(tmp_path), num_train=2, num_val=1, image_size=32)
    cfg = get_cfg()
    add_seg_plugins_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", "shapes", "unet_shapes.yaml"))
    cfg.merge_from_list([
        *("MODEL.UNET.BASE_CHANNELS", 4, "MODEL.UNET.DEPTH", 2, "MODEL.DEVICE", "cpu"),
        *("DATASETS.TRAIN", (names[2],), "DATASETS.TEST", (), "OUTPUT_DIR", str(tmp_path)),
        *("SOLVER.IMS_PER_BATCH", 2, "DATALOADER.NUM_WORKERS", 0),
    ])  # fmt: skip
    return DefaultTrainer(cfg)


def test_run_loop_is_the_default_trainers_step_runner(tmp_path):
    from detectron2.engine import SimpleTrainer
    from detectron2.utils.events import EventStorage

    trainer = _stock_trainer(tmp_path, "compat_loop")
    loop = compat.run_loop(trainer)
    assert isinstance(loop, SimpleTrainer) and loop.model is trainer.model

    class Counting(SimpleTrainer):
        steps = 0

        def run_step(self):
            Counting.steps += 1
            super().run_step()

    compat.replace_run_loop(trainer, Counting(loop.model, loop.data_loader, loop.optimizer))
    trainer.iter = trainer.start_iter = 0
    trainer.max_iter = 1
    with EventStorage(0):
        trainer.run_step()  # DefaultTrainer delegates the step to the replaced loop
    assert Counting.steps == 1


def test_last_eval_results_are_what_the_eval_hook_stored(tmp_path):
    import weakref

    from detectron2.engine import hooks
    from detectron2.utils.events import EventStorage

    trainer = _stock_trainer(tmp_path, "compat_eval")
    assert compat.last_eval_results(trainer) is None  # no evaluation ran yet
    evaluated = {"sem_seg": {"mIoU": 12.5}}
    trainer.test = lambda cfg, model: evaluated
    [hook] = [h for h in trainer.build_hooks() if isinstance(h, hooks.EvalHook)]
    hook.trainer = weakref.proxy(trainer)
    trainer.iter, trainer.max_iter = 0, 1
    with EventStorage(0) as storage:
        trainer.storage = storage
        hook.after_train()  # the final evaluation, as at the end of train()
    assert compat.last_eval_results(trainer) == evaluated


# ------------------------------------------------------------------------- docs/compat.md
def _live_report() -> dict:
    r = subprocess.run(
        [sys.executable, "-m", "seg_plugins.compat"], capture_output=True, text=True, cwd=REPO
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


def test_compat_report_and_docs_table_agree_for_this_build():
    from tools import compat_table

    report = _live_report()
    assert report["import_errors"] == {}
    assert report["compiled_ops"] == COMPILED
    live = {k for k in compat_table.grouped(report["repairs"])}
    assert ("missing_C" in live) == (not COMPILED)

    with open(os.path.join(REPO, "docs", "compat.md")) as f:
        lines = [line for line in f if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip().strip("|").split("|")]
    column = header.index(compat_table.build_name(report))  # this build has a column
    documented = set()
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[column].startswith("applies"):
            documented.add(re.sub(r"`", "", cells[0]))
    assert documented == live, (
        "docs/compat.md is out of date for this build; regenerate it with "
        "tools/compat_table.py (see its docstring)"
    )
