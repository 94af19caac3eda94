"""seg-plugins-plot-metrics (tools/plot_metrics.py) on a generated metrics.json (detectron2's
JSON lines)."""

import json
import os

import numpy as np
from PIL import Image

from seg_plugins_cli import plot_metrics


def test_writes_curves_png_beside_metrics_json(tmp_path, capsys):
    lines = []
    for i in range(30):
        rec = {"iteration": 20 * i + 19, "total_loss": 1.0 / (i + 1), "lr": 0.001, "time": 0.1}
        if i % 10 == 9:
            rec["sem_seg/mIoU"] = 50.0 + i
        lines.append(json.dumps(rec))
    (tmp_path / "metrics.json").write_text("\n".join(lines) + "\n")
    assert plot_metrics.main([str(tmp_path / "metrics.json")]) == 0
    assert f"wrote {tmp_path / 'curves.png'}" in capsys.readouterr().out
    with Image.open(tmp_path / "curves.png") as png:
        image = np.asarray(png.convert("RGB"))
    assert image.shape[1] == 750 and image.shape[0] > 700  # three panels
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 20


def test_missing_or_empty_file_exits_2(tmp_path, capsys):
    assert plot_metrics.main([str(tmp_path / "metrics.json")]) == 2
    assert "metrics.json: no such file" in capsys.readouterr().err
    (tmp_path / "metrics.json").write_text("\n")
    assert plot_metrics.main([str(tmp_path / "metrics.json"), "-o", str(tmp_path / "c.png")]) == 2
    assert "no metrics" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "c.png")
