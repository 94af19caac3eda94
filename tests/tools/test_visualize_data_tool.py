"""seg-plugins-visualize (tools/visualize_data.py) in process: both sources on a tiny shapes
dataset (semantic and Mask R-CNN configs) and on a 1-channel 16-bit folder dataset; PNG
count, size, pixels."""

import os

import numpy as np
import pytest
from PIL import Image

import seg_plugins  # noqa: F401  must come before detectron2 submodules (repairs the install)

# isort: split
from detectron2.data import DatasetCatalog, MetadataCatalog

from seg_plugins.data import register_sem_seg_folder, register_shapes
from seg_plugins.tools import visualize as vis
from seg_plugins_cli import visualize as vis_cli

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UNET_CFG = os.path.join(REPO, "configs", "shapes", "unet_shapes.yaml")
MASK_RCNN_CFG = os.path.join(REPO, "configs", "shapes", "mask_rcnn_R18_FPN_GN_shapes.yaml")
SHAPES = "vis_data_shapes"
SIZE = 48


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    register_shapes(SHAPES, root=str(root), num_train=4, num_val=1, image_size=SIZE, seed=5)
    return f"{SHAPES}_train"


@pytest.fixture(scope="module")
def grey16(tmp_path_factory):
    """A folder dataset of 3 one-channel 16-bit 30x40 images (values up to 4000) with 2-class
    masks holding the ignore label (top row)."""
    root = tmp_path_factory.mktemp("grey16")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        image = rng.integers(0, 4000, (30, 40)).astype(np.uint16)
        Image.fromarray(image).save(root / "images" / f"case{i}.png")
        mask = np.zeros((30, 40), np.uint8)
        mask[10:20, 10:30] = 1
        mask[0] = 255
        Image.fromarray(mask).save(root / "masks" / f"case{i}.png")
    name = f"vis_data_grey16_{os.getpid()}"
    register_sem_seg_folder(
        name, str(root / "images"), str(root / "masks"), stuff_classes=["background", "cell"]
    )
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


GREY_OPTS = [
    "INPUT.FORMAT", "L", "MODEL.PIXEL_MEAN", "[0.0]", "MODEL.PIXEL_STD", "[1.0]",
    "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "2", "DATALOADER.NUM_WORKERS", "0",
]  # fmt: skip


def _run(out, config, source, n, *extra):
    argv = ["--config-file", config, "--source", source, "--output-dir", str(out)]
    # OUTPUT_DIR: the training loader may write skipped_samples.json there; not the configs'
    # ./output/<name> in the repository
    argv += ["--num-images", str(n), "--scale", "1", *extra, "OUTPUT_DIR", str(out / "output")]
    return vis_cli.main(argv)


def _pngs(folder):
    return sorted(folder.glob("*.png"))


def _panel(png, index, num_panels, panel_hw):
    """The pixels of panel ``index`` of a PNG written at scale 1."""
    array = np.asarray(Image.open(png).convert("RGB"))
    h, w = panel_hw
    left = (array.shape[1] - num_panels * w - (num_panels - 1) * vis.GAP) // 2
    x, y = left + index * (w + vis.GAP), vis.TITLE_H + vis.PANEL_TITLE_H
    return array[y : y + h, x : x + w]


def _check_size(png, panel_hw, num_panels):
    with Image.open(png) as img:
        width, height = img.size
    h, w = panel_hw
    assert width == max(2 * vis.MARGIN + num_panels * w + (num_panels - 1) * vis.GAP, 360)
    legend = height - (vis.TITLE_H + vis.PANEL_TITLE_H + h + vis.MARGIN)
    assert legend % vis.LEGEND_ROW_H == 0 and 0 < legend <= 3 * vis.LEGEND_ROW_H


def test_annotation_source_on_shapes(shapes, tmp_path):
    assert _run(tmp_path, UNET_CFG, "annotation", 3, "--dataset", shapes) == 0
    pngs = _pngs(tmp_path)
    records = DatasetCatalog.get(shapes)
    assert [p.name for p in pngs] == [
        f"{i:04d}_{os.path.splitext(os.path.basename(r['file_name']))[0]}.png"
        for i, r in enumerate(records[:3])
    ]
    for png, record in zip(pngs, records):
        _check_size(png, (SIZE, SIZE), 3)  # image | semantic labels | instances
        image = np.asarray(Image.open(record["file_name"]).convert("RGB"))
        np.testing.assert_array_equal(_panel(png, 0, 3, (SIZE, SIZE)), image)
        assert not np.array_equal(_panel(png, 1, 3, (SIZE, SIZE)), image)  # drawn over


def test_dataloader_source_on_shapes_in_bgr(shapes, tmp_path):
    """The loader's BGR image comes back in RGB; flips are the loader's own."""
    opts = ["DATASETS.TRAIN", f"('{shapes}',)", "DATALOADER.NUM_WORKERS", "0"]
    assert _run(tmp_path, UNET_CFG, "dataloader", 5, *opts, "INPUT.FORMAT", "BGR") == 0
    pngs = _pngs(tmp_path)
    assert len(pngs) == 5  # from one batch of IMS_PER_BATCH 8
    folder = os.path.dirname(DatasetCatalog.get(shapes)[0]["file_name"])
    for png in pngs:
        _check_size(png, (SIZE, SIZE), 2)
        assert png.stem.endswith("_loader")
        stem = png.stem.split("_")[1]
        image = np.asarray(Image.open(os.path.join(folder, stem + ".png")).convert("RGB"))
        shown = _panel(png, 0, 2, (SIZE, SIZE))
        assert np.array_equal(shown, image) or np.array_equal(shown, image[:, ::-1])


def test_dataloader_source_with_instances(shapes, tmp_path):
    opts = ["DATASETS.TRAIN", f"('{shapes}',)", "DATALOADER.NUM_WORKERS", "0"]
    opts += ["INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64"]
    assert _run(tmp_path, MASK_RCNN_CFG, "dataloader", 2, *opts) == 0
    for png in _pngs(tmp_path):
        _check_size(png, (64, 64), 2)  # image | instances, resized to 64 by the mapper


def test_grey_16bit_annotation(grey16, tmp_path):
    assert _run(tmp_path, UNET_CFG, "annotation", 2, "--dataset", grey16, *GREY_OPTS) == 0
    pngs = _pngs(tmp_path)
    assert [p.name for p in pngs] == ["0000_case0.png", "0001_case1.png"]
    for png in pngs:
        _check_size(png, (30, 40), 2)
        panel = _panel(png, 0, 2, (30, 40))
        assert (panel[:, :, 0] == panel[:, :, 1]).all() and panel.std() > 30  # grey, stretched


def test_grey_16bit_dataloader_crops(grey16, tmp_path):
    opts = [*GREY_OPTS, "INPUT.CROP.ENABLED", "True", "INPUT.CROP.TYPE", "absolute"]
    opts += ["INPUT.CROP.SIZE", "(24, 32)", "SOLVER.IMS_PER_BATCH", "2"]
    assert _run(tmp_path, UNET_CFG, "dataloader", 3, "--dataset", grey16, *opts) == 0
    pngs = _pngs(tmp_path)
    assert len(pngs) == 3  # two batches of 2
    for png in pngs:
        _check_size(png, (24, 32), 2)


def test_float_loader_images_are_displayed():
    import torch

    raw = torch.linspace(0, 4000, 12).reshape(1, 3, 4)  # raw 16-bit values
    shown = vis.loader_image_rgb(raw, "L")
    assert shown.shape == (3, 4, 3) and shown.dtype == np.uint8 and shown.max() == 255
    window = torch.full((3, 2, 2), 100.0)  # already 0..255 (INTENSITY_NORM "window")
    assert (vis.loader_image_rgb(window, "RGB") == 100).all()
    bgr = torch.tensor([[[0]], [[0]], [[200]]], dtype=torch.uint8)  # B G R
    assert vis.loader_image_rgb(bgr, "BGR")[0, 0].tolist() == [200, 0, 0]


def test_ignore_and_out_of_range_values_are_drawn_and_named(grey16):
    classes = vis.Classes.from_metadata(_cfg(), grey16)
    label = np.array([[0, 255], [7, 9]])
    names = [name for name, _ in vis.sem_seg_legend(label, classes)]
    assert names == ["background", "ignore (255)", "out of range (7, 9)"]
    assert vis.display_label(label, 2, 255).tolist() == [[0, 2], [3, 3]]
    # drawn: ignore white, out of range magenta (alpha-blended over a black image)
    label = np.zeros((20, 30), np.int64)
    label[:, 10:20], label[:, 20:] = 255, 7
    sample = {"title": "t", "image": np.zeros((20, 30, 3), np.uint8), "sem_seg": label}
    fig = vis.render(sample, classes, scale=1.0)
    # 360 x (title 22 + panel titles 18 + panel 20 + legend: 3 entries in 2 rows of 20 + 8)
    assert fig.get_size_inches().tolist() == [3.6, 1.08]
    panel = vis.sem_seg_panel(sample["image"], label, classes, 1.0)[0]
    ignore, other = panel[2, 12], panel[2, 27]  # corners: away from the names drawn
    assert ignore.min() > 100 and np.ptp(ignore) < 10  # grey-white
    assert other[0] > 100 and other[2] > 100 and other[1] < 30  # magenta


def _cfg():
    from detectron2.config import get_cfg

    from seg_plugins import add_seg_plugins_config

    cfg = get_cfg()
    add_seg_plugins_config(cfg)
    return cfg


def test_command_mistakes_exit_2(tmp_path, capsys):
    assert _run(tmp_path, UNET_CFG, "annotation", 1, "--dataset", "no_such_data") == 2
    assert "not registered" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:  # an argument mistake: the parser's error
        _run(tmp_path, UNET_CFG, "annotation", 0)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("seg_plugins: error: --num-images must be >= 1")
    assert _pngs(tmp_path) == []
