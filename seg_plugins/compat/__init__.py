"""Makes detectron2 run on today's stack (torch 2.x, numpy 2, Pillow >= 10, setuptools >=
81, Python 3.11): the v0.6 sources, installs that lack the compiled ``detectron2._C``, and
official main built from source.

Why this exists: on these machines detectron2 is either the v0.6 source release, built
without its C++ extension, or official main built from source (see docs/install.md
and DESIGN.md); each has bugs that users hit. Each repair below

- detects its own breakage and applies only then (on a complete, current detectron2 every
  detector is False and nothing is touched),
- is idempotent,
- touches the smallest thing that fixes it (one module attribute, rarely one alias),
- is listed by :func:`applied_repairs` and tested in tests/compat/.

:func:`apply` runs on ``import seg_plugins``; it must run before anything imports
``detectron2.modeling``, ``detectron2.data`` or ``detectron2.evaluation`` (import
``seg_plugins`` first). Module-level repairs use post-import hooks, so importing this
package stays cheap and does not import those modules itself.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.util
import json
import logging
import os
import re
import sys
import threading
import types
import warnings
from typing import Callable, Dict, Iterator, List, Optional

from ._import_hooks import before_import, when_imported

__all__ = [
    "apply",
    "applied_repairs",
    "cityscapes_metadata",
    "has_compiled_ops",
    "installed_from",
    "last_eval_results",
    "quiet_jit_script_deprecation",
    "replace_run_loop",
    "run_loop",
]

logger = logging.getLogger(__name__)

_APPLIED: Dict[str, str] = {}  # repair name -> what it did
_LOCK = threading.Lock()
_DONE = False


def _record(name: str, what: str) -> None:
    _APPLIED[name] = what
    logger.debug("compat repair %s: %s", name, what)


def applied_repairs() -> Dict[str, str]:
    """Repairs applied so far in this process: ``{name: description}``."""
    return dict(_APPLIED)


def has_compiled_ops() -> bool:
    """True when detectron2's compiled ``_C`` extension is the real one."""
    mod = sys.modules.get("detectron2._C")
    if mod is not None:
        return not getattr(mod, "IS_FALLBACK", False)
    return importlib.util.find_spec("detectron2._C") is not None


def _module_source(name: str) -> str:
    """The source text of module ``name`` without importing it ("" if it has none): how the
    repairs for official main detect a breakage before the module runs."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return ""
    with open(spec.origin, encoding="utf-8") as f:
        return f.read()


def installed_from() -> Optional[str]:
    """How tools/setup_env.sh installed detectron2 into this Python's venv (its record), or
    None for an environment it did not build."""
    record = os.path.join(sys.prefix, ".detectron2_source")
    if not os.path.isfile(record):
        return None
    with open(record, encoding="utf-8") as f:
        return f.read().strip()


def cityscapes_metadata() -> Dict[str, list]:
    """detectron2's builtin Cityscapes metadata (``thing_classes``, ``thing_colors``,
    ``stuff_classes``, ``stuff_colors``; trainId order), as its own Cityscapes datasets
    carry it. detectron2 exposes it only through the private ``_get_builtin_metadata``
    (same contract on v0.6 and main; tested against cityscapesscripts' label table in
    tests/compat/test_official_main_repairs.py), so the private name stays here."""
    from detectron2.data.datasets.builtin_meta import _get_builtin_metadata

    return _get_builtin_metadata("cityscapes")


def run_loop(trainer):
    """The ``SimpleTrainer`` (or subclass) that a ``DefaultTrainer`` runs its steps with.

    detectron2 keeps it in the private attribute ``_trainer`` (same on v0.6 and main;
    tested on both in tests/compat/test_official_main_repairs.py), so the name stays here."""
    return trainer._trainer


def replace_run_loop(trainer, loop) -> None:
    """Make ``trainer`` (a ``DefaultTrainer``) run its steps with ``loop``."""
    trainer._trainer = loop


def last_eval_results(trainer):
    """The results of a ``DefaultTrainer``'s last evaluation (its EvalHook's), None before
    any. detectron2 keeps them in the private attribute ``_last_eval_results`` (v0.6 and
    main; ``train()`` returns them only with TEST.EXPECTED_RESULTS set)."""
    return getattr(trainer, "_last_eval_results", None)


# --------------------------------------------------------------------------- _C extension
def _repair_missing_extension() -> None:
    """No ``detectron2._C``: install a stand-in and route the ops to torchvision / PyTorch."""
    if has_compiled_ops():
        return
    import detectron2

    from . import _C_fallback, ops

    module = sys.modules.get("detectron2._C") or _C_fallback.make_module()
    sys.modules["detectron2._C"] = module
    detectron2._C = module
    _record("missing_C", "detectron2._C replaced by seg_plugins.compat._C_fallback")

    def deform(mod):
        mod.deform_conv = ops.deform_conv
        mod.modulated_deform_conv = ops.modulated_deform_conv
        _record("deform_conv", "DeformConv/ModulatedDeformConv -> torchvision.ops.deform_conv2d")

    def nms(mod):
        mod.nms_rotated = ops.nms_rotated
        _record("nms_rotated", "nms_rotated -> pure-PyTorch greedy NMS")

    def roi_align_rotated(mod):
        mod.roi_align_rotated = ops.roi_align_rotated
        _record("roi_align_rotated", "ROIAlignRotated -> pure-PyTorch bilinear sampling")

    def coco_eval(mod):
        from pycocotools.cocoeval import COCOeval

        # COCOeval_opt is detectron2's C++ re-implementation of pycocotools; the official
        # pycocotools COCOeval computes the same AP (slower), so COCOEvaluator uses it.
        mod.COCOeval_opt = COCOeval
        _record("coco_eval", "COCOEvaluator fast (C++) path -> official pycocotools COCOeval")

    when_imported("detectron2.layers.deform_conv", deform)
    when_imported("detectron2.layers.nms", nms)
    when_imported("detectron2.layers.roi_align_rotated", roi_align_rotated)
    when_imported("detectron2.evaluation.coco_evaluation", coco_eval)


# --------------------------------------------------------------------------- Pillow >= 10
def _repair_pillow_linear() -> None:
    """Pillow 10 removed ``Image.LINEAR`` (an alias of BILINEAR); detectron2 v0.6 uses it
    as a default argument in data/transforms/transform.py, so the module fails at import.
    Restoring the alias is the only repair that acts before that module's body runs."""
    from PIL import Image

    if not hasattr(Image, "LINEAR"):
        Image.LINEAR = Image.BILINEAR
        _record("pillow_linear", "PIL.Image.LINEAR = PIL.Image.BILINEAR (removed in Pillow 10)")


# --------------------------------------------------------------------------- numpy >= 1.24 / 2
_NUMPY_ALIASES = {"float": float, "int": int, "bool": bool, "object": object, "str": str}
_LEGACY_NP_RE = re.compile(
    r"\bnp\.(float|int|bool|object|str)\b(?![\d_])|np\.array\([^)]*copy=False"
)
# Modules of detectron2 v0.6 known to use removed numpy aliases or np.array(copy=False);
# each is checked (by its source) before it is touched.
_NUMPY_MODULES = (
    "detectron2.data.build",
    "detectron2.data.datasets.pascal_voc",
    "detectron2.evaluation.pascal_voc_evaluation",
    "detectron2.evaluation.sem_seg_evaluation",
    "detectron2.layers.mask_ops",
    "detectron2.structures.masks",
    "detectron2.utils.visualizer",
    "detectron2.utils.video_visualizer",
)


class _LegacyNumpy(types.ModuleType):
    """numpy, plus the aliases numpy 1.24 removed and numpy-1 semantics of
    ``np.array(..., copy=False)`` (numpy 2 raises if a copy is needed). Given only to the
    detectron2 modules whose source needs it, never installed globally."""

    def __init__(self, np_module):
        super().__init__("numpy")
        self._np = np_module

    def __getattr__(self, name):
        if name in _NUMPY_ALIASES:
            return _NUMPY_ALIASES[name]
        return getattr(self._np, name)

    def array(self, obj, *args, copy=True, **kwargs):
        if copy is False:
            return self._np.asarray(obj, *args, **kwargs)
        return self._np.array(obj, *args, copy=copy, **kwargs)


def _module_needs_legacy_numpy(module) -> bool:
    import inspect

    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        return False
    return bool(_LEGACY_NP_RE.search(source))


def _repair_numpy_aliases() -> None:
    import numpy as np

    if (
        all(hasattr(np, a) for a in _NUMPY_ALIASES)
        and np.lib.NumpyVersion(np.__version__) < "2.0.0"
    ):
        return  # numpy < 1.24: the aliases exist and copy=False still means "if possible"
    legacy = _LegacyNumpy(np)

    def give_legacy_numpy(mod):
        if getattr(mod, "np", None) is np and _module_needs_legacy_numpy(mod):
            mod.np = legacy
            _record(f"numpy:{mod.__name__}", "np.float/np.int/... and np.array(copy=False)")

    for name in _NUMPY_MODULES:
        when_imported(name, give_legacy_numpy)


# --------------------------------------------------------------------------- setuptools >= 81
def _repair_pkg_resources() -> None:
    """detectron2.model_zoo imports ``pkg_resources`` (gone from setuptools >= 81) for one
    call, ``resource_filename``. A stand-in is visible only while that module executes and
    stays as its ``pkg_resources`` attribute; nobody else sees a fake pkg_resources."""
    if importlib.util.find_spec("pkg_resources") is not None:
        return

    def resource_filename(package: str, resource: str) -> str:
        import os

        spec = importlib.util.find_spec(package)
        return os.path.join(os.path.dirname(spec.origin), resource)

    shim = types.ModuleType("pkg_resources")
    shim.resource_filename = resource_filename
    shim.__doc__ = "seg_plugins.compat stand-in: resource_filename only"

    def put(_mod):
        sys.modules.setdefault("pkg_resources", shim)

    def undo(_mod):
        if sys.modules.get("pkg_resources") is shim:
            del sys.modules["pkg_resources"]
        _record("pkg_resources", "model_zoo.pkg_resources -> resource_filename stand-in")

    put.undo = undo
    before_import("detectron2.model_zoo.model_zoo", put)


# --------------------------------------------------------------------------- Python 3.11
def _repair_importlib_abc() -> None:
    """detectron2/projects/__init__.py uses ``importlib.abc`` after a bare ``import
    importlib``; since Python 3.11 that submodule is no longer imported as a side effect."""
    import importlib

    if "importlib.abc" not in sys.modules:
        import importlib.abc  # noqa: F401

        _record("importlib_abc", "import importlib.abc for detectron2.projects")


# --------------------------------------------------------------------------- torch >= 2.0
def _repair_lr_scheduler_hook() -> None:
    """v0.6's ``hooks.LRScheduler`` saves/loads the scheduler only if it subclasses the
    private ``_LRScheduler``; torch 2 schedulers subclass ``LRScheduler``, so a resumed run
    would silently restart their schedule. Widen the check to the public base class."""
    import torch

    public = getattr(torch.optim.lr_scheduler, "LRScheduler", None)
    private = getattr(torch.optim.lr_scheduler, "_LRScheduler", None)
    if public is None or private is None or public is private:
        return

    def widen(mod):
        cls = mod.LRScheduler
        import inspect

        try:
            src = inspect.getsource(cls.state_dict)
        except (OSError, TypeError):
            return
        if "_LRScheduler" not in src:
            return

        def state_dict(self):
            if isinstance(self.scheduler, public):
                return self.scheduler.state_dict()
            return {}

        def load_state_dict(self, state_dict):
            if isinstance(self.scheduler, public):
                logging.getLogger(mod.__name__).info("Loading scheduler from state_dict ...")
                self.scheduler.load_state_dict(state_dict)

        cls.state_dict = state_dict
        cls.load_state_dict = load_state_dict
        _record("lr_scheduler_hook", "hooks.LRScheduler saves any torch LRScheduler")

    when_imported("detectron2.engine.hooks", widen)


# --------------------------------------------------------------------------- no caffe2
_CAFFE2_NAMES = ("export_caffe2_model", "Caffe2Model", "export_onnx_model", "Caffe2Tracer")


def _repair_export_without_caffe2() -> None:
    """``detectron2/export/__init__.py`` star-imports ``export/api.py``, which imports caffe2
    (no longer shipped with torch), so ``import detectron2.export`` fails — and with it
    ``TracingAdapter``, the TorchScript helpers and ``detectron2.utils.analysis`` (FLOP
    counting). A stand-in ``api`` keeps the Caffe2-only names, each raising a clear error."""
    if importlib.util.find_spec("caffe2") is not None:
        return
    if not re.search(r"^from \.api import", _module_source("detectron2.export"), re.MULTILINE):
        return  # official main imports api only when caffe2 imports (inside try/else)

    def unavailable(name):
        def fail(*args, **kwargs):
            raise RuntimeError(
                f"detectron2.export.{name} needs Caffe2, which PyTorch no longer ships. Export "
                "with detectron2.export.TracingAdapter + torch.onnx.export / torch.jit.trace "
                "instead."
            )

        fail.__name__ = name
        return fail

    def add_export_config(cfg):  # the v0.6 function only adds this one key
        from detectron2.config import CfgNode

        cfg.EXPORT_CAFFE2 = CfgNode()
        cfg.EXPORT_CAFFE2.USE_HEATMAP_MAX_KEYPOINT = False
        return cfg

    api = types.ModuleType("detectron2.export.api", "seg_plugins.compat stand-in: no caffe2")
    api.add_export_config = add_export_config
    for name in _CAFFE2_NAMES:
        setattr(api, name, unavailable(name))
    api.__all__ = ["add_export_config", *_CAFFE2_NAMES]

    def put(_pkg):
        sys.modules.setdefault("detectron2.export.api", api)

    def attach(pkg):
        if sys.modules.get("detectron2.export.api") is api:
            pkg.api = api
            _record(
                "export_api", "detectron2.export.api -> stand-in (no caffe2); Caffe2 names raise"
            )

    before_import("detectron2.export", put)
    when_imported("detectron2.export", attach)


# --------------------------------------------------------------------------- cityscapesscripts
_CITYSCAPES_JSON_MODULES = (
    "cityscapesscripts.helpers.csHelpers",
    # these star-import writeDict2JSON, so each namespace needs the fixed function
    "cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling",
    "cityscapesscripts.evaluation.evalInstanceLevelSemanticLabeling",
    "cityscapesscripts.evaluation.instances2dict",
)


def _repair_cityscapes_json() -> None:
    """numpy >= 2.3: ``np.count_nonzero`` returns ``np.int64``, which cityscapesscripts'
    ``writeDict2JSON`` (``json.dumps(default=lambda o: o.__dict__)``) cannot serialise, so
    its instance evaluation (used by detectron2's CityscapesInstanceEvaluator) crashes with
    "'numpy.int64' object has no attribute '__dict__'". The stand-in also writes numpy
    scalars and arrays (as Python numbers / lists)."""
    import numpy as np

    if type(np.count_nonzero(np.zeros(1, bool))) is int:
        return

    def default(obj):
        return obj.tolist() if isinstance(obj, (np.generic, np.ndarray)) else obj.__dict__

    def write_dict_to_json(dict_name, file_name):
        with open(file_name, "w") as f:
            f.write(json.dumps(dict_name, default=default, sort_keys=True, indent=4))

    def patch(module):
        if hasattr(module, "writeDict2JSON"):
            module.writeDict2JSON = write_dict_to_json
            _record(f"cityscapes_json:{module.__name__}", "writeDict2JSON writes numpy scalars")

    for name in _CITYSCAPES_JSON_MODULES:
        when_imported(name, patch)


# --------------------------------------------------------------------------- numpy >= 2.4
# cityscapesscripts (<= 2.3.0) modules that call np.in1d, which numpy 2.4 removed.
_IN1D_MODULES = (
    "cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling",
    "cityscapesscripts.evaluation.evalInstanceLevelSemanticLabeling",
)


class _NumpyWithIn1d(types.ModuleType):
    """numpy, plus ``in1d`` (deprecated in numpy 2.0, removed in 2.4) as numpy documents its
    replacement: ``np.isin(ar1, ar2, ...).ravel()``, a flat boolean array of ``ar1``'s
    elements found in ``ar2``. Given only to the cityscapesscripts modules whose source calls
    ``np.in1d``, never installed globally."""

    def __init__(self, np_module):
        super().__init__("numpy")
        self._np = np_module

    def __getattr__(self, name):
        return getattr(self._np, name)

    def in1d(self, ar1, ar2, assume_unique=False, invert=False, *, kind=None):
        found = self._np.isin(ar1, ar2, assume_unique=assume_unique, invert=invert, kind=kind)
        return found.ravel()


def _repair_numpy_in1d() -> None:
    """numpy >= 2.4 has no ``np.in1d``, which cityscapesscripts' official evaluations
    (detectron2's CityscapesSemSegEvaluator / CityscapesInstanceEvaluator) call: they fail
    with AttributeError. Those modules get :class:`_NumpyWithIn1d` as their ``np``, so that
    the package need not pin numpy below 2.4 (which would downgrade a user's numpy)."""
    import numpy as np

    if hasattr(np, "in1d"):
        return

    def give_in1d(mod):
        if getattr(mod, "np", None) is np and "np.in1d" in _module_source(mod.__name__):
            mod.np = _NumpyWithIn1d(np)
            _record(f"numpy_in1d:{mod.__name__}", "np.in1d -> np.isin(...).ravel()")

    for name in _IN1D_MODULES:
        when_imported(name, give_in1d)


# --------------------------------------------------------------------------- Python >= 3.11
class _SampleableSet(set):
    """A set that ``random.sample`` accepts (Python >= 3.11 takes sequences only): indexing
    walks the set, which happens only on the rare fallback path of MapDataset."""

    def __getitem__(self, index):
        return list(self)[index]


def _repair_map_dataset_fallback() -> None:
    """``MapDataset`` keeps the indices it may fall back to, when its mapper returns None (a
    sample to skip), in a ``set`` and draws one with ``random.sample``, which since Python
    3.11 raises TypeError for sets: skipping a bad sample crashed the loader instead. The set
    becomes a :class:`_SampleableSet` (same contents, same draws as on Python 3.10)."""
    if sys.version_info < (3, 11):
        return
    from collections.abc import Sequence

    Sequence.register(_SampleableSet)

    def patch(module):
        cls = module.MapDataset
        if getattr(cls.__init__, "_seg_plugins_repaired", False):
            return
        original = cls.__init__

        def __init__(self, *args, **kwargs):
            original(self, *args, **kwargs)
            if type(getattr(self, "_fallback_candidates", None)) is set:
                self._fallback_candidates = _SampleableSet(self._fallback_candidates)

        __init__._seg_plugins_repaired = True
        cls.__init__ = __init__
        _record("map_dataset_fallback", "MapDataset's fallback indices sampleable on 3.11+")

    when_imported("detectron2.data.common", patch)


# --------------------------------------------------------------------------- CPU processes
_DDP_DEVICE_IDS_RE = re.compile(r"""kwargs\[["']device_ids["']\]\s*=""")


def _naive_sync_bn(module) -> int:
    """Replace every ``nn.SyncBatchNorm`` under ``module`` (it raises on CPU input when the
    process group has several ranks) by detectron2's ``NaiveSyncBatchNorm`` with
    ``stats_mode="N"`` (statistics weighted by each process' batch, like nn.SyncBatchNorm
    for equal image sizes), reusing the same parameter and buffer tensors, so that the
    optimizer, state_dict keys and checkpoints are unchanged. Returns how many."""
    import torch
    from detectron2.layers import NaiveSyncBatchNorm

    count = 0
    for name, child in module.named_children():
        if type(child) is torch.nn.SyncBatchNorm and child.momentum is not None:
            naive = NaiveSyncBatchNorm(
                child.num_features,
                eps=child.eps,
                momentum=child.momentum,
                affine=child.affine,
                track_running_stats=child.track_running_stats,
                stats_mode="N",
            )
            for key in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                setattr(naive, key, getattr(child, key))
            naive.train(child.training)
            setattr(module, name, naive)
            count += 1
        else:
            count += _naive_sync_bn(child)
    return count


def _repair_ddp_on_cpu() -> None:
    """v0.6's ``create_ddp_model`` (called by ``DefaultTrainer.__init__``) always passes
    ``device_ids=[local_rank]``, which DistributedDataParallel rejects for a model on the
    CPU ("device_ids ... only work with ... GPU modules"): multi-process CPU (gloo) training
    failed at construction. For a CPU model it now passes ``device_ids=None`` and turns
    ``nn.SyncBatchNorm`` (GPU-only when synchronising) into detectron2's
    ``NaiveSyncBatchNorm``; GPU models take the original path."""

    def patch(mod):
        import functools
        import inspect

        original = mod.create_ddp_model
        if getattr(original, "_seg_plugins_repaired", False):
            return
        try:
            src = inspect.getsource(original)
        except (OSError, TypeError):
            return
        if not _DDP_DEVICE_IDS_RE.search(src) or "cpu" in src:
            return  # a detectron2 that does not force device_ids, or handles CPU itself

        @functools.wraps(original)
        def create_ddp_model(model, *, fp16_compression=False, **kwargs):
            from detectron2.utils import comm

            params = list(model.parameters())
            on_cpu = bool(params) and all(p.device.type == "cpu" for p in params)
            if on_cpu and comm.get_world_size() > 1 and "device_ids" not in kwargs:
                kwargs["device_ids"] = None
                converted = _naive_sync_bn(model)
                if converted:
                    logging.getLogger(mod.__name__).info(
                        "CPU processes: %d SyncBatchNorm layer(s) -> NaiveSyncBatchNorm "
                        "(nn.SyncBatchNorm synchronises GPU tensors only)",
                        converted,
                    )
            return original(model, fp16_compression=fp16_compression, **kwargs)

        create_ddp_model._seg_plugins_repaired = True
        mod.create_ddp_model = create_ddp_model  # DefaultTrainer looks the name up here
        engine = sys.modules.get("detectron2.engine")  # re-exported by its star import
        if engine is not None and getattr(engine, "create_ddp_model", None) is original:
            engine.create_ddp_model = create_ddp_model
        _record(
            "ddp_on_cpu",
            "create_ddp_model: no device_ids and NaiveSyncBatchNorm for a model on the CPU",
        )

    when_imported("detectron2.engine.defaults", patch)


# --------------------------------------------------------------------------- official main
_DEFORM_CPU_MESSAGE = "not supported on CPUs"


def _repair_deform_conv_on_cpu() -> None:
    """A detectron2 built with its ``_C`` (official main, or v0.6 built from git) runs
    deformable convolution through its own CUDA kernels only: on CPU tensors its backward
    (and the modulated forward) raise "Deformable Conv is not supported on CPUs!". CPU
    tensors now go through ``torchvision.ops.deform_conv2d`` (forward and backward, any
    groups); CUDA tensors keep detectron2's kernel. Without ``_C`` the missing-extension
    repair routes every device to torchvision already."""
    if not has_compiled_ops():
        return
    if _DEFORM_CPU_MESSAGE not in _module_source("detectron2.layers.deform_conv"):
        return  # a detectron2 whose kernels run on CPU itself

    import functools

    from . import ops

    def on_cpu_via_torchvision(original, replacement):
        @functools.wraps(original)
        def dispatch(input, *args, **kwargs):
            if input.is_cuda:
                return original(input, *args, **kwargs)
            return replacement(input, *args, **kwargs)

        dispatch._seg_plugins_repaired = True
        return dispatch

    def patch(mod):
        if getattr(mod.deform_conv, "_seg_plugins_repaired", False):
            return
        # DeformConv / ModulatedDeformConv.forward look these module globals up per call
        mod.deform_conv = on_cpu_via_torchvision(mod.deform_conv, ops.deform_conv)
        mod.modulated_deform_conv = on_cpu_via_torchvision(
            mod.modulated_deform_conv, ops.modulated_deform_conv
        )
        _record(
            "deform_conv_cpu",
            "DeformConv/ModulatedDeformConv on CPU tensors -> torchvision.ops.deform_conv2d "
            "(CUDA tensors keep detectron2's kernel)",
        )

    when_imported("detectron2.layers.deform_conv", patch)


_CITYSCAPES_INTERNAL = "deeplearning.projects.cityscapesApi.cityscapesscripts"


class _AliasLoader(importlib.abc.Loader):
    """Loads a module name as another, already importable module (the same object)."""

    def __init__(self, target: str):
        self.target = target
        self._spec = None

    def create_module(self, spec):
        module = importlib.import_module(self.target)
        self._spec = module.__spec__
        return module

    def exec_module(self, module):
        # the target has executed already; the import system has just set its __spec__ to
        # the alias': give it back its own (its __name__, __file__ and __path__ are kept)
        module.__spec__ = self._spec


class _CityscapesInternalPathFinder(importlib.abc.MetaPathFinder):
    """Resolves ``deeplearning.projects.cityscapesApi.cityscapesscripts[.X]`` (a module path
    internal to Meta that official detectron2 main imports) to the public
    ``cityscapesscripts[.X]``; its parent packages are empty stand-ins. Installed only where
    no ``deeplearning`` package exists, first in ``sys.meta_path``: the path finder would
    otherwise load the scripts a second time, as other module objects, through the aliased
    package's ``__path__``."""

    PARENTS = ("deeplearning", "deeplearning.projects", "deeplearning.projects.cityscapesApi")

    def find_spec(self, fullname, path, target=None):
        import importlib.machinery

        if fullname in self.PARENTS:
            spec = importlib.machinery.ModuleSpec(fullname, None, is_package=True)
            spec.submodule_search_locations = []
            return spec
        if fullname == _CITYSCAPES_INTERNAL or fullname.startswith(_CITYSCAPES_INTERNAL + "."):
            public = "cityscapesscripts" + fullname[len(_CITYSCAPES_INTERNAL):]
            if importlib.util.find_spec(public.split(".")[0]) is None:
                return None  # the usual ModuleNotFoundError; the evaluators name the package
            return importlib.util.spec_from_loader(fullname, _AliasLoader(public))
        return None


def _repair_cityscapes_internal_import() -> None:
    """Since Dec 2024 detectron2's Cityscapes evaluators import the official evaluation
    scripts from ``deeplearning.projects.cityscapesApi.cityscapesscripts``, a path that
    exists only inside Meta: on official main both ``CityscapesSemSegEvaluator`` and
    ``CityscapesInstanceEvaluator`` fail with ModuleNotFoundError. That path now resolves to
    the public ``cityscapesscripts`` package (the same module objects)."""
    if _CITYSCAPES_INTERNAL not in _module_source("detectron2.evaluation.cityscapes_evaluation"):
        return
    if importlib.util.find_spec("deeplearning") is not None:
        return  # inside Meta, where the path is real
    if not any(isinstance(f, _CityscapesInternalPathFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _CityscapesInternalPathFinder())
    _record(
        "cityscapes_internal_import",
        f"{_CITYSCAPES_INTERNAL}.* -> the public cityscapesscripts package",
    )


_REPAIRS: List[Callable[[], None]] = [
    _repair_importlib_abc,
    _repair_pillow_linear,
    _repair_numpy_aliases,
    _repair_pkg_resources,
    _repair_missing_extension,
    _repair_lr_scheduler_hook,
    _repair_export_without_caffe2,
    _repair_cityscapes_json,
    _repair_numpy_in1d,
    _repair_map_dataset_fallback,
    _repair_ddp_on_cpu,
    _repair_deform_conv_on_cpu,
    _repair_cityscapes_internal_import,
]


@contextlib.contextmanager
def quiet_jit_script_deprecation() -> Iterator[None]:
    """Hide torch's ``FutureWarning: `torch.jit.script` is deprecated`` while the block runs.

    detectron2 (``modeling/box_regression.py``) and fvcore (``nn/focal_loss.py``) script a
    few functions with ``torch.jit.script`` when imported; torch >= 2.9 warns about every
    call, a warning that tells a seg_plugins user nothing they can act on. ``seg_plugins``
    imports detectron2 inside this block (the one place it is silenced), so the filter holds
    only for those imports: a ``torch.jit.script`` call of the user's own still warns
    (tests/compat/test_jit_warning.py).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="`torch.jit.script` is deprecated", category=FutureWarning
        )
        yield


def apply() -> Dict[str, str]:
    """Detect and apply every repair (idempotent). Returns :func:`applied_repairs`."""
    global _DONE
    with _LOCK:
        if not _DONE:
            if importlib.util.find_spec("detectron2") is None:
                raise ImportError(
                    "seg_plugins needs detectron2, which is not installed in this Python "
                    f"({sys.executable}). Run `make setup` (tools/setup_env.sh) or install it: "
                    "see README.md, section Installation."
                )
            for repair in _REPAIRS:
                repair()
            _DONE = True
    return applied_repairs()
