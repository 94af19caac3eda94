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


# --------------------------------------------------------------------------- INPUT.FORMAT RAW
def test_raw_png_channels_in_file_order(tmp_path):
    from seg_plugins.data.io import num_channels

    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (5, 6, 4)).astype(np.uint8)
    path = str(tmp_path / "rgba.png")
    Image.fromarray(rgba, mode="RGBA").save(path)
    raw = read_image(path, format="RAW")
    assert raw.dtype == np.uint8 and raw.flags.writeable
    np.testing.assert_array_equal(raw, rgba)  # R, G, B, A; not OpenCV's B, G, R, A
    assert num_channels(path) == 4
    rgb = str(tmp_path / "rgb.png")
    Image.fromarray(rgba[..., :3]).save(rgb)
    np.testing.assert_array_equal(read_image(rgb, "RAW"), read_image(rgb, "RGB"))
    grey_alpha = str(tmp_path / "la.png")
    Image.fromarray(rgba[..., [0, 3]], mode="LA").save(grey_alpha)
    np.testing.assert_array_equal(read_image(grey_alpha, "RAW"), rgba[..., [0, 3]])
    assert num_channels(grey_alpha) == 2
    grey = str(tmp_path / "grey.png")
    Image.fromarray(rgba[..., 0]).save(grey)
    assert read_image(grey, "RAW").shape == (5, 6, 1) and num_channels(grey) == 1


def test_raw_high_depth_png_and_float_tiff(tmp_path):
    import cv2

    from seg_plugins.data.io import bits_per_sample, image_size, num_channels

    bgr16 = np.zeros((4, 5, 3), np.uint16)
    bgr16[..., 0], bgr16[..., 1], bgr16[..., 2] = 1000, 2000, 60000
    png = str(tmp_path / "rgb16.png")
    assert cv2.imwrite(png, bgr16)
    raw = read_image(png, "RAW")
    assert raw.dtype == np.float32 and raw[0, 0].tolist() == [60000, 2000, 1000]
    bgr_float = np.random.default_rng(0).normal(size=(4, 5, 3)).astype(np.float32)
    tif = str(tmp_path / "rgb_float.tif")
    assert cv2.imwrite(tif, bgr_float)  # PIL has no mode for a 3-channel float TIFF
    assert bits_per_sample(tif) == 32 and image_size(tif) == (4, 5) and num_channels(tif) == 3
    np.testing.assert_array_equal(read_image(tif, "RAW"), bgr_float[..., ::-1])
    np.testing.assert_array_equal(read_image(tif, "BGR"), bgr_float)
    bgr_float[1, 2, 0] = np.nan
    assert cv2.imwrite(tif, bgr_float)
    for fmt in ("RAW", "RGB"):
        with pytest.raises(ValueError, match=r"rgb_float\.tif.*1 NaN"):
            read_image(tif, fmt)


def test_exif_orientation_agrees_everywhere(tmp_path):
    from seg_plugins.data.io import image_size

    rgb = np.random.default_rng(0).integers(0, 256, (6, 9, 3)).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    png = str(tmp_path / "turned.png")
    Image.fromarray(rgb).save(png, exif=exif)
    assert image_size(png) == (9, 6)
    np.testing.assert_array_equal(read_image(png, "RAW"), read_image(png, "RGB"))
    np.testing.assert_array_equal(read_image(png, "RAW"), np.rot90(rgb, -1))
    grey16 = (np.arange(54).reshape(6, 9) * 1000).astype(np.uint16)
    tif = str(tmp_path / "turned16.tif")
    for orientation, size in ((3, (6, 9)), (6, (9, 6))):  # OpenCV applies TIFF orientation
        Image.fromarray(grey16).save(tif, tiffinfo={0x0112: orientation})
        assert image_size(tif) == size
        for fmt in ("L", "RAW"):
            turned = np.rot90(grey16, 2 if orientation == 3 else -1)
            np.testing.assert_array_equal(read_image(tif, fmt)[..., 0], turned)


def test_orientation_table_matches_pil():
    from seg_plugins.data.io import _ORIENT

    methods = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_270,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90,
    }
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for orientation, method in methods.items():
        expected = np.asarray(Image.fromarray(array).transpose(method))
        np.testing.assert_array_equal(_ORIENT[orientation](array), expected)


# --------------------------------------------------------------------------- .npy images
def test_npy_any_channels_and_dtypes(tmp_path):
    from seg_plugins.data.io import image_size, num_channels

    five = np.random.default_rng(0).normal(size=(6, 7, 5))  # float64
    path = str(tmp_path / "five.npy")
    np.save(path, five)
    image = read_image(path, "RAW")
    assert image.dtype == np.float32 and image.shape == (6, 7, 5) and image.flags.writeable
    np.testing.assert_allclose(image, five, rtol=1e-6)
    assert image_size(path) == (6, 7) and num_channels(path) == 5
    assert read_image(path).shape == (6, 7, 5)  # format None reads arrays as stored too
    u8 = str(tmp_path / "u8.npy")
    np.save(u8, np.full((3, 4, 2), 7, np.uint8))
    assert read_image(u8, "RAW").dtype == np.uint8
    grey = str(tmp_path / "grey.npy")
    np.save(grey, np.arange(12, dtype=np.uint16).reshape(3, 4))
    for fmt in ("RAW", "L"):
        out = read_image(grey, fmt)
        assert out.shape == (3, 4, 1) and out.dtype == np.float32 and out[2, 3, 0] == 11


@pytest.mark.parametrize(
    "array, fmt, match",
    [
        (np.zeros((4, 5, 3), np.float32), "RGB", r"3 channel.*INPUT\.FORMAT is 'RGB'.*'RAW'"),
        (np.zeros((4, 5, 3), np.uint8), "L", r"3 channel.*INPUT\.FORMAT is 'L'"),
        (np.zeros((3, 32, 32), np.float32), "RAW", r"channels-first.*moveaxis"),
        (np.zeros((2, 4, 5, 3), np.float32), "RAW", r"shape \(2, 4, 5, 3\).*\(H, W, C\)"),
        (np.zeros((4, 0), np.float32), "RAW", r"shape \(4, 0\)"),
        (np.zeros((4, 5), np.complex64), "RAW", r"dtype complex64, not numbers"),
        (np.array([[1.0, np.inf]]), "RAW", r"1 NaN / infinite"),
        (np.array([[np.nan, np.nan]], np.float32), "RAW", r"2 NaN / infinite"),
    ],
)
def test_npy_errors_name_the_file(tmp_path, array, fmt, match):
    path = tmp_path / "bad.npy"
    np.save(path, array)
    with pytest.raises(ValueError, match=match) as info:
        read_image(str(path), fmt)
    assert "bad.npy" in str(info.value)


def test_npy_object_truncated_missing(tmp_path):
    from seg_plugins.data.io import image_size

    obj = tmp_path / "obj.npy"
    np.save(obj, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    for read in (lambda p: read_image(p, "RAW"), image_size):
        with pytest.raises(ValueError, match=r"obj\.npy.*dtype object, not numbers"):
            read(str(obj))
    data = tmp_path / "data.npy"
    np.save(data, np.zeros((64, 64, 4), np.float32))
    blob = data.read_bytes()
    data.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(OSError, match=r"data\.npy"):
        read_image(str(data), "RAW")
    (tmp_path / "text.npy").write_text("not an array")
    with pytest.raises(OSError, match=r"text\.npy.*np\.save"):
        image_size(str(tmp_path / "text.npy"))
    with pytest.raises(FileNotFoundError, match=r"nope\.npy"):
        read_image(str(tmp_path / "nope.npy"), "RAW")


# --------------------------------------------------------------------------- channel checks
def test_check_channels_and_format_channels():
    from seg_plugins.data.io import check_channels, check_format_channels, format_channels

    check_channels(np.zeros((4, 5, 4)), 4, "a.npy")
    with pytest.raises(ValueError, match=r"'a\.png' has 3 channel.*takes 4.*MODEL\.PIXEL_MEAN"):
        check_channels(np.zeros((4, 5, 3)), 4, "a.png")
    with pytest.raises(ValueError, match="channels-first"):
        check_channels(np.zeros((13, 64, 64)), 13, "s2.npy")
    expected = {"L": 1, "RGB": 3, "BGR": 3, "RGBA": 4, "RAW": None, None: None}
    assert {f: format_channels(f) for f in expected} == expected
    with pytest.raises(ValueError, match="INPUT.FORMAT 'RAWW'"):
        format_channels("RAWW")
    check_format_channels("RAW", 7)
    check_format_channels("L", 1)
    with pytest.raises(ValueError, match=r"INPUT\.FORMAT 'RGB' reads .* 3 .*PIXEL_MEAN has 4"):
        check_format_channels("RGB", 4)
