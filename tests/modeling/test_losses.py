"""Tests of seg_plugins.modeling.losses (CPU, tiny tensors)."""

import itertools
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.nn import functional as F

import seg_plugins  # repairs detectron2 before anything imports it

# isort: split
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from seg_plugins.modeling.losses import (
    build_sem_seg_loss,
    sem_seg_cross_entropy,
    sem_seg_dice,
    sem_seg_loss_options,
)
from seg_plugins.structures import binary_logits_to_two_class
from tests.hypothesis_policy import property_settings

IGNORE = 255


def _batch(seed=0, n=2, k=4, h=5, w=7, ignore_fraction=0.3):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, h, w, generator=gen)
    targets = torch.randint(0, k, (n, h, w), generator=gen)
    targets[torch.rand(n, h, w, generator=gen) < ignore_fraction] = IGNORE
    return logits, targets


def test_matches_torch_cross_entropy():
    logits, targets = _batch()
    loss = build_sem_seg_loss("cross_entropy", IGNORE)(logits, targets)
    expected = F.cross_entropy(logits, targets, ignore_index=IGNORE)
    torch.testing.assert_close(loss, expected)


def test_ignored_pixels_do_not_contribute():
    logits, targets = _batch()
    loss_fn = build_sem_seg_loss("cross_entropy", IGNORE)
    changed = logits.clone()
    changed.permute(0, 2, 3, 1)[targets == IGNORE] = 100.0 * torch.randn(4)
    torch.testing.assert_close(loss_fn(changed, targets), loss_fn(logits, targets))


def test_ignored_pixels_get_no_gradient():
    logits, targets = _batch()
    logits.requires_grad_(True)
    build_sem_seg_loss("cross_entropy", IGNORE)(logits, targets).backward()
    assert (logits.grad.permute(0, 2, 3, 1)[targets == IGNORE] == 0).all()


@pytest.mark.parametrize("class_weights", [None, [1.0, 2.0, 0.5, 3.0]])
def test_all_ignored_batch_gives_zero_not_nan(class_weights):
    logits = torch.randn(2, 4, 3, 3, requires_grad=True)
    targets = torch.full((2, 3, 3), IGNORE, dtype=torch.long)
    loss = build_sem_seg_loss("cross_entropy", IGNORE, class_weights)(logits, targets)
    assert torch.isfinite(loss) and loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad == 0).all()


def test_zero_weight_classes_only_gives_zero():
    logits = torch.randn(1, 3, 4, 4)
    targets = torch.zeros(1, 4, 4, dtype=torch.long)
    loss = build_sem_seg_loss("cross_entropy", IGNORE, [0.0, 1.0, 1.0])(logits, targets)
    assert loss.item() == 0.0


def test_class_weights_match_torch_weighted_mean():
    logits, targets = _batch(seed=1)
    weights = [0.2, 1.0, 3.0, 0.7]
    loss = build_sem_seg_loss("cross_entropy", IGNORE, weights, num_classes=4)(logits, targets)
    expected = F.cross_entropy(logits, targets, weight=torch.tensor(weights), ignore_index=IGNORE)
    torch.testing.assert_close(loss, expected)


def test_empty_class_weights_mean_uniform():
    logits, targets = _batch(seed=2)
    loss = build_sem_seg_loss("cross_entropy", IGNORE, [])(logits, targets)
    torch.testing.assert_close(loss, F.cross_entropy(logits, targets, ignore_index=IGNORE))


def test_ignore_value_inside_class_range():
    logits, targets = _batch(seed=3, ignore_fraction=0.0)
    loss = sem_seg_cross_entropy(logits, targets, ignore_value=0, class_weights=[1, 2, 3, 4])
    expected = F.cross_entropy(logits, targets, weight=torch.tensor([1.0, 2, 3, 4]), ignore_index=0)
    torch.testing.assert_close(loss, expected)


def test_wrong_length_class_weights_raise_with_key():
    with pytest.raises(ValueError, match="MODEL.SEM_SEG_HEAD.CLASS_WEIGHTS"):
        build_sem_seg_loss("cross_entropy", IGNORE, [1.0, 2.0], num_classes=4)
    loss_fn = build_sem_seg_loss("cross_entropy", IGNORE, [1.0, 2.0])
    with pytest.raises(ValueError, match="MODEL.SEM_SEG_HEAD.CLASS_WEIGHTS"):
        loss_fn(*_batch())


def test_negative_class_weights_raise():
    with pytest.raises(ValueError, match="MODEL.SEM_SEG_HEAD.CLASS_WEIGHTS"):
        build_sem_seg_loss("cross_entropy", IGNORE, [1.0, -1.0])


def test_unknown_loss_type_lists_valid_ones():
    with pytest.raises(ValueError, match="cross_entropy") as info:
        build_sem_seg_loss("focal", IGNORE)
    assert "MODEL.SEM_SEG_HEAD.LOSS_TYPE" in str(info.value)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="same H, W"):
        build_sem_seg_loss("cross_entropy", IGNORE)(torch.randn(1, 2, 4, 4), torch.zeros(1, 3, 3))


# ----------------------------------------------------------------------------- Dice


def _reference_dice(logits, targets, smooth=1.0, include_background=True, class_weights=None):
    """Straightforward one-hot soft Dice over the batch (the textbook formula)."""
    k = logits.shape[1]
    if k == 1:  # binary: probabilities [1 - p, p]
        p = torch.sigmoid(logits)
        probs, k = torch.cat([1 - p, p], dim=1), 2
    else:
        probs = logits.softmax(dim=1)
    labelled = (targets != IGNORE).unsqueeze(1).to(logits.dtype)
    onehot = F.one_hot(targets.masked_fill(targets == IGNORE, 0), k).permute(0, 3, 1, 2)
    onehot = onehot.to(logits.dtype) * labelled
    probs = probs * labelled
    inter = (probs * onehot).sum(dim=(0, 2, 3))
    den = probs.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    loss = 1 - (2 * inter + smooth) / (den + smooth)
    weights = (
        torch.ones(k, dtype=logits.dtype)
        if class_weights is None
        else torch.tensor(class_weights, dtype=logits.dtype)
    )
    if not include_background:
        weights[0] = 0
    return (weights * loss).sum() / weights.sum()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("smooth", [0.0, 1.0, 3.5])
@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("class_weights", [None, [0.5, 2.0, 1.0, 0.1]])
def test_dice_matches_one_hot_reference(dtype, smooth, include_background, class_weights):
    logits, targets = _batch(seed=4, n=3, k=4, h=9, w=11)
    logits = (3 * logits).to(dtype)
    loss = sem_seg_dice(
        logits,
        targets,
        ignore_value=IGNORE,
        smooth=smooth,
        include_background=include_background,
        class_weights=class_weights,
    )
    expected = _reference_dice(logits, targets, smooth, include_background, class_weights)
    torch.testing.assert_close(loss, expected, atol=1e-6, rtol=0)


def _perfect_and_worst(k=3, n=2, h=6, w=8):
    """Targets using every class, perfect logits and logits confidently on a wrong class."""
    targets = torch.arange(n * h * w).reshape(n, h, w) % k
    targets[0, 0, :3] = IGNORE
    safe = targets.masked_fill(targets == IGNORE, 0)
    perfect = 50.0 * F.one_hot(safe, k).permute(0, 3, 1, 2).float()
    worst = 50.0 * F.one_hot((safe + 1) % k, k).permute(0, 3, 1, 2).float()
    return targets, perfect, worst


def test_dice_perfect_prediction_is_zero_worst_is_one():
    targets, perfect, worst = _perfect_and_worst()
    assert sem_seg_dice(perfect, targets, ignore_value=IGNORE).item() < 1e-6
    # smoothing keeps D_c = s / (P_c + T_c + s) > 0; with ~30 pixels per class, loss ~ 0.98
    assert sem_seg_dice(worst, targets, ignore_value=IGNORE).item() > 0.97
    assert sem_seg_dice(worst, targets, ignore_value=IGNORE, smooth=0.0).item() == pytest.approx(1)


def test_dice_absent_unpredicted_class_costs_nothing():
    targets, perfect, _ = _perfect_and_worst(k=3)
    logits = torch.cat([perfect, torch.full_like(perfect[:, :1], -50.0)], dim=1)  # class 3 absent
    assert sem_seg_dice(logits, targets, ignore_value=IGNORE).item() < 1e-6
    # s = 0: an absent class scores D = 0 / P = 0 for any predicted mass P > 0 (a constant 1
    # without gradient) -- why the default smooths -- and D = 1 only when P is exactly 0.
    loss = sem_seg_dice(logits, targets, ignore_value=IGNORE, smooth=0.0)
    assert loss.item() == pytest.approx(0.25)
    logits[:, 3] = -math.inf
    assert sem_seg_dice(logits, targets, ignore_value=IGNORE, smooth=0.0).item() < 1e-6


def test_dice_gradient_descent_reduces_loss():
    logits, targets = _batch(seed=5)
    logits.requires_grad_(True)
    optimizer = torch.optim.SGD([logits], lr=50.0)
    history = []
    for _ in range(5):
        loss = sem_seg_dice(logits, targets, ignore_value=IGNORE)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert all(b < a for a, b in itertools.pairwise(history)), history
    assert history[-1] < 0.8 * history[0]


@pytest.mark.parametrize("k", [1, 4])
@pytest.mark.parametrize("loss_type", ["dice", "dice_ce", "cross_entropy"])
def test_ignored_pixels_do_not_change_any_loss(k, loss_type):
    logits, targets = _batch(seed=6, k=k)
    if k == 1:
        targets = _binary_targets(targets)
    loss_fn = build_sem_seg_loss(loss_type, IGNORE)
    changed = logits.clone()
    changed.permute(0, 2, 3, 1)[targets == IGNORE] = 100.0 * torch.randn(k)
    torch.testing.assert_close(loss_fn(changed, targets), loss_fn(logits, targets))
    logits.requires_grad_(True)
    loss_fn(logits, targets).backward()
    assert (logits.grad.permute(0, 2, 3, 1)[targets == IGNORE] == 0).all()


def test_dice_ce_combines_weights():
    logits, targets = _batch(seed=7)
    ce = sem_seg_cross_entropy(logits, targets, ignore_value=IGNORE)
    dice = sem_seg_dice(logits, targets, ignore_value=IGNORE, smooth=0.5)
    loss = build_sem_seg_loss("dice_ce", IGNORE, dice_ce_weights=[0.3, 2.0], dice_smooth=0.5)
    torch.testing.assert_close(loss(logits, targets), 0.3 * ce + 2.0 * dice)
    default = build_sem_seg_loss("dice_ce", IGNORE)(logits, targets)
    torch.testing.assert_close(default, ce + sem_seg_dice(logits, targets, ignore_value=IGNORE))


# ----------------------------------------------------------------------------- hard pixels


def test_top_k_all_pixels_equals_cross_entropy():
    logits, targets = _batch(seed=8)
    loss = build_sem_seg_loss("cross_entropy", IGNORE, top_k_percent=1.0)(logits, targets)
    torch.testing.assert_close(loss, F.cross_entropy(logits, targets, ignore_index=IGNORE))


@pytest.mark.parametrize("fraction", [0.1, 0.37])
def test_top_k_is_mean_of_largest_labelled_pixel_losses(fraction):
    logits, targets = _batch(seed=9, n=2, h=10, w=15)  # ~210 labelled pixels
    per_pixel = F.cross_entropy(logits, targets, ignore_index=IGNORE, reduction="none")
    labelled = per_pixel[targets != IGNORE]
    k = math.ceil(fraction * labelled.numel() - 1e-6)
    expected = torch.topk(labelled, k).values.mean()
    loss = build_sem_seg_loss("cross_entropy", IGNORE, top_k_percent=fraction)(logits, targets)
    torch.testing.assert_close(loss, expected)


def test_top_k_never_selects_ignored_pixels():
    logits, targets = _batch(seed=10, k=3)
    targets[:, :, :3] = IGNORE
    logits.permute(0, 2, 3, 1)[targets == IGNORE] = torch.tensor([-40.0, 40.0, 0.0])  # huge CE
    loss_fn = build_sem_seg_loss("cross_entropy", IGNORE, top_k_percent=0.1)
    per_pixel = F.cross_entropy(logits, targets, ignore_index=IGNORE, reduction="none")
    labelled = per_pixel[targets != IGNORE]
    expected = torch.topk(labelled, math.ceil(0.1 * labelled.numel() - 1e-6)).values.mean()
    torch.testing.assert_close(loss_fn(logits, targets), expected)


def test_top_k_with_class_weights_at_full_fraction_is_weighted_mean():
    logits, targets = _batch(seed=11)
    weights = [0.2, 1.0, 3.0, 0.7]
    loss = build_sem_seg_loss("dice_ce", IGNORE, weights, dice_ce_weights=[1.0, 0.0])
    expected = F.cross_entropy(logits, targets, weight=torch.tensor(weights), ignore_index=IGNORE)
    torch.testing.assert_close(loss(logits, targets), expected)
    hard = build_sem_seg_loss(
        "dice_ce", IGNORE, weights, dice_ce_weights=[1.0, 0.0], top_k_percent=0.2
    )(logits, targets)
    assert hard > expected  # the hardest pixels lose more than the average


@pytest.mark.parametrize("bad", [0.0, -0.5, 1.5])
def test_top_k_out_of_range_raises(bad):
    with pytest.raises(ValueError, match="TOP_K_PERCENT"):
        build_sem_seg_loss("cross_entropy", IGNORE, top_k_percent=bad)


def test_top_k_with_dice_only_raises():
    with pytest.raises(ValueError, match="TOP_K_PERCENT.*dice_ce"):
        build_sem_seg_loss("dice", IGNORE, top_k_percent=0.5)


# ----------------------------------------------------------------------------- binary mode


def _binary_targets(targets):
    return torch.where(targets == IGNORE, targets, targets % 2)


def test_binary_cross_entropy_matches_torch_on_labelled_pixels():
    logits, targets = _batch(seed=12, k=1)
    targets = _binary_targets(targets)
    keep = targets != IGNORE
    expected = F.binary_cross_entropy_with_logits(logits[:, 0][keep], targets[keep].float())
    loss = build_sem_seg_loss("cross_entropy", IGNORE, num_classes=1)(logits, targets)
    torch.testing.assert_close(loss, expected)


def test_binary_class_weights_are_background_foreground():
    logits, targets = _batch(seed=13, k=1)
    targets = _binary_targets(targets)
    keep = targets != IGNORE
    x, y = logits[:, 0][keep], targets[keep].float()
    w = torch.where(y > 0, 3.0, 0.5)
    expected = (w * F.binary_cross_entropy_with_logits(x, y, reduction="none")).sum() / w.sum()
    loss = build_sem_seg_loss("cross_entropy", IGNORE, [0.5, 3.0], num_classes=1)
    torch.testing.assert_close(loss(logits, targets), expected)
    with pytest.raises(ValueError, match=r"2 weights \[background, foreground\]"):
        build_sem_seg_loss("cross_entropy", IGNORE, [1.0], num_classes=1)


@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("class_weights", [None, [0.3, 2.0]])
def test_binary_dice_equals_two_class_dice_on_logits_zero_x(include_background, class_weights):
    """Binary Dice is, by definition here, the 2-class softmax Dice on logits [0, x]."""
    logits, targets = _batch(seed=14, k=1)
    targets = _binary_targets(targets)
    kwargs = {
        "ignore_value": IGNORE,
        "include_background": include_background,
        "class_weights": class_weights,
    }
    two_class = torch.cat([torch.zeros_like(logits), logits], dim=1)
    torch.testing.assert_close(
        sem_seg_dice(logits, targets, **kwargs), sem_seg_dice(two_class, targets, **kwargs)
    )
    expected = _reference_dice(logits, targets, 1.0, include_background, class_weights)
    torch.testing.assert_close(sem_seg_dice(logits, targets, **kwargs), expected, atol=1e-6, rtol=0)


def test_binary_dice_without_background_is_foreground_dice():
    logits, targets = _batch(seed=15, k=1)
    targets = _binary_targets(targets)
    keep = (targets != IGNORE).float()
    p, y = torch.sigmoid(logits[:, 0]) * keep, (targets == 1).float()
    expected = 1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)
    loss = sem_seg_dice(logits, targets, ignore_value=IGNORE, include_background=False)
    torch.testing.assert_close(loss, expected)


def test_binary_targets_outside_zero_one_raise():
    logits = torch.randn(1, 1, 4, 4)
    targets = torch.zeros(1, 4, 4, dtype=torch.long)
    targets[0, 0, 0] = 2
    for loss_type in ("cross_entropy", "dice", "dice_ce"):
        with pytest.raises(ValueError, match=r"\[2\].*binary mode"):
            build_sem_seg_loss(loss_type, IGNORE)(logits, targets)
    with pytest.raises(ValueError, match="IGNORE_VALUE"):
        build_sem_seg_loss("dice", 1)(logits, targets.clamp(max=1))


def test_multiclass_targets_out_of_range_raise():
    logits, targets = _batch(seed=16, k=3)
    targets[0, 0, 0] = 7
    for loss_type in ("cross_entropy", "dice", "dice_ce"):
        with pytest.raises(ValueError, match=r"\[7\].*0\.\.2"):
            build_sem_seg_loss(loss_type, IGNORE)(logits, targets)


# ----------------------------------------------------------------------------- all losses


ALL_SETTINGS = [
    (loss_type, k) for loss_type in ("cross_entropy", "dice", "dice_ce") for k in (1, 2, 4)
]


@pytest.mark.parametrize("loss_type,k", ALL_SETTINGS)
@pytest.mark.parametrize("top_k", [1.0, 0.3])
def test_all_ignored_gives_zero_and_finite_grads(loss_type, k, top_k):
    logits = torch.randn(2, k, 3, 3, requires_grad=True)
    targets = torch.full((2, 3, 3), IGNORE, dtype=torch.long)
    top_k = 1.0 if loss_type == "dice" else top_k
    weights = [1.0, 2.0] if k == 1 else [1.0] * k
    loss = build_sem_seg_loss(loss_type, IGNORE, weights, top_k_percent=top_k)(logits, targets)
    assert torch.isfinite(loss) and loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad == 0).all()


def test_dice_with_zero_smooth_and_all_ignored_is_finite():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    targets = torch.full((1, 2, 2), IGNORE, dtype=torch.long)
    loss = sem_seg_dice(logits, targets, ignore_value=IGNORE, smooth=0.0)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all()


def test_loss_options_from_config():
    cfg = get_cfg()
    seg_plugins.add_seg_plugins_config(cfg)
    head = cfg.MODEL.SEM_SEG_HEAD
    assert (head.LOSS_TYPE, head.DICE_SMOOTH, head.DICE_INCLUDE_BACKGROUND) == (
        "cross_entropy",
        1.0,
        True,
    )
    assert (head.DICE_CE_WEIGHTS, head.TOP_K_PERCENT, head.BINARY_THRESHOLD) == (
        [1.0, 1.0],
        1.0,
        0.5,
    )
    head.DICE_SMOOTH, head.DICE_CE_WEIGHTS, head.TOP_K_PERCENT = 0.0, [2.0, 0.5], 0.25
    options = sem_seg_loss_options(cfg)
    assert options == {
        "dice_smooth": 0.0,
        "dice_include_background": True,
        "dice_ce_weights": [2.0, 0.5],
        "top_k_percent": 0.25,
    }
    loss_fn = build_sem_seg_loss("dice_ce", IGNORE, **options)
    assert loss_fn.keywords["weights"] == (2.0, 0.5) and loss_fn.keywords["smooth"] == 0.0
    assert (
        "weights"
        not in build_sem_seg_loss("dice", IGNORE, **dict(options, top_k_percent=1.0)).keywords
    )


@pytest.mark.parametrize(
    "kwargs,key",
    [
        ({"dice_smooth": -1.0}, "DICE_SMOOTH"),
        ({"dice_smooth": float("nan")}, "DICE_SMOOTH"),
        ({"dice_ce_weights": [1.0]}, "DICE_CE_WEIGHTS"),
        ({"dice_ce_weights": [1.0, -2.0]}, "DICE_CE_WEIGHTS"),
    ],
)
def test_bad_options_name_their_key(kwargs, key):
    with pytest.raises(ValueError, match=f"MODEL.SEM_SEG_HEAD.{key}"):
        build_sem_seg_loss("dice_ce", IGNORE, **kwargs)


@pytest.mark.property
@property_settings(60)
@given(
    n=st.integers(1, 3),
    k=st.integers(1, 5),
    h=st.integers(1, 6),
    w=st.integers(1, 6),
    scale=st.floats(0.0, 1e3),
    ignore_fraction=st.floats(0.0, 1.0),
    loss_type=st.sampled_from(["cross_entropy", "dice", "dice_ce"]),
    top_k=st.sampled_from([1.0, 0.5, 0.01]),
    smooth=st.sampled_from([0.0, 1e-5, 1.0]),
    weighted=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_losses_are_finite_and_non_negative(
    n, k, h, w, scale, ignore_fraction, loss_type, top_k, smooth, weighted, seed
):
    gen = torch.Generator().manual_seed(seed)
    logits = (scale * torch.randn(n, k, h, w, generator=gen)).requires_grad_(True)
    num_labels = 2 if k == 1 else k
    targets = torch.randint(0, num_labels, (n, h, w), generator=gen)
    targets[torch.rand(n, h, w, generator=gen) < ignore_fraction] = IGNORE
    weights = torch.rand(num_labels, generator=gen).tolist() if weighted else None
    loss_fn = build_sem_seg_loss(
        loss_type,
        IGNORE,
        weights,
        num_classes=k,
        top_k_percent=1.0 if loss_type == "dice" else top_k,
        dice_smooth=smooth,
    )
    loss = loss_fn(logits, targets)
    assert torch.isfinite(loss) and loss.item() >= 0
    if loss_type == "dice":
        assert loss.item() <= 1 + 1e-6
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_dice_gradient_is_finite_for_a_saturated_absent_class():
    """Regression: a class absent from the targets with a denormal predicted
    mass gave a finite loss and a NaN gradient; one step then turned the weights into NaN."""
    gen = torch.Generator().manual_seed(6440)
    logits = (312.0 * torch.randn(2, 5, 3, 5, generator=gen)).requires_grad_(True)
    targets = torch.randint(0, 5, (2, 3, 5), generator=gen)
    targets[torch.rand(2, 3, 5, generator=gen) < 0.875] = 255
    loss = build_sem_seg_loss("dice", IGNORE, None, num_classes=5, top_k_percent=1.0,
                              dice_smooth=0.0)(logits, targets)  # fmt: skip
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("loss_type", ["dice", "dice_ce"])
@pytest.mark.parametrize("k", [1, 2, 5])
@pytest.mark.parametrize("gap", [30.0, 55.0, 90.0, 100.0, 110.0])
@pytest.mark.parametrize("smooth", [0.0, 1e-12, 1.0])
def test_dice_gradient_for_a_class_absent_from_targets_with_any_tiny_mass(
    loss_type, k, gap, smooth
):
    """Class 0 is in no labelled pixel and its probability is exp(-gap) everywhere: from
    1e-13 (its mass squared underflows float32) through float32 denormals (the old NaN)
    to exactly 0. Half the pixels are ignored (they index class 0 internally)."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, k, 4, 6, generator=gen)
    if k == 1:  # binary: class 0 is background, p(background) = sigmoid(-x)
        logits = logits.abs() + gap
        targets = torch.ones(2, 4, 6, dtype=torch.long)
    else:
        logits[:, 0] -= gap + logits[:, 1:].abs().max()
        targets = torch.randint(1, k, (2, 4, 6), generator=gen)
    targets[:, :2] = IGNORE
    logits.requires_grad_(True)
    loss = build_sem_seg_loss(loss_type, IGNORE, num_classes=k, dice_smooth=smooth)(logits, targets)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("loss_type", ["cross_entropy", "dice", "dice_ce"])
@pytest.mark.parametrize("k", [1, 2, 5])
def test_every_loss_has_a_finite_value_and_gradient_at_the_extremes(loss_type, k):
    """Any logits scale (saturated softmax / sigmoid included), any ignored fraction (all
    pixels included), every accepted smoothing, binary and multi-class, weighted, top-k."""
    num_labels = 2 if k == 1 else k
    cases = itertools.product(
        (0.0, 1.0, 100.0, 312.0, 1e4),  # logits scale (100: denormal probabilities)
        (0.0, 0.875, 1.0),  # ignored fraction
        (0.0, 1e-12, 1.0) if loss_type != "cross_entropy" else (1.0,),  # Dice smoothing
        (False, True),  # class weights
        (1.0,) if loss_type == "dice" else (1.0, 0.01),  # top-k fraction
        range(3),  # seed
    )
    for scale, ignored, smooth, weighted, top_k, seed in cases:
        case = dict(scale=scale, ignored=ignored, smooth=smooth, weighted=weighted,
                    top_k=top_k, seed=seed)  # fmt: skip
        gen = torch.Generator().manual_seed(seed)
        logits = (scale * torch.randn(2, k, 5, 7, generator=gen)).requires_grad_(True)
        targets = torch.randint(0, num_labels, (2, 5, 7), generator=gen)
        targets[torch.rand(2, 5, 7, generator=gen) < ignored] = IGNORE
        weights = torch.rand(num_labels, generator=gen).tolist() if weighted else None
        loss = build_sem_seg_loss(
            loss_type, IGNORE, weights, num_classes=k, top_k_percent=top_k, dice_smooth=smooth
        )(logits, targets)
        loss.backward()
        assert torch.isfinite(loss) and loss.item() >= 0, case
        assert torch.isfinite(logits.grad).all(), case


@pytest.mark.parametrize("smooth", [1e-13, 1e-300, -1.0, float("inf"), float("nan")])
def test_unsafe_dice_smoothing_is_refused_naming_the_key(smooth):
    with pytest.raises(ValueError, match="MODEL.SEM_SEG_HEAD.DICE_SMOOTH"):
        build_sem_seg_loss("dice", IGNORE, dice_smooth=smooth)


# ----------------------------------------------------------------------------- U-Net, K = 1


def _binary_unet_cfg(loss_type):
    cfg = get_cfg()
    seg_plugins.add_seg_plugins_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = "UNet"
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.UNET.BASE_CHANNELS, cfg.MODEL.UNET.DEPTH = 4, 2
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 1
    cfg.MODEL.SEM_SEG_HEAD.LOSS_TYPE = loss_type
    return cfg


@pytest.mark.parametrize("loss_type", ["cross_entropy", "dice", "dice_ce"])
def test_binary_unet_train_step_and_eval(loss_type):
    torch.manual_seed(0)
    model = build_model(_binary_unet_cfg(loss_type))
    gen = torch.Generator().manual_seed(0)
    inputs = []
    for h, w in [(21, 30), (17, 17)]:
        target = torch.randint(0, 2, (h, w), generator=gen)
        target[:3] = IGNORE
        image = torch.randint(0, 256, (3, h, w), generator=gen).to(torch.uint8)
        inputs.append({"image": image, "sem_seg": target})
    losses = model.train()(inputs)
    assert set(losses) == {"loss_sem_seg"} and torch.isfinite(losses["loss_sem_seg"])
    losses["loss_sem_seg"].backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    with torch.no_grad():
        outputs = model.eval()([{"image": x["image"]} for x in inputs])
    for out, x in zip(outputs, inputs):
        assert out["sem_seg"].shape == (1,) + tuple(x["image"].shape[-2:])
        decision = binary_logits_to_two_class(out["sem_seg"], 0.5).argmax(dim=0)
        assert torch.equal(decision, (out["sem_seg"][0] > 0).long())
