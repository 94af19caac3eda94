"""detectron2's PanopticFPN with our semantic heads as its semantic branch, through
``seg_plugins.engine.Trainer``: one run trains, then reports the branch's "sem_seg" metrics
(SemSegMetricsEvaluator) beside COCO "bbox" / "segm" and the panoptic quality
("panoptic_seg", PanopticQualityEvaluator), on a tiny generated shapes set's panoptic view.

Applicable heads are those whose features can be named in the config: FCNHead, ASPPHead and
ASPPPlusHead read FPN levels by name, UNetHead decodes every level (p6 .. p2). FCNSkipHead is
not: its from_config keeps VGG's fc7 / pool4 / pool3.
"""

import math
import os

import seg_plugins  # noqa: F401  (first: repairs detectron2 where needed)

# isort: split
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.structures import BitMasks, Boxes, ImageList, Instances
from detectron2.utils.events import EventStorage
from torch.nn import functional as F

from seg_plugins import add_seg_plugins_config
from seg_plugins.data import register_shapes
from seg_plugins.engine import Trainer
from seg_plugins.evaluation.panoptic import official_panoptic_available
from seg_plugins.modeling.task import task_of

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PANOPTIC_CFG = os.path.join(REPO, "configs", "shapes", "panoptic_fpn_R18_FPN_GN_shapes.yaml")
TINY = "pfpn_shapes"  # not "shapes_panoptic": its views would collide with shapes_panoptic_*
SIZE = 64

# Every head reads the FPN (p2 .. p6, 32 channels here); GN with 32 groups throughout.
HEADS = {
    "ASPPPlusHead": {},  # the config's own: ASPP on p3 + p2
    "ASPPHead": {"MODEL.ASPP.IN_FEATURE": "p3"},
    "FCNHead": {"MODEL.FCN.IN_FEATURE": "p2", "MODEL.FCN.CHANNELS": 32, "MODEL.FCN.NORM": "GN"},
    "UNetHead": {"MODEL.UNET.NORM": "GN"},
}
SMALL = {
    "MODEL.FPN.OUT_CHANNELS": 32,
    "MODEL.ASPP.CHANNELS": 32,
    "MODEL.DEEPLABV3PLUS.DECODER_CHANNELS": 32,
    "MODEL.ROI_BOX_HEAD.FC_DIM": 64,
    "MODEL.ROI_MASK_HEAD.CONV_DIM": 32,
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 32,
    "INPUT.MIN_SIZE_TRAIN": (SIZE,),
    "INPUT.MAX_SIZE_TRAIN": SIZE,
    "INPUT.MIN_SIZE_TEST": SIZE,
    "INPUT.MAX_SIZE_TEST": SIZE,
    "MODEL.DEVICE": "cpu",
    "DATASETS.TRAIN": (f"{TINY}_panoptic_train",),
    "DATASETS.TEST": (f"{TINY}_panoptic_val",),
    "DATALOADER.NUM_WORKERS": 0,
}


@pytest.fixture(scope="module")
def tiny_shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    register_shapes(TINY, root=str(root), num_train=4, num_val=3, image_size=SIZE, seed=11)
    return root


def _cfg(head, output_dir, **opts):
    cfg = get_cfg()
    add_seg_plugins_config(cfg)
    cfg.merge_from_file(PANOPTIC_CFG)
    opts = {"MODEL.SEM_SEG_HEAD.NAME": head, **HEADS[head], **SMALL, **opts}
    cfg.merge_from_list([v for kv in opts.items() for v in kv] + ["OUTPUT_DIR", str(output_dir)])
    return cfg


def test_config_is_panoptic_fpn_with_our_head():
    cfg = get_cfg()
    add_seg_plugins_config(cfg)
    cfg.merge_from_file(PANOPTIC_CFG)
    assert cfg.MODEL.META_ARCHITECTURE == "PanopticFPN"
    assert task_of(cfg).name == "panoptic"
    assert task_of(cfg).outputs == {"sem_seg", "instances", "panoptic_seg"}
    # detectron2's panoptic convention: 0 = things, 1 = background (shapes' only stuff)
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 2 and cfg.MODEL.ROI_HEADS.NUM_CLASSES == 3
    assert cfg.DATASETS.TRAIN == ("shapes_panoptic_train",)
    assert cfg.DATASETS.TEST == ("shapes_panoptic_val",)
    assert cfg.MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT < 128 * 128 // 4  # stuff is kept


def test_semantic_branch_must_predict_the_stuff_classes(tiny_shapes, tmp_path):
    """detectron2's panoptic labels: 0 = every thing, then the stuff classes. A branch with
    another class count would train on labels that never reach its extra channels."""
    wrong = _cfg("ASPPPlusHead", tmp_path, **{"MODEL.SEM_SEG_HEAD.NUM_CLASSES": 4})
    with pytest.raises(ValueError, match=r"NUM_CLASSES=4, but dataset .* has 2 stuff classes"):
        task_of(wrong).check_config(wrong)
    right = _cfg("ASPPPlusHead", tmp_path)
    task_of(right).check_config(right)


def test_padded_targets_are_ignored(tmp_path):
    """PanopticFPN pads the targets of images of different sizes to the padded batch with
    the head's ignore_value (ImageList); our heads' loss is the cross-entropy over the real
    pixels only."""
    cfg = _cfg("ASPPPlusHead", tmp_path, **{"MODEL.ASPP.DROPOUT": 0.0})
    torch.manual_seed(0)
    model = Trainer.build_model(cfg)
    head = model.sem_seg_head
    assert head.ignore_value == cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE == 255
    sizes = [(45, 50), (64, 37)]
    targets = [torch.randint(0, 2, size) for size in sizes]
    inputs = [
        {"image": torch.randint(0, 256, (3, *size)).float(), "sem_seg": t, "instances": _one(t)}
        for size, t in zip(sizes, targets)
    ]
    # what PanopticFPN.forward does with the targets
    gt = ImageList.from_tensors(targets, model.backbone.size_divisibility, head.ignore_value)
    gt = gt.tensor
    assert gt.shape == (2, 64, 64) and (gt[0, 45:] == 255).all() and (gt[1, :, 37:] == 255).all()
    model.eval()  # fixed features; the head alone in training mode (dropout 0)
    head.train()
    with torch.no_grad():
        features = model.backbone(model.preprocess_image(inputs).tensor)
        _, losses = head(features, gt)
        logits = F.interpolate(head.layers(features), size=(64, 64), mode="bilinear")
        per_pixel = F.cross_entropy(logits, gt.clamp(max=1), reduction="none")
    real = gt != 255
    expected = per_pixel[real].mean() * cfg.MODEL.SEM_SEG_HEAD.LOSS_WEIGHT
    torch.testing.assert_close(losses["loss_sem_seg"], expected)

    # through PanopticFPN's own forward: finite losses, a gradient for every head parameter
    model.train()
    with EventStorage(0):
        losses = model(inputs)
    assert {"loss_sem_seg", "loss_mask", "loss_cls", "loss_rpn_cls"} <= set(losses)
    assert all(math.isfinite(v.item()) for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in head.parameters())


def _one(target):
    """One instance (class 0, a 20 x 25 box) on an image of the target's size."""
    inst = Instances(tuple(target.shape))
    mask = torch.zeros(target.shape, dtype=torch.bool)
    mask[5:25, 5:30] = True
    inst.gt_boxes = Boxes(torch.tensor([[5.0, 5.0, 30.0, 25.0]]))
    inst.gt_classes = torch.tensor([0])
    inst.gt_masks = BitMasks(mask[None])
    return inst


@pytest.mark.slow
@pytest.mark.parametrize("head", sorted(HEADS))
def test_trains_and_reports_semantic_and_instance_metrics(head, tiny_shapes, tmp_path):
    short_run = {
        "SOLVER.MAX_ITER": 2,
        "SOLVER.IMS_PER_BATCH": 2,
        "SOLVER.WARMUP_ITERS": 1,
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.0,  # an untrained model: keep its detections
        "TEST.SEM_SEG_VIS.NUM_IMAGES": 1,
    }
    cfg = _cfg(head, tmp_path / head, **short_run)
    trainer = Trainer(cfg)
    assert type(trainer.model.sem_seg_head).__name__ == head
    trainer.resume_or_load(resume=False)
    trainer.train()
    results = trainer._last_eval_results
    official = official_panoptic_available()
    expected = {"sem_seg", "bbox", "segm", "panoptic_seg"} | (
        {"coco_panoptic_seg"} if official else set()
    )
    assert set(results) == expected
    assert 0 <= results["sem_seg"]["mIoU"] <= 100
    for task in ("bbox", "segm"):
        assert math.isfinite(results[task]["AP"]) and 0 <= results[task]["AP"] <= 100
    for key in ("PQ", "SQ", "RQ", "PQ_th", "PQ_st"):
        assert 0 <= results["panoptic_seg"][key] <= 100, (key, results["panoptic_seg"])
    if official:  # detectron2's evaluator (panopticapi's pq_compute) agrees with ours
        for key in ("PQ", "SQ", "RQ", "PQ_th", "PQ_st"):
            assert results["coco_panoptic_seg"][key] == pytest.approx(
                results["panoptic_seg"][key], abs=1e-6
            ), key
    out = tmp_path / head / "inference" / f"{TINY}_panoptic_val"
    assert (out / "sem_seg_evaluation.json").is_file() and (out / "overlays").is_dir()
    assert (out / "panoptic_evaluation.json").is_file()

    # the combine step's output: instances and the background as a stuff segment
    trainer.model.eval()
    with torch.no_grad():
        batch = next(iter(Trainer.build_test_loader(cfg, f"{TINY}_panoptic_val")))
        pred = trainer.model(batch)[0]
    panoptic, segments = pred["panoptic_seg"]
    assert panoptic.shape == pred["sem_seg"].shape[-2:] == (SIZE, SIZE)
    assert pred["sem_seg"].shape[0] == 2


@pytest.mark.parametrize("case", ["palette", "16-bit", "reduce_zero_label"])
def test_labels_the_stock_mapper_would_misread_are_refused(case, tmp_path):
    """PanopticFPN's semantic branch is fed by detectron2's DatasetMapper, which reads labels
    as 8-bit grey levels: palette / 16-bit maps and stated label conventions would become
    wrong labels without an error, so the Trainer refuses them, naming the fix."""
    import numpy as np
    from PIL import Image

    from seg_plugins.modeling.task import PanopticTask

    label = np.zeros((8, 8), np.uint8)
    label[2:5, 2:5] = 3
    path = str(tmp_path / "label.png")
    record = {"file_name": "x.png", "sem_seg_file_name": path}
    if case == "palette":
        img = Image.fromarray(label)
        img.putpalette([v for k in range(256) for v in (k * 7 % 256, k, 255 - k)])
        img.save(path)
    elif case == "16-bit":
        Image.fromarray(label.astype(np.uint16) * 300).save(path)
    else:
        Image.fromarray(label).save(path)
        record["sem_seg_label_transform"] = {"name": "reduce_zero_label", "ignore_label": 255}
    cfg = _cfg("ASPPPlusHead", tmp_path)
    with pytest.raises(ValueError, match=r"single-channel 8-bit PNGs \('L'\)"):
        PanopticTask().check_dataset("d", [record], cfg, is_train=True)
    PanopticTask().check_dataset("d", [record], cfg, is_train=False)  # evaluation: not read
    Image.fromarray(label).save(path)  # plain "L" indices: fine
    plain = [{"file_name": "x.png", "sem_seg_file_name": path}]
    PanopticTask().check_dataset("d", plain, cfg, is_train=True)
