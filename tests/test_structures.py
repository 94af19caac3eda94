"""Tests of seg_plugins.structures: the softmax / binary-sigmoid rule that turns semantic
logits into classes and probabilities (CPU, tiny tensors)."""

import math

import pytest
import torch

from seg_plugins.structures import (
    binary_logits_to_two_class,
    check_binary_threshold,
    is_binary,
    sem_seg_classes,
    sem_seg_probabilities,
)


def _logits(*shape, seed=0):
    return 4 * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_is_binary():
    assert is_binary(1) and not is_binary(2) and not is_binary(19)


def test_check_binary_threshold():
    assert check_binary_threshold(0.3) == 0.3
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="BINARY_THRESHOLD"):
            check_binary_threshold(bad)


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.8])
def test_binary_logits_to_two_class_argmax_is_threshold(threshold):
    logits = _logits(2, 1, 17, 19)
    scores = binary_logits_to_two_class(logits, threshold)
    assert scores.shape == (2, 2, 17, 19)
    expected = (torch.sigmoid(logits[:, 0].double()) > threshold).long()
    assert torch.equal(scores.argmax(dim=1), expected)
    # A logit exactly at logit(threshold) (as float32 rounds it) ties: background, as the
    # strict "sigmoid > t" says (the sigmoid of the rounded logit may differ from t by an ulp).
    logits[0, 0, 0, 0] = math.log(threshold / (1 - threshold))
    assert binary_logits_to_two_class(logits, threshold).argmax(dim=1)[0, 0, 0] == 0
    unbatched = binary_logits_to_two_class(logits[0], threshold)
    assert torch.equal(unbatched.argmax(dim=0), expected[0])


def test_binary_logits_to_two_class_rejects_bad_input():
    with pytest.raises(ValueError, match="one-channel"):
        binary_logits_to_two_class(torch.randn(1, 2, 4, 4))
    with pytest.raises(ValueError, match="BINARY_THRESHOLD"):
        binary_logits_to_two_class(torch.randn(1, 1, 4, 4), 1.0)


def test_classes_are_the_argmax_lower_class_on_ties():
    logits = _logits(4, 9, 11)
    classes = sem_seg_classes(logits)
    assert classes.shape == (9, 11) and classes.dtype == torch.int64
    assert torch.equal(classes, logits.argmax(dim=0))
    logits[:, 0, 0] = 0.0
    logits[2:, 0, 0] = 1.0  # classes 2 and 3 tie
    assert sem_seg_classes(logits)[0, 0] == 2


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.8])
def test_binary_classes_are_sigmoid_above_threshold_ties_to_background(threshold):
    logits = _logits(1, 17, 19)
    expected = (torch.sigmoid(logits[0].double()) > threshold).long()
    assert torch.equal(sem_seg_classes(logits, threshold), expected)
    logits[0, 0, 0] = math.log(threshold / (1 - threshold))
    assert sem_seg_classes(logits, threshold)[0, 0] == 0
    # The evaluators argmax binary_logits_to_two_class's scores: the same decision.
    scores = binary_logits_to_two_class(logits, threshold)
    assert torch.equal(sem_seg_classes(logits, threshold), scores.argmax(dim=0))


@pytest.mark.parametrize("channels", [1, 3])
def test_batched_logits_on_dim_1_equal_each_image(channels):
    logits = _logits(2, channels, 6, 7)
    classes = sem_seg_classes(logits, 0.7, dim=1)
    probs = sem_seg_probabilities(logits, dim=1)
    assert classes.shape == (2, 6, 7) and probs.shape == logits.shape
    for i in range(2):
        assert torch.equal(classes[i], sem_seg_classes(logits[i], 0.7))
        torch.testing.assert_close(probs[i], sem_seg_probabilities(logits[i]))
    assert torch.equal(sem_seg_classes(logits, 0.7, dim=-3), classes)


def test_probabilities_softmax_or_foreground_sigmoid():
    logits = _logits(3, 5, 6)
    probs = sem_seg_probabilities(logits)
    torch.testing.assert_close(probs, logits.softmax(dim=0))
    torch.testing.assert_close(probs.sum(0), torch.ones(5, 6))
    binary = sem_seg_probabilities(logits[:1])
    assert binary.shape == (1, 5, 6)
    torch.testing.assert_close(binary, torch.sigmoid(logits[:1]))


@pytest.mark.parametrize("shape, dim", [((2, 3, 4, 5), 0), ((3, 4, 5), 1), ((4, 5), 0)])
def test_class_dim_must_precede_height_and_width(shape, dim):
    for fn in (sem_seg_classes, sem_seg_probabilities):
        with pytest.raises(ValueError, match=r"\(K, H, W\)"):
            fn(torch.zeros(shape), dim=dim)
