#!/usr/bin/env python
"""A detectron2 training script written for detectron2 alone -- plus seg_plugins' models.

Everything here is stock detectron2, the pattern of detectron2's own tools/train_net.py:
a ``DefaultTrainer`` with detectron2's default ``DatasetMapper`` and data loaders, and
detectron2's ``SemSegEvaluator`` / ``COCOEvaluator`` picked by the dataset's evaluator_type.
The two lines marked ``seg_plugins (1/2)`` and ``(2/2)`` are all it takes to train
seg_plugins' U-Net, FCN, DeepLabV3 and DeepLabV3+ with it (docs/plugin.md). The evaluator
choice asks seg_plugins what the model predicts (``task_of(cfg).outputs``, from the class of
its meta-architecture) instead of keeping a list of meta-architecture names:

    python examples/train_with_plain_detectron2.py \\
        --config-file configs/shapes/deeplabv3plus_R18_shapes.yaml MODEL.DEVICE cpu

detectron2's DatasetMapper resizes every image to INPUT.MIN_SIZE_TRAIN (640..800 by
default); the shapes configs set INPUT.MIN/MAX_SIZE_* to 128, their images' size.
"""

import os

import seg_plugins  # seg_plugins (1/2): first; repairs detectron2 where needed, registers models

# isort: split
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, launch
from detectron2.evaluation import (
    COCOEvaluator,
    DatasetEvaluators,
    SemSegEvaluator,
    verify_results,
)
from detectron2.utils import comm

from seg_plugins.modeling.task import task_of  # what a model predicts, from its class


class Trainer(DefaultTrainer):
    """detectron2's DefaultTrainer (default DatasetMapper, loaders, SGD, LR schedules) with
    detectron2's evaluators."""

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference")
        evaluator_type = MetadataCatalog.get(dataset_name).evaluator_type
        # One type, or several for a dataset with semantic labels and instance annotations
        # (seg_plugins' "shapes": ["sem_seg", "coco"]): keep those the model can feed.
        types = [evaluator_type] if isinstance(evaluator_type, str) else list(evaluator_type)
        # What the model predicts ({"sem_seg"}, {"instances"} or both, for Panoptic FPN),
        # from the class of its meta-architecture (seg_plugins.modeling.task).
        outputs = task_of(cfg).outputs
        evaluators = []
        if "sem_seg" in types and "sem_seg" in outputs:
            evaluators.append(SemSegEvaluator(dataset_name, output_dir=output_folder))
        if "coco" in types and "instances" in outputs:
            evaluators.append(COCOEvaluator(dataset_name, output_dir=output_folder))
        if not evaluators:
            raise NotImplementedError(
                f"no evaluator for dataset {dataset_name} (evaluator_type {evaluator_type}) "
                f"and model {cfg.MODEL.META_ARCHITECTURE}"
            )
        return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)


def setup(args):
    cfg = get_cfg()
    # Other projects' keys may be added before or after ours; either order gives the same cfg:
    #   from detectron2.projects.deeplab import add_deeplab_config
    #   add_deeplab_config(cfg)
    # (it sets LOSS_TYPE "hard_pixel_mining", which our configs override with their own.)
    seg_plugins.add_seg_plugins_config(cfg)  # seg_plugins (2/2): its keys, before merge_from_file
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def run(args):
    """One process's work (detectron2's ``launch`` runs it once per GPU)."""
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        results = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, results)
        return results
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def main(argv=None):
    """Parse ``argv`` (detectron2's flags and trailing KEY VALUE overrides) and run."""
    args = default_argument_parser().parse_args(argv)
    print("Command Line Args:", args)
    launch(
        run,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    main()
