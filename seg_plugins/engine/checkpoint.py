"""Checkpoints that survive a kill and files that are not trusted.

Loading (:class:`SafeCheckpointer`, for every checkpoint the package loads: MODEL.WEIGHTS,
``--resume``, ``--eval-only``, tools/predict.py):

- ``.pth`` / ``.pyth`` files load with ``torch.load(weights_only=True)`` and detectron2
  ``.pkl`` model-zoo files with an unpickler that accepts only what those hold (dicts,
  NumPy arrays and scalars): a file that would run code when unpickled is refused, naming
  the file and the object, unless MODEL.WEIGHTS_TRUSTED is set (logged as a warning).
- A missing, truncated or corrupt file, a file of another architecture (none of the model's
  tensors in it) and shape mismatches raise :class:`CheckpointError` naming the file and
  the keys. MODEL.WEIGHTS_SHAPE_MISMATCH decides which mismatches are allowed: "outputs"
  (default) re-initialises layers whose number of outputs differs, e.g. a classifier
  fine-tuned to new classes, as detectron2 does, and refuses every other mismatch (another
  architecture's layer would otherwise be skipped with only a log line); "error" refuses
  all; "skip" is detectron2's behaviour (every mismatch skipped and logged).
- Resuming (``--resume`` with a ``last_checkpoint``) is strict: the checkpoint was written
  by this run's model, so any missing, unexpected or mismatched key is an error.

Saving (:class:`AtomicCheckpointer`):

fvcore's ``Checkpointer.save`` streams ``torch.save`` straight into ``<name>.pth`` and then
rewrites ``last_checkpoint`` in place: a run killed (or out of disk) during either write
leaves a truncated file that ``--resume`` then fails on, or, worse, points at. Here both go
through :func:`seg_plugins.utils.file_io.atomic_open` (temporary file in the same folder,
fsync, ``os.replace``): at any moment each file is either its previous complete version or
the new complete one. A failed write (``OSError``: disk full, quota, permissions) leaves the
previous checkpoint and ``last_checkpoint`` untouched and says so.

The config in a checkpoint (weights that carry their config):

Every checkpoint an :class:`AtomicCheckpointer` built by ``from_config`` saves (the Trainer's
``model_XXXXXXX.pth`` and ``model_final.pth``) also holds, under ``"config"``, the YAML text
of the run's config (``cfg.dump()``): a plain string, so the file still loads with
``weights_only=True`` and with detectron2's own ``DetectionCheckpointer``, which ignores the
key. :func:`saved_config` reads it back; :func:`config_from_checkpoint` builds a config from
it (parsed with ``yaml.safe_load``: a YAML tag that would build a Python object is refused),
or from an explicit config file, which wins, logging where the two differ. Checkpoints
without one (older seg_plugins files, detectron2's model zoo, converted torchvision
weights) load as before; building a config for them needs the config file.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import random
import re
import zipfile
from collections.abc import Iterable, Sequence
from typing import Optional

import numpy as np
import torch
import yaml
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode, get_cfg
from detectron2.utils.file_io import PathManager

from ..data.resumable import ResumableTrainLoader
from ..utils.file_io import atomic_open, atomic_write_text

__all__ = [
    "AtomicCheckpointer",
    "CONFIG_KEY",
    "CheckpointError",
    "SafeCheckpointer",
    "SHAPE_MISMATCH_POLICIES",
    "config_difference",
    "config_from_checkpoint",
    "load_resume_state",
    "log_config_difference",
    "merge_saved_config",
    "no_config_message",
    "resume_state",
    "rng_state",
    "safe_pickle_load",
    "saved_config",
    "set_rng_state",
    "trim_metrics_for_resume",
]

logger = logging.getLogger(__name__)

SHAPE_MISMATCH_POLICIES = ("outputs", "error", "skip")

CONFIG_KEY = "config"  # the checkpoint's entry holding the run's config as YAML text

# atomic_open's temporary files for checkpoints and last_checkpoint
_STALE = re.compile(r"^\.(.+\.pth|last_checkpoint)\.[^.]+\.tmp$")

# What detectron2 / Detectron / Caffe2 model-zoo pickles hold: dicts (plain or ordered) of
# NumPy arrays and scalars, strings, numbers. Protocol-2 pickles spell bytes as
# _codecs.encode(str, "latin1"). Nothing here can run code beyond building those objects.
_PICKLE_ALLOWED = {
    ("collections", "OrderedDict"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class CheckpointError(RuntimeError):
    """A checkpoint that cannot (or must not) be loaded; the message names the file."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module.startswith("numpy.core"):  # NumPy 1.x names; NumPy 2 moved them to _core
            module = "numpy._core" + module[len("numpy.core") :]
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}")
        return super().find_class(module, name)


def safe_pickle_load(f) -> object:
    """``pickle.load(f, encoding="latin1")`` (as detectron2 reads its .pkl files) that only
    builds dicts, lists, strings, numbers and NumPy arrays; anything else (a class, a
    function such as ``os.system``) raises ``pickle.UnpicklingError`` before it is called."""
    return _RestrictedUnpickler(f, encoding="latin1").load()


def _is_output_count_change(checkpoint_shape, model_shape) -> bool:
    """Shapes that differ only in their first dimension: a layer with another number of
    outputs (e.g. classes), the rest of the architecture being the same."""
    return (
        len(checkpoint_shape) == len(model_shape) >= 1
        and tuple(checkpoint_shape[1:]) == tuple(model_shape[1:])
        and checkpoint_shape[0] != model_shape[0]
    )


def _some(keys, n: int = 8) -> str:
    keys = list(keys)
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


class SafeCheckpointer(DetectionCheckpointer):
    """detectron2's ``DetectionCheckpointer`` with safe loading (module docstring).

    Args:
        model, save_dir, checkpointables: as ``DetectionCheckpointer``.
        trusted: load with full pickle (MODEL.WEIGHTS_TRUSTED): for files you trust only.
        shape_mismatch: "outputs", "error" or "skip" (MODEL.WEIGHTS_SHAPE_MISMATCH).

    Example::

        SafeCheckpointer.from_config(cfg, model).load(cfg.MODEL.WEIGHTS)
    """

    def __init__(
        self,
        model,
        save_dir: str = "",
        *,
        trusted: bool = False,
        shape_mismatch: str = "outputs",
        **checkpointables,
    ):
        super().__init__(model, save_dir, **checkpointables)
        if shape_mismatch not in SHAPE_MISMATCH_POLICIES:
            raise ValueError(
                f"MODEL.WEIGHTS_SHAPE_MISMATCH={shape_mismatch!r}; use one of "
                f"{list(SHAPE_MISMATCH_POLICIES)}"
            )
        self.trusted = bool(trusted)
        self.shape_mismatch = shape_mismatch
        self._strict = False
        self._file = ""
        # what the last load() left out: fvcore's _IncompatibleKeys (missing_keys,
        # unexpected_keys, incorrect_shapes), or None before any load
        self.last_incompatible = None

    @classmethod
    def from_config(cls, cfg, model, save_dir: str = "", **checkpointables):
        return cls(
            model,
            save_dir,
            trusted=cfg.MODEL.WEIGHTS_TRUSTED,
            shape_mismatch=cfg.MODEL.WEIGHTS_SHAPE_MISMATCH,
            **checkpointables,
        )

    def resume_or_load(self, path: str, *, resume: bool = True):
        """detectron2's; strict when it resumes from this folder's ``last_checkpoint``."""
        self._strict = resume and self.has_checkpoint()
        try:
            return super().resume_or_load(path, resume=resume)
        finally:
            self._strict = False

    def load(self, path: str, checkpointables=None):
        if path and "://" not in path and not os.path.isfile(path):
            raise CheckpointError(
                f"checkpoint {path} not found; check MODEL.WEIGHTS (or the "
                f"last_checkpoint file of the output folder)"
            )
        return super().load(path, checkpointables)

    def _load_file(self, filename: str):
        self._file = filename
        if self.trusted:
            logger.warning(
                f"MODEL.WEIGHTS_TRUSTED is set: {filename} is loaded with full pickle, which "
                "runs any code the file contains; only for files you made or trust"
            )
        try:
            if filename.endswith(".pkl"):
                data = self._load_pkl(filename)
            elif filename.endswith(".pyth"):  # pycls: detectron2's conversion; its
                data = super()._load_file(filename)  # torch.load has weights_only=True
            else:
                with open(filename, "rb") as f:
                    data = torch.load(f, map_location="cpu", weights_only=not self.trusted)
                if not isinstance(data, dict):
                    raise CheckpointError(
                        f"checkpoint {filename} holds a {type(data).__name__}, not a dict of "
                        "tensors (a state_dict or {'model': state_dict, ...})"
                    )
                if "model" not in data:
                    data = {"model": data}
        except CheckpointError:
            raise
        except pickle.UnpicklingError as err:
            raise self._unpickling_error(filename, err) from None
        except (EOFError, RuntimeError, zipfile.BadZipFile, ValueError, OSError) as err:
            raise CheckpointError(
                f"checkpoint {filename} ({_size(filename)}) is truncated or corrupt: "
                f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}; "
                "download it again or use an earlier checkpoint"
            ) from None
        if not isinstance(data.get("model"), dict):
            raise CheckpointError(
                f"checkpoint {filename}: its 'model' entry is a "
                f"{type(data.get('model')).__name__}, not a dict of tensors"
            )
        return data

    def _load_pkl(self, filename: str) -> dict:
        """detectron2's .pkl layouts (its model zoo; Caffe2 / Detectron blobs), read with
        :func:`safe_pickle_load` unless trusted."""
        with open(filename, "rb") as f:
            data = pickle.load(f, encoding="latin1") if self.trusted else safe_pickle_load(f)
        if not isinstance(data, dict):
            raise CheckpointError(
                f"checkpoint {filename} holds a {type(data).__name__}, not a dict of arrays"
            )
        if "model" in data and "__author__" in data:  # detectron2 model-zoo layout
            self.logger.info(f"Reading a file from '{data['__author__']}'")
            return data
        blobs = data.get("blobs", data)  # detection models keep theirs under "blobs"
        blobs = {k: v for k, v in blobs.items() if not k.endswith("_momentum")}
        return {"model": blobs, "__author__": "Caffe2", "matching_heuristics": True}

    def _unpickling_error(self, filename: str, err: Exception) -> CheckpointError:
        text = str(err)
        refused = "refers to" in text or "Weights only load failed" in text
        if not refused:
            return CheckpointError(
                f"checkpoint {filename} ({_size(filename)}) is truncated or corrupt: {text}; "
                "download it again or use an earlier checkpoint"
            )
        what = text if "refers to" in text else _weights_only_culprit(text)
        return CheckpointError(
            f"checkpoint {filename} contains Python objects other than tensors and arrays "
            f"({what}); loading it could run code from the file, so it was refused. If you "
            "made the file or trust its source, set MODEL.WEIGHTS_TRUSTED True; better, save "
            "only the state_dict: torch.save({'model': model.state_dict()}, path)"
        )

    def _load_model(self, checkpoint):
        # BatchNorm's step counter is not a weight (and fvcore never reports it missing)
        model_keys = {k for k in self.model.state_dict() if not k.endswith("num_batches_tracked")}
        theirs = list(checkpoint.get("model", {}))  # fvcore pops "model"
        incompatible = super()._load_model(checkpoint)
        self.last_incompatible = incompatible
        wrong = [(k, tuple(a), tuple(b)) for k, a, b in incompatible.incorrect_shapes]
        loaded = model_keys - set(incompatible.missing_keys) - {k for k, _, _ in wrong}
        name = self._file or "the checkpoint"
        if model_keys and not loaded:
            raise CheckpointError(
                f"{name}: none of the model's {len(model_keys)} tensors is in it (it has "
                f"{len(theirs)}: {_some(theirs, 5)}); it is a checkpoint of another "
                "architecture. Check MODEL.WEIGHTS against MODEL.META_ARCHITECTURE and the "
                "backbone"
            )
        shapes = _shape_list(wrong)
        if self._strict:
            problems = []
            if wrong:
                problems.append(f"shapes differ: {shapes}")
            if incompatible.missing_keys:
                problems.append(f"missing: {_some(incompatible.missing_keys)}")
            if incompatible.unexpected_keys:
                problems.append(f"not in the model: {_some(incompatible.unexpected_keys)}")
            if problems:
                raise CheckpointError(
                    f"cannot resume from {name}: it does not match the model ("
                    + "; ".join(problems)
                    + "). Resume with the config the run was started with, or start a new "
                    "OUTPUT_DIR"
                )
        if self.shape_mismatch == "skip" or not wrong:
            return incompatible
        bad = [
            (k, a, b)
            for k, a, b in wrong
            if self.shape_mismatch == "error" or not _is_output_count_change(a, b)
        ]
        if bad:
            listed = _shape_list(bad)
            raise CheckpointError(
                f"{name} does not fit the model: {listed}. A different architecture or width "
                "(compare the config the file was trained with); set "
                "MODEL.WEIGHTS_SHAPE_MISMATCH to 'skip' to leave these layers initialised"
                if self.shape_mismatch == "outputs"
                else f"{name} does not fit the model: {listed} (MODEL.WEIGHTS_SHAPE_MISMATCH "
                "is 'error'; 'outputs' re-initialises layers whose number of outputs differs)"
            )
        self.logger.warning(
            f"{name}: {len(wrong)} layer(s) have another number of outputs and are left "
            f"initialised (fine-tuning to new classes?): {shapes}"
        )
        return incompatible


def _shape_list(mismatches) -> str:
    return ", ".join(
        f"{k} {list(a)} in the file vs {list(b)} in the model" for k, a, b in mismatches
    )


def _size(path: str) -> str:
    try:
        return f"{os.path.getsize(path)} bytes"
    except OSError:
        return "unreadable"


def _weights_only_culprit(text: str) -> str:
    """The global named in torch's weights_only refusal, e.g. 'GLOBAL posix.system'."""
    match = re.search(r"(?i)unsupported global:? (GLOBAL [\w.]+)", text)
    return match.group(1) if match else text.splitlines()[0]


class AtomicCheckpointer(SafeCheckpointer):
    """:class:`SafeCheckpointer` whose ``save`` and ``tag_last_checkpoint`` are atomic. On
    creation it removes the temporary files of saves that a kill interrupted
    (``.<name>.pth.<random>.tmp`` in its folder).

    Args:
        model, save_dir, trusted, shape_mismatch, checkpointables: as
            :class:`SafeCheckpointer`.
        config_yaml: YAML text of the run's config, saved in every checkpoint under
            :data:`CONFIG_KEY` (module docstring); None saves none. ``from_config`` sets it
            to ``cfg.dump()`` unless given.
    """

    def __init__(self, model, save_dir: str = "", *, config_yaml: Optional[str] = None, **kwargs):
        super().__init__(model, save_dir, **kwargs)
        if config_yaml is not None and not isinstance(config_yaml, str):
            raise TypeError(
                f"config_yaml must be the config's YAML text (cfg.dump()), got a "
                f"{type(config_yaml).__name__}"
            )
        self.config_yaml = config_yaml
        if self.save_dir and self.save_to_disk and os.path.isdir(self.save_dir):
            stale = [n for n in os.listdir(self.save_dir) if _STALE.match(n)]
            for name in stale:
                os.unlink(os.path.join(self.save_dir, name))
            if stale:
                self.logger.info(f"Removed {len(stale)} interrupted checkpoint write(s): {stale}")

    @classmethod
    def from_config(
        cls, cfg, model, save_dir: str = "", *, config_yaml: Optional[str] = None, **checkpointables
    ):
        checkpointer = super().from_config(cfg, model, save_dir, **checkpointables)
        checkpointer.config_yaml = config_yaml if config_yaml is not None else _dump(cfg)
        return checkpointer

    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        if self.config_yaml is not None:
            data[CONFIG_KEY] = self.config_yaml
        data.update(kwargs)
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {path}")
        try:
            with atomic_open(path, "wb") as f:
                torch.save(data, f)
        except OSError as err:
            last = self._last_checkpoint_name()
            kept = f"the previous checkpoint {last!r} is intact" if last else "none saved before"
            raise OSError(
                err.errno,
                f"could not save checkpoint {path}: {err.strerror or err}; nothing was "
                f"replaced ({kept}). Free disk space (or point OUTPUT_DIR elsewhere) and "
                f"resume with --resume",
            ) from err
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        atomic_write_text(os.path.join(self.save_dir, "last_checkpoint"), last_filename_basename)

    def _last_checkpoint_name(self) -> str:
        path = os.path.join(self.save_dir, "last_checkpoint")
        try:
            with open(path) as f:
                return f.read().strip()
        except OSError:
            return ""


# ------------------------------------------------------------------ the config in a checkpoint
_MAX_LOGGED_DIFFERENCES = 20
_MISSING = object()  # a key only one of two configs has


def _dump(cfg) -> Optional[str]:
    """``cfg.dump()``, or None (with a warning) for a config holding values YAML cannot
    write: the run goes on, its checkpoints without their config."""
    try:
        return cfg.dump()
    except Exception as err:  # yacs asserts valid types; safe_dump raises RepresenterError
        logger.warning(
            f"the config cannot be written as YAML ({type(err).__name__}: {err}); checkpoints "
            "of this run will not carry it: keep its config file beside them"
        )
        return None


def _read_checkpoint(path: str) -> dict:
    """The checkpoint's dict, read as :class:`SafeCheckpointer` reads it (weights_only /
    the restricted unpickler; never full pickle)."""
    local = PathManager.get_local_path(path) if "://" in path else path
    if not os.path.isfile(local):
        raise CheckpointError(f"checkpoint {path} not found")
    return SafeCheckpointer(torch.nn.Module())._load_file(local)


def saved_config(path: str) -> Optional[str]:
    """The YAML text of the config saved in the checkpoint ``path`` (:data:`CONFIG_KEY`);
    None when it holds none (older seg_plugins checkpoints, detectron2 model-zoo .pkl,
    converted torchvision weights).

    The file is read as :class:`SafeCheckpointer` reads it, never with full pickle.

    Raises:
        CheckpointError: the file is missing, unreadable, or holds Python objects.
    """
    text = _read_checkpoint(path).get(CONFIG_KEY)
    if text is not None and not isinstance(text, str):
        logger.info(f"{path}: its {CONFIG_KEY!r} entry is a {type(text).__name__}, not ours")
        return None
    return text


def _base_cfg() -> CfgNode:
    from ..config import add_seg_plugins_config

    return add_seg_plugins_config(get_cfg())


def merge_saved_config(cfg: CfgNode, text: str, path: str) -> None:
    """Merge the config text saved in ``path`` into ``cfg``, parsed with ``yaml.safe_load``."""
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise CheckpointError(
            f"the config saved in {path} is not plain YAML and was not loaded "
            f"({str(err).splitlines()[0]}): a YAML tag that builds Python objects is refused. "
            "Pass the run's config file, e.g. --config-file path/config.yaml"
        ) from None
    if not isinstance(loaded, dict):
        raise CheckpointError(
            f"the config saved in {path} is a YAML {type(loaded).__name__}, not a mapping of "
            "keys; pass the run's config file, e.g. --config-file path/config.yaml"
        )
    version = loaded.get("VERSION", cfg.VERSION)
    if version != cfg.VERSION:
        raise CheckpointError(
            f"the config saved in {path} is a detectron2 config of VERSION {version}, this "
            f"detectron2 reads VERSION {cfg.VERSION}; pass a config file, e.g. --config-file"
        )
    try:
        cfg.merge_from_other_cfg(type(cfg)(loaded))
    except KeyError as err:
        key = str(err.args[0] if err.args else err).replace("Non-existent config key: ", "")
        raise CheckpointError(
            f"the config saved in {path} has the key {key}, which this install does not know "
            "(a key added by a config function not applied here, e.g. your project's "
            "add_*_config): apply that function to a config and pass it as base_cfg=, or pass "
            "a config file with --config-file"
        ) from None
    except (AssertionError, ValueError) as err:  # yacs: invalid type, type mismatch
        raise CheckpointError(f"the config saved in {path} does not load: {err}") from None


def _as_lists(value):
    """Tuples as lists, nested too: YAML has lists only (yacs restores the outer tuple)."""
    if isinstance(value, (list, tuple)):
        return [_as_lists(v) for v in value]
    return value


def _leaves(node, prefix: str = "") -> dict:
    """{"A.B.C": value} of a config's leaves; tuples compare as lists."""
    leaves = {}
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            leaves.update(_leaves(value, f"{name}."))
        else:
            leaves[name] = _as_lists(value)
    return leaves


def config_difference(a: CfgNode, b: CfgNode, *, ignore: Iterable[str] = ()) -> list:
    """Where two configs differ, one ``"KEY: value in a -> value in b"`` string per leaf key
    (sorted; a key only one has shows ``<not set>`` for the other), leaving out ``ignore``."""
    left, right = _leaves(a), _leaves(b)
    skip = set(ignore)
    lines = []
    for key in sorted(set(left) | set(right)):
        if key in skip:
            continue
        x, y = left.get(key, _MISSING), right.get(key, _MISSING)
        if x is _MISSING or y is _MISSING or x != y:
            show = ["<not set>" if v is _MISSING else repr(v) for v in (x, y)]
            lines.append(f"{key}: {show[0]} -> {show[1]}")
    return lines


def log_config_difference(cfg: CfgNode, config_file: str, path: str, saved: CfgNode) -> None:
    """Warn, one line per leaf key, where ``config_file`` (merged into ``cfg``) differs from
    the config saved in ``path`` (merged into ``saved``); the file wins either way."""
    try:
        text = saved_config(path)
        if text is None:
            return
        merge_saved_config(saved, text, path)
    except CheckpointError as err:
        logger.info(f"using {config_file}; the config saved in {path} was not compared: {err}")
        return
    lines = config_difference(saved, cfg, ignore=("MODEL.WEIGHTS",))
    head = f"config file {config_file} differs from the config saved in {path}: "
    for line in lines[:_MAX_LOGGED_DIFFERENCES]:
        logger.warning(head + line)
    if len(lines) > _MAX_LOGGED_DIFFERENCES:
        logger.warning(head + f"... and {len(lines) - _MAX_LOGGED_DIFFERENCES} more")


def no_config_message(path: str) -> str:
    beside = os.path.join(os.path.dirname(path), "config.yaml")
    example = (
        f"--config-file {beside} (the config.yaml beside it, written by the run in its "
        "OUTPUT_DIR)"
        if "://" not in path and os.path.isfile(beside)
        else "--config-file path/config.yaml"
    )
    return (
        f"{path} holds no config (saved before checkpoints carried one, or not by "
        f"seg_plugins): pass its config file, e.g. {example}"
    )


def config_from_checkpoint(
    path: str,
    config_file: Optional[str] = None,
    opts: Sequence = (),
    *,
    base_cfg: Optional[CfgNode] = None,
) -> CfgNode:
    """The config to predict or export with the checkpoint ``path`` alone.

    ``base_cfg`` (default: detectron2's ``get_cfg()`` with ``add_seg_plugins_config``) is
    cloned, then merged with ``config_file`` when given (it wins; where it differs from the
    config saved in the checkpoint, one warning per key is logged), else with the config
    saved in the checkpoint (:func:`saved_config`, parsed with ``yaml.safe_load``); then
    ``opts`` (KEY, VALUE, ...) are merged and MODEL.WEIGHTS is set to ``path``.

    Raises:
        CheckpointError: no config file and none saved in the checkpoint (the message names
            the config.yaml beside it when there is one); a saved config that is not plain
            YAML or has keys this install does not know; an unreadable checkpoint.
        FileNotFoundError: ``config_file`` does not exist.

    Example::

        cfg = config_from_checkpoint("output/unet_shapes/model_final.pth")
        cfg = config_from_checkpoint(weights, opts=["MODEL.DEVICE", "cpu"])
    """
    base = _base_cfg() if base_cfg is None else base_cfg.clone()
    base.defrost()
    cfg = base.clone()
    if config_file:
        if not os.path.isfile(config_file):
            raise FileNotFoundError(f"config file not found: {config_file}")
        cfg.merge_from_file(config_file, allow_unsafe=False)
        log_config_difference(cfg, config_file, path, saved=base)
    else:
        text = saved_config(path)
        if text is None:
            raise CheckpointError(no_config_message(path))
        merge_saved_config(cfg, text, path)
    cfg.merge_from_list(list(opts or ()))
    cfg.MODEL.WEIGHTS = path
    return cfg


def trim_metrics_for_resume(path: str, start_iter: int) -> int:
    """Cut detectron2's ``metrics.json`` (one JSON object per line, appended) back to the
    records of iterations before ``start_iter``, and drop a last line that a kill left
    incomplete, so that a resumed run appends after the checkpoint's iteration: no line
    glued to a half-written one, no iteration logged twice. The file is truncated in place
    (a single ``truncate``; the writer's append-mode handle then writes at the new end).
    Returns the number of lines removed."""
    if not os.path.isfile(path):
        return 0
    with open(path, "rb") as f:
        data = f.read()
    offset, cut = 0, None
    for line in data.splitlines(keepends=True):
        try:
            record = json.loads(line) if line.endswith(b"\n") else None
        except ValueError:
            record = None
        late = isinstance(record, dict) and record.get("iteration", -1) >= start_iter
        if record is None or late:
            cut = offset
            break
        offset += len(line)
    if cut is None:
        return 0
    removed = data[cut:].count(b"\n") + (0 if data.endswith(b"\n") else 1)
    os.truncate(path, cut)
    return removed


# --------------------------------------------------------------------------- resume state
def resume_state(run_loop, scheduler, data_loader) -> dict:
    """What a resumed run needs beyond detectron2's trainer state (iteration, hooks), so
    that it continues exactly as the uninterrupted one: the run loop's state (optimizer,
    gradient scaler, skipped-step count), the LR scheduler's, this process' RNG states
    (dropout and anything else drawn in the main process) and the training data's seed
    (DATALOADER.RESUMABLE's :class:`ResumableTrainLoader`).

    detectron2 v0.6's DefaultTrainer saves neither the optimizer (its SimpleTrainer's state)
    nor a scheduler that is not a private ``_LRScheduler`` subclass (its LRScheduler hook
    skips those): a resume restarted AdamW's moments / SGD's momentum. Official main saves
    the run loop's state under this same key "_trainer" (the same value)."""
    state = {"_trainer": run_loop.state_dict(), "rng": rng_state()}
    if hasattr(scheduler, "state_dict"):
        state["lr_scheduler"] = scheduler.state_dict()
    if isinstance(data_loader, ResumableTrainLoader):
        state["data_seed"] = data_loader.seed
    return state


def load_resume_state(state: dict, run_loop, scheduler, data_loader) -> None:
    """Restore what :func:`resume_state` saved (each part only if the checkpoint has it)."""
    if "_trainer" in state:
        run_loop.load_state_dict(state["_trainer"])
    if "lr_scheduler" in state:
        scheduler.load_state_dict(state["lr_scheduler"])
    if "rng" in state:
        set_rng_state(state["rng"])
    if "data_seed" in state and isinstance(data_loader, ResumableTrainLoader):
        data_loader.seed = int(state["data_seed"])


def rng_state() -> dict:
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


def set_rng_state(state: dict) -> None:
    """Restore the RNG states of :func:`rng_state`."""
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
