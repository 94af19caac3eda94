"""seg_plugins.evaluation.plots: palette label PNGs, per-class IoU bars and the confusion
matrix: the figures' content (names, values, normalisation) and the PNGs they write (size,
not blank, atomic), on small generated inputs. CPU, a few seconds."""

import numpy as np
import pytest
from PIL import Image

import seg_plugins  # noqa: F401  must come before detectron2 submodules (repairs the install)

# isort: split
from seg_plugins.data.io import read_label
from seg_plugins.evaluation import metrics_from_confusion, plots
from tests.evaluation.png_checks import assert_not_blank, no_temp_files, png_array

NAMES = ["background", "circle", "square", "triangle"]
COLORS = np.array([[70, 70, 70], [220, 20, 60], [0, 130, 230], [250, 170, 30]], np.uint8)


def _texts(ax) -> list:
    return [t.get_text() for t in ax.texts]


# ----------------------------------------------------------------------------- colours, labels
def test_default_palette_is_distinct_and_starts_black():
    palette = plots.default_palette(256)
    assert palette.shape == (256, 3) and palette.dtype == np.uint8
    assert palette[0].tolist() == [0, 0, 0] and palette[1].tolist() == [128, 0, 0]  # VOC
    assert len({tuple(c) for c in palette}) == 256


def test_class_colors_use_stuff_colors_only_when_complete():
    assert plots.class_colors(4, COLORS.tolist()).tolist() == COLORS.tolist()
    fallback = plots.class_colors(4, COLORS[:3].tolist())  # one colour short
    assert fallback.tolist() == plots.default_palette(4).tolist()


def test_label_png_is_a_palette_png_of_class_indices(tmp_path):
    label = np.random.default_rng(0).integers(0, 4, (37, 53)).astype(np.uint8)
    path = plots.save_label_png(label, str(tmp_path / "l.png"), COLORS)
    with Image.open(path) as img:
        assert img.mode == "P" and img.size == (53, 37)
        assert np.asarray(img.getpalette()[:12]).reshape(4, 3).tolist() == COLORS.tolist()
    np.testing.assert_array_equal(read_label(path), label)
    big = np.full((5, 6), 300, np.int32)
    big[0, 0] = 0
    np.testing.assert_array_equal(
        read_label(plots.save_label_png(big, str(tmp_path / "b.png"))), big
    )
    assert no_temp_files(tmp_path)
    with pytest.raises(ValueError, match="shape"):
        plots.save_label_png(np.zeros((2, 2, 2)), str(tmp_path / "x.png"))


# ----------------------------------------------------------------------------- per-class IoU
def test_per_class_iou_figure_shows_names_values_and_miou():
    values = {"background": 98.0, "circle": 80.0, "square": float("nan"), "triangle": 61.5}
    fig = plots.per_class_iou_figure(values, NAMES)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == NAMES
    assert [round(p.get_width(), 3) for p in ax.patches] == [98.0, 80.0, 0.0, 61.5]
    assert {"98.0", "80.0", "n/a", "61.5"} <= set(_texts(ax))
    assert ax.get_xlabel() == "IoU (%)" and ax.get_ylabel() == "class"
    miou = (98.0 + 80.0 + 61.5) / 3  # NaN classes are out of the mean, as in the evaluator
    assert ax.lines[0].get_xdata()[0] == pytest.approx(miou)
    assert ax.get_legend().get_texts()[0].get_text() == f"mIoU {miou:.1f}"

    # The evaluator's mIoU may count a NaN class as 0 (detectron2 v0.6): its value wins.
    given = plots.per_class_iou_figure(values, NAMES, miou=59.875).axes[0]
    assert given.lines[0].get_xdata()[0] == 59.875

    ranked = plots.per_class_iou_figure([98.0, 80.0, 10.0, 61.5], NAMES, sort=True).axes[0]
    assert [t.get_text() for t in ranked.get_yticklabels()] == [
        "square",
        "triangle",
        "circle",
        "background",
    ]


def test_per_class_iou_rejects_fractions_and_mismatched_names():
    with pytest.raises(ValueError, match="percent"):
        plots.per_class_iou_figure([0.9, 120.0], ["a", "b"])
    with pytest.raises(ValueError, match="class_names"):
        plots.per_class_iou_figure([90.0, 80.0], ["a"])
    with pytest.raises(KeyError, match="circle"):
        plots.per_class_iou_figure({"background": 1.0}, NAMES)


# ----------------------------------------------------------------------------- confusion matrix
CONF = np.array([[900, 50, 50, 0], [10, 80, 10, 0], [0, 0, 0, 0], [5, 0, 5, 90]], np.int64)


def test_normalize_confusion_rows_columns_all():
    rows = plots.normalize_confusion(CONF, "true")
    np.testing.assert_allclose(np.nansum(rows, axis=1), [1, 1, 0, 1])
    assert np.isnan(rows[2]).all()  # class absent from the ground truth
    cols = plots.normalize_confusion(CONF, "pred")
    np.testing.assert_allclose(cols.sum(axis=0), 1.0)
    assert plots.normalize_confusion(CONF, "all").sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="normalize"):
        plots.normalize_confusion(CONF, "rows")
    with pytest.raises(ValueError, match=r"\(K, K\)"):
        plots.normalize_confusion(np.zeros((2, 3)))


def test_confusion_matrix_figure_is_row_normalised_and_labelled():
    fig, matrix = plots.confusion_matrix_figure(CONF, NAMES)
    ax = fig.axes[0]
    drawn = ax.images[0].get_array()
    np.testing.assert_allclose(np.ma.filled(drawn, np.nan), matrix * 100)
    np.testing.assert_allclose(matrix[0], [0.9, 0.05, 0.05, 0.0])
    assert [t.get_text() for t in ax.get_xticklabels()] == NAMES
    assert [t.get_text() for t in ax.get_yticklabels()] == NAMES
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("prediction", "ground truth")
    assert "%" in fig.axes[1].get_ylabel()  # the colour bar
    # One number per cell that has pixels: 9 of them.
    assert sorted(_texts(ax)) == sorted(
        ["90.0", "5.0", "5.0", "10.0", "80.0", "10.0", "5.0", "5.0", "90.0"]
    )
    with pytest.raises(ValueError, match="class names"):
        plots.confusion_matrix_figure(CONF, NAMES[:3])


@pytest.mark.parametrize("k", [19, 150])
def test_confusion_matrix_stays_readable_for_many_classes(k):
    rng = np.random.default_rng(k)
    conf = rng.integers(0, 20, (k, k)) + np.diag(rng.integers(100, 1000, k))
    names = [f"class_{i}" for i in range(k)]
    fig, matrix = plots.confusion_matrix_figure(conf, names)
    ax = fig.axes[0]
    assert len(ax.get_xticklabels()) == k and ax.get_yticklabels()[-1].get_text() == names[-1]
    width, height = fig.get_size_inches()
    assert max(width, height) <= 25.5
    assert min(t.get_fontsize() for t in ax.get_yticklabels()) >= 4
    assert (len(ax.texts) > 0) == (k <= plots.ANNOTATE_MAX_CLASSES)


def test_write_metric_plots_writes_both_pngs(tmp_path):
    paths = plots.write_metric_plots(CONF, NAMES, None, str(tmp_path / "inference"))
    assert set(paths) == {"per_class_iou", "confusion_matrix"}
    for path in paths.values():
        image = png_array(path)
        assert image.shape[0] > 250 and image.shape[1] > 500
        assert_not_blank(image)
    assert no_temp_files(tmp_path / "inference")
    # Without per_class_iou the bars are the evaluator's IoU (same conventions).
    res = metrics_from_confusion(CONF, NAMES)
    expected = [res[f"IoU-{n}"] for n in NAMES]
    np.testing.assert_allclose(plots._iou_from_confusion(CONF), expected, equal_nan=True)
