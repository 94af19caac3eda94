"""tools/benchmark.py: --tiny runs every sub-benchmark and writes the Markdown table with the
expected rows and columns (timings are not checked: tiny sizes mean nothing); its plain-PyTorch
U-Net has exactly our U-Net's parameters and output shape."""

import re

import pytest
import torch

import seg_plugins  # noqa: F401  must come before detectron2 submodules (repairs the install)

# isort: split
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model

from tools.benchmarks import scaling as bench_scaling
from tools.benchmarks import vs_pytorch as bench

ROWS = [
    "FCN-ResNet50 training step",
    "FCN-ResNet50 inference",
    "DeepLabV3-ResNet50 training step",
    "DeepLabV3-ResNet50 inference",
    "U-Net training step",
    "U-Net inference",
    "evaluator: SemSegMetricsEvaluator vs SemSegEvaluator",
    "loader vs training step: shapes / U-Net",
    "loader vs training step: shapes / DeepLabV3-R18",
    "FCN-ResNet50 training FLOP/s",
    "DeepLabV3-ResNet50 training FLOP/s",
    "U-Net training FLOP/s",
]

OPTION_ROWS = [
    "FCN-ResNet50 training step: channels-last vs float32",
    "FCN-ResNet50 training step: bfloat16 autocast vs float32",
    "FCN-ResNet50 training step: channels-last + bfloat16 autocast vs float32",
    "FCN-ResNet50 inference: channels-last vs no_grad, float32",
    "FCN-ResNet50 inference: bfloat16 autocast vs no_grad, float32",
    "FCN-ResNet50 inference: channels-last + bfloat16 autocast vs no_grad, float32",
    "FCN-ResNet50 inference: inference_mode vs no_grad, float32",
]


def _cells(line: str) -> list:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


@pytest.mark.slow
def test_tiny_run_writes_the_table(tmp_path, capsys):
    out = tmp_path / "benchmarks.md"
    before = set(DatasetCatalog.list())
    assert bench.main(["--tiny", "--output", str(out)]) == 0
    text = out.read_text()
    assert text.startswith(bench.HEADER) and text.strip() in capsys.readouterr().out
    assert re.search(r"^Machine: .+, \d+ cores, .+; device cpu; torch threads \d+;", text, re.M)
    main, options, scaling = text.split("\n## ")
    assert options.startswith("Speed options") and scaling.startswith("Scaling")
    lines = [line for line in main.splitlines() if line.startswith("|")]
    header, rule, rows = lines[0], lines[1], lines[2:]
    assert _cells(header) == list(bench.COLUMNS) and set(rule) <= set("|-")
    assert [_cells(row)[0] for row in rows] == ROWS
    for row in rows:
        name, ours, reference, ratio, target, verdict = _cells(row)
        assert ours and reference and float(ratio) >= 0
        assert verdict in ("yes", "**no**", "-") and (verdict == "-") == (target == "-")
    targets = {_cells(row)[0]: _cells(row)[4] for row in rows}
    assert targets["FCN-ResNet50 training step"] == "ours / ref <= 1.05"
    assert targets["U-Net inference"] == "ours / ref <= 1.03"
    assert targets["FCN-ResNet50 training FLOP/s"] == "achieved / peak >= 0.50"
    assert targets["U-Net training FLOP/s"] == "-"  # a target for the ResNet-50 models only
    assert set(DatasetCatalog.list()) == before  # its temporary datasets are removed
    option_rows = [_cells(r) for r in options.splitlines()[2:] if r.startswith("| FCN")]
    assert [r[0] for r in option_rows] == OPTION_ROWS
    assert all(float(r[3]) > 0 and r[4] == "-" for r in option_rows)
    scaling_rows = [_cells(r) for r in scaling.splitlines() if re.match(r"\| \d+x\d+ ", r)]
    points = [(int(r[0].split("x")[0]), int(r[1])) for r in scaling_rows]
    assert points == list(bench_scaling.TINY.points)
    assert [float(r[3]) for r in scaling_rows][0] == 1.0  # growth against the first point
    flop_growth = [float(r[4]) for r in scaling_rows]
    assert flop_growth == pytest.approx([1.0, 4.0, 2.0], rel=0.05)  # pixels x batch


@pytest.mark.parametrize("upsample", ["bilinear", "transposed"])
def test_plain_unet_matches_ours(upsample):
    cfg = bench.unet_cfg(bench.TINY, "cpu", ("MODEL.UNET.UPSAMPLE", upsample))
    ours, plain = build_model(cfg), bench.plain_unet(cfg)
    assert bench.count_parameters(plain) == bench.count_parameters(ours)
    shapes = sorted(tuple(p.shape) for p in plain.parameters())
    assert shapes == sorted(tuple(p.shape) for p in ours.parameters())
    x = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        expected = ours.eval()([{"image": x[0]}])[0]["sem_seg"]
        logits = plain.eval()(x.float())
    assert logits.shape == (1, *expected.shape) == (1, bench.TINY.classes, 64, 64)


def test_flops_alone_is_refused():
    with pytest.raises(SystemExit):
        bench.parse_args(["--only", "flops"])
    assert bench.parse_args(["--tiny", "--only", "unet", "flops"]).output is None
