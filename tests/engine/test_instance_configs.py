"""The reference instance configs (COCO and Cityscapes Mask R-CNN R50-FPN, detectron2's
recipes) load, build the recipe's model, load MSRA's ImageNet R-50.pkl layout through
MODEL.WEIGHTS, and get the evaluators their datasets call for from ``Trainer.build_evaluator``.

No data is read: the evaluators are built for detectron2's registered names against stub
files under a temporary working directory (detectron2 registers them under the relative
``datasets/`` unless DETECTRON2_DATASETS says otherwise).
"""

import json
import os
import pickle

import seg_plugins  # noqa: F401  (first: repairs detectron2 where needed)

# isort: split
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOEvaluator

from seg_plugins import add_seg_plugins_config
from seg_plugins.engine import Trainer
from seg_plugins.evaluation import AtomicCOCOEvaluator
from seg_plugins.evaluation.cityscapes import CityscapesOfficialInstanceEvaluator
from seg_plugins.modeling.task import task_of

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COCO_CFG = os.path.join(REPO, "configs", "coco", "mask_rcnn_R50_FPN_1x.yaml")
CITYSCAPES_CFG = os.path.join(REPO, "configs", "cityscapes", "mask_rcnn_R50_FPN_cityscapes.yaml")


def _cfg(path, *opts):
    cfg = get_cfg()
    add_seg_plugins_config(cfg)
    cfg.merge_from_file(path)
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *opts])
    return cfg


@pytest.mark.parametrize(
    "path,train,test,num_classes,weights",
    [
        (COCO_CFG, "coco_2017_train", "coco_2017_val", 80, "R-50.pkl"),
        (
            CITYSCAPES_CFG,
            "cityscapes_fine_instance_seg_train",
            "cityscapes_fine_instance_seg_val",
            8,
            "model_final_f10217.pkl",
        ),
    ],
    ids=["coco", "cityscapes"],
)
def test_reference_config_builds_the_recipe(path, train, test, num_classes, weights):
    cfg = _cfg(path)
    assert cfg.DATASETS.TRAIN == (train,) and cfg.DATASETS.TEST == (test,)
    assert cfg.MODEL.WEIGHTS == weights  # a local file: nothing is downloaded
    assert task_of(cfg).outputs == {"instances"} and cfg.MODEL.MASK_ON
    # detectron2's defaults for MSRA's R-50.pkl: FrozenBN, stride in the 1x1 conv, BGR
    assert cfg.MODEL.RESNETS.DEPTH == 50 and cfg.MODEL.RESNETS.NORM == "FrozenBN"
    assert cfg.MODEL.RESNETS.STRIDE_IN_1X1 and cfg.INPUT.FORMAT == "BGR"
    assert MetadataCatalog.get(test).thing_classes  # registered by detectron2

    model = Trainer.build_model(cfg)
    assert type(model).__name__ == "GeneralizedRCNN"
    assert model.roi_heads.box_predictor.cls_score.out_features == num_classes + 1
    assert model.roi_heads.mask_head.predictor.out_channels == num_classes


# ---------------------------------------------------------------- ImageNet R-50.pkl
_BRANCH = {"conv1": "branch2a", "conv2": "branch2b", "conv3": "branch2c", "shortcut": "branch1"}


def _caffe2_name(name: str) -> str:
    """detectron2 ResNet parameter name -> its Caffe2 blob name in MSRA's R-50.pkl
    (``res2.0.conv1.norm.weight`` -> ``res2_0_branch2a_bn_s``)."""
    parts = name.split(".")
    is_norm = parts[-2] == "norm"
    suffix = {"weight": "s" if is_norm else "w", "bias": "b"}[parts[-1]]
    if parts[0] == "stem":
        return f"res_conv1_bn_{suffix}" if is_norm else f"conv1_{suffix}"
    blob = f"{parts[0]}_{parts[1]}_{_BRANCH[parts[2]]}"
    return f"{blob}_bn_{suffix}" if is_norm else f"{blob}_{suffix}"


def test_coco_config_loads_msra_imagenet_pkl(tmp_path):
    """MSRA's R-50.pkl (Caffe2 blob names, BN folded into FrozenBN scale / shift) loads into
    the FPN's bottom-up ResNet; the FPN and the heads keep their initialisation. Narrow
    widths: the names, not the sizes, are what the checkpointer maps."""
    narrow = [
        "MODEL.RESNETS.STEM_OUT_CHANNELS", 16, "MODEL.RESNETS.RES2_OUT_CHANNELS", 32,
        "MODEL.RESNETS.WIDTH_PER_GROUP", 8, "MODEL.FPN.OUT_CHANNELS", 16,
        "MODEL.ROI_BOX_HEAD.FC_DIM", 32, "MODEL.ROI_MASK_HEAD.CONV_DIM", 16,
    ]  # fmt: skip
    cfg = _cfg(COCO_CFG, *narrow)
    torch.manual_seed(1)
    source = Trainer.build_model(cfg).backbone.bottom_up.state_dict()
    params = {k: v for k, v in source.items() if k.endswith(("weight", "bias"))}
    weights = {k: 0.5 + torch.rand_like(v) for k, v in params.items()}  # not the init
    blobs = {_caffe2_name(k): v.numpy() for k, v in weights.items()}
    blobs["fc1000_w"] = torch.zeros(1000, 2048).numpy()  # the ImageNet classifier: unused
    with open(tmp_path / "R-50.pkl", "wb") as f:
        pickle.dump(blobs, f)

    cfg.MODEL.WEIGHTS = str(tmp_path / "R-50.pkl")
    torch.manual_seed(2)
    model = Trainer.build_model(cfg)
    fpn_before = {k: v.clone() for k, v in model.backbone.state_dict().items() if "fpn" in k}
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    loaded = model.backbone.bottom_up.state_dict()
    for name, value in weights.items():
        torch.testing.assert_close(loaded[name], value, rtol=0, atol=0, msg=name)
    for name, value in model.backbone.state_dict().items():
        if name in fpn_before:
            torch.testing.assert_close(value, fpn_before[name], rtol=0, atol=0, msg=name)


# ---------------------------------------------------------------- evaluators
def _stub(path: str, write) -> None:
    """Create ``path`` (relative to the temporary working directory) unless it exists."""
    if os.path.exists(path):
        return
    if os.path.isabs(path):
        pytest.skip(f"{path} is absolute (DETECTRON2_DATASETS) and missing; no stub there")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write(path)


def test_build_evaluator_coco(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = _cfg(COCO_CFG, "OUTPUT_DIR", str(tmp_path / "out"))
    name = cfg.DATASETS.TEST[0]
    assert MetadataCatalog.get(name).evaluator_type == "coco"

    def empty_coco(path):
        with open(path, "w") as f:
            json.dump({"images": [], "annotations": [], "categories": []}, f)

    _stub(MetadataCatalog.get(name).json_file, empty_coco)
    evaluator = Trainer.build_evaluator(cfg, name)
    assert type(evaluator) is AtomicCOCOEvaluator  # detectron2's, writing atomically
    assert isinstance(evaluator, COCOEvaluator)
    assert tuple(evaluator._tasks) == ("bbox", "segm")


def test_build_evaluator_cityscapes_instance(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # cityscapesscripts also writes matches.json here
    cfg = _cfg(CITYSCAPES_CFG, "OUTPUT_DIR", str(tmp_path / "out"))
    name = cfg.DATASETS.TEST[0]
    meta = MetadataCatalog.get(name)
    assert meta.evaluator_type == "cityscapes_instance"
    gt_name = "frankfurt_000000_000294_gtFine_instanceIds.png"
    gt_file = os.path.join(meta.gt_dir, "frankfurt", gt_name)
    _stub(gt_file, lambda p: open(p, "wb").close())  # the evaluator only globs for them
    evaluator = Trainer.build_evaluator(cfg, name)
    assert type(evaluator) is CityscapesOfficialInstanceEvaluator
    assert list(meta.thing_classes) == [
        "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"
    ]  # fmt: skip
