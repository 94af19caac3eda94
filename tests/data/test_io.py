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
