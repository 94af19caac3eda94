"""tools/benchmark_export.py in its tiny mode (narrow models, 64 px, 2 repeats), so that the
latency benchmark cannot rot: it exports the four model families, runs eager,
TorchScript and ONNX Runtime, checks their logits agree and writes the table. No timing is
asserted."""

import re

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
        assert float(cells[1]) > 0
        for cell in cells[2:4]:  # "ms (ratio)"
            ms, ratio = re.fullmatch(r"([\d.]+) \(([\d.]+)\)", cell).groups()
            assert float(ms) > 0 and float(ratio) > 0
        diffs = [float(v) for v in cells[4].split(" / ")]
        assert max(diffs) <= 1e-4
