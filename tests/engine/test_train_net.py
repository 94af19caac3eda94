"""End to end through the real entry point: tools/train_net.py's main, detectron2's
DefaultTrainer, DatasetCatalog, checkpointer and evaluators, on a tiny generated dataset."""

import json
import math
import os
import subprocess
import sys

import seg_plugins  # noqa: F401  (first: repairs detectron2 where needed)

# isort: split
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg

from seg_plugins import add_seg_plugins_config
from seg_plugins.data import register_shapes
from seg_plugins.engine import Trainer
from seg_plugins.engine.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UNET_CFG = os.path.join(REPO, "configs", "shapes", "unet_shapes.yaml")
MASK_RCNN_CFG = os.path.join(REPO, "configs", "shapes", "mask_rcnn_R18_FPN_GN_shapes.yaml")
TINY = "shapes_e2e"


@pytest.fixture(scope="module")
def tiny_shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    register_shapes(TINY, root=str(root), num_train=8, num_val=4, image_size=64, seed=3)
    return root


def _cfg(config_file, output_dir, *opts):
    cfg = get_cfg()
    add_seg_plugins_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(
        [
            "DATASETS.TRAIN",
            (f"{TINY}_train",),
            "DATASETS.TEST",
            (f"{TINY}_val",),
            "OUTPUT_DIR",
            str(output_dir),
            "MODEL.DEVICE",
            "cpu",
            "DATALOADER.NUM_WORKERS",
            0,
            *opts,
        ]
    )
    return cfg


UNET_SMALL = [
    "MODEL.UNET.BASE_CHANNELS",
    4,
    "MODEL.UNET.DEPTH",
    3,
    "SOLVER.IMS_PER_BATCH",
    2,
    "SOLVER.WARMUP_ITERS",
    2,
    "TEST.EVAL_PERIOD",
    0,
]


@pytest.mark.slow
def test_unet_trains_checkpoints_evaluates_and_resumes(tiny_shapes, tmp_path):
    out = tmp_path / "unet"
    opts = [
        "DATASETS.TRAIN",
        f"('{TINY}_train',)",
        "DATASETS.TEST",
        f"('{TINY}_val',)",
        "OUTPUT_DIR",
        str(out),
        "DATALOADER.NUM_WORKERS",
        "0",
        "SOLVER.MAX_ITER",
        "6",
        "SOLVER.CHECKPOINT_PERIOD",
        "3",
    ]
    opts += [str(v) for v in UNET_SMALL]
    main(["--config-file", UNET_CFG, *opts])

    assert (out / "model_final.pth").is_file() and (out / "model_0000002.pth").is_file()
    assert (out / "last_checkpoint").read_text().strip() == "model_final.pth"
    report = json.loads((out / "inference" / f"{TINY}_val" / "sem_seg_evaluation.json").read_text())
    metrics = report["metrics"]
    for key in ("mIoU", "fwIoU", "mACC", "pACC"):
        assert math.isfinite(metrics[key]) and 0 <= metrics[key] <= 100
    assert sum(map(sum, report["confusion_matrix"])) == 4 * 64 * 64  # every val pixel counted

    # --resume continues from the last checkpoint (iteration 5 done -> starts at 6).
    cfg = _cfg(UNET_CFG, out, *UNET_SMALL, "SOLVER.MAX_ITER", 8)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=True)
    assert trainer.start_iter == 6
    assert trainer.scheduler.last_epoch == 6  # LR schedule restored, not restarted
    saved = torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)["model"]
    for name, value in trainer.model.state_dict().items():
        torch.testing.assert_close(value, saved[name])
    trainer.train()
    assert trainer.iter == 8  # detectron2 leaves iter at MAX_ITER after the last step


@pytest.mark.slow
def test_mask_rcnn_trains_and_coco_evaluates(tiny_shapes, tmp_path):
    cfg = _cfg(
        MASK_RCNN_CFG,
        tmp_path / "mrcnn",
        "SOLVER.MAX_ITER",
        4,
        "SOLVER.IMS_PER_BATCH",
        2,
        "SOLVER.WARMUP_ITERS",
        1,
        "SOLVER.CHECKPOINT_PERIOD",
        2,
        "INPUT.MIN_SIZE_TRAIN",
        (64,),
        "INPUT.MAX_SIZE_TRAIN",
        64,
        "INPUT.MIN_SIZE_TEST",
        64,
        "INPUT.MAX_SIZE_TEST",
        64,
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
        0.0,
    )
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    results = trainer._last_eval_results
    assert set(results) == {"bbox", "segm"}
    for task in ("bbox", "segm"):
        assert math.isfinite(results[task]["AP"]) and 0 <= results[task]["AP"] <= 100
    assert (tmp_path / "mrcnn" / "model_final.pth").is_file()

    # The checkpoint loads back into a fresh model with identical weights.
    model = Trainer.build_model(cfg)
    DetectionCheckpointer(model).load(str(tmp_path / "mrcnn" / "model_final.pth"))
    for (n, a), b in zip(trainer.model.state_dict().items(), model.state_dict().values()):
        torch.testing.assert_close(a, b, msg=n)


def _cli(*args):
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "train_net.py"), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--config-file", "configs/does_not_exist.yaml"], "config file not found"),
        (
            ["--config-file", UNET_CFG, "MODEL.UNET.BASE_CHANEL", "8"],
            "unknown config key MODEL.UNET.BASE_CHANEL in the command-line overrides "
            "(did you mean MODEL.UNET.BASE_CHANNELS?)",
        ),
        (
            ["--config-file", UNET_CFG, "DATASETS.TRAIN", "('shapes_trian',)"],
            "dataset 'shapes_trian' is not registered (did you mean shapes_train?)",
        ),
        (["--config-file", UNET_CFG, "SOLVER.MAX_ITER", "many"], "wrong value type"),
    ],
)
def test_command_line_mistakes_give_one_clear_line(args, expected):
    r = _cli(*args)
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.startswith("seg_plugins: error:")]
    assert len(lines) == 1 and expected in lines[0], r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_eval_only_on_the_registered_shapes_sem_seg_val(tmp_path):
    """The default `shapes_sem_seg_val`, generated on first use under $DETECTRON2_DATASETS."""
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path / "datasets"))
    out = tmp_path / "eval"
    r = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "tools", "train_net.py"),
            "--config-file",
            UNET_CFG,
            "--eval-only",
            "MODEL.UNET.BASE_CHANNELS",
            "4",
            "MODEL.UNET.DEPTH",
            "2",
            "OUTPUT_DIR",
            str(out),
            "DATALOADER.NUM_WORKERS",
            "0",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert (tmp_path / "datasets" / "shapes" / "val" / ".complete").is_file()
    report_file = out / "inference" / "shapes_sem_seg_val" / "sem_seg_evaluation.json"
    report = json.loads(report_file.read_text())
    assert sum(map(sum, report["confusion_matrix"])) == 100 * 128 * 128
    assert all(math.isfinite(report["metrics"][k]) for k in ("mIoU", "fwIoU", "mACC", "pACC"))
    assert "Final sem_seg: mIoU" in r.stdout + r.stderr


def test_final_lines_for_one_and_several_datasets():
    """detectron2's test returns {task: metrics} for one dataset (semantic or instance) and
    {dataset: {task: metrics}} for several: each gives its "Final ..." lines."""
    import logging

    from seg_plugins.engine.cli import _log_summary

    lines = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    handler = Collect(level=logging.INFO)
    log = logging.getLogger("seg_plugins")
    old_level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        _log_summary({"bbox": {"AP": 10.0}, "segm": {"AP": 12.5, "AP50": 30.0}})
        _log_summary({"sem_seg": {"mIoU": 50.0, "mACC": 60.0}})
        _log_summary({"a_val": {"sem_seg": {"mIoU": 1.0}}, "b_val": {"segm": {"AP": 2.0}}})
        _log_summary({"panoptic_seg": {"PQ": 40.0, "SQ": 80.0, "RQ": 50.0, "PQ_th": 30.0}})
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)
    assert lines == [
        "Final bbox: AP 10.00",
        "Final segm: AP 12.50  AP50 30.00",
        "Final sem_seg: mIoU 50.00  mACC 60.00",
        "Final a_val sem_seg: mIoU 1.00",
        "Final b_val segm: AP 2.00",
        "Final panoptic_seg: PQ 40.00  SQ 80.00  RQ 50.00",
    ]
