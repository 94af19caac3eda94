"""tools/benchmark_export.py in its tiny mode (narrow models, 64 px, 2 repeats), so that the
latency benchmark cannot rot: it exports the four model families, runs eager,
TorchScript and ONNX Runtime, checks their logits agree and writes the table. No timing is
asserted."""

import re

import pytest

from tools.benchmarks import export


def test_tiny_run_writes_the_table_and_checks_agreement(tmp_path, capsys):
    out = tmp_path / "bench.md"
    assert export.main(["--tiny", "--markdown", str(out)]) == 0
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "ms" not in line]
    names = [row.split("|")[1].strip() for row in rows]
    assert names == ["FCN-ResNet50", "DeepLabV3-ResNet50", "DeepLabV3+-ResNet50", "U-Net"]
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        eager = float(cells[1])
        assert eager > 0.05
        for cell in cells[2:4]:  # "ms (ratio to eager)", shown with 1 and 2 decimals
            ms, ratio = (float(v) for v in re.fullmatch(r"([\d.]+) \(([\d.]+)\)", cell).groups())
            # within the display's rounding of ms / eager (a fast export may show 0.00)
            rounding = 0.005 + 0.05 * (eager + ms) / (eager * (eager - 0.05))
            assert ms > 0 and ratio == pytest.approx(ms / eager, abs=rounding + 1e-9)
        diffs = [float(v) for v in cells[4].split(" / ")]
        assert max(diffs) <= 1e-4
