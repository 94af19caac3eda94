"""A short training run for tests/engine/test_kill_resume.py, started in a subprocess.

    python kill_resume_driver.py OUTPUT_DIR DATA_ROOT NUM_WORKERS [--slow-save ITER]

Trains FCN-R18 (dropout in the head, random crops and flips in the mapper, AdamW, cosine
schedule) on a tiny generated "shapes" set with ``--resume`` semantics: it continues from
OUTPUT_DIR's last checkpoint when there is one. Prints "ITER k" after every iteration and
"RESULT {json}" with the final evaluation. ``--slow-save ITER``: the save of the checkpoint
of iteration ITER writes half its bytes, prints "SAVING ITER" and sleeps, so that the test
can kill the run in the middle of that write.
"""

import io
import json
import os
import sys
import time

import seg_plugins  # noqa: F401  (first: repairs detectron2 where needed)

# isort: split
import torch
from detectron2.config import get_cfg
from detectron2.engine import HookBase
from detectron2.utils.env import seed_all_rng

from seg_plugins import add_seg_plugins_config
from seg_plugins.data import register_shapes
from seg_plugins.engine import Trainer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAX_ITER, PERIOD = 12, 3


class _PrintIter(HookBase):
    def after_step(self):
        print(f"ITER {self.trainer.iter}", flush=True)


def _slow_save(iteration: int) -> None:
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if not (isinstance(obj, dict) and obj.get("iteration") == iteration):
            return real_save(obj, f, *args, **kwargs)
        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        data = buf.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        print(f"SAVING {iteration}", flush=True)
        time.sleep(60)
        f.write(data[len(data) // 2 :])

    torch.save = save


def main():
    out, root, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if "--slow-save" in sys.argv:
        _slow_save(int(sys.argv[sys.argv.index("--slow-save") + 1]))
    register_shapes("kill", root=root, num_train=16, num_val=4, image_size=64, seed=1)
    cfg = get_cfg()
    add_seg_plugins_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", "shapes", "fcn_R18_shapes.yaml"))
    cfg.merge_from_list(
        [
            "MODEL.DEVICE", "cpu",
            "DATASETS.TRAIN", ("kill_train",),
            "DATASETS.TEST", ("kill_val",),
            "DATALOADER.NUM_WORKERS", workers,
            "INPUT.CROP.ENABLED", True,
            "INPUT.CROP.TYPE", "absolute",
            "INPUT.CROP.SIZE", [48, 48],
            "SOLVER.IMS_PER_BATCH", 4,
            "SOLVER.MAX_ITER", MAX_ITER,
            "SOLVER.WARMUP_ITERS", 2,
            "SOLVER.CHECKPOINT_PERIOD", PERIOD,
            "TEST.EVAL_PERIOD", 0,
            "TEST.SEM_SEG_VIS.NUM_IMAGES", 0,
            "SEED", 0,
            "OUTPUT_DIR", out,
        ]
    )  # fmt: skip
    seed_all_rng(cfg.SEED)
    trainer = Trainer(cfg)
    trainer.register_hooks([_PrintIter()])
    trainer.resume_or_load(resume=True)
    trainer.train()
    results = Trainer.test(cfg, trainer.model)
    print("RESULT " + json.dumps(results["sem_seg"], sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
