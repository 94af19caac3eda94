"""Broken semantic-segmentation data: one generated file per problem, each reported with its
own message naming the file and the fix, by the light check, the full check, the mapper and
tools/check_dataset.py; with DATASETS.SKIP_BAD_SAMPLES a run completes and reports the
count."""

import json
import os

import numpy as np
import pytest
from PIL import Image

import seg_plugins  # noqa: F401  must come before detectron2 submodules (repairs the install)

# isort: split
from detectron2.data import DatasetCatalog, MetadataCatalog

from seg_plugins.data import SemSegDatasetMapper, register_sem_seg_folder
from seg_plugins.data.build import checked_dataset_dicts
from seg_plugins.data.validation import (
    DataProblemError,
    SkipBadSamples,
    check_dataset_records,
    check_instance_record,
    check_sem_seg_record,
)
from seg_plugins.engine import Trainer
from tests.modeling.seg_model_checks import tiny_model_cfg

SIZE = (24, 32)
CLASSES = ["background", "a", "b"]


def _image(path, size=SIZE, mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    shape = (*size, 3) if mode == "RGB" else (*size, 4) if mode == "RGBA" else size
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)


def _label(path, size=SIZE, values=(0, 1, 2), seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(rng.choice(np.array(values, np.uint8), size)).save(path)


def _truncate(path, keep=0.5):
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * keep)])


def _good_pairs(root, n=4):
    for i in range(n):
        _image(os.path.join(root, "images", f"{i}.png"), seed=i)
        _label(os.path.join(root, "masks", f"{i}.png"), seed=i)


def _record(root, stem, image_ext=".png"):
    return {
        "file_name": os.path.join(root, "images", stem + image_ext),
        "sem_seg_file_name": os.path.join(root, "masks", stem + ".png"),
        "height": SIZE[0],
        "width": SIZE[1],
    }


def _kinds(problems):
    return [p.kind for p in problems]


# --------------------------------------------------------------------------- the corpus
def test_good_record_has_no_problem(tmp_path):
    _good_pairs(tmp_path, 1)
    assert check_sem_seg_record(_record(tmp_path, "0"), num_classes=3, level="full") == []


def test_missing_image_and_label(tmp_path):
    _good_pairs(tmp_path, 1)
    os.remove(tmp_path / "images" / "0.png")
    (p,) = check_sem_seg_record(_record(tmp_path, "0"))
    assert p.kind == "missing_file" and p.file.endswith("images/0.png")
    assert "image not found" in p.message and "restore it" in p.message
    _good_pairs(tmp_path, 1)
    os.remove(tmp_path / "masks" / "0.png")
    (p,) = check_sem_seg_record(_record(tmp_path, "0"))
    assert p.kind == "missing_file" and "label map not found" in p.message


def test_truncated_png_and_jpeg_found_by_the_light_check(tmp_path):
    _good_pairs(tmp_path, 1)
    _truncate(tmp_path / "images" / "0.png")
    (p,) = check_sem_seg_record(_record(tmp_path, "0"), level="light")
    assert p.kind == "unreadable" and "truncated" in p.message and "copy it again" in p.message
    jpeg = tmp_path / "images" / "1.jpg"
    Image.fromarray(np.full((*SIZE, 3), 90, np.uint8)).save(jpeg, quality=90)
    _label(os.path.join(tmp_path, "masks", "1.png"))
    assert check_sem_seg_record(_record(tmp_path, "1", ".jpg")) == []
    _truncate(jpeg, 0.8)
    (p,) = check_sem_seg_record(_record(tmp_path, "1", ".jpg"))
    assert p.kind == "unreadable" and "truncated" in p.message


def test_not_an_image(tmp_path):
    _good_pairs(tmp_path, 1)
    (tmp_path / "images" / "0.png").write_bytes(b"<html>404 Not Found</html>")
    (p,) = check_sem_seg_record(_record(tmp_path, "0"))
    assert p.kind == "unreadable" and "cannot read image" in p.message
    assert "re-export or re-download" in p.message


def test_image_label_size_mismatch(tmp_path):
    _good_pairs(tmp_path, 1)
    _label(os.path.join(tmp_path, "masks", "0.png"), size=(SIZE[0] // 2, SIZE[1] // 2))
    (p,) = check_sem_seg_record(_record(tmp_path, "0"))
    assert p.kind == "size_mismatch" and p.file.endswith("masks/0.png")
    assert "12x16" in p.message and "24x32" in p.message and "resized" in p.message


def test_record_size_differs_from_the_file(tmp_path):
    _good_pairs(tmp_path, 1)
    record = dict(_record(tmp_path, "0"), height=50, width=60)
    (p,) = check_sem_seg_record(record)
    assert p.kind == "size_mismatch" and "re-register" in p.message


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_colour_label_map(tmp_path, mode):
    _good_pairs(tmp_path, 1)
    _image(os.path.join(tmp_path, "masks", "0.png"), mode=mode)
    (p,) = check_sem_seg_record(_record(tmp_path, "0"))
    assert p.kind == "label_mode" and f"mode {mode!r}" in p.message
    assert "single-channel PNG" in p.message


def test_palette_image_is_a_warning_not_an_error(tmp_path):
    _good_pairs(tmp_path, 1)
    img = Image.fromarray(np.zeros(SIZE, np.uint8), "L").convert("P")
    img.save(tmp_path / "images" / "0.png")
    (p,) = check_sem_seg_record(_record(tmp_path, "0"))
    assert p.kind == "image_mode" and not p.fatal and "palette" in p.message


def test_label_values_outside_the_classes_full_check_and_mapper(tmp_path):
    _good_pairs(tmp_path, 1)
    _label(os.path.join(tmp_path, "masks", "0.png"), values=(0, 1, 7, 255))
    record = _record(tmp_path, "0")
    assert check_sem_seg_record(record, num_classes=3, level="light") == []  # needs decoding
    (p,) = check_sem_seg_record(record, num_classes=3, level="full")
    assert p.kind == "label_values" and "[7]" in p.message and "0..2" in p.message
    mapper = SemSegDatasetMapper(is_train=True, num_classes=3, image_format="RGB")
    with pytest.raises(DataProblemError, match=r"label values \[7\].*masks/0.png|masks/0.png"):
        mapper(record)


def test_label_value_hints_name_the_registration_option(tmp_path):
    _good_pairs(tmp_path, 1)
    _label(os.path.join(tmp_path, "masks", "0.png"), values=(1, 2, 3))  # 1..K, 0 unlabelled
    (p,) = check_sem_seg_record(_record(tmp_path, "0"), num_classes=3, level="full")
    assert "reduce_zero_label" in p.message
    _label(os.path.join(tmp_path, "masks", "0.png"), values=(0, 255))
    (p,) = check_sem_seg_record(
        _record(tmp_path, "0"), num_classes=2, ignore_label=100, level="full"
    )
    assert "mask_values '0/255'" in p.message


def test_truncated_label_found_when_decoded(tmp_path):
    _good_pairs(tmp_path, 1)
    # Cut inside the pixel data but keep a valid-looking end: only decoding can tell.
    path = tmp_path / "masks" / "0.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 3, (200, 200), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] + data[-12:])
    record = dict(_record(tmp_path, "0"))
    _image(record["file_name"], size=(200, 200))
    record.update(height=200, width=200)
    (p,) = check_sem_seg_record(record, num_classes=3, level="full")
    assert p.kind == "unreadable" and "masks/0.png" in p.message


def test_degenerate_polygons_and_boxes_of_instance_records(tmp_path):
    _image(os.path.join(tmp_path, "images", "0.png"))
    record = {
        "file_name": os.path.join(tmp_path, "images", "0.png"),
        "height": SIZE[0],
        "width": SIZE[1],
        "annotations": [
            {
                "bbox": [1, 1, 5, 5],
                "bbox_mode": 1,
                "category_id": 0,
                "segmentation": [[1, 1, 5, 1, 5, 5]],
            },
            {"bbox": [1, 1, 5, 5], "bbox_mode": 1, "category_id": 0, "segmentation": []},
            {
                "bbox": [1, 1, 5, 5],
                "bbox_mode": 1,
                "category_id": 0,
                "segmentation": [[1, 1, 5, 1]],
            },
            {
                "bbox": [1, 1, 5, 5],
                "bbox_mode": 1,
                "category_id": 0,
                "segmentation": [[1, 1, 2, 2, 3, 3]],
            },
            {"bbox": [1, 1, 0, 5], "bbox_mode": 1, "category_id": 0},
            {"bbox": [1, 1, 5, 5], "bbox_mode": 1, "category_id": 9},
            {
                "bbox": [1, 1, 5, 5],
                "bbox_mode": 1,
                "category_id": 0,
                "segmentation": {"size": [10, 10], "counts": "abc"},
            },
        ],
    }
    problems = check_instance_record(record, num_categories=2)
    assert _kinds(problems) == [
        "polygon",
        "polygon",
        "polygon",
        "annotation",
        "annotation",
        "annotation",
    ]
    text = "\n".join(map(str, problems))
    for needle in (
        "empty segmentation",
        "4 coordinates",
        "zero area",
        "has no area",
        "category_id 9",
        "RLE size [10, 10]",
    ):
        assert needle in text


# --------------------------------------------------------------------------- dataset level
def _broken_dataset(root):
    """4 good pairs and 5 bad ones: one per problem, the last two found only by decoding."""
    _good_pairs(root, 4)
    _image(os.path.join(root, "images", "b_missing.png"))  # no label map
    _image(os.path.join(root, "images", "b_size.png"))
    _label(os.path.join(root, "masks", "b_size.png"), size=(8, 8))
    _image(os.path.join(root, "images", "b_trunc.png"))
    _label(os.path.join(root, "masks", "b_trunc.png"))
    _truncate(os.path.join(root, "images", "b_trunc.png"))
    _image(os.path.join(root, "images", "b_values.png"))
    _label(os.path.join(root, "masks", "b_values.png"), values=(0, 5))
    _image(os.path.join(root, "images", "b_rgb.png"))
    _image(os.path.join(root, "masks", "b_rgb.png"))
    _label(os.path.join(root, "masks", "b_missing.png"))  # removed after listing (_register)


def _register(names, name, root, missing=()):
    """The folder pairs of ``root`` as a dataset whose records were listed before the files
    in ``missing`` vanished (as a split file or an annotation file can list them); the folder
    loader itself refuses unpaired files when listing (see test_builtin.py)."""
    register_sem_seg_folder(
        name, os.path.join(root, "images"), os.path.join(root, "masks"), stuff_classes=CLASSES
    )
    records = DatasetCatalog.get(name)
    DatasetCatalog.remove(name)
    DatasetCatalog.register(name, lambda: [dict(r) for r in records])
    for path in missing:
        os.remove(path)
    names.append(name)


def test_light_check_names_every_problem_and_stops_by_default(tmp_path, names):
    _broken_dataset(tmp_path)
    _register(names, "t_broken", tmp_path, missing=[tmp_path / "masks" / "b_missing.png"])
    cfg = tiny_model_cfg("UNet", "DATASETS.TRAIN", ("t_broken",), "DATASETS.TEST", ())
    with pytest.raises(DataProblemError) as info:
        checked_dataset_dicts(cfg, "t_broken", is_train=True)
    msg = str(info.value)
    assert "dataset 't_broken': 4 data problem(s) (in 9 records)" in msg
    for stem in ("b_missing", "b_size", "b_trunc", "b_rgb"):
        assert stem in msg
    assert "b_values" not in msg  # found only by decoding (mapper / full check)
    assert "DATASETS.SKIP_BAD_SAMPLES True" in msg and "tools/check_dataset.py" in msg
    full = check_dataset_records(
        DatasetCatalog.get("t_broken"), metadata=MetadataCatalog.get("t_broken"), level="full"
    )
    assert sorted(
        os.path.basename(DatasetCatalog.get("t_broken")[i]["file_name"]) for i in full
    ) == ["b_missing.png", "b_rgb.png", "b_size.png", "b_trunc.png", "b_values.png"]


def test_skip_bad_samples_training_and_evaluation_complete_and_report(tmp_path, names, caplog):
    """Skipping on: the light check drops 4 records at load, the mapper swaps the record with
    bad label values for another one while training, the test set is checked in full; the run
    trains, evaluates, and writes the list of what it skipped."""
    _broken_dataset(tmp_path)
    _register(names, "t_skip", tmp_path, missing=[tmp_path / "masks" / "b_missing.png"])
    out = tmp_path / "out"
    cfg = tiny_model_cfg(
        "UNet",
        "DATASETS.TRAIN",
        ("t_skip",),
        "DATASETS.TEST",
        ("t_skip",),
        "DATASETS.SKIP_BAD_SAMPLES",
        True,
        "SOLVER.MAX_ITER",
        4,
        "SOLVER.IMS_PER_BATCH",
        5,
        "INPUT.CROP.ENABLED",
        False,
        "INPUT.FORMAT",
        "RGB",
        "DATALOADER.NUM_WORKERS",
        0,
        "TEST.SEM_SEG_VIS.NUM_IMAGES",
        0,
        "OUTPUT_DIR",
        str(out),
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
        3,
    )
    np.random.seed(0)  # detectron2's TrainingSampler draws its seed from numpy
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert "skipped bad sample" in caplog.text and "b_values.png" in caplog.text
    results = trainer._last_eval_results["sem_seg"]
    assert 0 <= results["mIoU"] <= 100
    report = json.loads((out / "skipped_samples.json").read_text())
    assert report["t_skip"]["total"] == 9
    skipped = sorted(os.path.basename(s["file_name"]) for s in report["t_skip"]["skipped"])
    # the test set (level "full") also drops b_values
    assert skipped == ["b_missing.png", "b_rgb.png", "b_size.png", "b_trunc.png", "b_values.png"]
    assert report["t_skip"]["level"] == "full"  # the test set's entry replaced the train one's


def test_skip_wrapper_returns_none_and_counts(tmp_path, caplog):
    _good_pairs(tmp_path, 1)
    _label(os.path.join(tmp_path, "masks", "0.png"), values=(0, 9))
    wrapped = SkipBadSamples(SemSegDatasetMapper(is_train=True, num_classes=3))
    assert wrapped(_record(tmp_path, "0")) is None and wrapped.skipped == 1
    assert "skipped bad sample" in caplog.text and "label values [9]" in caplog.text


def test_check_dataset_tool(tmp_path, names, capsys):
    from seg_plugins_cli import check as check_cli

    _good_pairs(tmp_path / "good", 3)
    _register(names, "t_tool_good", tmp_path / "good")
    assert check_cli.main(["t_tool_good", "--workers", "1"]) == 0
    assert "t_tool_good: 3 records, 0 error(s)" in capsys.readouterr().out

    _broken_dataset(tmp_path / "bad")
    _register(names, "t_tool_bad", tmp_path / "bad")
    report = tmp_path / "report.json"
    assert check_cli.main(["t_tool_bad", "--workers", "2", "--json", str(report)]) == 1
    out = capsys.readouterr().out
    assert "t_tool_bad: 9 records, 4 error(s)" in out  # b_missing has its label here
    assert "label_values" in out and "label_mode" in out and "size_mismatch" in out
    assert json.loads(report.read_text())[0]["errors"] == 4
    assert check_cli.main(["no_such_dataset"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("seg_plugins: error: dataset(s) not registered")
    # did you mean; flags after the names, then KEY VALUE overrides (which reach the config)
    assert check_cli.main(["t_tool_gdoo", "--workers", "1", "INPUT.FORMAT", "L"]) == 2
    assert "t_tool_gdoo (did you mean t_tool_good?)" in capsys.readouterr().err
    assert check_cli.main(["t_tool_good", "--workers", "1", "INPUT.FORMT", "L"]) == 2
    assert "unknown config key INPUT.FORMT" in capsys.readouterr().err
    assert check_cli.main(["t_tool_good", "--level", "light", "--opts", "INPUT.FORMAT", "L"]) == 0
    assert "t_tool_good: 3 records, 0 error(s)" in capsys.readouterr().out


def test_check_dataset_tool_registers_spec_files_before_the_config(tmp_path, names, capsys):
    """--spec files are registered before the config is set up, so the config's
    DATASETS.TRAIN / TEST (whose names setup_cfg checks) may name their datasets."""
    from seg_plugins_cli import check as check_cli

    _good_pairs(tmp_path / "val", 2)
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: t_spec\nformat: sem_seg_folder\nclasses: [background, a, b]\n"
        "splits:\n  val: {images: val/images, masks: val/masks}\n"
    )
    names.append("t_spec_val")
    argv = ["t_spec_val", "--spec", str(spec), "--workers", "1"]
    assert check_cli.main([*argv, "DATASETS.TEST", "('t_spec_val',)"]) == 0
    assert "t_spec_val: 2 records, 0 error(s)" in capsys.readouterr().out


# --------------------------------------------------------------------------- listing
def _folder_with_a_non_image(root):
    _good_pairs(root, 3)
    with open(os.path.join(root, "images", "notes.png"), "w") as f:
        f.write("not an image, a text file with a .png name")
    _label(os.path.join(root, "masks", "notes.png"))


def test_a_non_image_in_a_folder_dataset_is_a_report_line_not_a_traceback(tmp_path, names, capsys):
    """The images' sizes are read while the records are listed: an unreadable file there
    used to raise from DatasetCatalog.get. Now the listing keeps its record and every check
    names it, in the same words as a file that breaks later."""
    _folder_with_a_non_image(tmp_path)
    register_sem_seg_folder(
        "t_nonimage", tmp_path / "images", tmp_path / "masks", stuff_classes=CLASSES
    )
    names.append("t_nonimage")
    records = DatasetCatalog.get("t_nonimage")  # no exception
    assert len(records) == 4
    bad = next(r for r in records if r["file_name"].endswith("notes.png"))
    assert "height" not in bad

    from seg_plugins_cli import check as check_cli

    assert check_cli.main(["t_nonimage", "--workers", "1"]) == 1
    out = capsys.readouterr().out
    assert "t_nonimage: 4 records, 1 error(s)" in out
    assert "[unreadable]" in out and "notes.png: cannot read image" in out, out
    cfg = tiny_model_cfg("UNet", "DATASETS.TRAIN", ("t_nonimage",), "DATASETS.TEST", ())
    with pytest.raises(DataProblemError, match="notes.png: cannot read image"):
        checked_dataset_dicts(cfg, "t_nonimage", is_train=True)


def test_a_non_image_in_a_folder_dataset_is_skipped_and_counted(tmp_path, names, caplog):
    _folder_with_a_non_image(tmp_path)
    register_sem_seg_folder(
        "t_nonimage_skip", tmp_path / "images", tmp_path / "masks", stuff_classes=CLASSES
    )
    names.append("t_nonimage_skip")
    cfg = tiny_model_cfg(
        "UNet", "DATASETS.TRAIN", ("t_nonimage_skip",), "DATASETS.TEST", (),
        "DATASETS.SKIP_BAD_SAMPLES", True,
    )  # fmt: skip
    kept, report = checked_dataset_dicts(cfg, "t_nonimage_skip", is_train=True)
    assert len(kept) == 3 and not any(r["file_name"].endswith("notes.png") for r in kept)
    report = report.datasets["t_nonimage_skip"]
    assert report["total"] == 4
    assert [os.path.basename(s["file_name"]) for s in report["skipped"]] == ["notes.png"]
