"""Each source-level repair: the detectron2 v0.6 code path it fixes now runs."""

import importlib.util
import subprocess
import sys

import seg_plugins  # noqa: F401  (first: applies the compat repairs)

# isort: split
import numpy as np
import pytest
import torch

from seg_plugins import compat
from seg_plugins.compat import _LEGACY_NP_RE, _LegacyNumpy, _module_needs_legacy_numpy


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")


def test_apply_is_idempotent():
    first = compat.apply()
    assert compat.apply() == first


def test_pillow_linear_default_argument():
    from detectron2.data import transforms as T
    from PIL import Image

    t = T.ExtentTransform(src_rect=(0, 0, 8, 8), output_size=(4, 4))
    assert t.interp == Image.BILINEAR
    out = t.apply_image(np.arange(64, dtype=np.uint8).reshape(8, 8))
    assert out.shape == (4, 4)


def test_legacy_numpy_regex_matches_only_removed_aliases():
    for bad in (
        "np.float)",
        "dtype=np.int)",
        ".astype(np.bool)",
        "np.str)",
        "np.array(m, copy=False)",
    ):
        assert _LEGACY_NP_RE.search(bad), bad
    for good in ("np.float32", "np.int64", "np.bool_", "np.floating", "np.array(m)", "np.integer"):
        assert not _LEGACY_NP_RE.search(good), good


def test_legacy_numpy_proxy_semantics():
    lnp = _LegacyNumpy(np)
    assert lnp.float is float and lnp.int is int and lnp.bool is bool
    assert lnp.zeros(3).shape == (3,)
    arr = np.arange(4)
    assert lnp.array(arr, copy=False) is arr  # numpy-1 meaning: no copy if none is needed
    assert lnp.array([1, 2], copy=False).tolist() == [1, 2]  # numpy 2 would raise here
    assert "float" not in dir(np) or np.lib.NumpyVersion(np.__version__) < "1.24.0"


def test_numpy_aliases_in_detectron2_code_paths():
    from detectron2.data.build import print_instances_class_histogram
    from detectron2.layers.mask_ops import paste_mask_in_image_old
    from detectron2.structures.masks import polygons_to_bitmask
    from detectron2.utils.visualizer import Visualizer

    assert polygons_to_bitmask([], 4, 5).shape == (4, 5)  # np.bool
    print_instances_class_histogram(  # np.int
        [{"annotations": [{"category_id": 0, "iscrowd": 0}]}], ["a"]
    )
    pasted = paste_mask_in_image_old(torch.rand(7, 7), torch.tensor([1, 1, 5, 6]), 8, 8, 0.5)
    assert pasted.shape == (8, 8)  # np.array(copy=False)
    from detectron2.data import MetadataCatalog

    meta = MetadataCatalog.get("__compat_test_visualizer")
    meta.set(stuff_classes=["a", "b"], stuff_colors=[(0, 0, 0), (255, 0, 0)])
    vis = Visualizer(np.zeros((6, 6, 3), dtype=np.uint8), meta)
    seg = torch.zeros(6, 6, dtype=torch.long)
    seg[2:4, 2:4] = 1
    assert vis.draw_sem_seg(seg).get_image().shape == (6, 6, 3)  # np.bool


def test_detectron2_sem_seg_evaluator_metrics():
    # v0.6's own SemSegEvaluator uses np.int / np.float throughout; main's does not.
    from detectron2.evaluation import sem_seg_evaluation

    if _module_needs_legacy_numpy(sem_seg_evaluation) or isinstance(
        sem_seg_evaluation.np, _LegacyNumpy
    ):
        assert sem_seg_evaluation.np.float is float
        assert f"numpy:{sem_seg_evaluation.__name__}" in compat.applied_repairs()
    else:
        assert sem_seg_evaluation.np is np  # no-op: numpy itself
        assert f"numpy:{sem_seg_evaluation.__name__}" not in compat.applied_repairs()


def test_model_zoo_without_pkg_resources():
    from detectron2 import model_zoo

    path = model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml")
    assert path.endswith("mask_rcnn_R_50_FPN_1x.yaml")
    import os

    assert os.path.isfile(path)
    # The stand-in is private to detectron2.model_zoo: nobody else sees a fake pkg_resources.
    mod = sys.modules.get("pkg_resources")
    assert mod is None or not (mod.__doc__ or "").startswith("seg_plugins")


def test_importlib_abc_for_detectron2_projects():
    bare = _run("import importlib; importlib.abc")
    assert bare.returncode != 0  # Python 3.11 does not import it as a side effect
    r = _run(
        "import seg_plugins, importlib; importlib.abc.MetaPathFinder; import detectron2.projects"
    )
    assert r.returncode == 0, r.stderr


def test_lr_scheduler_hook_saves_public_scheduler_subclasses():
    from detectron2.engine import hooks

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=10)
    for _ in range(3):
        opt.step()
        sched.step()
    hook = hooks.LRScheduler(opt, sched)
    state = hook.state_dict()
    assert state.get("last_epoch") == 3
    opt2 = torch.optim.SGD(model.parameters(), lr=0.1)
    sched2 = torch.optim.lr_scheduler.OneCycleLR(opt2, max_lr=0.1, total_steps=10)
    hooks.LRScheduler(opt2, sched2).load_state_dict(state)
    assert sched2.last_epoch == 3


def test_repairs_are_recorded():
    applied = compat.applied_repairs()
    if not compat.has_compiled_ops():
        assert {"missing_C", "deform_conv", "coco_eval"} <= set(applied)
    if importlib.util.find_spec("pkg_resources") is None:
        assert "pkg_resources" in applied


def _export_imports_api_unconditionally() -> bool:
    import re

    with open(importlib.util.find_spec("detectron2.export").origin) as f:
        return bool(re.search(r"^from \.api import", f.read(), re.MULTILINE))


@pytest.mark.skipif(
    importlib.util.find_spec("caffe2") is not None, reason="caffe2 installed: nothing to repair"
)
def test_export_imports_without_caffe2():
    # v0.6 star-imports export/api.py (which imports caffe2); main imports it only when
    # caffe2 imports, so there the repair must stay away and the real module be used.
    import detectron2.export  # noqa: F401  (the repair records itself on this import)

    needed = _export_imports_api_unconditionally()
    assert ("export_api" in compat.applied_repairs()) == needed
    plain = _run("import detectron2.export")
    if not needed:
        assert plain.returncode == 0, plain.stderr
        r = _run(
            "import seg_plugins, sys\n"
            "from detectron2.export import TracingAdapter\n"
            "from detectron2.utils.analysis import FlopCountAnalysis\n"
            "assert 'detectron2.export.api' not in sys.modules  # no stand-in put in\n"
        )
        assert r.returncode == 0, r.stderr
        return
    assert plain.returncode != 0  # the breakage: caffe2 import
    r = _run(
        "import seg_plugins\n"
        "from detectron2.export import TracingAdapter, Caffe2Tracer, add_export_config\n"
        "from detectron2.utils.analysis import FlopCountAnalysis\n"
        "from detectron2.config import get_cfg\n"
        "assert add_export_config(get_cfg()).EXPORT_CAFFE2.USE_HEATMAP_MAX_KEYPOINT is False\n"
        "try:\n    Caffe2Tracer(None, None, None)\nexcept RuntimeError as e:\n"
        "    assert 'Caffe2' in str(e)\nelse:\n    raise SystemExit('no error')\n"
    )
    assert r.returncode == 0, r.stderr


def test_cityscapes_write_dict_to_json_writes_numpy_scalars(tmp_path):
    """cityscapesscripts' instance evaluation dumps np.count_nonzero results (np.int64 on
    numpy >= 2.3) with writeDict2JSON; the repaired function writes them as numbers."""
    import json

    import numpy as np
    from cityscapesscripts.evaluation import evalInstanceLevelSemanticLabeling as cs_instance

    path = tmp_path / "matches.json"
    cs_instance.writeDict2JSON({"n": np.count_nonzero(np.ones(3, bool)), "a": np.arange(2)}, path)
    assert json.loads(path.read_text()) == {"n": 3, "a": [0, 1]}


@pytest.mark.skipif(sys.version_info < (3, 11), reason="random.sample takes sets before 3.11")
def test_map_dataset_falls_back_when_the_mapper_skips_a_sample():
    """A mapper returning None (a sample to skip) makes MapDataset draw another index with
    random.sample from a set, a TypeError since Python 3.11; repaired, it falls back."""
    from detectron2.data.common import MapDataset

    data = MapDataset(list(range(40)), lambda x: None if x % 2 else x)  # > 21: indexed draw
    got = [data[i] for i in range(1, 40, 2)]
    assert all(g % 2 == 0 for g in got)
    assert "map_dataset_fallback" in seg_plugins.compat.applied_repairs()


def _ddp_on_cpu_worker(rank: int, init_file: str) -> None:
    import torch.distributed as dist
    from detectron2.engine import defaults
    from detectron2.layers import NaiveSyncBatchNorm
    from detectron2.utils import comm

    torch.set_num_threads(1)  # no OpenMP pool inherited through fork
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        comm._LOCAL_PROCESS_GROUP = dist.new_group([0, 1])  # as seg_plugins' launch sets it
        torch.manual_seed(rank)  # different weights on each rank: DDP broadcasts rank 0's
        model = torch.nn.Sequential(
            torch.nn.Conv2d(3, 4, 3), torch.nn.SyncBatchNorm(4), torch.nn.Conv2d(4, 2, 1)
        )
        # The breakage: v0.6 passes device_ids=[local_rank], which DDP refuses on the CPU.
        with pytest.raises(ValueError, match="device_ids"):
            defaults.create_ddp_model.__wrapped__(model, broadcast_buffers=False)
        weight = model[1].weight
        ddp = defaults.create_ddp_model(model, broadcast_buffers=False)  # DefaultTrainer's call
        assert isinstance(ddp, torch.nn.parallel.DistributedDataParallel)
        bn = ddp.module[1]
        assert type(bn) is NaiveSyncBatchNorm and bn.weight is weight  # optimizer unaffected
        inputs = [
            torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(9 + r)) for r in (0, 1)
        ]
        ddp(inputs[rank]).square().mean().backward()
        # Statistics of both ranks' images together, as one process would compute them.
        expected = 0.1 * ddp.module[0](torch.cat(inputs)).mean(dim=(0, 2, 3))
        torch.testing.assert_close(bn.running_mean, expected.detach())
        grads = comm.all_gather([p.grad for p in ddp.parameters()])
        for mine, theirs in zip(*grads):
            torch.testing.assert_close(mine, theirs)  # all-reduced
    finally:
        comm._LOCAL_PROCESS_GROUP = None
        dist.destroy_process_group()


def test_ddp_on_cpu_processes(tmp_path):
    """DefaultTrainer wraps its model with create_ddp_model(model, broadcast_buffers=False);
    on CPU processes (gloo) v0.6 passed device_ids and DDP refused the model. Repaired: no
    device_ids, SyncBatchNorm synchronised by NaiveSyncBatchNorm, gradients all-reduced."""
    import detectron2.engine
    import torch.multiprocessing as mp
    from detectron2.engine import defaults

    assert "ddp_on_cpu" in compat.applied_repairs()
    assert detectron2.engine.create_ddp_model is defaults.create_ddp_model  # both names
    start = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    mp.start_processes(
        _ddp_on_cpu_worker, args=(str(tmp_path / "init"),), nprocs=2, start_method=start
    )
    model = torch.nn.Linear(2, 2)
    assert defaults.create_ddp_model(model) is model  # one process: unchanged
