"""seg_plugins inside an existing detectron2 codebase (docs/plugin.md).

- examples/train_with_plain_detectron2.py -- detectron2's DefaultTrainer, default
  DatasetMapper / loaders and its own SemSegEvaluator / COCOEvaluator, plus two lines --
  trains every seg_plugins model and detectron2's Mask R-CNN;
- ``add_seg_plugins_config`` is idempotent and gives the same config before or after other
  projects' ``add_*_config`` and from any working directory;
- our heads and meta-architectures run on a user's own backbone.
"""

import importlib.util
import itertools
import json
import math
import os

import seg_plugins

# isort: split
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import Conv2d, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone, SemanticSegmentor, build_model
from detectron2.projects.deeplab import add_deeplab_config
from detectron2.projects.point_rend import add_pointrend_config
from torch.nn import functional as F

from seg_plugins.data import register_shapes
from seg_plugins.modeling.meta_arch import FCN, DeepLabV3, DeepLabV3Plus
from tests.modeling.seg_model_checks import TINY_MODELS, make_inputs, train_step_checks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(REPO, "examples", "train_with_plain_detectron2.py")
SHAPES_CONFIGS = os.path.join(REPO, "configs", "shapes")
TINY = "plugin_example_shapes"  # 64 x 64 images: 4 to train on, 2 to evaluate
SIZE = 64


def _load_example():
    spec = importlib.util.spec_from_file_location("train_with_plain_detectron2", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    register_shapes(TINY, root=str(root), num_train=4, num_val=2, image_size=SIZE, seed=5)
    return root


# --- the example trains every model -------------------------------------------------------

# detectron2's DatasetMapper resizes to INPUT.MIN_SIZE_* (640..800 by default): keep 64 px.
_STOCK_MAPPER_SIZE = [
    *("INPUT.MIN_SIZE_TRAIN", f"({SIZE},)", "INPUT.MAX_SIZE_TRAIN", SIZE),
    *("INPUT.MIN_SIZE_TEST", SIZE, "INPUT.MAX_SIZE_TEST", SIZE),
]
# Mask R-CNN, GroupNorm of 32 groups kept: 32-wide FPN and heads, few proposals; score
# threshold 0 so that the untrained model's detections reach COCOEvaluator.
_MASK_RCNN_TINY = [
    *("MODEL.FPN.OUT_CHANNELS", 32, "MODEL.ROI_BOX_HEAD.FC_DIM", 32),
    *("MODEL.ROI_MASK_HEAD.CONV_DIM", 32, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 16),
    *("MODEL.RPN.POST_NMS_TOPK_TRAIN", 50, "MODEL.RPN.POST_NMS_TOPK_TEST", 20),
    *("MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0, "TEST.DETECTIONS_PER_IMAGE", 10),
]
EXAMPLE_CASES = {
    **TINY_MODELS,
    "MaskRCNN": ("mask_rcnn_R18_FPN_GN_shapes.yaml", _MASK_RCNN_TINY),
}


def _metrics(output_dir):
    with open(os.path.join(output_dir, "metrics.json")) as f:
        return [json.loads(line) for line in f]


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(EXAMPLE_CASES))
def test_example_trains_and_evaluates_with_stock_detectron2(case, tiny_shapes, tmp_path):
    config, narrow = EXAMPLE_CASES[case]
    overrides = [
        *narrow,
        *_STOCK_MAPPER_SIZE,
        *("DATASETS.TRAIN", f"('{TINY}_train',)", "DATASETS.TEST", f"('{TINY}_val',)"),
        *("SOLVER.MAX_ITER", 2, "SOLVER.IMS_PER_BATCH", 2, "TEST.EVAL_PERIOD", 0),
        *("MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", 0, "OUTPUT_DIR", tmp_path),
    ]
    _load_example().main(
        ["--config-file", os.path.join(SHAPES_CONFIGS, config), *map(str, overrides)]
    )

    records = _metrics(tmp_path)
    # detectron2's writers log the last iteration (1) of the two; its losses are finite
    train = [r for r in records if "total_loss" in r]
    assert train[-1]["iteration"] == 1
    assert all(math.isfinite(v) for k, v in train[-1].items() if k.startswith(("loss", "total")))
    assert (tmp_path / "model_final.pth").is_file()
    # The final evaluation (detectron2's EvalHook) reached metrics.json.
    final = records[-1]
    if case == "MaskRCNN":
        assert all(math.isfinite(final[f"{task}/AP"]) for task in ("bbox", "segm"))
    else:
        assert math.isfinite(final["sem_seg/mIoU"]) and 0 <= final["sem_seg/mIoU"] <= 100
        assert (tmp_path / "inference" / "sem_seg_predictions.json").is_file()


# --- add_seg_plugins_config: idempotent, order-safe, before merge_from_file ----------------


def _cfg(*steps, config=None, opts=()):
    """get_cfg(), then each ``step(cfg)``, then ``config`` (a file) and ``opts`` merged."""
    cfg = get_cfg()
    for step in steps:
        step(cfg)
    if config is not None:
        cfg.merge_from_file(config)
    cfg.merge_from_list(list(opts))
    return cfg


def _add_panoptic_deeplab_config(cfg):
    """detectron2.projects.panoptic_deeplab's function, from its config module alone: the
    package's __init__ needs panopticapi, its config module does not."""
    path = os.path.join(os.path.dirname(add_deeplab_config.__code__.co_filename), "..")
    path = os.path.join(path, "panoptic_deeplab", "config.py")
    if not os.path.isfile(path):
        pytest.skip("detectron2.projects.panoptic_deeplab is not installed")
    spec = importlib.util.spec_from_file_location("_panoptic_deeplab_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.add_panoptic_deeplab_config(cfg)


ours = seg_plugins.add_seg_plugins_config
OTHERS = [add_deeplab_config, add_pointrend_config, _add_panoptic_deeplab_config]


def test_add_config_is_idempotent():
    assert _cfg(ours, ours).dump() == _cfg(ours).dump()


@pytest.mark.parametrize(
    "order",
    list(itertools.permutations([ours, *OTHERS])),
    ids=lambda order: "-".join(f.__name__.strip("_") for f in order),
)
def test_any_order_with_other_projects_gives_the_same_config(order):
    assert _cfg(*order).dump() == _cfg(ours, *OTHERS).dump()


def test_other_projects_keep_their_values_in_either_order():
    """The keys two projects share: another project's unconditional assignment wins whether it
    runs before or after ours (_setdefault), so both orders agree -- on its value."""
    for steps in ([ours, add_deeplab_config], [add_deeplab_config, ours]):
        cfg = _cfg(*steps)
        assert cfg.MODEL.SEM_SEG_HEAD.LOSS_TYPE == "hard_pixel_mining"  # DeepLab's, not ours
        assert cfg.SOLVER.POLY_LR_POWER == 0.9  # both default to 0.9
    for steps in ([ours, _add_panoptic_deeplab_config], [_add_panoptic_deeplab_config, ours]):
        assert _cfg(*steps).SOLVER.OPTIMIZER == "ADAM"  # Panoptic-DeepLab's, not our "SGD"
    assert _cfg(ours).MODEL.SEM_SEG_HEAD.LOSS_TYPE == "cross_entropy"


def test_merge_from_file_needs_our_keys_first():
    with pytest.raises(KeyError, match="MODEL.UNET"):
        _cfg(config=os.path.join(SHAPES_CONFIGS, "unet_shapes.yaml"))


@pytest.mark.parametrize("config", ["deeplabv3plus_R18_shapes.yaml", "unet_shapes.yaml"])
def test_merged_config_is_the_same_in_any_order_and_working_directory(
    config, tmp_path, monkeypatch
):
    path = os.path.join(SHAPES_CONFIGS, config)
    monkeypatch.chdir(REPO)
    reference = _cfg(ours, config=path).dump()
    monkeypatch.chdir(tmp_path)  # _BASE_ resolves next to the file, not in the cwd
    assert _cfg(ours, config=path).dump() == reference
    merged_then_ours = _cfg(ours, config=path)
    ours(merged_then_ours)  # a later call keeps the merged values
    assert merged_then_ours.dump() == reference
    with_deeplab = _cfg(ours, add_deeplab_config, config=path).dump()
    assert _cfg(add_deeplab_config, ours, config=path).dump() == with_deeplab


def test_deeplab_loss_type_is_overridden_by_our_configs(tiny_shapes):
    """add_deeplab_config sets LOSS_TYPE "hard_pixel_mining" (its DeepLabCE), which our heads
    do not implement. Our base configs state "cross_entropy", so merging one of them after
    add_deeplab_config builds; without a config file, building says which key to set."""
    config = os.path.join(SHAPES_CONFIGS, TINY_MODELS["UNet"][0])
    opts = [*TINY_MODELS["UNet"][1], "MODEL.DEVICE", "cpu"]
    cfg = _cfg(add_deeplab_config, ours, config=config, opts=opts)
    assert cfg.MODEL.SEM_SEG_HEAD.LOSS_TYPE == "cross_entropy"
    assert type(build_model(cfg)).__name__ == "UNet"
    cfg.merge_from_list(["MODEL.SEM_SEG_HEAD.LOSS_TYPE", "hard_pixel_mining"])
    with pytest.raises(ValueError, match=r"MODEL\.SEM_SEG_HEAD\.LOSS_TYPE"):
        build_model(cfg)


# --- our heads on a user's backbone ------------------------------------------------------


class UserTinyNet(Backbone):
    """A user's own backbone: "res2" of stride 4 and "res5" of stride 16."""

    def __init__(self, in_channels: int = 3, width: int = 8):
        super().__init__()

        def conv(cin, cout, stride):
            return Conv2d(cin, cout, 3, stride=stride, padding=1, activation=F.relu)

        self.res2 = torch.nn.Sequential(conv(in_channels, width, 2), conv(width, width, 2))
        self.res5 = torch.nn.Sequential(conv(width, 2 * width, 2), conv(2 * width, 2 * width, 2))
        self._out_feature_channels = {"res2": width, "res5": 2 * width}
        self._out_feature_strides = {"res2": 4, "res5": 16}
        self._out_features = ["res2", "res5"]

    def forward(self, x):
        """x of shape (N, C, H, W), H and W multiples of 16 -> {"res2": (N, w, H/4, W/4),
        "res5": (N, 2w, H/16, W/16)}."""
        res2 = self.res2(x)
        return {"res2": res2, "res5": self.res5(res2)}

    @property
    def size_divisibility(self) -> int:
        return 16


@BACKBONE_REGISTRY.register()
def build_user_tiny_backbone(cfg, input_shape: ShapeSpec):
    return UserTinyNet(in_channels=input_shape.channels)


NUM_CLASSES = 3
# meta-architecture, MODEL.SEM_SEG_HEAD.NAME (read by SemanticSegmentor only), overrides
USER_BACKBONE_CASES = {
    "FCN": ("FCN", "", ["MODEL.AUX_HEAD.ENABLED", True, "MODEL.AUX_HEAD.IN_FEATURE", "res2"]),
    "DeepLabV3": ("DeepLabV3", "", ["MODEL.ASPP.DILATIONS", [1, 2, 3]]),
    "DeepLabV3Plus": ("DeepLabV3Plus", "", ["MODEL.DEEPLABV3PLUS.LOW_LEVEL_FEATURE", "res2"]),
    "SemanticSegmentor+ASPPPlusHead": ("SemanticSegmentor", "ASPPPlusHead", []),
    "SemanticSegmentor+UNetHead": ("SemanticSegmentor", "UNetHead", []),
    "SemanticSegmentor+FCNHead": ("SemanticSegmentor", "FCNHead", []),
}
EXPECTED_CLASS = {"FCN": FCN, "DeepLabV3": DeepLabV3, "DeepLabV3Plus": DeepLabV3Plus}


@pytest.mark.parametrize("case", sorted(USER_BACKBONE_CASES))
def test_our_heads_on_a_user_backbone(case):
    arch, head, opts = USER_BACKBONE_CASES[case]
    base = [
        *("MODEL.META_ARCHITECTURE", arch, "MODEL.BACKBONE.NAME", "build_user_tiny_backbone"),
        *("MODEL.SEM_SEG_HEAD.NUM_CLASSES", NUM_CLASSES, "MODEL.DEVICE", "cpu"),
        *("MODEL.FCN.CHANNELS", 8, "MODEL.ASPP.CHANNELS", 8),
        *("MODEL.DEEPLABV3PLUS.LOW_LEVEL_CHANNELS", 8, "MODEL.DEEPLABV3PLUS.DECODER_CHANNELS", 8),
        *(["MODEL.SEM_SEG_HEAD.NAME", head] if head else []),
    ]
    torch.manual_seed(0)
    model = build_model(_cfg(ours, opts=[*base, *opts]))
    assert type(model) is EXPECTED_CLASS.get(arch, SemanticSegmentor)
    assert isinstance(model.backbone, UserTinyNet)
    if head:
        assert type(model.sem_seg_head).__name__ == head

    sizes = [(45, 61), (64, 48)]  # padded to the backbone's size_divisibility 16
    expected = ["loss_sem_seg", "loss_aux"] if case == "FCN" else ["loss_sem_seg"]
    train_step_checks(model, make_inputs(sizes, NUM_CLASSES), loss_keys=expected)
    model.eval()
    with torch.no_grad():
        inputs = make_inputs(sizes, NUM_CLASSES, with_targets=False)
        outputs = model(inputs + [dict(inputs[0], height=90, width=122)])
    shapes = [tuple(o["sem_seg"].shape) for o in outputs]
    assert shapes == [(NUM_CLASSES, 45, 61), (NUM_CLASSES, 64, 48), (NUM_CLASSES, 90, 122)]
    assert all(torch.isfinite(o["sem_seg"]).all() for o in outputs)
