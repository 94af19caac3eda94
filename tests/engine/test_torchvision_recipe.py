"""Training equals torchvision's references/segmentation recipe.

configs/coco/{fcn,deeplabv3}_R50_os8_coco_voc_torchvision.yaml follow that recipe (SGD with
momentum 0.9, weight decay 1e-4 on every parameter, poly decay with power 0.9 per iteration,
the auxiliary classifier at 10x the learning rate and 0.5 x its loss, cross-entropy ignoring
255). Here each is trained 5 steps -- by detectron2's own pieces as its SimpleTrainer runs
them: our Trainer's ``build_optimizer`` / ``build_lr_scheduler``, the model's loss dict
summed -- beside a plain PyTorch loop written after torchvision's train.py, from the same
initial weights (a random torchvision model, converted) on the same batches, with the same
dropout masks (the RNG is seeded before each step; both models draw their masks in the same
order and shapes). Then every parameter and BatchNorm statistic is compared.

Tolerance: both sides run the same float32 operations; on this 2-core CPU they come out
bit-identical after 5 steps (measured: 0 difference in every tensor, both models). Other
kernels (GPU, other oneDNN builds) may order the sums of the loss mean or SGD's foreach
update differently: ~1e-7 relative per step, carried through 50 BatchNorm layers. The test
allows 1e-4 of each tensor's largest magnitude: far above such rounding and far below a real
difference of recipe. Measured with one setting off (max |difference| / max |value| of the
worst tensor): SOLVER.WEIGHT_DECAY_NORM 0 (detectron2's default) 0.79, MODEL.AUX_HEAD.
LR_FACTOR 1 0.83, AUX_HEAD.LOSS_WEIGHT 0.4 1.28.

detectron2 settings the recipe needs (configs/coco/*_torchvision.yaml): SOLVER.
WEIGHT_DECAY_NORM 1e-4 (detectron2 decays no norm by default), WEIGHT_DECAY_BIAS 1e-4,
BIAS_LR_FACTOR 1.0, MOMENTUM 0.9, NESTEROV False, WarmupPolyLR with WARMUP_ITERS 0; and two
keys added for it: MODEL.AUX_HEAD.LR_FACTOR 10 and, for DeepLabV3, MODEL.ASPP.POOLING_NORM
"BN" (detectron2's ASPP has no norm in its image-pooling branch, torchvision's has one, which
in training normalises over the batch: folding it, exact in eval, is not in training).
"""

import os

import seg_plugins  # noqa: F401  (first: repairs detectron2 where needed)

# isort: split
import pytest
import torch
import torchvision
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from torch.nn import functional as F

from seg_plugins import add_seg_plugins_config
from seg_plugins.engine import Trainer
from seg_plugins.modeling.convert_torchvision import convert_torchvision

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = {
    "fcn_resnet50": "configs/coco/fcn_R50_os8_coco_voc_torchvision.yaml",
    "deeplabv3_resnet50": "configs/coco/deeplabv3_R50_os8_coco_voc_torchvision.yaml",
}
NUM_CLASSES = 5
STEPS = 5
LR = 0.02  # the recipe's
RELATIVE_TOLERANCE = 1e-4  # of each tensor's largest magnitude; see the module docstring


def _batches(n_steps: int, size=(48, 64)):
    """(normalised images (2, 3, H, W), targets (2, H, W) with ~10% ignored) per step."""
    gen = torch.Generator().manual_seed(7)
    out = []
    for _ in range(n_steps):
        images = torch.randn(2, 3, *size, generator=gen)
        targets = torch.randint(0, NUM_CLASSES, (2, *size), generator=gen)
        targets[torch.rand(2, *size, generator=gen) < 0.1] = 255
        out.append((images, targets))
    return out


def _train_torchvision(model, batches):
    """torchvision references/segmentation/train.py, reduced to its optimisation."""
    params = [
        {"params": [p for p in model.backbone.parameters() if p.requires_grad]},
        {"params": [p for p in model.classifier.parameters() if p.requires_grad]},
        {"params": [p for p in model.aux_classifier.parameters() if p.requires_grad],
         "lr": LR * 10},
    ]  # fmt: skip
    optimizer = torch.optim.SGD(params, lr=LR, momentum=0.9, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=STEPS, power=0.9)
    model.train()
    for step, (images, targets) in enumerate(batches):
        torch.manual_seed(1000 + step)  # dropout masks
        output = model(images)
        loss = F.cross_entropy(output["out"], targets, ignore_index=255) + 0.5 * (
            F.cross_entropy(output["aux"], targets, ignore_index=255)
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    return model


def _cfg(name):
    cfg = get_cfg()
    add_seg_plugins_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, CONFIGS[name]))
    cfg.merge_from_list([
        *("MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "SOLVER.MAX_ITER", STEPS),
        *("MODEL.SEM_SEG_HEAD.NUM_CLASSES", NUM_CLASSES),
        # the batches come normalised, as torchvision's transforms make them
        *("MODEL.PIXEL_MEAN", [0.0, 0.0, 0.0], "MODEL.PIXEL_STD", [1.0, 1.0, 1.0]),
    ])  # fmt: skip
    return cfg


def _train_ours(cfg, state, batches):
    """The model of ``cfg`` with the converted ``state``, trained as detectron2's
    SimpleTrainer.run_step does, with the Trainer's optimizer and LR schedule."""
    model = build_model(cfg)
    model.load_state_dict(state, strict=False)  # pixel_mean / std: the config's
    optimizer = Trainer.build_optimizer(cfg, model)
    scheduler = Trainer.build_lr_scheduler(cfg, optimizer)
    model.train()
    for step, (images, targets) in enumerate(batches):
        torch.manual_seed(1000 + step)
        losses = model([{"image": im, "sem_seg": t} for im, t in zip(images, targets)])
        loss = sum(losses.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    return model


def _compare(theirs: dict, ours: dict) -> dict:
    """{key: max |difference| / max |value|} over every converted tensor."""
    ratios = {}
    for key, value in theirs.items():
        mine = ours[key].float()
        value = value.float()
        ratios[key] = float((mine - value).abs().max() / value.abs().max().clamp(min=1e-12))
    return ratios


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_five_steps_of_the_config_equal_torchvision_reference_training(name):
    torch.manual_seed(0)
    builder = getattr(torchvision.models.segmentation, name)
    tv_model = builder(weights=None, weights_backbone=None, num_classes=NUM_CLASSES,
                       aux_loss=True)  # fmt: skip
    deeplab = name.startswith("deeplab")
    initial = convert_torchvision(tv_model.state_dict(), fold_pooling_norm=not deeplab)
    assert initial.unused == [] and initial.dropped == []
    start = {k: v.clone() for k, v in initial.state_dict.items()}  # it aliases tv_model's
    batches = _batches(STEPS)

    ours = _train_ours(_cfg(name), start, batches)
    _train_torchvision(tv_model, batches)
    trained = convert_torchvision(tv_model.state_dict(), fold_pooling_norm=not deeplab)

    state = ours.state_dict()
    assert set(trained.state_dict) <= set(state)
    moved = _compare(start, {k: trained.state_dict[k] for k in start})
    assert max(moved.values()) > 1e-3  # the 5 steps did change the weights
    ratios = _compare(trained.state_dict, state)
    worst = max(ratios, key=ratios.get)
    assert ratios[worst] <= RELATIVE_TOLERANCE, (worst, ratios[worst])


def test_aux_head_lr_factor_splits_detectron2_param_groups():
    """MODEL.AUX_HEAD.LR_FACTOR: detectron2 merges parameters of equal hyper-parameters
    into one group; the aux head's share gets the factor, nothing else does."""
    cfg = _cfg("fcn_resnet50")
    cfg.merge_from_list(["MODEL.RESNETS.DEPTH", 18, "MODEL.RESNETS.RES2_OUT_CHANNELS", 64])
    model = build_model(cfg)
    optimizer = Trainer.build_optimizer(cfg, model)
    aux = {id(p) for p in model.aux_head.parameters()}
    lrs = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert set(lrs) == {id(p) for p in model.parameters() if p.requires_grad}
    assert all(lr == pytest.approx(LR * 10) for key, lr in lrs.items() if key in aux)
    assert all(lr == pytest.approx(LR) for key, lr in lrs.items() if key not in aux)
