"""Tests of the dense CRF post-processing (seg_plugins.modeling.postprocessing.DenseCRF) and of
its use by the meta-architectures (CPU, tiny images)."""

import os
import sys

import numpy
import pytest
import torch
from PIL import Image

import seg_plugins

# isort: split
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from torch import nn
from torch.nn import functional as F

from seg_plugins.evaluation import SemSegMetricsEvaluator
from seg_plugins.modeling.postprocessing import DenseCRF, build_crf, permutohedral
from seg_plugins.modeling.postprocessing import crf as crf_module
from seg_plugins.structures import binary_logits_to_two_class
from tests.modeling.seg_model_checks import make_inputs, train_step_checks

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Parameters whose kernels are far from 0 and from 1 on a 6x7 image of 0-255 values.
STRONG = dict(
    bilateral_weight=2.0,
    bilateral_xy_std=3.0,
    bilateral_intensity_std=60.0,
    gaussian_weight=1.5,
    gaussian_xy_std=1.3,
)
EXACT, WINDOW = dict(max_exact_pixels=10**9), dict(max_exact_pixels=0, bilateral_filter="window")
LATTICE = dict(max_exact_pixels=0)  # the default filter above MAX_EXACT_PIXELS


def _tiny(num_classes=3, channels=3, size=(6, 7), seed=0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(num_classes, *size, generator=gen) * 2
    image = torch.randint(0, 256, (channels, *size), generator=gen).float()
    return logits, image


def _brute_force(logits, image, crf, window_radius=None):
    """Mean field with the full N x N kernel in float64, straight from the formulas."""
    num_classes, height, width = logits.shape
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    pos = torch.stack([ys, xs]).reshape(2, -1).T.double()
    col = image.reshape(image.shape[0], -1).T.double()
    offsets = pos[:, None] - pos[None]
    d_pos, d_col = offsets.square().sum(-1), (col[:, None] - col[None]).square().sum(-1)
    bilateral = torch.exp(
        -d_pos / (2 * crf.bilateral_xy_std**2) - d_col / (2 * crf.bilateral_intensity_std**2)
    )
    if window_radius is not None:
        bilateral = bilateral * (offsets.abs().amax(-1) <= window_radius)
    gaussian = torch.exp(-d_pos / (2 * crf.gaussian_xy_std**2))
    kernel = crf.bilateral_weight * bilateral + crf.gaussian_weight * gaussian
    kernel.fill_diagonal_(0)  # no message from a pixel to itself
    unary = logits.reshape(num_classes, -1).double()
    q = F.softmax(unary, dim=0)
    for _ in range(crf.iterations):
        q = F.softmax(unary + q @ kernel, dim=0)  # kernel is symmetric
    return q.reshape(num_classes, height, width)


# ------------------------------------------------------------------------------ the module


@pytest.mark.parametrize("mode", [EXACT, WINDOW, LATTICE])
def test_zero_pairwise_weights_give_softmax(mode):
    logits, image = _tiny()
    crf = DenseCRF(bilateral_weight=0.0, gaussian_weight=0.0, **mode)
    torch.testing.assert_close(crf(logits, image), F.softmax(logits, dim=0))


@pytest.mark.parametrize("iterations", [1, 3])
@pytest.mark.parametrize("block_size", [1, 5, 42, 100, None])
def test_exact_mode_equals_brute_force(iterations, block_size):
    logits, image = _tiny()
    crf = DenseCRF(iterations=iterations, block_size=block_size, **STRONG, **EXACT)
    expected = _brute_force(logits, image, crf).float()
    torch.testing.assert_close(crf(logits, image), expected, atol=1e-5, rtol=0)


def test_exact_mode_with_deeplab_defaults_equals_brute_force():
    logits, image = _tiny(size=(9, 8), seed=1)
    image = image / 8 + 100  # close colours, so that theta_b = 3 leaves a non-zero kernel
    crf = DenseCRF(**EXACT)
    torch.testing.assert_close(crf(logits, image), _brute_force(logits, image, crf).float())


def test_window_mode_equals_exact_when_the_window_covers_the_image():
    logits, image = _tiny()
    exact = DenseCRF(iterations=3, **STRONG, **EXACT)(logits, image)
    window = DenseCRF(iterations=3, window_radius=6, **STRONG, **WINDOW)(logits, image)
    torch.testing.assert_close(window, exact, atol=1e-5, rtol=0)


def test_window_mode_is_the_window_truncated_kernel():
    logits, image = _tiny(size=(9, 11))
    crf = DenseCRF(iterations=3, window_radius=2, **STRONG, **WINDOW)
    expected = _brute_force(logits, image, crf, window_radius=2).float()
    torch.testing.assert_close(crf(logits, image), expected, atol=1e-5, rtol=0)


def _shifted_boundary(channels):
    """A 24 x 32 image whose colour changes at column 16 and logits that put the class
    boundary at column 13 (3 pixels early); truth = the colour edge."""
    gen = torch.Generator().manual_seed(0)
    image = torch.full((channels, 24, 32), 60.0)
    image[:, :, 16:] = 180.0
    image += torch.randn(image.shape, generator=gen) * 3
    logits = torch.zeros(2, 24, 32)
    logits[1, :, 13:] = 1.0
    logits[0, :, :13] = 1.0
    truth = torch.zeros(24, 32, dtype=torch.long)
    truth[:, 16:] = 1
    return logits, image, truth


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("mode", [EXACT, dict(WINDOW, window_radius=8), LATTICE])
def test_crf_moves_the_boundary_to_the_colour_edge(channels, mode):
    logits, image, truth = _shifted_boundary(channels)
    crf = DenseCRF(bilateral_intensity_std=10.0, **mode)
    before = (logits.argmax(0) != truth).sum()
    after = (crf(logits, image).argmax(0) != truth).sum()
    assert before == 3 * 24
    assert after < before / 4, (before, after)


@pytest.mark.parametrize("channels", [1, 5])
@pytest.mark.parametrize("mode", [EXACT, dict(WINDOW, window_radius=6)])
def test_grayscale_and_many_channels(channels, mode):
    logits, image = _tiny(channels=channels)
    crf = DenseCRF(iterations=2, **STRONG, **mode)
    q = crf(logits, image.to(torch.uint8))  # any image dtype
    expected = _brute_force(logits, image, crf).float()
    torch.testing.assert_close(q, expected, atol=1e-5, rtol=0)


def test_bad_shapes_raise():
    logits, image = _tiny()
    with pytest.raises(ValueError, match="same H x W"):
        DenseCRF()(logits, image[:, :5])
    with pytest.raises(ValueError, match=r"\(K, H, W\)"):
        DenseCRF()(logits[None], image)


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("ITERATIONS", 0, r"MODEL\.CRF\.ITERATIONS.*>= 1.*ENABLED False"),
        ("BILATERAL_XY_STD", -1.0, r"MODEL\.CRF\.BILATERAL_XY_STD.*> 0"),
        ("BILATERAL_INTENSITY_STD", 0.0, r"MODEL\.CRF\.BILATERAL_INTENSITY_STD.*> 0"),
        ("GAUSSIAN_XY_STD", float("nan"), r"MODEL\.CRF\.GAUSSIAN_XY_STD"),
        ("GAUSSIAN_WEIGHT", -0.5, r"MODEL\.CRF\.GAUSSIAN_WEIGHT.*>= 0"),
        ("WINDOW_RADIUS", 0, r"MODEL\.CRF\.WINDOW_RADIUS.*>= 1"),
        ("MAX_EXACT_PIXELS", 10.5, r"MODEL\.CRF\.MAX_EXACT_PIXELS.*integer"),
        ("BILATERAL_FILTER", "lattice", r"MODEL\.CRF\.BILATERAL_FILTER.*'permutohedral'"),
        ("BACKEND", "cuda", r"MODEL\.CRF\.BACKEND.*'pydensecrf2'"),
    ],
)
def test_bad_config_values_raise_naming_the_key(key, value, match):
    cfg = seg_plugins.add_seg_plugins_config(get_cfg())
    cfg.MODEL.CRF.ENABLED = True
    cfg.MODEL.CRF[key] = value
    with pytest.raises(ValueError, match=match):
        build_crf(cfg)


def test_config_defaults_are_the_constructor_defaults():
    cfg = seg_plugins.add_seg_plugins_config(get_cfg())
    assert build_crf(cfg) is None  # MODEL.CRF.ENABLED is False by default
    cfg.MODEL.CRF.ENABLED = True
    assert repr(build_crf(cfg)) == repr(DenseCRF())


# ------------------------------------------------------- the permutohedral lattice (large images)


def _scene(size=48, channels=3, seed=0, classes=3, strength=1.2):
    """Discs of ``classes - 1`` colours on a background, with per-pixel noise of std 4, and
    the logits of a coarse network: the one-hot truth average-pooled by 4, upsampled, times
    ``strength``, plus noise. Returns logits (K, H, W), image (C, H, W), truth (H, W)."""
    gen = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    truth = torch.zeros(size, size, dtype=torch.long)
    for label in range(1, classes):
        for _ in range(2):
            cy, cx = (torch.rand(2, generator=gen) * size).tolist()
            radius = size * (0.15 + 0.15 * torch.rand(1, generator=gen).item())
            truth[(ys - cy) ** 2 + (xs - cx) ** 2 < radius**2] = label
    palette = torch.rand(classes, channels, generator=gen) * 180 + 40
    image = palette[truth].permute(2, 0, 1) + torch.randn(channels, size, size, generator=gen) * 4
    coarse = F.avg_pool2d(F.one_hot(truth, classes).permute(2, 0, 1)[None].float(), 4)
    logits = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)[0]
    return logits * strength + torch.randn(logits.shape, generator=gen) * 0.5, image, truth


def _agreement(q, reference):
    """Percentage of pixels whose labels (argmax over dim 0) agree."""
    return (q.argmax(0) == reference.argmax(0)).double().mean().item() * 100


@pytest.mark.parametrize("stds", [(67.0, 3.0), (10.0, 10.0), (5.0, 20.0)])
def test_lattice_messages_approximate_the_exact_sums(stds):
    """The lattice's bilateral messages (self weight removed) against the exact sums over
    j != i on a 32 x 32 image: within 30% (Frobenius), on average 0.7-1.0x (the lattice
    loses what its blur sends to missing vertices; docs/crf.md has the figures)."""
    _, image, _ = _scene(size=32)
    features = crf_module._bilateral_features(image, *stds)
    q = F.softmax(torch.randn(32 * 32, 3, generator=torch.Generator().manual_seed(1)) * 2, 1)
    exact = crf_module._exact_message(q, features, block=256)
    approx = crf_module._lattice_message_fn(features)(q)
    assert (approx >= 0).all()
    assert (approx - exact).norm() < 0.3 * exact.norm()
    assert 0.7 < approx.sum() / exact.sum() < 1.0


@pytest.mark.parametrize("channels", [1, 3])
def test_lattice_mean_field_agrees_with_exact(channels):
    """DeepLab-v2's defaults, 10 iterations, a weak unary (the pairwise terms decide more):
    the labels agree with the exact fully connected CRF on >= 99% of the pixels, where the
    unary alone (or the Gaussian term alone) agrees on < 98.5%."""
    for seed in range(2):
        logits, image, _ = _scene(channels=channels, seed=seed, strength=0.5)
        exact = DenseCRF(**EXACT)(logits, image)
        lattice = DenseCRF(**LATTICE)(logits, image)
        assert _agreement(lattice, exact) >= 99.0
        assert (lattice - exact).abs().mean() < 0.005
        assert _agreement(logits, exact) < 98.5
        assert _agreement(DenseCRF(bilateral_weight=0.0, **LATTICE)(logits, image), exact) < 98.5


def test_images_above_max_exact_pixels_get_the_lattice_by_default():
    logits, image, _ = _scene(size=65)  # 4225 > MAX_EXACT_PIXELS's 4096
    default = DenseCRF(iterations=3)(logits, image)
    torch.testing.assert_close(default, DenseCRF(iterations=3, **LATTICE)(logits, image))
    window = DenseCRF(iterations=3, **WINDOW)(logits, image)
    assert (default - window).abs().max() > 1e-3


def test_lattice_on_16_bit_images(monkeypatch):
    """16-bit values with theta_b in their units work like the 8-bit image they scale; a
    16-bit RGB image over a small theta_b (lattice keys too wide to pack) agrees with exact."""
    rows = []
    find_rows = permutohedral._find_rows
    monkeypatch.setattr(permutohedral, "_find_rows", lambda *a: rows.append(1) or find_rows(*a))
    logits, image, _ = _scene(channels=1, strength=0.5)
    eight = DenseCRF(**LATTICE)(logits, image)
    sixteen = DenseCRF(bilateral_intensity_std=3.0 * 257, **LATTICE)(logits, image * 257)
    assert _agreement(sixteen, eight) >= 99.5
    logits, image, _ = _scene(channels=3, strength=0.5)
    wide = image * 257  # 10000-60000
    assert not rows
    q = DenseCRF(**LATTICE)(logits, wide)
    assert rows  # the keys did not pack
    assert torch.isfinite(q).all()
    torch.testing.assert_close(q.sum(0), torch.ones(q.shape[1:]))
    assert _agreement(q, DenseCRF(**EXACT)(logits, wide)) >= 99.0


# ----------------------------------------------------------------- the pydensecrf2 backend


def test_pydensecrf2_backend_without_the_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "pydensecrf", None)  # import pydensecrf fails
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    with pytest.raises(ImportError, match=r"pip install seg_plugins\[crf\]"):
        DenseCRF(backend="pydensecrf2")
    cfg = seg_plugins.add_seg_plugins_config(get_cfg())
    cfg.MODEL.CRF.ENABLED = True
    cfg.MODEL.CRF.BACKEND = "pydensecrf2"
    with pytest.raises(ImportError, match=r"MODEL\.CRF\.BACKEND.*pip install pydensecrf2"):
        build_crf(cfg)


def test_pydensecrf2_backend_is_its_own_bilateral_call():
    """The float features passed to addPairwiseEnergy are what addPairwiseBilateral builds
    from an 8-bit RGB image: the same Q."""
    densecrf = pytest.importorskip("pydensecrf.densecrf")  # the optional dependency only
    logits, image, _ = _scene(size=40)
    image = image.round().clamp(0, 255)
    q = DenseCRF(backend="pydensecrf2")(logits, image)
    model = densecrf.DenseCRF2D(40, 40, 3)
    model.setUnaryEnergy(-F.log_softmax(logits.double(), 0).float().reshape(3, -1).numpy())
    model.addPairwiseGaussian(sxy=1.0, compat=3.0)
    rgb = image.permute(1, 2, 0).to(torch.uint8).contiguous().numpy()
    model.addPairwiseBilateral(sxy=67.0, srgb=3.0, rgbim=rgb, compat=4.0)
    expected = torch.tensor(numpy.asarray(model.inference(10))).reshape(3, 40, 40)
    torch.testing.assert_close(q, expected)


@pytest.mark.parametrize("channels", [1, 3])
def test_pydensecrf2_backend_agrees_with_the_torch_lattice(channels):
    """Normalised kernels against kernel sums: a different CRF for the same weights, yet on
    this image the labels agree on >= 97% of the pixels; any channel count works."""
    pytest.importorskip("pydensecrf.densecrf")  # the optional dependency only
    logits, image, truth = _scene(channels=channels, strength=0.5)
    q = DenseCRF(backend="pydensecrf2")(logits.double(), image)
    assert q.shape == logits.shape and q.dtype == torch.float64
    torch.testing.assert_close(q.sum(0), torch.ones(q.shape[1:], dtype=torch.float64))
    assert _agreement(q, DenseCRF(**LATTICE)(logits, image)) >= 97.0
    assert _agreement(q, logits) < 99.0  # it did change labels


# ----------------------------------------------------------------- in the meta-architectures


def _shapes_cfg(num_classes=4, **crf):
    """configs/shapes/deeplabv3_R18_shapes.yaml at tiny widths, with the CRF on."""
    cfg = seg_plugins.add_seg_plugins_config(get_cfg())
    cfg.merge_from_file(os.path.join(REPO, "configs/shapes/deeplabv3_R18_shapes.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.RESNETS.STEM_OUT_CHANNELS = 8
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 8
    cfg.MODEL.ASPP.CHANNELS = 8
    cfg.MODEL.AUX_HEAD.CHANNELS = 8
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = num_classes
    cfg.MODEL.CRF.ENABLED = True
    for key, value in crf.items():
        cfg.MODEL.CRF[key] = value
    return cfg


def _model(cfg, seed=0):
    torch.manual_seed(seed)
    return build_model(cfg).eval()


def test_model_applies_the_crf_before_the_resize():
    cfg = _shapes_cfg(ITERATIONS=3)
    model = _model(cfg)
    assert isinstance(model.crf, DenseCRF)
    inputs = make_inputs([(45, 45)], 4, with_targets=False)
    with torch.no_grad():
        out = model([dict(inputs[0], height=60, width=50)])[0]["sem_seg"]
        model.crf = None
        raw = model(inputs)[0]["sem_seg"]
    assert out.shape == (4, 60, 50)
    q = DenseCRF(cfg)(raw, inputs[0]["image"])
    expected = F.interpolate(q.log()[None], size=(60, 50), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, expected[0], atol=1e-4, rtol=1e-4)


def test_crf_adds_no_checkpoint_keys_and_is_not_used_in_training():
    cfg = _shapes_cfg()
    model = _model(cfg)
    cfg_off = cfg.clone()
    cfg_off.MODEL.CRF.ENABLED = False
    assert _model(cfg_off).crf is None
    assert set(model.state_dict()) == set(_model(cfg_off).state_dict())

    class Forbidden(nn.Module):
        def forward(self, *args):
            raise AssertionError("the CRF ran in training")

    model.crf = Forbidden()
    train_step_checks(model, make_inputs([(45, 45), (45, 45)], 4), ("loss_sem_seg", "loss_aux"))


@pytest.mark.parametrize("arch", ["FCN", "DeepLabV3Plus", "UNet"])
def test_every_meta_architecture_builds_the_crf(arch):
    cfg = _shapes_cfg()
    cfg.MODEL.META_ARCHITECTURE = arch
    cfg.MODEL.UNET.BASE_CHANNELS = 4
    cfg.MODEL.UNET.DEPTH = 2
    cfg.MODEL.DILATED_RESNET.OUTPUT_STRIDE = 16
    cfg.MODEL.DILATED_RESNET.OUT_FEATURES = ["res2", "res4", "res5"]
    cfg.MODEL.DEEPLABV3PLUS.LOW_LEVEL_CHANNELS = 8
    cfg.MODEL.DEEPLABV3PLUS.DECODER_CHANNELS = 8
    model = _model(cfg)
    assert isinstance(model.crf, DenseCRF)
    with torch.no_grad():
        out = model([dict(make_inputs([(45, 45)], 4, with_targets=False)[0], height=30)])
    assert out[0]["sem_seg"].shape == (4, 30, 45)


@pytest.mark.parametrize("threshold", [0.5, 0.7])
def test_binary_mode_outputs_the_foreground_marginal_logit(threshold, tmp_path):
    cfg = _shapes_cfg(num_classes=1, ITERATIONS=3)
    model = _model(cfg)
    inputs = make_inputs([(45, 45)], 1, with_targets=False)
    with torch.no_grad():
        out = model(inputs)[0]["sem_seg"]
        model.crf = None
        raw = model(inputs)[0]["sem_seg"]
    assert out.shape == raw.shape == (1, 45, 45)
    q = DenseCRF(cfg)(binary_logits_to_two_class(raw), inputs[0]["image"])
    torch.testing.assert_close(torch.sigmoid(out[0]), q[1], atol=1e-5, rtol=1e-4)
    # The evaluator thresholds the CRF's foreground marginal: its decisions are the truth here
    # (pixels within float rounding of the threshold are ignored), so every pixel is right.
    truth = (q[1] > threshold).to(torch.uint8)
    truth[(q[1] - threshold).abs() < 1e-5] = 255
    label = str(tmp_path / "label.png")
    Image.fromarray(truth.numpy()).save(label)
    evaluator = SemSegMetricsEvaluator(
        "shapes_val", num_classes=1, distributed=False, binary_threshold=threshold
    )
    evaluator.process([{"file_name": "x", "sem_seg_file_name": label}], [{"sem_seg": out}])
    assert evaluator.evaluate()["sem_seg"]["pACC"] == 100.0
