"""Export: every semantic model family to ONNX (run by onnxruntime) and
TorchScript (run by torch.jit.load) agrees with the PyTorch model to 1e-4 at two input
sizes, batch included; tools/export_model.py writes and verifies both files; what cannot be
exported is refused with the reason."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import seg_plugins  # noqa: F401  (first: repairs detectron2 where needed)

# isort: split
from detectron2.modeling import build_model

from seg_plugins.export import (
    ExportableSemSeg,
    export_onnx,
    export_torchscript,
    load_exported,
    max_abs_difference,
)
from tests.modeling.seg_model_checks import tiny_model_cfg
from tools import export_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FAMILIES = ["FCN", "UNet", "DeepLabV3", "DeepLabV3Plus"]
SIZES = [(64, 64), (48, 80)]  # two sizes; 48 x 80 is not square, and not the traced size


def _model(case, *opts):
    torch.manual_seed(0)
    model = build_model(tiny_model_cfg(case, *opts)).eval()
    with torch.no_grad():  # BN statistics that are not the identity
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("case", FAMILIES)
def test_export_agrees_with_pytorch_at_two_sizes(case, fmt, tmp_path):
    model = _model(case)
    path = str(tmp_path / ("model.onnx" if fmt == "onnx" else "model.ts"))
    export = export_onnx if fmt == "onnx" else export_torchscript
    export(model, path, example_size=(56, 72))
    diffs = max_abs_difference(path, model, SIZES, batch=2)
    assert set(diffs) == set(SIZES)
    assert max(diffs.values()) <= 1e-4, diffs


def test_exported_model_takes_the_raw_image_of_a_grey_binary_model(tmp_path):
    model = _model("UNet", "INPUT.FORMAT", "L", "MODEL.PIXEL_MEAN", [100.0],
                   "MODEL.PIXEL_STD", [40.0], "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 1)  # fmt: skip
    path = export_onnx(model, str(tmp_path / "binary.onnx"), example_size=(32, 32))
    image = np.random.default_rng(0).integers(0, 255, (1, 1, 37, 45)).astype(np.float32)
    got = load_exported(path)(image)
    with torch.no_grad():
        expected = model([{"image": torch.from_numpy(image[0])}])[0]["sem_seg"]
    assert got.shape == (1, 1, 37, 45)
    np.testing.assert_allclose(got[0], expected.numpy(), atol=1e-4, rtol=0)


def test_what_cannot_be_exported_is_refused(tmp_path):
    with pytest.raises(ValueError, match="dense CRF is not exported"):
        ExportableSemSeg(_model("UNet", "MODEL.CRF.ENABLED", True))
    with pytest.raises(TypeError, match="only semantic models"):
        ExportableSemSeg(torch.nn.Linear(2, 2))


def test_export_tool_writes_and_verifies_both_formats(tmp_path, capsys):
    tool = export_model
    model = _model("DeepLabV3")
    from detectron2.checkpoint import DetectionCheckpointer

    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("w")
    argv = ["--config-file", os.path.join(REPO, "configs", "shapes", "deeplabv3_R18_shapes.yaml"),
            "--output", str(tmp_path / "out"), "--example-size", "64x64",
            "--verify-size", "64x64", "40x72",
            "--opts", "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
            "MODEL.ASPP.CHANNELS", "8", "MODEL.WEIGHTS", str(tmp_path / "w.pth")]  # fmt: skip
    assert tool.main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("(ok)") == 4, out  # 2 formats x 2 sizes
    assert sorted(os.listdir(tmp_path / "out")) == ["model.onnx", "model.ts"]
    panoptic = os.path.join(REPO, "configs", "shapes", "panoptic_fpn_R18_FPN_GN_shapes.yaml")
    assert tool.main(["--config-file", panoptic, "--output", str(tmp_path / "x")]) == 2
    assert "not this one" in capsys.readouterr().err


def test_mask_rcnn_exports_through_detectron2_tracing(tmp_path, capsys):
    """Mask R-CNN through the tool: detectron2's TracingAdapter, TorchScript and ONNX
    (TorchScript-based exporter), dynamic size; every output (boxes, classes, mask logits,
    scores) agrees with PyTorch at two sizes other than the traced one."""
    tool = export_model
    mask_rcnn = os.path.join(REPO, "configs", "shapes", "mask_rcnn_R18_FPN_GN_shapes.yaml")
    argv = ["--config-file", mask_rcnn, "--output", str(tmp_path / "out"),
            "--example-size", "64x64", "--verify-size", "80x48", "96x128",
            "--random-weights", "--opts", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]  # fmt: skip
    assert tool.main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("(ok)") == 4, out
    assert sorted(os.listdir(tmp_path / "out")) == ["model.onnx", "model.ts"]


def test_export_from_the_checkpoint_alone_and_never_untrained_by_accident(tmp_path, capsys):
    """--weights alone (the config saved in the checkpoint) exports and verifies; without
    weights the tool refuses, unless --random-weights says so."""
    from detectron2.config import get_cfg

    from seg_plugins import add_seg_plugins_config
    from seg_plugins.engine.checkpoint import AtomicCheckpointer

    cfg = get_cfg()
    add_seg_plugins_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", "shapes", "unet_shapes.yaml"))
    cfg.merge_from_list(
        ["MODEL.UNET.BASE_CHANNELS", 4, "MODEL.UNET.DEPTH", 2, "MODEL.DEVICE", "cpu"]
    )
    model = build_model(cfg)
    AtomicCheckpointer.from_config(cfg, model, str(tmp_path)).save("model_final")
    common = ["--format", "torchscript", "--example-size", "64x64", "--verify-size", "48x40"]
    argv = ["--weights", str(tmp_path / "model_final.pth"), "-o", str(tmp_path / "out")]
    assert export_model.main([*argv, *common]) == 0
    assert "(ok)" in capsys.readouterr().out
    untrained = ["--config-file", os.path.join(REPO, "configs", "shapes", "unet_shapes.yaml"),
                 "-o", str(tmp_path / "x"), *common, "MODEL.UNET.BASE_CHANNELS", "4"]  # fmt: skip
    assert export_model.main(untrained) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--random-weights" in err
    assert not os.path.exists(tmp_path / "x")
    assert export_model.main([*untrained[:-2], "--random-weights", *untrained[-2:]]) == 0


FORK_AFTER_ONNX = """
import gc, os, sys, time
import numpy as np, torch
import seg_plugins  # noqa: F401
from seg_plugins.export import load_exported
path = sys.argv[1]
torch.onnx.export(torch.nn.Conv2d(3, 2, 1), torch.zeros(1, 3, 8, 8), path, dynamo=False,
                  input_names=["image"], output_names=["logits"])
run = load_exported(path)
run(np.zeros((1, 3, 8, 8), np.float32))
holder = {}
holder["self"], holder["run"] = holder, run  # a cycle: freed by the garbage collector only
del holder, run
time.sleep(2)  # the session's pool threads now block on their condition variable
pid = os.fork()
if pid == 0:  # as a DataLoader worker: its garbage collector meets the cycle
    gc.collect()
    os._exit(0)
for _ in range(200):
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        print("CHILD EXITED", status)
        sys.exit(0)
    time.sleep(0.05)
os.kill(pid, 9)
print("CHILD HUNG")
"""


def test_a_forked_child_never_destroys_the_parent_s_onnxruntime_sessions(tmp_path):
    """Regression: a DataLoader worker forked after an ONNX model was verified hung for ever
    in onnxruntime's destructor (a CI run of tools/benchmark_loader.py's test). The script
    hung without seg_plugins.export's at-fork hook."""
    pytest.importorskip("onnxruntime")  # the export extra, installed by tools/setup_env.sh
    r = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", FORK_AFTER_ONNX, str(tmp_path / "m.onnx")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "CHILD EXITED 0" in r.stdout, r.stdout
