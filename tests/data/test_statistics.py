"""seg_plugins.data.statistics and seg-plugins-stats (tools/dataset_stats.py): exact counts
on generated label maps, the class-weight formulas against hand-computed numbers, instance
counts and areas."""

import json
import logging
import os

import numpy as np
import pytest
from PIL import Image

import seg_plugins  # noqa: F401  must come before detectron2 submodules (repairs the install)

# isort: split
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from pycocotools import mask as mask_util

from seg_plugins.data import register_sem_seg_folder
from seg_plugins.data.statistics import (
    CLASS_WEIGHT_METHODS,
    instance_statistics,
    select_records,
    sem_seg_statistics,
    suggest_class_weights,
)
from seg_plugins_cli import stats as stats_cli


def _save(path, label: np.ndarray) -> str:
    Image.fromarray(label).save(path)
    return str(path)


@pytest.fixture
def labelled(tmp_path):
    """Three label maps for K = 3 with known counts, and a record without labels.

    a (4x5, uint8): class 0 x10, class 1 x6, ignore x2, value 7 (out of range) x2
    b (2x3, uint8): class 0 x3, class 2 x3
    c (4x5, 16-bit): class 1 x19, value 300 (out of range) x1
    """
    a = np.array([0] * 10 + [1] * 6 + [255] * 2 + [7] * 2, np.uint8).reshape(4, 5)
    b = np.array([[0, 0, 0], [2, 2, 2]], np.uint8)
    c = np.ones((4, 5), np.uint16)
    c[3, 4] = 300
    return [
        {"file_name": "a.png", "sem_seg_file_name": _save(tmp_path / "a.png", a)},
        {"file_name": "b.png", "sem_seg_file_name": _save(tmp_path / "b.png", b)},
        {"file_name": "c.png", "sem_seg_file_name": _save(tmp_path / "c.png", c)},
        {"file_name": "d.png"},  # no label map: skipped
    ]


def test_sem_seg_counts_are_exact(labelled):
    stats = sem_seg_statistics(labelled, num_classes=3, ignore_label=255)
    assert stats["num_images"] == 3 and stats["num_records"] == 4
    assert stats["total_pixels"] == 20 + 6 + 20
    assert stats["labelled_pixels"] == 41
    assert stats["pixel_counts"] == [13, 25, 3]
    assert stats["pixel_freq"] == pytest.approx([13 / 41, 25 / 41, 3 / 41])
    assert sum(stats["pixel_freq"]) == pytest.approx(1.0)
    assert stats["image_presence"] == [2, 2, 1]
    # labelled pixels of the images holding the class: 0 in a (16) and b (6), 1 in a and c (19)
    assert stats["freq_in_present_images"] == pytest.approx([13 / 22, 25 / 35, 3 / 6])
    assert stats["ignore_pixels"] == 2
    assert stats["ignore_fraction"] == pytest.approx(2 / 46)
    assert stats["out_of_range"] == {7: 2, 300: 1}
    assert stats["out_of_range_pixels"] == 3 and stats["images_with_out_of_range"] == 2
    assert stats["absent_classes"] == []
    assert stats["image_sizes"] == [
        {"height": 4, "width": 5, "count": 2},
        {"height": 2, "width": 3, "count": 1},
    ]
    json.dumps(stats)  # serialisable as is


def test_absent_class_and_other_ignore_value(labelled):
    # K = 4: class 3 never occurs; ignore 7: the 255 pixels become out of range instead
    stats = sem_seg_statistics(labelled, num_classes=4, ignore_label=7)
    assert stats["pixel_counts"] == [13, 25, 3, 0]
    assert stats["absent_classes"] == [3]
    assert stats["freq_in_present_images"][3] == 0.0
    assert stats["ignore_pixels"] == 2 and stats["out_of_range"] == {255: 2, 300: 1}


def test_label_transform_of_the_record_is_applied(tmp_path):
    # ADE20K style: 0 = not labelled, k = class k - 1
    label = np.array([[0, 1, 1], [2, 2, 2]], np.uint8)
    record = {
        "sem_seg_file_name": _save(tmp_path / "ade.png", label),
        "sem_seg_label_transform": {"name": "reduce_zero_label", "ignore_label": 255},
    }
    stats = sem_seg_statistics([record], num_classes=2)
    assert stats["pixel_counts"] == [2, 3] and stats["ignore_pixels"] == 1


def test_max_images_spreads_evenly(labelled):
    records = [{"i": i} for i in range(10)]
    assert [r["i"] for r in select_records(records, 4)] == [0, 3, 6, 9]
    assert select_records(records, None) == records and select_records(records, 20) == records
    stats = sem_seg_statistics(labelled[:3], num_classes=3, max_images=2)  # a and c
    assert stats["num_images"] == 2 and stats["pixel_counts"] == [10, 25, 0]
    with pytest.raises(ValueError, match="max_images"):
        select_records(records, 0)


def test_median_frequency_weights_by_hand(caplog):
    # present classes: median(0.5, 0.3, 0.2) = 0.3 -> 0.6, 1.0, 1.5; mean 3.1 / 3 -> / 1.0333
    with caplog.at_level(logging.WARNING, logger="seg_plugins.data.statistics"):
        weights = suggest_class_weights([0.5, 0.3, 0.2, 0.0], "median_frequency")
    assert weights == pytest.approx([1.8 / 3.1, 3.0 / 3.1, 4.5 / 3.1, 0.0])
    assert np.mean(weights[:3]) == pytest.approx(1.0)
    assert "[3]" in caplog.text and "no pixel" in caplog.text


def test_inverse_log_weights_by_hand():
    # ENet: 1 / ln(1.02 + p) = 2.38829, 3.60189, 5.02887 (mean 3.67302), then / mean
    weights = suggest_class_weights([0.5, 0.3, 0.2], "inverse_log")
    assert weights == pytest.approx([0.650223, 0.980634, 1.369143], rel=1e-5)


@pytest.mark.parametrize(
    "freq, method, message",
    [
        ([0.0, 0.0], "median_frequency", "no class has a pixel"),
        ([0.5, -0.1], "median_frequency", "finite frequencies"),
        ([0.5, 0.5], "median", "method must be one of"),
    ],
)
def test_weight_errors(freq, method, message):
    with pytest.raises(ValueError, match=message):
        suggest_class_weights(freq, method)


def test_instance_statistics():
    square = [[2, 2, 12, 2, 12, 12, 2, 12]]  # 10 x 10 -> 100 pixels
    half = [[2, 2, 12, 2, 12, 7, 2, 7]]  # 10 x 5 -> 50 pixels
    crowd = mask_util.encode(np.asfortranarray(np.ones((20, 20), np.uint8)))
    records = [
        {
            "height": 20,
            "width": 20,
            "annotations": [
                {
                    "category_id": 0,
                    "bbox": [2, 2, 10, 10],
                    "bbox_mode": BoxMode.XYWH_ABS,
                    "segmentation": square,
                },
                {
                    "category_id": 1,
                    "bbox": [2, 2, 12, 7],
                    "bbox_mode": BoxMode.XYXY_ABS,
                    "segmentation": half,
                },
                {
                    "category_id": 1,
                    "bbox": [0, 0, 20, 20],
                    "bbox_mode": BoxMode.XYWH_ABS,
                    "segmentation": crowd,
                    "iscrowd": 1,
                },
                {"category_id": 5, "bbox": [0, 0, 4, 4], "bbox_mode": BoxMode.XYWH_ABS},
            ],
        },
        {"height": 20, "width": 20, "annotations": []},
        {"height": 20, "width": 20},
    ]
    stats = instance_statistics(records, num_classes=2)
    assert stats["num_images"] == 3 and stats["images_without_annotations"] == 2
    assert stats["instances_per_class"] == [1, 1] and stats["crowd_per_class"] == [0, 1]
    assert stats["num_crowd"] == 1 and stats["num_instances"] == 4
    assert stats["out_of_range_categories"] == {5: 1}
    assert stats["mask_area"] == {"min": 50, "q1": 62.5, "median": 75, "q3": 87.5, "max": 100}
    assert stats["bbox_area"]["min"] == 16 and stats["bbox_area"]["max"] == 100
    assert stats["bbox_area"]["median"] == 50
    assert stats["instances_per_image"]["max"] == 4
    json.dumps(stats)


# ----------------------------------------------------------------------------- the tool
@pytest.fixture
def folder_dataset(tmp_path):
    """A registered folder dataset of 2 images, classes [bg, fg, rare] (rare absent); fg only
    in the second image."""
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    labels = [np.array([[0, 0, 0, 0]], np.uint8), np.array([[0, 1, 255, 255]], np.uint8)]
    for i, label in enumerate(labels):
        Image.fromarray(np.zeros((1, 4, 3), np.uint8)).save(tmp_path / "images" / f"{i}.png")
        Image.fromarray(label).save(tmp_path / "masks" / f"{i}.png")
    name = f"test_stats_{os.getpid()}"
    register_sem_seg_folder(
        name,
        str(tmp_path / "images"),
        str(tmp_path / "masks"),
        stuff_classes=["bg", "fg", "rare"],
    )
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def test_tool_prints_table_weights_line_and_json(folder_dataset, tmp_path, capsys):
    out = tmp_path / "stats.json"
    assert stats_cli.main([folder_dataset, "--method", "inverse_log", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    stats = report["sem_seg"]
    assert stats["pixel_counts"] == [5, 1, 0] and stats["ignore_pixels"] == 2
    assert stats["class_names"] == ["bg", "fg", "rare"] and stats["weights_from"] == "pixel_freq"
    expected = suggest_class_weights([5 / 6, 1 / 6, 0.0], "inverse_log")
    assert stats["class_weights"] == pytest.approx(expected) and expected[2] == 0.0
    line = 'MODEL.SEM_SEG_HEAD.CLASS_WEIGHTS "[{}]"'.format(", ".join(f"{w:.4f}" for w in expected))
    assert line in printed
    assert "CLASS_WEIGHTS: [" in printed and "| rare " in printed
    assert "instances" not in report  # folder datasets have no annotations


def test_tool_uses_presence_frequency_for_median_frequency(folder_dataset, capsys):
    assert stats_cli.main([folder_dataset]) == 0
    # bg: 5 of the 6 labelled pixels of its 2 images; fg: 1 of the 2 of its image ->
    # median 2/3 -> 0.8, 1.333 -> / 1.0667 (plain pixel frequencies would give 0.333, 1.667)
    assert 'CLASS_WEIGHTS "[0.7500, 1.2500, 0.0000]"' in capsys.readouterr().out


def test_tool_unknown_dataset_is_one_line_exit_2(capsys):
    assert stats_cli.main(["shapes_trian"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did you mean shapes_train?" in err[0]


def test_tool_takes_config_overrides(folder_dataset, capsys):
    """KEY VALUE pairs after the name (or after --opts) build the config, as in train_net."""
    key = "MODEL.SEM_SEG_HEAD.NUM_CLASSES"
    assert stats_cli.main([folder_dataset, "--method", "median_frequency", key, "3"]) == 0
    assert 'CLASS_WEIGHTS "[0.7500, 1.2500, 0.0000]"' in capsys.readouterr().out
    assert stats_cli.main([folder_dataset, "--opts", key, "3"]) == 0
    assert 'CLASS_WEIGHTS "[0.7500, 1.2500, 0.0000]"' in capsys.readouterr().out
    assert stats_cli.main([folder_dataset, "MODEL.SEM_SEG_HEAD.NUM_CLASES", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"did you mean {key}?" in err[0]


def test_tool_parser_offers_every_method():
    # the parser does not import seg_plugins.data.statistics (torch): its own copy
    assert stats_cli.METHODS == CLASS_WEIGHT_METHODS
