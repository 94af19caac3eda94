"""tools/predict.py end to end, in process, on a tiny randomly initialised U-Net whose
weights the test writes with DetectionCheckpointer: outputs, input forms, errors, the
progress bar."""

import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image

import seg_plugins  # noqa: F401  must come before detectron2 submodules (repairs the install)

# isort: split
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model

from seg_plugins import add_seg_plugins_config
from seg_plugins.data import SemSegDatasetMapper
from seg_plugins.data.io import read_label
from seg_plugins.tools import predict as predict_impl
from tools import predict

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UNET_CFG = os.path.join(REPO, "configs", "shapes", "unet_shapes.yaml")
TINY = ["MODEL.UNET.BASE_CHANNELS", "4", "MODEL.UNET.DEPTH", "2", "MODEL.DEVICE", "cpu"]
SIZES = [(40, 52), (33, 47), (64, 64)]  # (H, W); odd sizes: the model pads and crops back


def _model(opts):
    cfg = get_cfg()
    add_seg_plugins_config(cfg)
    cfg.merge_from_file(UNET_CFG)
    cfg.merge_from_list(opts)
    torch.manual_seed(0)
    return cfg, build_model(cfg).eval()


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A randomly initialised tiny U-Net (4 classes), saved as a detectron2 checkpoint."""
    folder = tmp_path_factory.mktemp("weights")
    _, model = _model(TINY)
    DetectionCheckpointer(model, save_dir=str(folder)).save("tiny")
    return str(folder / "tiny.pth")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(SIZES):
        Image.fromarray(rng.integers(0, 255, (h, w, 3)).astype(np.uint8)).save(
            folder / f"im{i}.png"
        )
    (folder / "notes.txt").write_text("not an image")
    return folder


def _run(tmp_path, inputs, *extra, opts=()):
    argv = ["--config-file", UNET_CFG, "--input", *inputs, "--output", str(tmp_path), *extra]
    return predict.main(argv + ["--opts", *TINY, *opts])


def test_folder_gives_palette_labels_overlays_and_probabilities(tmp_path, images, weights):
    assert _run(tmp_path, [str(images)], "--probabilities", opts=["MODEL.WEIGHTS", weights]) == 0
    stuff_colors = MetadataCatalog.get("shapes_val").stuff_colors
    cfg, model = _model([*TINY, "MODEL.WEIGHTS", weights])
    DetectionCheckpointer(model).load(weights)
    mapper = SemSegDatasetMapper(cfg, is_train=False)
    for i, (h, w) in enumerate(SIZES):
        with Image.open(tmp_path / f"im{i}.png") as png:
            assert png.mode == "P" and png.size == (w, h)
            assert np.reshape(png.getpalette()[:12], (4, 3)).tolist() == stuff_colors
        label = read_label(str(tmp_path / f"im{i}.png"))
        assert label.max() < 4
        # Same pipeline as evaluation: the mapper's input, the model's argmax.
        with torch.no_grad():
            logits = model([mapper({"file_name": str(images / f"im{i}.png")})])[0]["sem_seg"]
        np.testing.assert_array_equal(label, logits.argmax(0).numpy())
        prob = np.load(tmp_path / f"im{i}_prob.npy")
        assert prob.shape == (4, h, w) and prob.dtype == np.float16
        np.testing.assert_allclose(prob.astype(np.float32).sum(0), 1.0, atol=5e-3)
        np.testing.assert_array_equal(
            prob.astype(np.float32).argmax(0)[prob.max(0) > 0.5], label[prob.max(0) > 0.5]
        )
        with Image.open(tmp_path / f"im{i}_overlay.png") as overlay:
            assert overlay.mode == "RGB" and overlay.height / overlay.width == pytest.approx(
                h / w, rel=0.05
            )
            assert overlay.width >= w
    assert not os.path.exists(tmp_path / "notes.png")  # only image files are read


def test_glob_and_binary_grayscale_model(tmp_path, images):
    opts = [
        *TINY,
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
        "1",
        "INPUT.FORMAT",
        "L",
        "MODEL.PIXEL_MEAN",
        "[128.0]",
        "MODEL.PIXEL_STD",
        "[64.0]",
    ]
    _, model = _model(opts)
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("binary")
    out = tmp_path / "out"
    binary = ["MODEL.WEIGHTS", str(tmp_path / "binary.pth"), *opts]
    assert _run(out, [str(images / "im[01].png")], "--probabilities", opts=binary) == 0
    assert sorted(os.listdir(out)) == [
        "im0.png",
        "im0_overlay.png",
        "im0_prob.npy",
        "im1.png",
        "im1_overlay.png",
        "im1_prob.npy",
    ]
    label = read_label(str(out / "im1.png"))
    prob = np.load(out / "im1_prob.npy")
    assert label.shape == SIZES[1] and set(np.unique(label)) <= {0, 1}
    assert prob.shape == (1, *SIZES[1])  # the foreground probability
    clear = np.abs(prob[0].astype(np.float32) - 0.5) > 0.01  # away from float16 rounding
    np.testing.assert_array_equal(label[clear], (prob[0] > 0.5)[clear])


def test_command_mistakes_exit_2_naming_the_problem(tmp_path, images, weights, capsys):
    w = ["MODEL.WEIGHTS", weights]
    assert _run(tmp_path, [str(images / "*.jpg")], opts=w) == 2
    assert "*.jpg" in capsys.readouterr().err
    assert _run(tmp_path, [str(tmp_path / "missing.png")], opts=w) == 2
    assert "missing.png': no such file or folder" in capsys.readouterr().err
    assert _run(tmp_path, [str(images)]) == 2  # no weights
    assert "MODEL.WEIGHTS" in capsys.readouterr().err
    assert _run(images, [str(images / "im0.png")], opts=w) == 2  # would overwrite the input
    assert "overwrite the input" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(other / "im0.png")
    assert _run(tmp_path, [str(images / "im0.png"), str(other)], opts=w) == 2
    assert "same name 'im0'" in capsys.readouterr().err
    assert _run(tmp_path, [str(images)], opts=["MODEL.UNET.DEPTH", "3", *w]) == 2
    assert "the one these weights were trained with" in capsys.readouterr().err
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    assert _run(tmp_path, [str(images)], opts=["MODEL.WEIGHTS", str(tmp_path / "junk.pth")]) == 2
    assert "cannot load MODEL.WEIGHTS" in capsys.readouterr().err


def test_unreadable_image_exits_1_naming_it(tmp_path, weights, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    assert _run(tmp_path / "out", [str(bad)], opts=["MODEL.WEIGHTS", weights]) == 1
    assert "broken.png" in capsys.readouterr().err


def test_onnx_model_instead_of_pytorch(tmp_path, images, weights, capsys):
    """--onnx runs an exported model (tools/export_model.py's format) with onnxruntime:
    one output set per input, the same classes as the PyTorch run wherever the top two
    logits are not within float error of each other."""
    from seg_plugins.export import export_onnx

    cfg, model = _model([*TINY, "MODEL.WEIGHTS", weights])
    DetectionCheckpointer(model).load(weights)
    onnx_file = export_onnx(model, str(tmp_path / "model.onnx"), example_size=(32, 32))
    torch_out, onnx_out = tmp_path / "torch", tmp_path / "onnx"
    assert _run(torch_out, [str(images)], opts=["MODEL.WEIGHTS", weights]) == 0
    assert _run(onnx_out, [str(images)], "--onnx", onnx_file, "--probabilities") == 0
    assert len(os.listdir(onnx_out)) == 3 * len(SIZES)  # label, overlay, probabilities
    mapper = SemSegDatasetMapper(cfg, is_train=False)
    for i in range(len(SIZES)):
        with torch.no_grad():
            logits = model([mapper({"file_name": str(images / f"im{i}.png")})])[0]["sem_seg"]
        top2 = logits.topk(2, dim=0).values
        clear = (top2[0] - top2[1] > 1e-4).numpy()
        got = read_label(str(onnx_out / f"im{i}.png"))
        np.testing.assert_array_equal(got[clear], read_label(str(torch_out / f"im{i}.png"))[clear])
    assert _run(onnx_out, [str(images)], "--onnx", str(tmp_path / "none.onnx")) == 2
    assert "none.onnx: no such file" in capsys.readouterr().err


def test_the_checkpoint_alone_predicts_as_its_config_does(tmp_path, images):
    """A checkpoint saved by seg_plugins' checkpointer carries its config: --weights alone
    gives the same labels as --config-file + MODEL.WEIGHTS."""
    from seg_plugins.engine.checkpoint import AtomicCheckpointer

    cfg, model = _model(TINY)
    AtomicCheckpointer.from_config(cfg, model, str(tmp_path / "run")).save("model_final")
    weights = str(tmp_path / "run" / "model_final.pth")
    by_config = tmp_path / "by_config"
    assert _run(by_config, [str(images)], opts=["MODEL.WEIGHTS", weights]) == 0
    alone = tmp_path / "alone"
    argv = ["--weights", weights, "--input", str(images), "-o", str(alone)]
    assert predict.main(argv) == 0
    for i in range(len(SIZES)):
        np.testing.assert_array_equal(
            read_label(str(alone / f"im{i}.png")), read_label(str(by_config / f"im{i}.png"))
        )


def test_a_checkpoint_without_config_needs_one(tmp_path, images, weights, capsys):
    """An older checkpoint (no config inside) still predicts with --config-file; alone, the
    error says to pass its config."""
    argv = ["--weights", weights, "--input", str(images), "-o", str(tmp_path)]
    assert predict.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds no config" in err and "--config-file" in err
    assert predict.main(["--config-file", UNET_CFG, *argv, *TINY]) == 0


def test_log_lines_go_through_the_progress_bar(tmp_path, images, weights, monkeypatch):
    """While the bar runs, seg_plugins' console handler writes through tqdm.write (which
    clears and redraws the bar), so a log line and the bar never share a terminal line."""
    from tqdm import tqdm

    written = []
    monkeypatch.setattr(tqdm, "write", classmethod(lambda cls, s, **k: written.append(s)))
    handler = logging.StreamHandler()
    seg_logger = logging.getLogger("seg_plugins")
    seg_logger.addHandler(handler)
    try:
        monkeypatch.setattr(
            predict_impl, "OutputWriter", _logging_writer(predict_impl.OutputWriter)
        )
        assert _run(tmp_path, [str(images)], opts=["MODEL.WEIGHTS", weights]) == 0
    finally:
        seg_logger.removeHandler(handler)
    assert sum("writing im" in line for line in written) == len(SIZES), written


def _logging_writer(base):
    class Writer(base):
        def __call__(self, path, logits, prefix):
            logging.getLogger("seg_plugins.predict").warning("writing %s", os.path.basename(path))
            return super().__call__(path, logits, prefix)

    return Writer


def test_panoptic_fpn_writes_coco_panoptic_pngs_json_and_overlays(tmp_path):
    """Panoptic FPN through the tool: <stem>_panoptic.png holds the Predictor's segment ids
    (R + 256 G + 256^2 B; the segments it lists, VOID elsewhere), panoptic.json the dataset's
    category ids, and an overlay per image."""
    import json

    from detectron2.data import DatasetCatalog

    from seg_plugins import Predictor
    from seg_plugins.data import register_shapes
    from seg_plugins.data.io import read_panoptic_ids
    from seg_plugins.engine.checkpoint import AtomicCheckpointer

    register_shapes("predict_pan", root=str(tmp_path / "data"), num_train=2, num_val=2,
                    image_size=64, seed=4)  # fmt: skip
    records = DatasetCatalog.get("predict_pan_panoptic_val")
    cfg = get_cfg()
    add_seg_plugins_config(cfg)
    cfg.merge_from_file(
        os.path.join(REPO, "configs", "shapes", "panoptic_fpn_R18_FPN_GN_shapes.yaml")
    )
    cfg.merge_from_list([
        "MODEL.FPN.OUT_CHANNELS", 32, "MODEL.ASPP.CHANNELS", 32,
        "MODEL.DEEPLABV3PLUS.DECODER_CHANNELS", 32, "MODEL.ROI_BOX_HEAD.FC_DIM", 64,
        "MODEL.ROI_MASK_HEAD.CONV_DIM", 32, "INPUT.MIN_SIZE_TEST", 64, "INPUT.MAX_SIZE_TEST", 64,
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0,
        "MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH", 0.0,
        "MODEL.DEVICE", "cpu", "DATASETS.TEST", ("predict_pan_panoptic_val",),
    ])  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg)
    AtomicCheckpointer.from_config(cfg, model, str(tmp_path / "run")).save("model_final")
    weights = str(tmp_path / "run" / "model_final.pth")
    images = [r["file_name"] for r in records]
    out = tmp_path / "out"
    assert predict.main(["--weights", weights, "--input", *images, "-o", str(out)]) == 0
    data = json.loads((out / "panoptic.json").read_text())
    categories = {c["id"] for c in data["categories"]}
    assert categories == {1, 2, 3, 4}  # circle, square, triangle; background (stuff)
    assert len(data["annotations"]) == len(images)
    predictor = Predictor.from_checkpoint(weights)
    segments_seen = 0
    for path, ann in zip(images, data["annotations"]):
        stem = os.path.splitext(os.path.basename(path))[0]
        assert ann["file_name"] == f"{stem}_panoptic.png"
        ids = read_panoptic_ids(str(out / ann["file_name"]))
        kept = [s["id"] for s in ann["segments_info"]]
        expected, _ = predictor(path)["panoptic_seg"]
        np.testing.assert_array_equal(ids, np.where(np.isin(expected, kept), expected, 0))
        for s in ann["segments_info"]:
            assert s["category_id"] in categories and s["area"] == int((ids == s["id"]).sum())
            assert s["isthing"] == (s["category_id"] != 4)
        segments_seen += len(kept)
        assert (out / f"{stem}_overlay.png").is_file()
    assert segments_seen > 0  # a prediction to check, not only VOID
