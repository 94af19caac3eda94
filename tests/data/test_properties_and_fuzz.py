"""Bad input, systematically: property-based tests (hypothesis) of the semantic
mapper over every image size and channel count the config allows, and a fuzz corpus of
malformed COCO JSON files and label / image files.

The promise under test: a reader either returns something the next stage can use, or
raises one of the package's clear errors (``DataProblemError`` / ``CocoJsonError``, or
``OSError`` / ``ValueError`` naming the file). Anything else (a ``KeyError`` from deep inside,
a ``TypeError``, a crash) is a bug that hypothesis reports with the smallest input.

Bounded in CI: every test has a fixed number of examples and a derandomized seed (the same
inputs on every run; ``database=None``, so nothing is stored between runs). The counts are
in ``FUZZ_EXAMPLES`` / ``PROPERTY_EXAMPLES`` and quoted in docs/reliability.md.
"""

import copy
import io
import json
import math
import os
import uuid

import numpy as np
import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from PIL import Image

import seg_plugins  # noqa: F401  must come before detectron2 submodules (repairs the install)

# isort: split
from detectron2.config import get_cfg
from detectron2.data import DatasetMapper, MetadataCatalog

from seg_plugins import add_seg_plugins_config
from seg_plugins.data import SemSegDatasetMapper
from seg_plugins.data.coco import check_coco_json, load_coco_instances_checked
from seg_plugins.data.io import read_image, read_label
from seg_plugins.data.mapper import build_sem_seg_augmentations
from seg_plugins.data.validation import DataProblemError, check_sem_seg_record
from tests.data.coco_fixture import make_coco_dataset
from tests.hypothesis_policy import property_settings

# Corrupted files make PIL warn ("Truncated File Read", "Tag data larger than file", ...)
# before it raises or returns: expected here.
pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.property]

FUZZ_EXAMPLES = 400  # per fuzz test
PROPERTY_EXAMPLES = 100  # per property test
IGNORE = 255


def _settings(n: int):
    return property_settings(
        n, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
    )


# ----------------------------------------------------------------------------- mapper
def _mapper_cfg(crop: int, format: str, channels: int):
    cfg = get_cfg()
    add_seg_plugins_config(cfg)
    cfg.merge_from_list(
        [
            "INPUT.FORMAT", format,
            "INPUT.CROP.ENABLED", True,
            "INPUT.CROP.TYPE", "absolute",
            "INPUT.CROP.SIZE", [crop, crop],
            "INPUT.SEM_SEG.RESIZE_RATIO_RANGE", [0.5, 2.0],
            "INPUT.RANDOM_FLIP", "horizontal",
            "MODEL.PIXEL_MEAN", [0.0] * channels,
            "MODEL.PIXEL_STD", [1.0] * channels,
        ]
    )  # fmt: skip
    return cfg


_CHANNEL_FORMATS = {1: ("L", ".png"), 3: ("BGR", ".png"), 4: ("RAW", ".npy")}


@_settings(PROPERTY_EXAMPLES)
@given(
    h=st.integers(1, 90),
    w=st.integers(1, 90),
    channels=st.sampled_from(sorted(_CHANNEL_FORMATS)),
    crop=st.sampled_from([16, 32, 48]),
    seed=st.integers(0, 2**16),
)
def test_mapper_gives_crop_sized_aligned_outputs_for_any_image(tmp_path, h, w, channels, crop,
                                                               seed):  # fmt: skip
    """Any size from 1x1 up, 1 / 3 / 4 channels: the training mapper returns a
    (C, crop, crop) uint8 image and a (crop, crop) int64 label map whose values are the
    input's labels plus the ignore label (padding), never anything else."""
    rng = np.random.default_rng(seed)
    format, ext = _CHANNEL_FORMATS[channels]
    name = f"{h}x{w}_{channels}_{seed}"
    image = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
    image_file = str(tmp_path / f"{name}{ext}")
    if ext == ".npy":
        np.save(image_file, image)
    else:
        Image.fromarray(image[..., 0] if channels == 1 else image).save(image_file)
    label = rng.choice(np.array([0, 1, 2, IGNORE], np.uint8), size=(h, w))
    label_file = str(tmp_path / f"{name}_label.png")
    Image.fromarray(label).save(label_file)

    cfg = _mapper_cfg(crop, format, channels)
    mapper = SemSegDatasetMapper(
        is_train=True,
        augmentations=build_sem_seg_augmentations(cfg, is_train=True),
        image_format=format,
        num_classes=3,
        input_channels=channels,
    )
    out = mapper({"file_name": image_file, "sem_seg_file_name": label_file, "height": h,
                  "width": w})  # fmt: skip
    assert tuple(out["image"].shape) == (channels, crop, crop)
    assert tuple(out["sem_seg"].shape) == (crop, crop)
    assert str(out["sem_seg"].dtype) == "torch.int64"
    assert set(out["sem_seg"].unique().tolist()) <= {0, 1, 2, IGNORE}
    # pixels that are not padding keep a label the input had
    assert set(out["sem_seg"].unique().tolist()) - {IGNORE} <= set(np.unique(label).tolist())


# ----------------------------------------------------------------------------- file fuzzing
def _png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _tiff16_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array.astype(np.uint16) * 257).save(buf, format="TIFF")
    return buf.getvalue()


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


_RNG = np.random.default_rng(0)
_LABEL = _RNG.choice(np.array([0, 1, 2, IGNORE], np.uint8), size=(24, 20))
_IMAGE = _RNG.integers(0, 256, (24, 20, 3), dtype=np.uint8)
_SEEDS = {
    "label.png": _png_bytes(_LABEL),
    "label.tif": _tiff16_bytes(_LABEL),
    "image.png": _png_bytes(_IMAGE),
    "image.jpg": _jpeg_bytes(_IMAGE),
    "image.npy": _npy_bytes(_IMAGE),
}


@st.composite
def _mutated(draw, seed_bytes: bytes) -> bytes:
    """A corrupted copy: cut short, bytes overwritten, bytes inserted, or a run zeroed."""
    data = bytearray(seed_bytes)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["truncate", "overwrite", "insert", "zero_run"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "truncate":
            data = data[:at]
        elif kind == "overwrite" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:
            n = draw(st.integers(1, 64))
            data[at : at + n] = bytes(len(data[at : at + n]))
    return bytes(data)


def _assert_clear_or_usable(read, path: str):
    try:
        out = read(path)
    except (OSError, ValueError) as err:  # DataProblemError is a ValueError
        assert os.path.basename(path) in str(err), f"error does not name the file: {err!r}"
        return None
    assert isinstance(out, np.ndarray) and out.ndim in (2, 3) and out.size > 0
    return out


@pytest.mark.parametrize("seed_name", sorted(_SEEDS))
def test_corrupted_label_and_image_files_give_clear_errors(tmp_path, seed_name):
    """Each seed file mutated FUZZ_EXAMPLES times and read with the reader the dataset would
    use, then through the dataset check of DATASETS.CHECK "full"."""
    is_label = seed_name.startswith("label")
    reader = (
        read_label
        if is_label
        else (lambda p: read_image(p, format="RAW" if p.endswith(".npy") else "BGR"))
    )
    ext = os.path.splitext(seed_name)[1]
    outcomes = {"usable": 0, "clear error": 0}
    image_file = str(tmp_path / "image.png")  # the label's (valid) image
    with open(image_file, "wb") as f:
        f.write(_SEEDS["image.png"])

    @_settings(FUZZ_EXAMPLES)
    @given(data=_mutated(_SEEDS[seed_name]))
    def run(data):
        path = str(tmp_path / f"fuzz_{uuid.uuid4().hex[:8]}{ext}")
        with open(path, "wb") as f:
            f.write(data)
        out = _assert_clear_or_usable(reader, path)
        outcomes["usable" if out is not None else "clear error"] += 1
        if is_label:
            record = {"file_name": image_file, "sem_seg_file_name": path, "height": 24,
                      "width": 20}  # fmt: skip
            problems = check_sem_seg_record(record, level="full", num_classes=3)
            assert problems or out is not None
            for p in problems:
                assert os.path.basename(path) in str(p)
        os.unlink(path)

    run()
    assert outcomes["clear error"] > 0  # the corpus does reach the error paths


@pytest.mark.parametrize("tag_type", [5, 2])  # RATIONAL, ASCII
def test_tiff_with_a_corrupted_strip_offsets_type_is_a_clear_error(tmp_path, tag_type):
    """Found by make fuzz (FUZZ_SEED=3, FUZZ_FACTOR=20): Pillow's TIFF decoder raised a bare
    TypeError for a StripOffsets tag (0x0111) whose type byte was changed."""
    data = bytearray(_SEEDS["label.tif"])
    entry = data.index(b"\x11\x01\x04\x00")  # little-endian tag 0x0111, type LONG
    data[entry + 2] = tag_type
    path = str(tmp_path / "label_bad_offsets.tif")
    with open(path, "wb") as f:
        f.write(bytes(data))
    with pytest.raises(OSError, match="label_bad_offsets.tif"):
        read_label(path)
    record = {"file_name": path, "sem_seg_file_name": path, "height": 24, "width": 20}
    problems = check_sem_seg_record(record, level="full", num_classes=3)
    assert problems and all("label_bad_offsets.tif" in str(p) for p in problems)


# ----------------------------------------------------------------------------- COCO JSON
_JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.lists(st.integers(-5, 100), max_size=5),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def _paths(node, prefix=()):
    """Every (path to a value) in a JSON tree."""
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, prefix + (i,))
    return out


@st.composite
def _malformed_coco(draw, data: dict):
    """The fixture's JSON text with 1-3 structural mutations (a value replaced by junk of
    any type, a key deleted, a list element duplicated), then possibly cut short or with
    a character replaced."""
    data = copy.deepcopy(data)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(data)
        path = draw(st.sampled_from(paths))
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        kind = draw(st.sampled_from(["replace", "delete", "duplicate"]))
        if kind == "replace":
            parent[path[-1]] = draw(_JUNK)
        elif kind == "delete":
            del parent[path[-1]]
        elif isinstance(parent, list):
            parent.append(copy.deepcopy(parent[path[-1]]))
    text = json.dumps(data)
    tail = draw(st.sampled_from(["whole", "whole", "whole", "cut", "char"]))
    if tail == "cut":
        text = text[: draw(st.integers(0, len(text)))]
    elif tail == "char" and text:
        at = draw(st.integers(0, len(text) - 1))
        text = text[:at] + draw(st.sampled_from(list('{}[],:"0a -'))) + text[at + 1 :]
    return text


def test_malformed_coco_json_corpus(tmp_path):
    """FUZZ_EXAMPLES malformed COCO files: each either loads into records that detectron2's
    own DatasetMapper turns into training instances, or is refused with the package's
    error naming the JSON file; with skipping on, bad images are dropped, never crash."""
    fixture = make_coco_dataset(str(tmp_path / "coco"))
    cfg = get_cfg()
    cfg.merge_from_list(
        [
            "MODEL.MASK_ON",
            True,
            "INPUT.MASK_FORMAT",
            "bitmask",
            "INPUT.MIN_SIZE_TRAIN",
            (64,),
            "INPUT.MAX_SIZE_TRAIN",
            64,
        ]
    )
    mapper = DatasetMapper(cfg, is_train=True)
    outcomes = {"loaded": 0, "refused": 0}

    @_settings(FUZZ_EXAMPLES)
    @given(text=_malformed_coco(fixture["data"]), skip=st.booleans())
    def run(text, skip):
        json_file = str(tmp_path / f"ann_{uuid.uuid4().hex[:8]}.json")
        with open(json_file, "w") as f:
            f.write(text)
        name = f"fuzz_coco_{uuid.uuid4().hex[:8]}"
        check_coco_json(json_file, fixture["image_root"])  # reports, never raises
        try:
            records = load_coco_instances_checked(
                json_file, fixture["image_root"], name, skip_bad=skip
            )
        except DataProblemError as err:  # CocoJsonError included
            assert os.path.basename(json_file) in str(err), str(err)
            outcomes["refused"] += 1
        else:
            outcomes["loaded"] += 1
            for record in records:
                out = mapper(copy.deepcopy(record))
                boxes = out["instances"].gt_boxes.tensor
                assert boxes.numel() == 0 or bool(np.isfinite(boxes.numpy()).all())
                assert all(math.isfinite(v) for v in (record["height"], record["width"]))
        finally:
            MetadataCatalog.remove(name) if name in MetadataCatalog.list() else None
            os.unlink(json_file)

    run()
    assert outcomes["refused"] > 0 and outcomes["loaded"] > 0, outcomes
