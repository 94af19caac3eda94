"""The evaluator's per-image machinery (seg_plugins.evaluation.confusion) and its wiring:
the NumPy argmax equals torch.argmax (ties, NaN), the NumPy and PyTorch histograms equal a
direct count for every kind of label map, TEST.SEM_SEG_EVAL.* reach the evaluator through
the Trainer, and the results reach detectron2's metrics.json."""

import json
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

import seg_plugins  # noqa: F401  must come before detectron2 submodules (repairs the install)

# isort: split
from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluators

from seg_plugins import add_seg_plugins_config
from seg_plugins.evaluation import SemSegMetricsEvaluator
from seg_plugins.evaluation.confusion import (
    argmax_channels_numpy,
    argmax_channels_torch,
    image_confusion_numpy,
    image_confusion_torch,
)

IGNORE = 255


@pytest.mark.parametrize(
    "k,shape,dtype",
    [
        (19, (45, 200), torch.float32),
        (2, (7, 3), torch.float64),
        (5, (130, 33), torch.float16),
        (300, (6, 9), torch.float32),
    ],
)
def test_numpy_argmax_equals_torch_argmax_including_ties(k, shape, dtype):
    g = torch.Generator().manual_seed(k)
    logits = torch.randn(k, *shape, generator=g).to(dtype)
    logits[:, 0] = 0.0  # a row where every channel ties: channel 0
    logits[1:, 1, : shape[1] // 2] = 3.0  # ties among 1..K-1 at the max: channel 1
    logits[-1, -1] = logits.max() + 1  # the last channel wins a row
    pred = argmax_channels_numpy(logits.numpy())
    assert pred.dtype == (np.uint8 if k < 256 else np.uint16)
    assert np.array_equal(pred, logits.argmax(0).numpy())
    assert (pred[0] == 0).all() and (pred[1, : shape[1] // 2] == 1).all()


def test_nan_logits_raise_on_both_paths_and_name_the_image(tmp_path):
    logits = torch.zeros(3, 70, 5)
    logits[1, 66, 2] = float("nan")
    with pytest.raises(FloatingPointError, match="NaN"):
        argmax_channels_numpy(logits.numpy())
    with pytest.raises(FloatingPointError, match="NaN"):
        argmax_channels_torch(logits)
    name = f"test_conf_{uuid.uuid4().hex[:8]}"
    MetadataCatalog.get(name).set(stuff_classes=["a", "b", "c"])
    gt_file = str(tmp_path / "gt.png")
    Image.fromarray(np.zeros((70, 5), np.uint8)).save(gt_file)
    try:
        with pytest.raises(FloatingPointError, match="NaN.*img_7.*diverged"):
            SemSegMetricsEvaluator(name).process(
                [{"file_name": "img_7.png", "sem_seg_file_name": gt_file}], [{"sem_seg": logits}]
            )
    finally:
        MetadataCatalog.remove(name)


def _direct(pred, gt, k, ignore):
    conf = np.zeros((k, k), np.int64)
    keep = gt != ignore
    np.add.at(conf, (gt[keep].astype(np.int64), pred[keep].astype(np.int64)), 1)
    return conf


@pytest.mark.parametrize(
    "k,ignore,gt_dtype",
    [
        (4, 255, np.uint8),
        (19, 255, np.uint8),
        (4, 65535, np.int32),
        (300, 1000, np.int32),
        (4, 0, np.uint8),
    ],  # ignore 0: an ignore label that is also a class id
)
def test_histograms_equal_a_direct_count(k, ignore, gt_dtype):
    rng = np.random.default_rng(k + ignore)
    gt = rng.integers(0, k, size=(37, 29)).astype(gt_dtype)
    gt[rng.random(gt.shape) < 0.2] = ignore
    pred = rng.integers(0, k, size=gt.shape).astype(np.uint8 if k < 256 else np.uint16)
    expected = _direct(pred, gt, k, ignore)
    assert expected.sum() == (gt != ignore).sum() > 0
    ours = image_confusion_numpy(pred, gt, k, ignore, "gt.png")
    assert ours.dtype == np.int64 and np.array_equal(ours, expected)
    theirs = image_confusion_torch(torch.from_numpy(pred.astype(np.int64)), gt, k, ignore, "gt.png")
    assert theirs.dtype == torch.int64 and np.array_equal(theirs.numpy(), expected)


@pytest.mark.parametrize("gt_dtype", [np.uint8, np.int32])
def test_label_outside_the_classes_names_the_file_on_both_paths(gt_dtype):
    gt = np.array([[0, 1, 7], [IGNORE, 2, 9]], dtype=gt_dtype)
    pred = np.zeros(gt.shape, np.uint8)
    for fn, p in ((image_confusion_numpy, pred), (image_confusion_torch, torch.from_numpy(pred))):
        with pytest.raises(ValueError, match=r"lbl_17\.png: label values \[7, 9\].*0\.\.2"):
            fn(p, gt, 3, IGNORE, "lbl_17.png")


def test_torch_path_gives_the_same_matrix(tmp_path):
    """bfloat16 logits (no NumPy dtype) take the PyTorch path, as CUDA logits do."""
    name = f"test_conf_{uuid.uuid4().hex[:8]}"
    MetadataCatalog.get(name).set(stuff_classes=["a", "b", "c", "d"])
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 4, size=(31, 47)).astype(np.uint8)
    gt[rng.random(gt.shape) < 0.2] = IGNORE
    gt_file = str(tmp_path / "gt.png")
    Image.fromarray(gt).save(gt_file)
    logits = torch.randn(4, 31, 47).to(torch.bfloat16)  # exactly representable in float32
    mats = []
    try:
        for scores in (logits, logits.float()):
            ev = SemSegMetricsEvaluator(name)
            ev.process([{"sem_seg_file_name": gt_file}], [{"sem_seg": scores}])
            ev.evaluate()
            mats.append(ev.confusion_matrix)
    finally:
        MetadataCatalog.remove(name)
    assert np.array_equal(mats[0], mats[1])
    assert np.array_equal(mats[1], _direct(logits.float().argmax(0).numpy(), gt, 4, IGNORE))


@pytest.mark.parametrize("chunks", [2, 3, 5, 9])
def test_threaded_argmax_equals_torch_argmax_and_raises_on_nan_in_any_chunk(chunks):
    """Rows shared over threads (64-row bands of 2048 columns; 300 rows = 5 bands, so 9
    chunks become 5): the same ids as torch.argmax, ties included; a NaN in the last chunk
    still raises."""
    g = torch.Generator().manual_seed(chunks)
    logits = torch.randn(4, 300, 2048, generator=g)
    logits[:, ::7] = 0.5  # ties: the first channel wins
    with ThreadPoolExecutor(2) as pool:
        pred = argmax_channels_numpy(logits.numpy(), pool=pool, chunks=chunks)
        assert np.array_equal(pred, logits.argmax(0).numpy())
        logits[2, 299, 2047] = float("nan")
        with pytest.raises(FloatingPointError, match="NaN"):
            argmax_channels_numpy(logits.numpy(), pool=pool, chunks=chunks)


def test_evaluator_threads_do_not_change_the_numbers_or_the_errors(tmp_path):
    """num_threads 1 (serial) and 3 (label read overlapped, argmax chunked) give the same
    matrix; a missing label file and a size mismatch still raise, naming the file."""
    name = f"test_conf_{uuid.uuid4().hex[:8]}"
    MetadataCatalog.get(name).set(stuff_classes=["a", "b", "c"], ignore_label=IGNORE)
    rng = np.random.default_rng(3)
    files, logits = [], []
    for i in range(3):
        gt = rng.integers(0, 3, size=(200, 2048)).astype(np.uint8)
        gt[rng.random(gt.shape) < 0.1] = IGNORE
        files.append(str(tmp_path / f"gt{i}.png"))
        Image.fromarray(gt).save(files[-1])
        logits.append(torch.randn(3, 200, 2048))
    mats = []
    try:
        with pytest.raises(ValueError, match="num_threads"):
            SemSegMetricsEvaluator(name, num_threads=0)
        for threads in (1, 3):
            ev = SemSegMetricsEvaluator(name, num_threads=threads, per_case_dice=True)
            for f, x in zip(files, logits):
                ev.process([{"sem_seg_file_name": f}], [{"sem_seg": x}])
            ev.evaluate()
            mats.append((ev.confusion_matrix, ev.case_dice))
            with pytest.raises(FileNotFoundError, match="missing.png"):
                ev.process(
                    [{"sem_seg_file_name": str(tmp_path / "missing.png")}], [{"sem_seg": logits[0]}]
                )
            with pytest.raises(ValueError, match="gt0.png.*original image size"):
                ev.process([{"sem_seg_file_name": files[0]}], [{"sem_seg": logits[0][:, :100]}])
    finally:
        MetadataCatalog.remove(name)
    assert np.array_equal(mats[0][0], mats[1][0])
    assert np.array_equal(mats[0][1], mats[1][1], equal_nan=True)
    expected = sum(
        _direct(x.argmax(0).numpy(), np.asarray(Image.open(f)), 3, IGNORE)
        for f, x in zip(files, logits)
    )
    assert np.array_equal(mats[1][0], expected)


# ----------------------------------------------------------------------------- config


@pytest.fixture
def sem_seg_dataset():
    name = f"test_conf_{uuid.uuid4().hex[:8]}"
    MetadataCatalog.get(name).set(
        stuff_classes=["road", "car", "sky"], ignore_label=IGNORE, evaluator_type="sem_seg"
    )
    yield name
    MetadataCatalog.remove(name)


def _cfg(**keys):
    cfg = get_cfg()
    add_seg_plugins_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = "UNet"
    for key, value in keys.items():
        cfg.TEST.SEM_SEG_EVAL[key] = value
    return cfg


def _ours(evaluator):
    evaluators = evaluator._evaluators if isinstance(evaluator, DatasetEvaluators) else [evaluator]
    (found,) = [e for e in evaluators if isinstance(e, SemSegMetricsEvaluator)]
    return found


def test_config_defaults():
    ev = _cfg().TEST.SEM_SEG_EVAL
    assert (ev.ABSENT_CLASSES, ev.BACKGROUND_CLASS, ev.PER_CASE_DICE) == ("mmseg", 0, False)


def test_trainer_builds_the_evaluator_from_the_config_keys(sem_seg_dataset, tmp_path):
    from seg_plugins.engine import Trainer

    cfg = _cfg(ABSENT_CLASSES="detectron2_main", BACKGROUND_CLASS=-1, PER_CASE_DICE=True)
    cfg.MODEL.SEM_SEG_HEAD.BINARY_THRESHOLD = 0.7
    ev = _ours(Trainer.build_evaluator(cfg, sem_seg_dataset, str(tmp_path)))
    assert ev._absent_classes == "detectron2_main" and ev._background_class == -1
    assert ev._per_case and ev._binary_threshold == 0.7 and ev._output_dir == str(tmp_path)
    default = _ours(Trainer.build_evaluator(_cfg(), sem_seg_dataset))
    assert default._absent_classes == "mmseg" and not default._per_case  # 3 classes


@pytest.mark.parametrize(
    "keys,match",
    [
        ({"ABSENT_CLASSES": "detectron2"}, r"ABSENT_CLASSES.*'mmseg', 'detectron2_v0\.6'"),
        ({"BACKGROUND_CLASS": 3}, r"BACKGROUND_CLASS.*-1"),
    ],
)
def test_bad_config_values_name_the_key(sem_seg_dataset, keys, match):
    with pytest.raises(ValueError, match=match):
        SemSegMetricsEvaluator(_cfg(**keys), sem_seg_dataset)


# ----------------------------------------------------------------------------- metrics.json


@pytest.mark.slow
def test_results_reach_detectron2_metrics_json(tmp_path):
    """Trainer -> EvalHook -> EventStorage -> JSONWriter: every figure, per class too."""
    from seg_plugins.data import register_shapes
    from seg_plugins.engine import Trainer

    prefix = f"shapes_mj_{uuid.uuid4().hex[:6]}"
    register_shapes(prefix, root=str(tmp_path / "data"), num_train=2, num_val=2, image_size=32)
    cfg = get_cfg()
    add_seg_plugins_config(cfg)
    cfg.merge_from_file("configs/shapes/unet_shapes.yaml")
    cfg.merge_from_list(
        [
            "DATASETS.TRAIN",
            (f"{prefix}_train",),
            "DATASETS.TEST",
            (f"{prefix}_val",),
            "OUTPUT_DIR",
            str(tmp_path / "out"),
            "MODEL.DEVICE",
            "cpu",
            "DATALOADER.NUM_WORKERS",
            0,
            "MODEL.UNET.BASE_CHANNELS",
            4,
            "MODEL.UNET.DEPTH",
            2,
            "SOLVER.IMS_PER_BATCH",
            2,
            "SOLVER.MAX_ITER",
            2,
            "SOLVER.WARMUP_ITERS",
            0,
            "TEST.EVAL_PERIOD",
            1,
            "TEST.SEM_SEG_EVAL.PER_CASE_DICE",
            True,
        ]
    )
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    rows = [json.loads(line) for line in (tmp_path / "out" / "metrics.json").open()]
    evals = [row for row in rows if "sem_seg/mIoU" in row]
    assert len(evals) == 2  # after iteration 1 (EVAL_PERIOD) and at the end
    names = MetadataCatalog.get(f"{prefix}_val").stuff_classes
    keys = (
        {"mIoU", "fwIoU", "mACC", "pACC", "mDice", "fgDice", "mCaseDice"}
        | {f"{m}-{n}" for m in ("IoU", "ACC", "Dice", "Precision") for n in names}
        | {f"caseDice-{n}" for n in names[1:]}
    )
    assert {f"sem_seg/{k}" for k in keys} <= set(evals[-1])
    assert evals[-1]["sem_seg/mIoU"] == trainer._last_eval_results["sem_seg"]["mIoU"]
