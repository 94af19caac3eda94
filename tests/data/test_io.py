"""seg_plugins.data.io: label maps read raw, errors that name the file."""

import numpy as np
import pytest
from PIL import Image

import seg_plugins  # noqa: F401  must come before detectron2 submodules (repairs the install)

# isort: split
from seg_plugins.data import read_label
from seg_plugins.data.io import read_image


def _palette_png(path, indices: np.ndarray) -> None:
    """A "P" PNG whose palette maps index 3 to a saturated red (grey level 65 in "L")."""
    img = Image.fromarray(indices.astype(np.uint8), mode="P")
    palette = [0, 0, 0, 0, 255, 0, 0, 0, 255, 200, 10, 10] + [0] * (256 * 3 - 12)
    img.putpalette(palette)
    img.save(path)


def test_palette_png_gives_indices_not_colours(tmp_path):
    indices = np.zeros((9, 7), np.uint8)
    indices[2:5, 1:4] = 3
    indices[6:, :] = 1
    path = tmp_path / "label_p.png"
    _palette_png(path, indices)
    with Image.open(path) as img:
        assert img.mode == "P"
        # What the bug would give: the palette colour's grey level, not the class.
        assert np.asarray(img.convert("L"))[3, 2] not in (3, 255)
    label = read_label(str(path))
    assert label.dtype == np.uint8
    np.testing.assert_array_equal(label, indices)


def test_grey_png_values(tmp_path):
    values = (np.arange(48).reshape(6, 8) * 5).astype(np.uint8)
    values[0, 0] = 255
    path = tmp_path / "label_l.png"
    Image.fromarray(values, mode="L").save(path)
    label = read_label(str(path))
    assert label.dtype == np.uint8
    np.testing.assert_array_equal(label, values)


def test_16bit_png_keeps_values_above_255(tmp_path):
    values = (np.arange(60).reshape(6, 10) * 1000).astype(np.uint16)  # up to 59000
    path = tmp_path / "label_16.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as img:
        assert img.mode.startswith("I")
    label = read_label(str(path))
    assert label.dtype == np.int32
    np.testing.assert_array_equal(label, values.astype(np.int32))


def test_16bit_png_with_small_values_is_uint8(tmp_path):
    values = (np.arange(20).reshape(4, 5) * 10).astype(np.uint16)
    path = tmp_path / "label_16_small.png"
    Image.fromarray(values).save(path)
    label = read_label(str(path))
    assert label.dtype == np.uint8
    np.testing.assert_array_equal(label, values)


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_colour_label_rejected_with_fix(tmp_path, mode):
    path = tmp_path / f"label_{mode}.png"
    Image.new(mode, (5, 4)).save(path)
    with pytest.raises(ValueError, match="single-channel") as info:
        read_label(str(path))
    assert str(path) in str(info.value)
    assert mode in str(info.value)


def test_truncated_label_names_file(tmp_path):
    path = tmp_path / "broken.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 4, (64, 64)).astype(np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(OSError, match="broken.png"):
        read_label(str(path))


def test_missing_label_names_file(tmp_path):
    path = tmp_path / "missing.png"
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_label(str(path))


def test_read_image_errors_name_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        read_image(str(tmp_path / "nope.png"), "RGB")
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not an image at all")
    with pytest.raises(OSError, match="garbage.png"):
        read_image(str(garbage), "RGB")


def test_read_image_formats(tmp_path):
    rgb = np.zeros((3, 4, 3), np.uint8)
    rgb[..., 0] = 200  # red
    path = tmp_path / "red.png"
    Image.fromarray(rgb).save(path)
    assert read_image(str(path), "RGB")[0, 0].tolist() == [200, 0, 0]
    assert read_image(str(path), "BGR")[0, 0].tolist() == [0, 0, 200]


# --------------------------------------------------------------------------- > 8-bit images
def test_16bit_grey_png_and_tiff_keep_their_values(tmp_path):
    import cv2

    from seg_plugins.data.io import bits_per_sample

    values = (np.arange(48).reshape(6, 8) * 1300).astype(np.uint16)  # up to 61100
    png, tif = str(tmp_path / "ct.png"), str(tmp_path / "ct.tif")
    Image.fromarray(values).save(png)
    assert cv2.imwrite(tif, values)
    for path in (png, tif):
        assert bits_per_sample(path) == 16
        image = read_image(path, format="L")
        assert image.dtype == np.float32 and image.shape == (6, 8, 1)
        np.testing.assert_array_equal(image[:, :, 0], values)
        assert image.flags.writeable


def test_16bit_colour_png_channel_order_and_grey_refusal(tmp_path):
    import cv2

    bgr = np.zeros((4, 5, 3), np.uint16)
    bgr[..., 0], bgr[..., 1], bgr[..., 2] = 1000, 2000, 60000  # B, G, R
    path = str(tmp_path / "rgb16.png")
    assert cv2.imwrite(path, bgr)
    assert read_image(path, format="RGB")[0, 0].tolist() == [60000, 2000, 1000]
    assert read_image(path, format="BGR")[0, 0].tolist() == [1000, 2000, 60000]
    with pytest.raises(ValueError, match=r"rgb16\.png.*3 channels.*INPUT\.FORMAT is 'L'"):
        read_image(path, format="L")


def test_float_tiff_and_8bit_images_take_their_own_paths(tmp_path):
    import cv2

    from seg_plugins.data.io import bits_per_sample

    mri = np.linspace(-1.5, 2.5, 20, dtype=np.float32).reshape(4, 5)
    path = str(tmp_path / "mri.tif")
    assert cv2.imwrite(path, mri)
    assert bits_per_sample(path) == 32
    np.testing.assert_array_equal(read_image(path, format="L")[:, :, 0], mri)
    rgb8 = str(tmp_path / "rgb8.png")
    Image.fromarray(np.full((3, 3, 3), 7, np.uint8)).save(rgb8)
    assert bits_per_sample(rgb8) == 8 and read_image(rgb8, format="RGB").dtype == np.uint8


def test_normalize_intensity_modes():
    from seg_plugins.data.mapper import normalize_intensity

    x = np.arange(101, dtype=np.float32).reshape(101, 1, 1) * 40  # 0..4000, one channel
    z = normalize_intensity(x, "zscore")
    assert abs(float(z.mean())) < 1e-5 and abs(float(z.std()) - 1) < 1e-5
    assert np.all(normalize_intensity(np.full((2, 2, 1), 9.0), "zscore") == 0)  # constant
    w = normalize_intensity(x, "window", window=(1000, 3000))
    assert w.min() == 0 and w.max() == 255 and w[50, 0, 0] == pytest.approx(127.5)
    p = normalize_intensity(x, "percentile", percentiles=(10, 90))
    assert p.min() == 0 and p.max() == 255 and p[10, 0, 0] == 0 and p[90, 0, 0] == 255
    u8 = np.zeros((2, 2, 1), np.uint8)
    assert normalize_intensity(u8, "none") is u8


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("MODE", "clahe", "INPUT.INTENSITY_NORM.MODE"),
        ("PERCENTILES", [99.0, 1.0], "INPUT.INTENSITY_NORM.PERCENTILES"),
        ("WINDOW", [100.0, 100.0], "INPUT.INTENSITY_NORM.WINDOW"),
    ],
)
def test_bad_intensity_config_names_the_key(key, value, match):
    from detectron2.config import get_cfg

    from seg_plugins import add_seg_plugins_config
    from seg_plugins.data import SemSegDatasetMapper

    cfg = add_seg_plugins_config(get_cfg())
    modes = {"PERCENTILES": "percentile", "WINDOW": "window"}
    cfg.INPUT.INTENSITY_NORM.MODE = modes.get(key, value)
    cfg.INPUT.INTENSITY_NORM[key] = value
    with pytest.raises(ValueError, match=match):
        SemSegDatasetMapper(cfg, is_train=False)
