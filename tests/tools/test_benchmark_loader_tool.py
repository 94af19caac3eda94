"""tools/benchmark_loader.py --tiny: runs (2 loader workers, the three pipelines) and writes a
Markdown report with the expected rows; its explanation is the one in docs/. Timings are not
checked (tiny sizes mean nothing)."""

import os
import re

import pytest

import seg_plugins  # noqa: F401  must come before detectron2 submodules (repairs the install)

# isort: split
from detectron2.data import DatasetCatalog

from tools.benchmarks import loader as bench

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROWS = ["shapes / U-Net", "shapes / DeepLabV3-R18", "Cityscapes-sized / DeepLabV3-R18"]


def test_tiny_run_writes_the_table(tmp_path, capsys):
    out = tmp_path / "loader.md"
    before = set(DatasetCatalog.list())
    assert bench.main(["--tiny", "--output", str(out)]) == 0
    text = out.read_text()
    assert text.startswith(bench.HEADER) and text.strip() in capsys.readouterr().out
    assert re.search(r"^Machine: .+, \d+ cores, .+torch threads for the step: \d+", text, re.M)
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    header, rows = lines[0], lines[1:]
    assert "loader images/s (2 workers)" in header and "loader / step" in header
    assert [row.split(" | ")[0][2:] for row in rows] == ROWS
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 6
        loader, step, ratio = (float(c) for c in cells[3:])
        # the table shows 1 decimal: loader and step are each within 0.05 of the values the
        # ratio (also rounded, 0.05) was computed from, so it is within this of loader / step
        rounding = 0.05 + 0.05 * (loader + step) / (step * (step - 0.05))
        assert loader > 0 and step > 0.05
        assert ratio == pytest.approx(loader / step, abs=rounding + 1e-9)
    assert "2 x 32x64" in rows[2]  # the Cityscapes-sized crops (tiny: 32x64)
    assert set(DatasetCatalog.list()) == before  # its temporary datasets are removed


def test_the_doc_explains_what_the_script_writes():
    with open(os.path.join(REPO, "docs", "benchmarks_loader.md")) as f:
        doc = f.read()
    assert doc.startswith(bench.HEADER)
