"""detectron2's own tools/train_net.py, plus the two documented lines (docs/plugin.md),
trains *and evaluates* the embedded dataset, on whichever detectron2 this venv has.

The script is taken unchanged from the official detectron2 main snapshot beside this clone
(``../shared/detectron2-main-*.tar.gz``); the test adds ``import seg_plugins`` and
``seg_plugins.add_seg_plugins_config(cfg)``, exactly as a user would, and runs it as a
user would (a subprocess, detectron2's ``launch``). It picks evaluators from
``MetadataCatalog.get(name).evaluator_type`` compared with strings, which is why the
embedded data has one name per task (``shapes_sem_seg_*``: "sem_seg"; ``shapes_instance_*``:
"coco").
"""

import glob
import math
import os
import re
import subprocess
import sys
import tarfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SNAPSHOTS = sorted(glob.glob(os.path.join(REPO, "..", "shared", "detectron2-main-*.tar.gz")))

# The run trains on the 100-image val split so that only that split is generated (the
# train split has 1000 images); 2 iterations, then detectron2's evaluation of the val split.
_COMMON = [
    *("SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.CHECKPOINT_PERIOD", "100"),
    *("DATALOADER.NUM_WORKERS", "0", "MODEL.DEVICE", "cpu", "TEST.EVAL_PERIOD", "0"),
]
CASES = {
    "semantic": (
        "unet_shapes.yaml",
        "shapes_sem_seg_val",
        ["MODEL.UNET.BASE_CHANNELS", "4", "MODEL.UNET.DEPTH", "2"],
        ["mIoU", "fwIoU", "mACC", "pACC"],
    ),
    "instance": (
        "mask_rcnn_R18_FPN_GN_shapes.yaml",
        "shapes_instance_val",
        [
            *("MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "32"),
            *("MODEL.ROI_MASK_HEAD.CONV_DIM", "32", "MODEL.RPN.POST_NMS_TOPK_TEST", "20"),
            *("MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "5"),
        ],
        ["AP", "AP50", "AP75", "APs", "APm", "APl"],
    ),
}


def _stock_train_net_with_two_lines(tmp_path) -> str:
    if not SNAPSHOTS:
        pytest.skip(
            "detectron2's stock tools/train_net.py is read from ../shared/detectron2-main-*"
            ".tar.gz, which is not beside this clone"
        )
    with tarfile.open(SNAPSHOTS[-1]) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("/tools/train_net.py"))
        source = tar.extractfile(member).read().decode()
    first_import = "import logging\n"
    get_cfg_line = "    cfg = get_cfg()\n"
    assert source.count(first_import) == 1 and source.count(get_cfg_line) == 1, (
        "the stock train_net.py changed shape; update where the two lines go"
    )
    source = source.replace(first_import, "import seg_plugins\n" + first_import)
    source = source.replace(
        get_cfg_line, get_cfg_line + "    seg_plugins.add_seg_plugins_config(cfg)\n"
    )
    script = tmp_path / "train_net.py"
    script.write_text(source)
    return str(script)


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_stock_train_net_trains_and_evaluates_the_embedded_dataset(tmp_path, case):
    config, dataset, opts, keys = CASES[case]
    script = _stock_train_net_with_two_lines(tmp_path)
    out = tmp_path / "out"
    args = [
        *("--config-file", os.path.join(REPO, "configs", "shapes", config)),
        *("DATASETS.TRAIN", f"('{dataset}',)", "DATASETS.TEST", f"('{dataset}',)"),
        *_COMMON, *opts, "OUTPUT_DIR", str(out),
    ]  # fmt: skip
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path / "datasets"))
    r = subprocess.run(
        [sys.executable, script, *args],
        capture_output=True, text=True, cwd=str(tmp_path), env=env, timeout=600,
    )  # fmt: skip
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-4000:]
    assert "No evaluator found" not in log
    assert f"Evaluation results for {dataset} in csv format" in log, log[-4000:]
    # detectron2's print_csv_format: "copypaste: mIoU,fwIoU,..." then the values
    header = re.search(r"copypaste: (" + ",".join(keys) + r")\n.*copypaste: ([-\d.,na]+)", log)
    assert header, log[-4000:]
    values = [float(v) for v in header.group(2).split(",")]
    assert len(values) == len(keys), header.group(0)
    # mIoU / box AP of an untrained model, but a real figure (COCO's APs/APm/APl are NaN
    # where no object of that size exists)
    assert math.isfinite(values[0]) and 0.0 <= values[0] <= 100.0, header.group(0)
    if case == "instance":
        assert "Evaluation results for segm" in log
    assert (out / "model_final.pth").is_file()
