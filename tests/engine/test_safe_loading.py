"""Safe loading (seg_plugins.engine.checkpoint.SafeCheckpointer): detectron2 .pkl
model-zoo layouts still load; files that would run code are refused unless trusted and run
nothing; truncated / corrupt / missing files, another architecture and shape mismatches
name the file and the keys; resuming is strict; the Trainer and the config loader use all
of it (an unsafe YAML tag is refused, not executed)."""

import argparse
import logging
import os
import pickle
from collections import OrderedDict
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

import seg_plugins  # noqa: F401  (first: repairs detectron2 where needed)

# isort: split
from detectron2.config import get_cfg

from seg_plugins import add_seg_plugins_config
from seg_plugins.data.shapes import register_shapes
from seg_plugins.engine.checkpoint import (
    AtomicCheckpointer,
    CheckpointError,
    SafeCheckpointer,
    safe_pickle_load,
)
from seg_plugins.engine.cli import ConfigError, setup_cfg
from seg_plugins.engine.trainer import Trainer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Net(nn.Module):
    def __init__(self, width: int = 4, classes: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3)
        self.bn = nn.BatchNorm2d(width)
        self.predictor = nn.Conv2d(width, classes, 1)


def _random_state(model: nn.Module, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g).to(v.dtype) for k, v in model.state_dict().items()}


class _Marker:
    """Unpickling this creates a file (stands in for os.system): proof that code ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture
def log_text():
    """The records of our logger and fvcore's checkpointer logger (either may have been set
    not to propagate by an earlier test's setup_logger, so caplog alone could miss them)."""
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Keep(level=logging.INFO)
    loggers = [logging.getLogger("seg_plugins"), logging.getLogger("fvcore")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
    yield lambda: "\n".join(records)
    for lg, level in zip(loggers, levels):
        lg.removeHandler(handler)
        lg.setLevel(level)


# ----------------------------------------------------------------------------- .pkl files
@pytest.mark.parametrize("protocol", [2, 5])
@pytest.mark.parametrize("layout", ["detectron2", "caffe2_blobs"])
def test_model_zoo_pkl_layouts_load_without_full_pickle(tmp_path, protocol, layout):
    # (Caffe2 blob names are renamed by detectron2's heuristics, e.g. "bn" -> "norm": the
    # C2-named layout is tested with a conv-only model; tests/modeling covers real names)
    model = Net() if layout == "detectron2" else nn.Sequential(nn.Conv2d(3, 4, 3))
    weights = _random_state(model)
    arrays = OrderedDict((k, v.numpy()) for k, v in weights.items())
    if layout == "detectron2":
        data = {"model": arrays, "__author__": "test", "step": np.int64(7)}
    else:  # Detectron / Caffe2: bare blobs, solver momenta dropped by the loader
        data = {"blobs": {**arrays, "0.weight_momentum": arrays["0.weight"]}}
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    SafeCheckpointer(model).load(str(path))
    for key, value in model.state_dict().items():
        assert torch.equal(value, weights[key]), key


def test_pkl_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"model": {}, "__author__": "x", "x": _Marker(str(marker))}))
    with pytest.raises(
        CheckpointError,
        match=r"evil.pkl contains Python objects other than "
        r"tensors .*(builtins|io).open.*MODEL.WEIGHTS_TRUSTED",
    ):
        SafeCheckpointer(Net()).load(str(path))
    assert not marker.exists()
    with open(path, "rb") as f, pytest.raises(pickle.UnpicklingError, match="(builtins|io).open"):
        safe_pickle_load(f)
    assert not marker.exists()


# ----------------------------------------------------------------------------- .pth files
def test_pth_with_python_objects_needs_trust_and_warns(tmp_path, log_text):
    model = Net()
    weights = _random_state(model)
    path = tmp_path / "old_style.pth"
    # old training scripts saved their argparse namespace next to the weights
    torch.save({"model": weights, "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(
        CheckpointError,
        match=r"old_style.pth contains Python objects .*"
        r"GLOBAL argparse.Namespace.*MODEL.WEIGHTS_TRUSTED True",
    ):
        SafeCheckpointer(model).load(str(path))
    assert not torch.equal(model.conv.weight, weights["conv.weight"])
    SafeCheckpointer(model, trusted=True).load(str(path))
    assert torch.equal(model.conv.weight, weights["conv.weight"])
    assert "MODEL.WEIGHTS_TRUSTED is set" in log_text() and "runs any code" in log_text()


def test_plain_state_dict_and_full_checkpoint_load(tmp_path):
    model = Net()
    weights = _random_state(model)
    torch.save(weights, tmp_path / "bare.pth")  # torchvision style: the state_dict alone
    SafeCheckpointer(model).load(str(tmp_path / "bare.pth"))
    assert torch.equal(model.predictor.weight, weights["predictor.weight"])


def _truncated(tmp_path, suffix):
    model = Net()
    good = tmp_path / f"good{suffix}"
    if suffix == ".pkl":
        good.write_bytes(
            pickle.dumps(
                {
                    "model": {k: v.numpy() for k, v in _random_state(model).items()},
                    "__author__": "t",
                }
            )
        )
    else:
        torch.save({"model": _random_state(model)}, good)
    data = good.read_bytes()
    return {
        "half": data[: len(data) // 2],
        "empty": b"",
        "garbage": bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8)),
        "one_byte_flipped_header": bytes([data[0] ^ 0xFF]) + data[1:],
    }


@pytest.mark.parametrize("suffix", [".pth", ".pkl"])
def test_truncated_or_corrupt_files_name_the_file(tmp_path, suffix):
    for kind, data in _truncated(tmp_path, suffix).items():
        path = tmp_path / f"{kind}{suffix}"
        path.write_bytes(data)
        with pytest.raises(
            CheckpointError,
            match=rf"{kind}{suffix}.*(truncated or corrupt|"
            r"not a dict|other than tensors)",
        ):
            SafeCheckpointer(Net()).load(str(path))


def test_missing_file_names_the_key(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope.pth not found; check MODEL.WEIGHTS"):
        SafeCheckpointer(Net()).load(str(tmp_path / "nope.pth"))


# ----------------------------------------------------------------------------- fit to the model
def test_another_architecture_is_an_error_naming_its_keys(tmp_path):
    torch.save({"model": nn.Linear(5, 2).state_dict()}, tmp_path / "linear.pth")
    with pytest.raises(
        CheckpointError,
        match=r"linear.pth: none of the model's 8 tensors is "
        r"in it \(it has 2: weight, bias\); .*another architecture",
    ):
        SafeCheckpointer(Net()).load(str(tmp_path / "linear.pth"))


def test_new_number_of_classes_reinitialises_only_the_classifier(tmp_path, log_text):
    source = Net(classes=5)
    weights = _random_state(source)
    torch.save({"model": weights}, tmp_path / "five.pth")
    model = Net(classes=3)
    kept = model.predictor.weight.clone()
    SafeCheckpointer(model).load(str(tmp_path / "five.pth"))
    assert torch.equal(model.conv.weight, weights["conv.weight"])
    assert torch.equal(model.predictor.weight, kept)  # left initialised
    assert (
        "another number of outputs" in log_text() and "predictor.weight [5, 4, 1, 1]" in log_text()
    )
    with pytest.raises(
        CheckpointError,
        match=r"five.pth does not fit the model: "
        r"predictor.weight \[5, 4, 1, 1\] in the file vs \[3, 4, 1, 1\]",
    ):
        SafeCheckpointer(Net(classes=3), shape_mismatch="error").load(str(tmp_path / "five.pth"))


def test_other_shape_mismatch_is_an_error_unless_skipped(tmp_path):
    torch.save({"model": _random_state(Net(width=8))}, tmp_path / "wide.pth")
    with pytest.raises(
        CheckpointError,
        match=r"wide.pth does not fit the model: predictor."
        r"weight \[3, 8, 1, 1\] in the file vs \[3, 4, 1, 1\].*'skip'",
    ):
        SafeCheckpointer(Net(width=4)).load(str(tmp_path / "wide.pth"))
    SafeCheckpointer(Net(width=4), shape_mismatch="skip").load(str(tmp_path / "wide.pth"))
    with pytest.raises(ValueError, match="WEIGHTS_SHAPE_MISMATCH='bad'"):
        SafeCheckpointer(Net(), shape_mismatch="bad")


def test_resume_is_strict_but_fine_tuning_from_the_same_file_is_not(tmp_path):
    AtomicCheckpointer(Net(), str(tmp_path)).save("model_0000009")

    class Bigger(Net):
        def __init__(self):
            super().__init__()
            self.extra = nn.Linear(2, 2)

    with pytest.raises(
        CheckpointError,
        match=r"cannot resume from .*model_0000009.pth: it does "
        r"not match the model \(missing: extra.weight, extra.bias\)",
    ):
        AtomicCheckpointer(Bigger(), str(tmp_path)).resume_or_load("", resume=True)
    path = str(tmp_path / "model_0000009.pth")
    AtomicCheckpointer(Bigger(), str(tmp_path / "new")).resume_or_load(path, resume=False)
    AtomicCheckpointer(Net(), str(tmp_path)).resume_or_load("", resume=True)  # same model: fine


# ----------------------------------------------------------------------------- wiring
def _shapes_cfg(tmp_path, **overrides):
    register_shapes(
        "safe", root=str(tmp_path / "data"), num_train=4, num_val=2, image_size=32, seed=0
    )
    cfg = get_cfg()
    add_seg_plugins_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", "shapes", "unet_shapes.yaml"))
    cfg.merge_from_list(
        [
            "MODEL.DEVICE",
            "cpu",
            "DATASETS.TRAIN",
            ("safe_train",),
            "DATASETS.TEST",
            ("safe_val",),
            "MODEL.UNET.BASE_CHANNELS",
            4,
            "MODEL.UNET.DEPTH",
            2,
            "OUTPUT_DIR",
            str(tmp_path / "out"),
            "DATALOADER.NUM_WORKERS",
            0,
        ]
    )
    for key, value in overrides.items():
        cfg.merge_from_list([key, value])
    return cfg


def test_trainer_refuses_untrusted_weights_and_loads_them_when_trusted(tmp_path):
    cfg = _shapes_cfg(tmp_path)
    model = Trainer.build_model(cfg)
    path = str(tmp_path / "unet_with_args.pth")
    torch.save({"model": model.state_dict(), "args": argparse.Namespace(x=1)}, path)
    cfg.MODEL.WEIGHTS = path
    with pytest.raises(CheckpointError, match="unet_with_args.pth contains Python objects"):
        Trainer(cfg).resume_or_load(resume=False)
    cfg.MODEL.WEIGHTS_TRUSTED = True
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    for key, value in model.state_dict().items():
        assert torch.equal(trainer.model.state_dict()[key], value), key


def test_yaml_tags_that_build_python_objects_are_refused_not_run(tmp_path):
    marker = tmp_path / "yaml_code_ran"
    config = tmp_path / "evil.yaml"
    config.write_text(
        f"_BASE_: {os.path.join(REPO, 'configs', 'shapes', 'unet_shapes.yaml')}\n"
        f"OUTPUT_DIR: !!python/object/apply:os.system ['touch {marker}']\n"
    )
    args = SimpleNamespace(config_file=str(config), opts=[], num_gpus=1)
    with pytest.raises(
        ConfigError,
        match=r"evil.yaml \(line 2\): a YAML tag asks to build a "
        r"Python object",
    ):
        setup_cfg(args)
    assert not marker.exists()
