"""Tests of seg_plugins.modeling.losses (CPU, tiny tensors)."""

import pytest
import torch
from torch.nn import functional as F

import seg_plugins  # noqa: F401  repairs detectron2 before anything imports it
from seg_plugins.modeling.losses import build_sem_seg_loss, sem_seg_cross_entropy

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
