"""seg_plugins.evaluation.visualizer: display images (grey, 16-bit), overlay figures, and
SemSegVisualizer (overlays of the first N evaluation images) on generated files and fake
model outputs: which images it keeps, what it writes, binary mode, config keys."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

import seg_plugins  # noqa: F401  must come before detectron2 submodules (repairs the install)

# isort: split
from detectron2.config import get_cfg

from seg_plugins import add_seg_plugins_config
from seg_plugins.evaluation import plots, visualizer
from seg_plugins.evaluation.visualizer import SemSegVisualizer, dataset_classes
from seg_plugins.structures import sem_seg_classes
from tests.evaluation.png_checks import assert_not_blank, png_array

NAMES = ["background", "circle", "square", "triangle"]
COLORS = np.array([[70, 70, 70], [220, 20, 60], [0, 130, 230], [250, 170, 30]], np.uint8)


# ----------------------------------------------------------------------------- display images
def test_16_bit_and_grayscale_images_are_stretched_to_rgb(tmp_path):
    ramp = np.linspace(1000, 5000, 100 * 80).reshape(80, 100).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    rgb = visualizer.read_display_image(str(tmp_path / "g16.png"))
    assert rgb.shape == (80, 100, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0, 0] == 0 and rgb[-1, -1, 0] == 255  # 1st..99th percentile -> 0..255
    assert 100 < rgb[40, 50, 0] < 155 and (rgb[..., 0] == rgb[..., 2]).all()

    gray = np.arange(60 * 40, dtype=np.uint32).reshape(60, 40) % 256
    Image.fromarray(gray.astype(np.uint8)).save(tmp_path / "g8.png")
    rgb8 = visualizer.read_display_image(str(tmp_path / "g8.png"))
    np.testing.assert_array_equal(rgb8[..., 1], gray)  # 8-bit grey kept as is
    rgba = np.dstack([np.full((4, 5, 3), 7, np.uint8), np.full((4, 5), 9, np.uint8)])
    assert visualizer.image_for_display(rgba).tolist() == np.full((4, 5, 3), 7).tolist()
    with pytest.raises(FileNotFoundError, match="nope.png"):
        visualizer.read_display_image(str(tmp_path / "nope.png"))


# ----------------------------------------------------------------------------- overlays
def _scene(h=48, w=64):
    label = np.zeros((h, w), np.uint8)
    label[8:30, 10:30] = 1
    label[20:40, 36:60] = 3
    image = np.random.default_rng(1).integers(0, 255, (h, w, 3)).astype(np.uint8)
    return image, label


def test_overlay_figure_panels_title_and_legend():
    image, gt = _scene()
    pred = gt.copy()
    pred[8:30, 10:20] = 2  # 220 wrong pixels
    gt[:4] = 255  # ignored rows: not counted
    fig = visualizer.overlay_figure(image, pred, NAMES, COLORS, ground_truth=gt, title="a.png")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["image", "ground truth", "prediction"]
    labelled = gt != 255
    accuracy = (pred[labelled] == gt[labelled]).mean() * 100
    assert fig._suptitle.get_text() == f"a.png  |  pixel accuracy {accuracy:.1f}%"
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["background", "circle", "square", "triangle"]

    no_gt = visualizer.overlay_figure(image, pred, NAMES, COLORS)
    assert [ax.get_title() for ax in no_gt.axes] == ["image", "prediction"]


def test_binary_grayscale_overlay_png(tmp_path):
    _, gt = _scene()
    gt = (gt > 0).astype(np.uint8)
    fg = gt.astype(np.float64)
    gray16 = (1000 + 3000 * fg + np.random.default_rng(2).normal(0, 50, gt.shape)).astype(np.uint16)
    image = visualizer.image_for_display(gray16)
    names, colors = ["background", "vessel"], plots.class_colors(2)
    path = visualizer.save_overlay(
        str(tmp_path / "o.png"), image, 1 - gt, names, colors, ground_truth=gt, title="bin"
    )
    png = png_array(path)
    scale = visualizer.display_scale(48, 64)  # 6x, capped at 4x
    assert scale == 4.0
    assert png.shape[0] > 48 * scale and png.shape[1] > 3 * 64 * scale
    assert_not_blank(png)
    # The prediction panel is red (vessel = VOC colour 1) where the prediction says vessel.
    drawn = visualizer.render_sem_seg(image, 1 - gt, names, colors)
    assert drawn.shape == image.shape
    inside = drawn[(gt == 0) & (np.arange(64)[None, :] > 2)]
    assert inside[:, 0].mean() > inside[:, 1].mean() + 30


# ----------------------------------------------------------------------------- evaluator


def _records(folder, n, h=24, w=32, gray16=False):
    """n image / label files and their (input dict, label) pairs."""
    rng = np.random.default_rng(0)
    records = []
    for i in range(n):
        label = np.zeros((h, w), np.uint8)
        label[4 + i : 14 + i, 6:20] = 1
        if gray16:
            image = Image.fromarray((500 + 2000 * label.astype(np.uint16)).astype(np.uint16))
        else:
            image = Image.fromarray(rng.integers(0, 255, (h, w, 3)).astype(np.uint8))
        image.save(folder / f"img{i}.png")
        Image.fromarray(label).save(folder / f"gt{i}.png")
        inp = {
            "file_name": str(folder / f"img{i}.png"),
            "sem_seg_file_name": str(folder / f"gt{i}.png"),
        }
        records.append((inp, label))
    return records


def _logits(label, k):
    return torch.nn.functional.one_hot(torch.from_numpy(label).long(), k).permute(2, 0, 1).float()


def test_keeps_the_first_n_images_and_writes_their_overlays(tmp_path, dataset):
    name = dataset(
        ["background", "thing", "other"], stuff_colors=[[0, 0, 0], [255, 0, 0], [0, 0, 255]]
    )
    records = _records(tmp_path, 5)
    vis = SemSegVisualizer(name, output_dir=str(tmp_path / "out"), num_images=3)
    vis.reset()
    vis.process([r[0] for r in records[:2]], [{"sem_seg": _logits(r[1], 3)} for r in records[:2]])
    vis.process([r[0] for r in records[2:]], [{"sem_seg": _logits(r[1], 3)} for r in records[2:]])
    assert [k["file_name"] for k in vis._kept] == [r[0]["file_name"] for r in records[:3]]
    assert vis._kept[0]["pred"].dtype == np.uint8
    np.testing.assert_array_equal(vis._kept[1]["pred"], records[1][1])

    assert vis.evaluate() == {}  # no metrics
    overlays = tmp_path / "out" / "overlays"
    assert sorted(os.listdir(overlays)) == ["img0.png", "img1.png", "img2.png"]
    with Image.open(overlays / "img0.png") as png:
        assert png.width > 3 * 32 and png.height > 24

    vis.reset()  # the next evaluation starts afresh
    assert vis._kept == []


def test_binary_predictions_on_16_bit_grayscale_images(tmp_path, dataset):
    name = dataset(["vessel"])  # binary dataset naming its foreground
    records = _records(tmp_path, 1, gray16=True)
    inp, label = records[0]
    logit = torch.where(torch.from_numpy(label).bool(), 3.0, -3.0)[None]  # (1, H, W)
    vis = SemSegVisualizer(name, output_dir=str(tmp_path), num_images=2, binary_threshold=0.5)
    vis.process([inp], [{"sem_seg": logit}])
    np.testing.assert_array_equal(vis._kept[0]["pred"], label)
    vis.evaluate()
    assert os.path.isfile(tmp_path / "overlays" / "img0.png")

    names, colors = dataset_classes(name, 1)
    assert names == ["background", "vessel"] and colors.shape == (2, 3)
    # threshold 0.99: sigmoid(3) = 0.95 is not foreground
    assert sem_seg_classes(logit, 0.99).sum() == 0


def test_dataset_classes_falls_back_to_indices_and_palette(dataset):
    name = dataset(["a", "b"])
    names, colors = dataset_classes(name, 3)  # the model predicts more classes than named
    assert names == ["0", "1", "2"] and len({tuple(c) for c in colors.tolist()}) == 3


def test_config_keys_enable_and_size_it(tmp_path, dataset):
    name = dataset(["background", "thing"])
    cfg = get_cfg()
    add_seg_plugins_config(cfg)
    cfg.OUTPUT_DIR = str(tmp_path)
    assert (cfg.TEST.SEM_SEG_VIS.ENABLED, cfg.TEST.SEM_SEG_VIS.NUM_IMAGES) == (True, 4)
    vis = SemSegVisualizer(cfg, name)
    assert vis._num_images == 4
    assert vis._output_dir == os.path.join(str(tmp_path), "inference", name)
    cfg.TEST.SEM_SEG_VIS.ENABLED = False
    off = SemSegVisualizer(cfg, name, output_dir=str(tmp_path))
    records = _records(tmp_path, 1)
    off.process([records[0][0]], [{"sem_seg": _logits(records[0][1], 2)}])
    assert off.evaluate() == {} and not os.path.exists(tmp_path / "overlays")
    cfg.TEST.SEM_SEG_VIS.ENABLED = True
    cfg.TEST.SEM_SEG_VIS.NUM_IMAGES = -1
    with pytest.raises(ValueError, match="TEST.SEM_SEG_VIS.NUM_IMAGES"):
        SemSegVisualizer(cfg, name)


def test_read_display_image_of_multichannel_npy(tmp_path):
    """.npy arrays (INPUT.FORMAT "RAW" datasets) of 4 uint8 or 5 float channels display as
    the grey of their first channel, so evaluation overlays work for them too."""
    from seg_plugins.evaluation.visualizer import read_display_image

    rng = np.random.default_rng(0)
    four = rng.integers(0, 256, (6, 7, 4), dtype=np.uint8)
    np.save(tmp_path / "four.npy", four)
    shown = read_display_image(str(tmp_path / "four.npy"))
    assert shown.shape == (6, 7, 3) and np.array_equal(shown[..., 1], four[..., 0])
    five = rng.normal(size=(6, 7, 5)).astype(np.float32)
    np.save(tmp_path / "five.npy", five)
    shown = read_display_image(str(tmp_path / "five.npy"))
    assert shown.shape == (6, 7, 3) and (shown[..., 0] == shown[..., 2]).all()
    order = np.argsort(five[..., 0].ravel())
    assert (np.diff(shown[..., 0].ravel()[order].astype(int)) >= 0).all()  # monotone stretch
