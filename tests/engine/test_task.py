"""The task of a model (seg_plugins.modeling.task): derived from the registered class, never
from a list of names; a user's own EncoderDecoderSegmentor subclass, registered under a new
name, gets the semantic mapper, evaluators, Predictor and export with no other change."""

import os

import seg_plugins  # noqa: F401  (first: repairs detectron2 where needed)

# isort: split
import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetMapper
from detectron2.modeling import META_ARCH_REGISTRY
from torch import nn

from seg_plugins import Predictor, add_seg_plugins_config
from seg_plugins.data import SemSegDatasetMapper, register_shapes
from seg_plugins.engine.cli import main as train_net
from seg_plugins.evaluation import AtomicCOCOEvaluator, SemSegMetricsEvaluator
from seg_plugins.modeling.meta_arch import EncoderDecoderSegmentor
from seg_plugins.modeling.task import InstanceTask, PanopticTask, SemanticTask, task_of
from tools import export_model

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UNET_CFG = os.path.join(REPO, "configs", "shapes", "unet_shapes.yaml")
TINY = "task_shapes"


@META_ARCH_REGISTRY.register()
class LesionSegmentor(EncoderDecoderSegmentor):
    """A user's own semantic meta-architecture: detectron2's SemanticSegmentor parts
    (MODEL.BACKBONE.NAME, MODEL.SEM_SEG_HEAD.NAME), under a name seg_plugins never saw."""


@META_ARCH_REGISTRY.register()
class OpaqueModel(nn.Module):
    """A meta-architecture deriving from none of detectron2's: its task must be stated."""

    def __init__(self, cfg):
        super().__init__()


def _cfg(*opts):
    cfg = get_cfg()
    add_seg_plugins_config(cfg)
    cfg.merge_from_list(list(opts))
    return cfg


@pytest.mark.parametrize(
    "arch, task",
    [
        ("UNet", SemanticTask),
        ("FCN", SemanticTask),
        ("DeepLabV3", SemanticTask),
        ("DeepLabV3Plus", SemanticTask),
        ("SemanticSegmentor", SemanticTask),
        ("LesionSegmentor", SemanticTask),
        ("GeneralizedRCNN", InstanceTask),
        ("RetinaNet", InstanceTask),
        ("PanopticFPN", PanopticTask),
    ],
)
def test_task_is_derived_from_the_registered_class(arch, task):
    assert type(task_of(_cfg("MODEL.META_ARCHITECTURE", arch))) is task


def test_outputs_of_each_task():
    assert SemanticTask.outputs == {"sem_seg"}
    assert InstanceTask.outputs == {"instances"}
    assert PanopticTask.outputs == {"sem_seg", "instances", "panoptic_seg"}


def test_model_task_overrides_the_derivation_and_unknown_classes_need_it():
    with pytest.raises(ValueError, match="set MODEL.TASK to 'semantic', 'instance' or"):
        task_of(_cfg("MODEL.META_ARCHITECTURE", "OpaqueModel"))
    cfg = _cfg("MODEL.META_ARCHITECTURE", "OpaqueModel", "MODEL.TASK", "semantic")
    assert type(task_of(cfg)) is SemanticTask
    cfg = _cfg("MODEL.META_ARCHITECTURE", "UNet", "MODEL.TASK", "panoptic")
    assert type(task_of(cfg)) is PanopticTask
    with pytest.raises(ValueError, match=r"MODEL.TASK='semantik': use one of \['instance'"):
        task_of(_cfg("MODEL.TASK", "semantik"))
    with pytest.raises(ValueError, match=r"'UNett' is not registered .*did you mean UNet\?"):
        task_of(_cfg("MODEL.META_ARCHITECTURE", "UNett"))


def test_binary_rule_of_the_semantic_task():
    logits = torch.tensor([[[-2.0, 0.1, 3.0]]])  # (1, 1, 3): binary mode
    task = SemanticTask()
    assert task.classes(logits).tolist() == [[0, 1, 1]]
    assert task.classes(logits, binary_threshold=0.6).tolist() == [[0, 0, 1]]
    assert torch.allclose(task.probabilities(logits), logits.sigmoid())
    two = torch.tensor([[[0.0, 2.0]], [[1.0, 1.0]]])  # (2, 1, 2): softmax
    assert task.classes(two).tolist() == [[1, 0]]
    assert torch.allclose(task.probabilities(two), two.softmax(dim=0))


@pytest.fixture(scope="module")
def tiny_shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    register_shapes(TINY, root=str(root), num_train=4, num_val=2, image_size=64, seed=5)
    return root


def test_user_subclass_trains_evaluates_predicts_and_exports(tiny_shapes, tmp_path):
    out = tmp_path / "run"
    opts = [
        *("MODEL.META_ARCHITECTURE", "LesionSegmentor"),
        *("MODEL.BACKBONE.NAME", "build_unet_encoder_backbone"),
        *("MODEL.SEM_SEG_HEAD.NAME", "UNetHead"),
        *("MODEL.UNET.BASE_CHANNELS", "4", "MODEL.UNET.DEPTH", "2", "MODEL.DEVICE", "cpu"),
        *("DATASETS.TRAIN", f"('{TINY}_sem_seg_train',)"),
        *("DATASETS.TEST", f"('{TINY}_sem_seg_val',)"),
        *("SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2", "SOLVER.WARMUP_ITERS", "1"),
        *("DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", str(out)),
    ]
    # train_net: the semantic mapper and evaluator (detectron2's DatasetMapper would have
    # failed on the label maps' training, and no COCO evaluator fits a sem_seg dataset)
    results = train_net(["--config-file", UNET_CFG, *opts])
    assert set(results) == {"sem_seg"} and 0 <= results["sem_seg"]["mIoU"] <= 100
    cfg = _cfg()
    cfg.merge_from_file(UNET_CFG)
    cfg.merge_from_list(opts)
    assert isinstance(task_of(cfg).mapper(cfg, is_train=True), SemSegDatasetMapper)
    evaluators = task_of(cfg).evaluators(cfg, f"{TINY}_sem_seg_val", str(tmp_path / "eval"))
    assert any(isinstance(e, SemSegMetricsEvaluator) for e in evaluators)

    # the Predictor: class indices at the image's size
    weights = str(out / "model_final.pth")
    predictor = Predictor(cfg, weights)
    assert type(predictor.model) is LesionSegmentor
    image = np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8)
    result = predictor(image)
    assert result["classes"].shape == (48, 40) and result["classes"].max() < 4

    # export: the semantic graph, verified against the model
    exported = tmp_path / "exported"
    argv = ["--config-file", UNET_CFG, "--output", str(exported), "--format", "torchscript"]
    argv += ["--example-size", "64x64", "--verify-size", "64x64"]
    assert export_model.main([*argv, "--opts", *opts, "MODEL.WEIGHTS", weights]) == 0
    assert (exported / "model.ts").is_file()


def test_instance_and_panoptic_tasks_use_detectron2s_mapper_and_coco_evaluator(
    tiny_shapes, tmp_path
):
    out = str(tmp_path)
    cfg = _cfg(
        *("MODEL.META_ARCHITECTURE", "GeneralizedRCNN", "MODEL.MASK_ON", True),
        *("DATASETS.TEST", (f"{TINY}_val",)),
    )
    task = task_of(cfg)
    assert type(task.mapper(cfg, is_train=True)) is DatasetMapper
    [coco] = task.evaluators(cfg, f"{TINY}_val", out)
    assert isinstance(coco, AtomicCOCOEvaluator)
    cfg.MODEL.META_ARCHITECTURE = "PanopticFPN"
    kinds = [type(e).__name__ for e in task_of(cfg).evaluators(cfg, f"{TINY}_val", out)]
    assert kinds == ["SemSegMetricsEvaluator", "SemSegVisualizer", "AtomicCOCOEvaluator"]
    with pytest.raises(ValueError, match=r"no evaluator for dataset 'task_shapes_sem_seg_val'"):
        task.evaluators(cfg, f"{TINY}_sem_seg_val", out)
