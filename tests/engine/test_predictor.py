"""seg_plugins.Predictor on every registered model: the semantic models of this
package (random tiny weights saved and loaded back), detectron2's Mask R-CNN and Panoptic
FPN; paths, BGR / RGB arrays and PIL images give the same prediction as the evaluation
pipeline; batches equal single images; errors name the problem."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

import seg_plugins  # noqa: F401  (first: repairs detectron2 where needed)

# isort: split
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from seg_plugins import Predictor, add_seg_plugins_config
from seg_plugins.data import SemSegDatasetMapper
from seg_plugins.engine.checkpoint import CheckpointError
from tests.modeling.seg_model_checks import TINY_MODELS, tiny_model_cfg

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

SIZES = [(40, 52), (33, 47)]  # (H, W); odd sizes: the models pad and crop back
INSTANCE_CONFIGS = {
    "GeneralizedRCNN": "mask_rcnn_R18_FPN_GN_shapes.yaml",
    "PanopticFPN": "panoptic_fpn_R18_FPN_GN_shapes.yaml",
}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("predictor_images")
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate(SIZES):
        paths.append(str(folder / f"im{i}.png"))
        Image.fromarray(rng.integers(0, 255, (h, w, 3)).astype(np.uint8)).save(paths[-1])
    return paths


def _saved(cfg, folder):
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    DetectionCheckpointer(model, save_dir=str(folder)).save("weights")
    return model, str(folder / "weights.pth")


@pytest.mark.parametrize("case", sorted(TINY_MODELS))
def test_semantic_models_predict_as_evaluation_does(case, images, tmp_path):
    cfg = tiny_model_cfg(case)
    model, weights = _saved(cfg, tmp_path)
    predictor = Predictor(cfg, weights)
    mapper = SemSegDatasetMapper(cfg, is_train=False)
    k = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    for path, (h, w) in zip(images, SIZES):
        with torch.no_grad():
            expected = model([mapper({"file_name": path})])[0]["sem_seg"]
        out = predictor(path, probabilities=True)
        torch.testing.assert_close(out["sem_seg"], expected, rtol=0, atol=1e-5)
        assert out["classes"].shape == (h, w) and out["classes"].dtype == np.int64
        np.testing.assert_array_equal(out["classes"], expected.argmax(0).numpy())
        assert out["probabilities"].shape == (k, h, w)
        np.testing.assert_allclose(out["probabilities"].sum(0), 1.0, atol=1e-5)
    # batches (same-size images share a forward pass) equal the images one by one
    arrays = [np.asarray(Image.open(p))[:, :, ::-1].copy() for p in images]
    items = [images[0], arrays[1], arrays[0], images[1], arrays[0]]
    batch = predictor.predict(items, batch_size=3)
    for item, got in zip(items, batch):
        torch.testing.assert_close(got["sem_seg"], predictor(item)["sem_seg"], rtol=0, atol=1e-5)


def test_arrays_and_pil_images_in_either_channel_order(images, tmp_path):
    cfg = tiny_model_cfg("UNet")  # INPUT.FORMAT BGR, as detectron2's default
    _, weights = _saved(cfg, tmp_path)
    predictor = Predictor(cfg, weights)
    expected = predictor(images[0])["classes"]
    rgb = np.asarray(Image.open(images[0]).convert("RGB"))
    for item, fmt in (
        (rgb[:, :, ::-1].copy(), "BGR"),
        (rgb, "RGB"),
        (Image.open(images[0]), "BGR"),
    ):
        np.testing.assert_array_equal(predictor(item, input_format=fmt)["classes"], expected)
    # an RGB config takes the same images the same way
    cfg_rgb = tiny_model_cfg("UNet", "INPUT.FORMAT", "RGB")
    rgb_predictor = Predictor(cfg_rgb, weights)
    out_rgb = rgb_predictor(rgb, input_format="RGB")["sem_seg"]
    out_path = rgb_predictor(images[0])["sem_seg"]
    torch.testing.assert_close(out_rgb, out_path, rtol=0, atol=0)


def test_grayscale_binary_model(tmp_path):
    grey = ["INPUT.FORMAT", "L", "MODEL.PIXEL_MEAN", [128.0], "MODEL.PIXEL_STD", [64.0]]
    cfg = tiny_model_cfg("UNet", *grey, "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 1)
    _, weights = _saved(cfg, tmp_path)
    predictor = Predictor(cfg, weights)
    grey = np.random.default_rng(1).integers(0, 255, (30, 44)).astype(np.uint8)
    out = predictor(grey, probabilities=True)
    assert out["classes"].shape == (30, 44) and set(np.unique(out["classes"])) <= {0, 1}
    assert out["probabilities"].shape == (1, 30, 44)  # the foreground probability
    clear = np.abs(out["probabilities"][0] - 0.5) > 1e-4
    np.testing.assert_array_equal(out["classes"][clear], (out["probabilities"][0] > 0.5)[clear])
    path = str(tmp_path / "grey.png")
    Image.fromarray(grey).save(path)
    np.testing.assert_array_equal(predictor(path)["classes"], out["classes"])
    np.testing.assert_array_equal(predictor(Image.open(path))["classes"], out["classes"])


@pytest.mark.parametrize("arch", sorted(INSTANCE_CONFIGS))
def test_instance_models_return_instances_at_the_input_size(arch, images, tmp_path):
    cfg = get_cfg()
    add_seg_plugins_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", "shapes", INSTANCE_CONFIGS[arch]))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0])
    _, weights = _saved(cfg, tmp_path)
    predictor = Predictor(cfg, weights)
    for path, (h, w) in zip(images, SIZES):
        out = predictor(path)
        assert out["instances"].image_size == (h, w)
        assert out["instances"].pred_boxes.device.type == "cpu"
        if arch == "PanopticFPN":
            assert out["panoptic_seg"][0].shape == (h, w)
            assert out["classes"].shape == (h, w)


def test_errors_name_the_problem(images, tmp_path):
    cfg = tiny_model_cfg("UNet")
    with pytest.raises(CheckpointError, match="needs weights"):
        Predictor(cfg)
    with pytest.raises(CheckpointError, match="nope.pth not found"):
        Predictor(cfg, str(tmp_path / "nope.pth"))
    _, weights = _saved(cfg, tmp_path)
    with pytest.raises(CheckpointError, match=r"lack .* parameters|does not fit the model"):
        Predictor(tiny_model_cfg("UNet", "MODEL.UNET.DEPTH", 4), weights)
    predictor = Predictor(cfg, weights)
    with pytest.raises(TypeError, match="cannot predict a list"):
        predictor([[1, 2]])
    with pytest.raises(ValueError, match="input 0: 1 channel.*takes 3"):
        predictor(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="input_format='HSV'"):
        predictor(np.zeros((8, 8, 3), np.uint8), input_format="HSV")
    with pytest.raises(OSError, match="missing.png"):
        predictor(str(tmp_path / "missing.png"))


def test_from_config_file_in_three_lines(images, tmp_path):
    cfg = tiny_model_cfg("UNet")
    _, weights = _saved(cfg, tmp_path)
    opts = ["MODEL.UNET.BASE_CHANNELS", 4, "MODEL.UNET.DEPTH", 3, "MODEL.DEVICE", "cpu"]
    predictor = Predictor.from_config_file(
        os.path.join(REPO, "configs", "shapes", "unet_shapes.yaml"), weights, opts=opts
    )
    assert predictor(images[0])["classes"].shape == SIZES[0]
