"""seg_plugins.data.augmentations: photometric distortion, padding, multi-channel resize."""

import numpy as np
import pytest

import seg_plugins  # noqa: F401  must come before detectron2 submodules (repairs the install)

# isort: split
from detectron2.config import get_cfg
from detectron2.data import transforms as T

from seg_plugins.config import add_seg_plugins_config
from seg_plugins.data.augmentations import (
    MultiChannelResizeTransform,
    PadToSize,
    PhotometricDistortion,
    PhotometricTransform,
    build_pad_to_crop,
    build_photometric_distortion,
)

RED, GREY = [200, 0, 0], [90, 90, 90]


def _image(*pixels, dtype=np.uint8):
    """A (1, N, 3) image of the given pixels."""
    return np.array([pixels], dtype=dtype)


def _script_random(monkeypatch, coins, fraction=0.25):
    """np.random.rand returns ``coins`` in turn; uniform(lo, hi) = lo + fraction (hi - lo)."""
    coins = iter(coins)
    monkeypatch.setattr(np.random, "rand", lambda: next(coins))
    monkeypatch.setattr(np.random, "uniform", lambda lo, hi: lo + fraction * (hi - lo))


# --------------------------------------------------------------------------- photometric
def test_brightness_and_contrast_exact_uint8_clipped_each_step():
    img = _image([200, 100, 10], [0, 255, 30])
    out = PhotometricTransform(brightness=100.0, contrast=0.5).apply_image(img)
    # 200 + 100 clips to 255 before the contrast step (mmsegmentation's order), then rounds.
    assert out.dtype == np.uint8
    assert out.tolist() == [[[128, 100, 55], [50, 128, 65]]]
    after = PhotometricTransform(contrast=2.0, contrast_first=False).apply_image(img)
    assert after.tolist() == [[[255, 200, 20], [0, 255, 60]]]
    darker = PhotometricTransform(brightness=-20.0).apply_image(img)
    assert darker.tolist() == [[[180, 80, 0], [0, 235, 10]]]


def test_float_image_keeps_dtype_and_range():
    img = _image([-100.0, 300.0, 4000.0], dtype=np.float32)
    out = PhotometricTransform(brightness=50.0, contrast=2.0).apply_image(img)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[[-100.0, 700.0, 8100.0]]])
    sat0 = PhotometricTransform(saturation=0.0).apply_image(
        _image([4e4, 2e4, 1e4], dtype=np.float32)
    )
    np.testing.assert_allclose(sat0, [[[4e4, 4e4, 4e4]]], rtol=1e-5)
    with pytest.raises(TypeError, match="uint16"):
        PhotometricTransform(brightness=1.0).apply_image(np.zeros((2, 2, 3), np.uint16))


@pytest.mark.parametrize("fmt, expected", [("RGB", [0, 200, 0]), ("BGR", [0, 0, 200])])
def test_hue_follows_the_channel_order(fmt, expected):
    # +60 in OpenCV units = +120 degrees: red -> green in RGB; in BGR the same array is blue
    # (240 degrees) -> red (360), i.e. [0, 0, 200]. Grey has no hue and stays.
    out = PhotometricTransform(hue=60.0, image_format=fmt).apply_image(_image(RED, GREY))
    assert out.tolist() == [[expected, GREY]]
    wrapped = PhotometricTransform(hue=-90.0, image_format=fmt).apply_image(_image(RED))
    assert (
        wrapped.tolist()
        == PhotometricTransform(hue=90.0, image_format=fmt).apply_image(_image(RED)).tolist()
    )  # half a turn either way


def test_saturation():
    img = _image([200, 100, 50], GREY)
    assert PhotometricTransform(saturation=0.0).apply_image(img).tolist() == [[[200] * 3, GREY]]
    unchanged = PhotometricTransform(saturation=1.0).apply_image(img)
    np.testing.assert_array_equal(unchanged, img)
    full = PhotometricTransform(saturation=10.0).apply_image(img)  # S clipped to 1
    assert full[0, 0].tolist() == [200, 67, 0] and full[0, 1].tolist() == GREY


def test_augmentation_draws_mmseg_steps(monkeypatch):
    aug = PhotometricDistortion(32, (0.5, 1.5), (0.5, 1.5), 18, image_format="RGB")
    # coins: brightness on, contrast after HSV, contrast on, saturation on, hue on
    _script_random(monkeypatch, [0.1, 0.9, 0.2, 0.3, 0.4])
    tfm = aug.get_transform(np.zeros((4, 4, 3), np.uint8))
    assert isinstance(tfm, PhotometricTransform)
    assert (tfm.brightness, tfm.contrast, tfm.contrast_first) == (-16.0, 0.75, False)
    assert (tfm.saturation, tfm.hue, tfm.image_format) == (0.75, -9.0, "RGB")
    _script_random(monkeypatch, [0.7, 0.1, 0.6, 0.6, 0.6])  # every step off
    assert isinstance(aug.get_transform(np.zeros((4, 4, 3), np.uint8)), T.NoOpTransform)


@pytest.mark.parametrize(
    "fmt, shape", [("RGB", (4, 4, 1)), ("L", (4, 4, 1)), ("RAW", (4, 4, 3)), ("RAW", (4, 4, 5))]
)
def test_only_brightness_contrast_without_rgb(monkeypatch, fmt, shape):
    _script_random(monkeypatch, [0.1, 0.1, 0.1, 0.1, 0.1])
    tfm = PhotometricDistortion(image_format=fmt).get_transform(np.zeros(shape, np.uint8))
    assert tfm.saturation is None and tfm.hue is None
    assert tfm.brightness == -16.0 and tfm.contrast == 0.75 and tfm.contrast_first
    out = tfm.apply_image(np.full(shape, 100, np.uint8))
    assert out.shape == shape and np.all(out == 63)  # (100 - 16) * 0.75


def test_label_boxes_polygons_untouched(monkeypatch):
    _script_random(monkeypatch, [0.1, 0.1, 0.1, 0.1, 0.1])
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (6, 5, 3)).astype(np.uint8)
    label = rng.integers(0, 4, (6, 5)).astype(np.uint8)
    aug_input = T.AugInput(image.copy(), sem_seg=label.copy(), boxes=np.array([[1.0, 2, 3, 4]]))
    tfm = PhotometricDistortion()(aug_input)
    assert not np.array_equal(aug_input.image, image)
    np.testing.assert_array_equal(aug_input.sem_seg, label)
    np.testing.assert_array_equal(aug_input.boxes, [[1.0, 2, 3, 4]])
    polygon = np.array([[0.5, 1.0], [3.0, 4.0], [2.0, 5.0]])
    np.testing.assert_array_equal(tfm.apply_polygons([polygon.copy()])[0], polygon)
    assert isinstance(tfm.inverse(), T.NoOpTransform)


def _cfg(**photometric):
    cfg = add_seg_plugins_config(get_cfg())
    cfg.INPUT.FORMAT = "RGB"
    cfg.INPUT.SEM_SEG.PHOTOMETRIC.ENABLED = True
    for key, value in photometric.items():
        cfg.INPUT.SEM_SEG.PHOTOMETRIC[key] = value
    return cfg


def test_build_photometric_distortion():
    assert build_photometric_distortion(add_seg_plugins_config(get_cfg())) is None  # default off
    aug = build_photometric_distortion(_cfg(BRIGHTNESS_DELTA=10, HUE_DELTA=5))
    assert (aug.brightness_delta, aug.hue_delta, aug.image_format) == (10.0, 5.0, "RGB")
    assert aug.contrast_range == (0.5, 1.5) and "PhotometricDistortion(" in repr(aug)


@pytest.mark.parametrize(
    "key, value",
    [
        ("BRIGHTNESS_DELTA", -1.0),
        ("CONTRAST_RANGE", [1.5, 0.5]),
        ("CONTRAST_RANGE", [-0.5, 1.0]),
        ("SATURATION_RANGE", [1.0]),
        ("HUE_DELTA", 200),
    ],
)
def test_bad_photometric_config_names_the_key(key, value):
    with pytest.raises(ValueError, match=f"INPUT.SEM_SEG.PHOTOMETRIC.{key}"):
        build_photometric_distortion(_cfg(**{key: value}))


def test_zscore_with_hsv_steps_is_refused():
    cfg = _cfg()
    cfg.INPUT.INTENSITY_NORM.MODE = "zscore"
    with pytest.raises(ValueError, match="HUE_DELTA.*zscore"):
        build_photometric_distortion(cfg)
    cfg.INPUT.SEM_SEG.PHOTOMETRIC.SATURATION_RANGE = [1.0, 1.0]
    cfg.INPUT.SEM_SEG.PHOTOMETRIC.HUE_DELTA = 0
    assert build_photometric_distortion(cfg) is not None


# --------------------------------------------------------------------------- padding
def test_pad_to_size_uint8_image_and_label():
    image = np.full((5, 7, 3), 9, np.uint8)
    label = np.full((5, 7), 2, np.uint8)
    aug_input = T.AugInput(image, sem_seg=label)
    PadToSize((8, 10), seg_pad_value=255)(aug_input)
    out_image, out_label = aug_input.image, aug_input.sem_seg
    assert out_image.shape == (8, 10, 3) and out_image.dtype == np.uint8
    assert out_label.shape == (8, 10) and out_label.dtype == np.uint8
    assert np.all(out_image[:5, :7] == 9) and out_image.sum() == 9 * 5 * 7 * 3
    assert np.all(out_label[:5, :7] == 2)
    assert np.all(out_label[5:] == 255) and np.all(out_label[:, 7:] == 255)


def test_pad_to_size_float_one_channel_and_wide_ignore():
    image = np.full((6, 4, 1), -3.5, np.float32)
    label = np.full((6, 4), 300.0, np.float32)  # the mapper's float label map (> 255 classes)
    aug_input = T.AugInput(image, sem_seg=label)
    tfm = PadToSize((6, 9), seg_pad_value=65535)(aug_input)
    assert aug_input.image.shape == (6, 9, 1) and aug_input.image.dtype == np.float32
    assert np.all(aug_input.image[:, 4:] == 0) and np.all(aug_input.image[:, :4] == -3.5)
    assert aug_input.sem_seg.dtype == np.float32 and np.all(aug_input.sem_seg[:, 4:] == 65535)
    # a uint8 label map is widened rather than wrapped (np.pad would write 65535 % 256)
    widened = tfm.apply_segmentation(np.zeros((6, 4), np.uint8))
    assert widened.dtype == np.uint16 and np.all(widened[:, 4:] == 65535)


def test_pad_to_size_only_short_sides_and_noop():
    aug_input = T.AugInput(np.zeros((12, 5, 3), np.uint8), sem_seg=np.zeros((12, 5), np.uint8))
    PadToSize((8, 10))(aug_input)
    assert aug_input.image.shape == (12, 10, 3) and aug_input.sem_seg.shape == (12, 10)
    assert isinstance(PadToSize((8, 10)).get_transform(np.zeros((8, 10))), T.NoOpTransform)
    with pytest.raises(ValueError, match="positive integers"):
        PadToSize((0, 10))


@pytest.mark.parametrize(
    "crop_type, enabled, pad, expected",
    [
        ("absolute", True, True, True),
        ("absolute", True, False, False),
        ("absolute", False, True, False),
        ("relative_range", True, True, False),
        ("absolute_range", True, True, False),
    ],
)
def test_build_pad_to_crop(crop_type, enabled, pad, expected):
    cfg = add_seg_plugins_config(get_cfg())
    cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.ENABLED = crop_type, enabled
    cfg.INPUT.CROP.SIZE = [32, 48] if crop_type.startswith("absolute") else [0.5, 0.5]
    cfg.INPUT.SEM_SEG.PAD_TO_CROP = pad
    aug = build_pad_to_crop(cfg, ignore_label=7)
    assert (aug is not None) == expected
    if expected:
        assert (aug.size, aug.pad_value, aug.seg_pad_value) == ((32, 48), 0.0, 7)


# --------------------------------------------------------------------------- resize
def test_multi_channel_resize_keeps_each_channel():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (6, 8, 4)).astype(np.uint8)
    image[..., 3] = 0  # as alpha, PIL's premultiplied RGBA resize would zero the colours
    tfm = MultiChannelResizeTransform(6, 8, 9, 12)
    out = tfm.apply_image(image)
    plain = T.ResizeTransform(6, 8, 9, 12)
    assert out.shape == (9, 12, 4) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., :3], plain.apply_image(image[..., :3]))
    assert np.all(out[..., 3] == 0) and out[..., :3].max() > 0
    five = tfm.apply_image(rng.integers(0, 256, (6, 8, 5)).astype(np.uint8))  # PIL: TypeError
    assert five.shape == (9, 12, 5)
    floats = rng.random((6, 8, 4)).astype(np.float32)
    np.testing.assert_array_equal(tfm.apply_image(floats), plain.apply_image(floats))
    label = rng.integers(0, 4, (6, 8)).astype(np.uint8)
    np.testing.assert_array_equal(tfm.apply_segmentation(label), plain.apply_segmentation(label))
    inverse = tfm.inverse()
    assert isinstance(inverse, MultiChannelResizeTransform) and (inverse.new_h, inverse.new_w) == (
        6,
        8,
    )
