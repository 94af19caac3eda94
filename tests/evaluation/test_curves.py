"""seg_plugins.evaluation.curves: reading detectron2's metrics.json (JSON lines, resumed
runs, a truncated last line) and the training-curve figure and PNG."""

import json
import math

import numpy as np
import pytest

import seg_plugins  # noqa: F401  must come before detectron2 submodules (repairs the install)

# isort: split
from seg_plugins.evaluation import curves
from tests.evaluation.png_checks import assert_not_blank, png_array


def _metrics_lines(n=10, eval_every=5):
    lines = []
    for i in range(n):
        it = 20 * i + 19
        rec = {
            "iteration": it,
            "total_loss": 2.0 / (i + 1),
            "loss_sem_seg": 1.5 / (i + 1),
            "loss_aux": 0.5 / (i + 1),
            "lr": 0.01 * (1 - i / n),
            "time": 0.3,
        }
        if (i + 1) % eval_every == 0:
            rec["sem_seg/mIoU"] = 40.0 + 5 * i
            rec["sem_seg/mDice"] = 50.0 + 5 * i
        lines.append(json.dumps(rec))
    return lines


def test_training_curves_figure_panels(tmp_path):
    path = tmp_path / "metrics.json"
    lines = _metrics_lines()
    # A resumed run logs iteration 39 again: the later value wins.
    lines.append(json.dumps({"iteration": 39, "total_loss": 0.123, "lr": 0.009}))
    path.write_text("\n".join(lines) + "\n" + '{"iteration": 219, "total_lo')  # truncated line
    records = curves.read_metrics_json(str(path))
    assert len(records) == 11
    fig = curves.training_curves_figure(records)
    loss_ax, lr_ax, eval_ax = fig.axes
    assert [t.get_text() for t in loss_ax.get_legend().get_texts()] == [
        "total_loss",
        "loss_aux",
        "loss_sem_seg",
    ]
    assert loss_ax.get_ylabel() == "loss (log scale)" and lr_ax.get_ylabel() == "learning rate"
    assert all(ax.get_xlabel() == "iteration" for ax in fig.axes)
    total = loss_ax.lines[0]
    assert total.get_xdata()[1] == 39 and total.get_ydata()[1] == pytest.approx(0.123)
    assert [t.get_text() for t in eval_ax.get_legend().get_texts()] == [
        "sem_seg/mIoU",
        "sem_seg/mDice",
    ]
    np.testing.assert_array_equal(eval_ax.lines[0].get_xdata(), [99, 199])


def test_plot_training_curves_png_and_errors(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("\n".join(_metrics_lines()) + "\n")
    out = curves.plot_training_curves(str(path), str(tmp_path / "curves.png"))
    png = png_array(out)
    assert png.shape[1] == 750 and png.shape[0] > 600
    assert_not_blank(png)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        curves.read_metrics_json(str(tmp_path / "nope.json"))
    (tmp_path / "empty.json").write_text("")
    with pytest.raises(ValueError, match="empty.json: no metrics"):
        curves.read_metrics_json(str(tmp_path / "empty.json"))
    (tmp_path / "bad.json").write_text('{"iteration": 1}\nnot json\n{"iteration": 2}\n')
    with pytest.raises(ValueError, match="bad.json, line 2"):
        curves.read_metrics_json(str(tmp_path / "bad.json"))
    assert math.isfinite(curves.read_metrics_json(str(path))[0]["lr"])
