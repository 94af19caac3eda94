"""Tests of the inference modes (TEST.SEM_SEG: whole image, sliding window, flip / multi-scale
TTA; seg_plugins.modeling.inference) on toy logit functions and on every semantic model."""

import uuid

import numpy as np
import pytest
import torch
from PIL import Image

import seg_plugins  # noqa: F401  must come before detectron2 submodules (repairs the install)

# isort: split
from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model

from seg_plugins.evaluation import SemSegMetricsEvaluator
from seg_plugins.modeling.inference import (
    GAUSSIAN_FLOOR,
    SemSegInference,
    average_probabilities,
    slide_inference,
    whole_inference,
    window_starts,
    window_weights,
)
from tests.modeling.seg_model_checks import TINY_MODELS, tiny_model_cfg


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny windows run as many tiny operators; on a shared 2-core CPU two OpenMP threads wait
    on each other at every one (measured: the batch test takes 0.2 s on one thread, 2-18 s on
    two). Results do not depend on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _cfg(case, *opts):
    return tiny_model_cfg(case, *opts)


def _model(case, *opts):
    torch.manual_seed(0)
    return build_model(_cfg(case, *opts)).eval()


def _images(*sizes, channels=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (channels, h, w), generator=gen).float() for h, w in sizes]


def _predict(model, images, inference=None, **extra):
    """The model's eval outputs (K, H, W) for ``images``, with ``inference`` swapped in."""
    if inference is not None:
        model.inference = inference
    with torch.no_grad():
        return [out["sem_seg"] for out in model([{"image": x, **extra} for x in images])]


def _pointwise(k=4, c=3, seed=0):
    """A 1x1-conv "model": translation- and flip-equivariant, (B, C, h, w) -> (B, K, h, w)."""
    torch.manual_seed(seed)
    conv = torch.nn.Conv2d(c, k, 1)
    return lambda batch: conv(batch).detach()


# ----------------------------------------------------------------------------- sliding window


def test_window_starts_cover_the_image_and_stay_inside():
    assert window_starts(100, 32, 32) == [0, 32, 64, 68]  # last window shifted to the border
    assert window_starts(96, 32, 32) == [0, 32, 64]
    assert window_starts(32, 32, 8) == [0]
    for length, window, stride in [(100, 32, 20), (77, 16, 5), (64, 48, 48)]:
        covered = torch.zeros(length, dtype=torch.bool)
        for start in window_starts(length, window, stride):
            assert 0 <= start <= length - window
            covered[start : start + window] = True
        assert covered.all()


@pytest.mark.parametrize("case", sorted(TINY_MODELS))
def test_slide_with_a_window_covering_the_image_equals_whole(case):
    """A crop larger than the image gives one window = the image padded exactly as
    whole-image inference pads it (TEST.SEM_SEG from the config reaches every meta-arch)."""
    opts = ["TEST.SEM_SEG.CROP_SIZE", [128, 160], "TEST.SEM_SEG.STRIDE", [64, 64]]
    slide = _model(case, "TEST.SEM_SEG.MODE", "slide", *opts)
    whole = _model(case)
    whole.load_state_dict(slide.state_dict())
    assert slide.inference.mode == "slide" and whole.inference.is_plain
    image = _images((45, 61))
    expected = _predict(whole, image)[0]
    torch.testing.assert_close(_predict(slide, image)[0], expected, atol=1e-5, rtol=0)
    # TTA with two identical views (the probability-averaging path): the same probabilities
    tta = SemSegInference(scales=(1.0, 1.0))
    got = _predict(slide, image, tta)[0]
    torch.testing.assert_close(got.softmax(0), expected.softmax(0), atol=1e-5, rtol=0)


@pytest.mark.parametrize("weighting", ["uniform", "gaussian"])
def test_overlapping_windows_of_an_equivariant_model_equal_whole(weighting):
    fn = _pointwise()
    image = torch.randn(3, 75, 90)
    whole = whole_inference(fn, image, size_divisibility=16)
    calls = []

    def recording(batch):
        calls.append(tuple(batch.shape))
        return fn(batch)

    slide = slide_inference(
        recording,
        image,
        (32, 48),
        (20, 16),
        size_divisibility=16,
        weighting=weighting,
        window_batch_size=3,
    )
    assert slide.shape == whole.shape == (4, 75, 90)
    torch.testing.assert_close(slide, whole, atol=1e-5, rtol=0)
    # memory bound: at most WINDOW_BATCH_SIZE windows of CROP_SIZE per pass
    n_windows = len(window_starts(75, 32, 20)) * len(window_starts(90, 48, 16))
    assert sum(shape[0] for shape in calls) == n_windows
    assert all(shape[0] <= 3 and shape[-2:] == (32, 48) for shape in calls)


@pytest.mark.parametrize("sigma_scale", [0.125, 0.01])
def test_gaussian_weights_are_floored_and_average_correctly_at_borders(sigma_scale):
    weights = window_weights((32, 48), "gaussian", sigma_scale)
    assert weights.shape == (32, 48) and weights.max() == 1.0
    assert weights.min() >= 0.999 * GAUSSIAN_FLOOR  # at 0.01 the raw corners underflow to 0
    assert (weights[15:17, 23:25] == 1).all() and weights[16, 0] < 1  # favours the centre
    assert (weights[16, 1:24] >= weights[16, :23]).all()  # rises towards it
    constant = slide_inference(
        lambda batch: torch.full((len(batch), 2, *batch.shape[-2:]), 3.0),
        torch.zeros(3, 70, 101),
        (32, 48),
        (24, 40),
        weighting="gaussian",
        gaussian_sigma_scale=sigma_scale,
    )
    # a weighted mean of 3s is 3 everywhere, corners (covered by one window edge) included
    torch.testing.assert_close(constant, torch.full((2, 70, 101), 3.0), atol=1e-5, rtol=0)


def test_images_smaller_than_the_crop_are_padded_to_size_divisibility():
    shapes = []

    def recording(batch):
        shapes.append(tuple(batch.shape))
        return _pointwise()(batch)

    image = torch.randn(3, 20, 90)
    out = slide_inference(recording, image, (64, 64), (32, 32), size_divisibility=16)
    assert out.shape == (4, 20, 90)
    assert {s[-2:] for s in shapes} == {(32, 64)}  # 20 -> 32 (padded), 90 -> windows of 64


# ----------------------------------------------------------------------------- TTA


def test_identity_tta_is_the_plain_model_bit_for_bit():
    model = _model("UNet")
    images = _images((45, 61), (33, 40))
    plain = _predict(model, images)
    identity = _predict(model, images, SemSegInference(scales=[1.0], flip=False))
    assert all(torch.equal(a, b) for a, b in zip(plain, identity))


def test_flip_tta_of_a_flip_equivariant_model_equals_plain():
    fn, image = _pointwise(), torch.randn(3, 37, 50)
    plain = whole_inference(fn, image)
    flipped = SemSegInference(flip=True)(fn, image)
    torch.testing.assert_close(flipped.softmax(0), plain.softmax(0), atol=1e-6, rtol=0)


def test_flip_tta_un_flips_before_averaging():
    """A model with a left-to-right ramp in its logits: the flipped view, un-flipped, carries
    the reversed ramp; TTA averages the two views' probabilities."""
    fn = _pointwise()
    ramp = torch.linspace(-2, 2, 50) * torch.tensor([1.0, -1.0, 0.5, 0.0])[:, None, None]

    def ramped(batch):
        return fn(batch) + ramp[..., : batch.shape[-1]]

    image = torch.randn(3, 20, 50)
    base = fn(image[None])[0]
    expected = ((base + ramp).softmax(0) + (base + ramp.flip(-1)).softmax(0)) / 2
    got = SemSegInference(flip=True)(ramped, image)
    torch.testing.assert_close(got.softmax(0), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(got.exp(), expected, atol=1e-6, rtol=0)  # log of the mean


@pytest.mark.parametrize("mode", ["whole", "slide"])
def test_scales_return_the_original_size(mode):
    """A pointwise model on a constant image is scale-invariant: every scale agrees."""
    fn = _pointwise()
    image = torch.randn(3, 1, 1).expand(3, 45, 61).clone()
    tta = SemSegInference(
        mode=mode, crop_size=(32, 32), stride=(16, 16), flip=True, scales=(0.5, 0.75, 1.5)
    )
    got = tta(fn, image, size_divisibility=16)
    assert got.shape == (4, 45, 61)
    plain = whole_inference(fn, image)
    torch.testing.assert_close(got.softmax(0), plain.softmax(0), atol=1e-5, rtol=0)


def test_average_probabilities_in_log_space():
    a, b = torch.randn(3, 4, 5), 5 * torch.randn(3, 4, 5)
    expected = (a.softmax(0) + b.softmax(0)) / 2
    torch.testing.assert_close(average_probabilities([a, b]).exp(), expected)
    x, y = torch.tensor([[[-200.0, 0.3, 200.0]]]), torch.tensor([[[-210.0, -1.0, 150.0]]])
    got = average_probabilities(iter([x, y]))  # binary: logit of the mean sigmoid
    assert torch.isfinite(got).all()  # the probabilities underflow float32, the log does not
    torch.testing.assert_close(
        got[0, 0, 1], torch.logit((torch.sigmoid(x) + torch.sigmoid(y))[0, 0, 1] / 2)
    )
    assert got[0, 0, 0] < -199 and got[0, 0, 2] > 149


# ----------------------------------------------------------------------------- end to end


def test_batch_of_different_sizes_and_output_resolution():
    model = _model("UNet")
    tta = SemSegInference(
        mode="slide",
        crop_size=(32, 40),
        stride=(24, 24),
        weighting="gaussian",
        window_batch_size=4,
        flip=True,
        scales=(0.75, 1.25),
    )
    images = _images((45, 61), (70, 33))
    together = _predict(model, images, tta)
    alone = [_predict(model, [x], tta)[0] for x in images]
    assert [tuple(x.shape) for x in together] == [(4, 45, 61), (4, 70, 33)]
    for a, b in zip(together, alone):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)  # no padding across the batch
    resized = _predict(model, images[:1], tta, height=90, width=122)[0]
    assert resized.shape == (4, 90, 122)


@pytest.fixture
def binary_dataset():
    name = f"test_inference_binary_{uuid.uuid4().hex[:8]}"
    MetadataCatalog.get(name).set(stuff_classes=["background", "fg"], ignore_label=255)
    yield name
    MetadataCatalog.remove(name)


def test_binary_mode_end_to_end(tmp_path, binary_dataset):
    """NUM_CLASSES 1 with slide + flip + scales: the output is the logit of the views' mean
    foreground probability, so the evaluator's sigmoid(x) > threshold thresholds that mean."""
    opts = ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", 1, "TEST.SEM_SEG.MODE", "slide"]
    opts += ["TEST.SEM_SEG.CROP_SIZE", [32, 32], "TEST.SEM_SEG.STRIDE", [16, 24]]
    opts += ["TEST.SEM_SEG.FLIP", True, "TEST.SEM_SEG.SCALES", [0.75, 1.0]]
    opts += ["TEST.SEM_SEG.WINDOW_BATCH_SIZE", 4]
    model = _model("UNet", *opts)
    image = _images((41, 50))
    got = _predict(model, image)[0]
    assert got.shape == (1, 41, 50)
    views = []  # each view on its own: (un)flipped by hand, one scale, no TTA
    for scale in (0.75, 1.0):
        one = SemSegInference(**{**vars(model.inference), "scales": (scale,), "flip": False})
        views.append(_predict(model, image, one)[0])
        views.append(_predict(model, [image[0].flip(-1)], one)[0].flip(-1))
    mean_p = torch.stack(views).sigmoid().mean(0)
    torch.testing.assert_close(got.sigmoid(), mean_p, atol=1e-5, rtol=0)

    threshold = float(mean_p.median())  # half the pixels on either side
    label = (mean_p[0] > threshold).numpy().astype(np.uint8)
    assert 0 < label.mean() < 1
    mean_logit = torch.stack(views).mean(0)  # averaging logits would decide otherwise here
    assert ((mean_logit.sigmoid() > threshold) != (mean_p > threshold)).any()
    gt_file = str(tmp_path / "gt.png")
    Image.fromarray(label).save(gt_file)
    evaluator = SemSegMetricsEvaluator(binary_dataset, binary_threshold=threshold)
    evaluator.reset()
    evaluator.process([{"file_name": gt_file, "sem_seg_file_name": gt_file}], [{"sem_seg": got}])
    assert evaluator.evaluate()["sem_seg"]["pACC"] > 99.9  # up to float ties at the threshold


# ----------------------------------------------------------------------------- bad config


@pytest.mark.parametrize(
    "opts, key",
    [
        (["TEST.SEM_SEG.MODE", "sliding"], "TEST.SEM_SEG.MODE"),
        (["TEST.SEM_SEG.STRIDE", [600, 300]], "TEST.SEM_SEG.STRIDE"),
        (["TEST.SEM_SEG.WEIGHTING", "gauss"], "TEST.SEM_SEG.WEIGHTING"),
        (["TEST.SEM_SEG.SCALES", []], "TEST.SEM_SEG.SCALES"),
        (["TEST.SEM_SEG.CROP_SIZE", [512]], "TEST.SEM_SEG.CROP_SIZE"),
        (["TEST.SEM_SEG.WINDOW_BATCH_SIZE", 0], "WINDOW_BATCH_SIZE"),
    ],
)
def test_bad_keys_name_the_key(opts, key):
    with pytest.raises(ValueError, match=key):
        SemSegInference.from_config(_cfg("UNet", *opts))


def test_crop_not_a_multiple_of_size_divisibility_fails_at_build():
    opts = ["TEST.SEM_SEG.MODE", "slide", "TEST.SEM_SEG.CROP_SIZE", [100, 120]]
    opts += ["TEST.SEM_SEG.STRIDE", [64, 64]]
    with pytest.raises(ValueError, match=r"TEST.SEM_SEG.CROP_SIZE.*set it to \[104, 120\]"):
        build_model(_cfg("UNet", *opts))  # U-Net of depth 3: size_divisibility 8
