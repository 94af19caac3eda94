"""Panoptic data: the shapes dataset's derived COCO panoptic ground truth, COCO panoptic
datasets registered by detectron2's loaders and by the ``coco_panoptic`` dataset spec, and
the checks of panoptic records (one test per problem kind, then all of them through
tools/check_dataset.py)."""

import copy
import json
import os
import threading

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from PIL import Image

import seg_plugins  # noqa: F401  must come before detectron2 submodules (repairs the install)

# isort: split
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_panoptic, register_coco_panoptic_separated

from seg_plugins.data import register_shapes
from seg_plugins.data import shapes as shapes_mod
from seg_plugins.data.coco_panoptic import (
    CocoPanopticJsonError,
    panoptic_from_masks,
    separated_metadata,
)
from seg_plugins.data.io import id2rgb, read_panoptic_ids, rgb2id
from seg_plugins.data.shapes import generate_shapes, generate_shapes_panoptic
from seg_plugins.data.spec import DatasetSpecError, register_dataset_spec
from seg_plugins.data.validation import PROBLEM_KINDS, check_dataset_records, check_panoptic_record
from seg_plugins_cli import check as check_cli
from tests.data.panoptic_fixture import (
    CATEGORIES,
    SEGMENT_IDS,
    H,
    W,
    make_panoptic_dataset,
    rgb,
    write_json,
)

SIZE, NUM = 64, 6
CAT, DOG, SKY, GRASS = 1, 2, 10, 11  # dataset category ids of the fixture
META = separated_metadata(CATEGORIES)


# --------------------------------------------------------------------------- helpers
def _record(ds, k=0):
    """The record of image k of the fixture, as the loaders make it (contiguous ids)."""
    ann = ds["data"]["annotations"][k]
    image = ds["data"]["images"][k]
    thing_map = META["thing_dataset_id_to_contiguous_id"]
    stuff_map = META["stuff_dataset_id_to_contiguous_id"]
    segments = []
    for s in copy.deepcopy(ann["segments_info"]):
        isthing = s["category_id"] in thing_map
        s["category_id"] = (thing_map if isthing else stuff_map)[s["category_id"]]
        segments.append({**s, "isthing": isthing})
    return {
        "file_name": os.path.join(ds["image_root"], image["file_name"]),
        "image_id": image["id"],
        "height": image["height"],
        "width": image["width"],
        "pan_seg_file_name": os.path.join(ds["panoptic_root"], ann["file_name"]),
        "segments_info": segments,
    }


def _check(record, level="full"):
    return check_panoptic_record(
        record,
        thing_classes=META["thing_classes"],
        stuff_classes=META["stuff_classes"],
        dataset_ids={CAT, DOG, SKY, GRASS},
        level=level,
    )


def _only(problems, kind):
    assert [p.kind for p in problems] == [kind], [str(p) for p in problems]
    return problems[0]


@pytest.fixture
def ds(tmp_path):
    return make_panoptic_dataset(str(tmp_path / "data"))


def _decode_polygons(segmentation, h, w):
    return mask_util.decode(mask_util.merge(mask_util.frPyObjects(segmentation, h, w))) > 0


# --------------------------------------------------------------------------- format helpers
def test_ids_round_trip_through_rgb_and_panopticapi_encoding():
    ids = np.array([[0, 1, 255, 256], [65535, 65536, 5_000_001, 256**3 - 1]])
    pixels = id2rgb(ids)
    assert pixels.dtype == np.uint8 and pixels.shape == (2, 4, 3)
    assert pixels[1, 2].tolist() == [5_000_001 % 256, 5_000_001 // 256 % 256, 5_000_001 // 65536]
    np.testing.assert_array_equal(rgb2id(pixels), ids)
    with pytest.raises(ValueError, match="0..16777215"):
        id2rgb(np.array([[256**3]]))


def test_panoptic_from_masks_things_first_then_stuff_and_void():
    a = np.zeros((6, 8), bool)
    a[1:4, 1:4] = True
    b = np.zeros((6, 8), bool)
    b[2:5, 2:6] = True  # overlaps a: the later instance takes the shared pixels
    stuff = np.zeros((6, 8), bool)
    stuff[:, :7] = True  # column 7 is VOID
    ids, segments = panoptic_from_masks([(3, a), (3, b)], [(9, stuff)])
    assert [s["id"] for s in segments] == [3001, 3002, 9000]
    assert ids[1, 1] == 3001 and ids[2, 2] == 3002 and ids[0, 0] == 9000
    assert (ids[:, 7] == 0).all()
    by_id = {s["id"]: s for s in segments}
    assert by_id[3001]["area"] == (a & ~b).sum() and by_id[3002]["area"] == b.sum()
    assert by_id[3002]["bbox"] == [2, 2, 4, 3] and by_id[9000]["category_id"] == 9
    assert sum(s["area"] for s in segments) == (ids > 0).sum()


def test_separated_metadata_follows_detectron2s_coco_convention():
    assert META["thing_classes"] == ["cat", "dog"]
    assert META["stuff_classes"] == ["things", "sky", "grass"]
    assert META["thing_dataset_id_to_contiguous_id"] == {1: 0, 2: 1}
    assert META["stuff_dataset_id_to_contiguous_id"] == {10: 1, 11: 2, 0: 0}
    assert META["thing_colors"] == [[220, 20, 60], [0, 0, 230]]
    assert META["stuff_colors"][1:] == [[70, 130, 180], [0, 160, 40]]


# --------------------------------------------------------------------------- one check per kind
def test_a_good_record_has_no_problem_at_either_level(ds):
    assert _check(_record(ds), "light") == [] and _check(_record(ds), "full") == []


def test_panoptic_png_missing(ds):
    record = _record(ds)
    os.remove(record["pan_seg_file_name"])
    p = _only(_check(record, "light"), "missing_file")
    assert p.file == record["pan_seg_file_name"] and "panoptic PNG not found" in p.message


def test_panoptic_png_truncated(ds):
    record = _record(ds)
    path = record["pan_seg_file_name"]
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    p = _only(_check(record, "light"), "unreadable")
    assert "truncated" in p.message and "copy it again" in p.message


def test_panoptic_png_not_rgb(ds):
    record = _record(ds)
    path = record["pan_seg_file_name"]
    Image.open(path).convert("L").save(path)
    p = _only(_check(record, "light"), "panoptic_mode")
    assert p.file == path and "'L'" in p.message and "R + 256 G + 256^2 B" in p.message
    Image.fromarray(rgb(ds["ids"][7])).convert("RGBA").save(path)
    p = _only(_check(record, "full"), "panoptic_mode")
    assert "'RGBA'" in p.message and "convert('RGB')" in p.message


def test_panoptic_png_of_another_size(ds):
    record = _record(ds)
    path = record["pan_seg_file_name"]
    Image.open(path).resize((W // 2, H // 2), Image.NEAREST).save(path)
    p = _only(_check(record, "light"), "size_mismatch")
    assert p.file == path and "12x16" in p.message and "24x32" in p.message
    # detectron2's panoptic records have no height / width: the image's header gives them
    for key in ("height", "width"):
        del record[key]
    p = _only(_check(record, "light"), "size_mismatch")
    assert "its image is 24x32" in p.message


def test_listed_segment_absent_from_png(ds):
    record = _record(ds)
    extra = {"id": 4242, "category_id": 0, "isthing": True, "iscrowd": 0, "area": 3}
    record["segments_info"].append(extra)
    assert _check(record, "light") == []  # found by decoding only
    p = _only(_check(record, "full"), "segment_missing")
    assert p.file == record["pan_seg_file_name"] and "segment id 4242" in p.message
    assert "no pixel of the PNG" in p.message and "correct the annotation file" in p.message


def test_png_id_without_segment(ds):
    record = _record(ds)
    dog = SEGMENT_IDS[DOG]
    record["segments_info"] = [s for s in record["segments_info"] if s["id"] != dog]
    assert _check(record, "light") == []
    p = _only(_check(record, "full"), "segment_unlisted")
    assert f"segment id(s) {dog} (" in p.message and "segments_info lists no segment" in p.message
    assert "paint those pixels 0 (VOID)" in p.message


def test_unknown_category(ds):
    record = _record(ds)
    record["segments_info"][2]["category_id"] = 2  # "cat": things are contiguous 0..1
    sid = record["segments_info"][2]["id"]
    p = _only(_check(record, "light"), "segment_category")
    assert f"segment id {sid}" in p.message and "thing_classes (0..1)" in p.message
    # a segment the loader could not convert keeps its dataset id and has no isthing
    record = _record(ds)
    seg = record["segments_info"][0]
    seg["category_id"] = 99
    del seg["isthing"]
    p = _only(_check(record, "light"), "segment_category")
    assert "category_id 99" in p.message and "[1, 2, 10, 11]" in p.message
    # the separated convention's stuff class 0 is every thing merged, no segment's category
    record = _record(ds)
    record["segments_info"][0].update(category_id=0, isthing=False)
    p = _only(_check(record, "light"), "segment_category")
    assert "'things' is every thing merged" in p.message


def test_duplicate_segment_id(ds):
    record = _record(ds)
    record["segments_info"].append(dict(record["segments_info"][0]))
    sid = record["segments_info"][0]["id"]
    p = _only(_check(record, "full"), "segment_duplicate")
    assert f"segment id {sid} (segments_info[4]) is listed twice" in p.message
    assert "segments_info[0]" in p.message and "overlapping segments" in p.message


@pytest.mark.parametrize(
    "sid, words", [(0, "VOID"), (-5, "outside 1..16777215"), (256**3, "outside 1..16777215")]
)
def test_out_of_range_segment_id(ds, sid, words):
    record = _record(ds)
    record["segments_info"].append({"id": sid, "category_id": 0, "isthing": True, "iscrowd": 0})
    p = _only(_check(record, "light"), "segment_id")
    assert f"segment id {sid} (segments_info[4])" in p.message and words in p.message


def test_wrong_area_is_a_warning(ds):
    record = _record(ds)
    record["segments_info"][0]["area"] += 1
    p = _only(_check(record, "full"), "segment_area")
    assert not p.fatal and "panoptic quality uses" in p.message


def test_every_panoptic_kind_is_documented():
    kinds = {"panoptic_mode", "segment_id", "segment_duplicate", "segment_category"}
    assert kinds | {"segment_missing", "segment_unlisted", "segment_area"} <= set(PROBLEM_KINDS)


# --------------------------------------------------------------------------- detectron2's loaders
def test_detectron2s_register_coco_panoptic_records_pass_our_checks(tmp_path, names):
    ds = make_panoptic_dataset(str(tmp_path), image_ext=".jpg")  # its loader assumes .jpg
    register_coco_panoptic("t_d2_pan", META, ds["image_root"], ds["panoptic_root"], ds["json_file"])
    names.append("t_d2_pan")
    records = DatasetCatalog.get("t_d2_pan")
    assert len(records) == 3 and "height" not in records[0]
    cat = ds["data"]["annotations"][0]["segments_info"][2]  # sky, grass, cat, dog
    assert records[0]["segments_info"][2] == {**cat, "category_id": 0, "isthing": True}
    meta = MetadataCatalog.get("t_d2_pan")
    assert check_dataset_records(records, metadata=meta, level="full") == {}
    # a PNG that lost a segment's pixels, found in detectron2's records too
    path = records[2]["pan_seg_file_name"]
    ids = ds["ids"][9].copy()
    ids[ids == SEGMENT_IDS[CAT]] = SEGMENT_IDS[SKY]
    Image.fromarray(rgb(ids)).save(path)
    found = check_dataset_records(records, metadata=meta, level="full")
    assert list(found) == [2]
    assert [p.kind for p in found[2] if p.fatal] == ["segment_missing"]  # + sky's area
    assert check_cli.main(["t_d2_pan", "--workers", "1"]) == 1


def test_detectron2s_register_coco_panoptic_separated_passes_our_checks(tmp_path, names):
    ds = make_panoptic_dataset(str(tmp_path), image_ext=".jpg")
    register_coco_panoptic_separated(
        "t_d2", META, ds["image_root"], ds["panoptic_root"], ds["json_file"],
        ds["sem_seg_root"], ds["instances_json"],
    )  # fmt: skip
    names += ["t_d2_separated", "t_d2_stuffonly"]
    for name in names:
        records = DatasetCatalog.get(name)
        assert len(records) == 3 and all("sem_seg_file_name" in r for r in records)
        meta = MetadataCatalog.get(name)
        assert check_dataset_records(records, metadata=meta, level="full") == {}
    separated = DatasetCatalog.get("t_d2_separated")
    assert [a["category_id"] for a in separated[0]["annotations"]] == [0, 1]
    # a semantic label beyond the separated stuff classes (things, sky, grass)
    Image.fromarray(np.full((H, W), 3, np.uint8)).save(separated[1]["sem_seg_file_name"])
    found = check_dataset_records(separated, metadata=MetadataCatalog.get("t_d2_separated"),
                                  level="full")  # fmt: skip
    assert [p.kind for p in found[1]] == ["label_values"]


# --------------------------------------------------------------------------- the spec format
def _spec(tmp_path, name, ds, extra="", split_extra=""):
    root = os.path.relpath(ds["root"], tmp_path)
    text = (
        f"name: {name}\nformat: coco_panoptic\n{extra}splits:\n"
        f"  val: {{json: {root}/panoptic.json, images: {root}/images, "
        f"panoptic: {root}/panoptic{split_extra}}}\n"
    )
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return str(path)


def test_spec_registers_a_panoptic_dataset(tmp_path, ds, names):
    spec = _spec(tmp_path, "t_pspec", ds)
    assert register_dataset_spec(spec) == ["t_pspec_val"]
    names.append("t_pspec_val")
    meta = MetadataCatalog.get("t_pspec_val")
    assert meta.evaluator_type == "coco_panoptic_seg" and meta.ignore_label == 255
    assert meta.panoptic_json == ds["json_file"] and meta.panoptic_root == ds["panoptic_root"]
    records = DatasetCatalog.get("t_pspec_val")
    assert [r["image_id"] for r in records] == [7, 8, 9]
    record = records[0]
    assert set(record) == {
        "file_name", "image_id", "height", "width", "pan_seg_file_name", "segments_info"
    }  # fmt: skip
    assert record["file_name"] == os.path.join(ds["image_root"], "000.png")
    assert (record["height"], record["width"]) == (H, W)
    converted = {s["id"]: (s["category_id"], s["isthing"]) for s in record["segments_info"]}
    assert converted == {
        SEGMENT_IDS[GRASS]: (2, False),
        SEGMENT_IDS[CAT]: (0, True),
        SEGMENT_IDS[SKY]: (1, False),
        SEGMENT_IDS[DOG]: (1, True),
    }
    for key in ("thing_classes", "stuff_classes", "stuff_dataset_id_to_contiguous_id"):
        assert meta.get(key) == META[key], key
    assert check_dataset_records(records, metadata=meta, level="full") == {}


def test_spec_with_instances_and_separated_labels(tmp_path, ds, names):
    root = os.path.relpath(ds["root"], tmp_path)
    extra = f", instances: {root}/instances.json, sem_seg: {root}/sem_seg"
    spec = _spec(tmp_path, "t_psep", ds, "evaluator: [sem_seg, coco, coco_panoptic_seg]\n", extra)
    register_dataset_spec(spec)
    names.append("t_psep_val")
    meta = MetadataCatalog.get("t_psep_val")
    assert meta.evaluator_type == ["sem_seg", "coco", "coco_panoptic_seg"]
    assert meta.json_file == ds["instances_json"] and meta.sem_seg_root == ds["sem_seg_root"]
    records = DatasetCatalog.get("t_psep_val")
    assert [a["category_id"] for a in records[1]["annotations"]] == [0, 1]
    assert records[1]["sem_seg_file_name"] == os.path.join(ds["sem_seg_root"], "001.png")
    assert check_dataset_records(records, metadata=meta, level="full") == {}


def test_spec_fields_are_checked(tmp_path, ds):
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: t_pbad\nformat: coco_panoptic\nsplits:\n  val: {json: a, images: b}\n")
    with pytest.raises(DatasetSpecError, match=r"lacks required field\(s\) \['panoptic'\]"):
        register_dataset_spec(str(spec))
    spec.write_text(
        "name: t_pbad\nformat: coco_panoptic\nsplits:\n"
        "  val: {json: a, images: b, panoptic: c, instance: d}\n"
    )
    with pytest.raises(DatasetSpecError, match="did you mean 'instances'"):
        register_dataset_spec(str(spec))
    spec.write_text(
        "name: t_pbad\nformat: coco_panoptic\nevaluator: {a: 1}\nsplits:\n"
        "  val: {json: a, images: b, panoptic: c}\n"
    )
    with pytest.raises(DatasetSpecError, match="'evaluator' must be a name or a list"):
        register_dataset_spec(str(spec))
    assert "t_pbad_val" not in DatasetCatalog.list()


def _break(ds, kind, k):
    """Give image k of the fixture the problem ``kind``; returns its PNG's name."""
    ann = ds["data"]["annotations"][k]
    segments = ann["segments_info"]
    path = os.path.join(ds["panoptic_root"], ann["file_name"])
    if kind == "segment_unlisted":
        segments.pop()
    elif kind == "segment_missing":
        segments.append({**segments[0], "id": 4242})
    elif kind == "segment_category":
        segments[1]["category_id"] = 99
    elif kind == "segment_duplicate":
        segments.append(dict(segments[0]))
    elif kind == "segment_id":
        segments.append({**segments[0], "id": 0})
    elif kind == "panoptic_mode":
        Image.open(path).convert("P").save(path)
    elif kind == "size_mismatch":
        Image.open(path).resize((W, H + 2), Image.NEAREST).save(path)
    elif kind == "missing_file":
        os.remove(path)
    return ann["file_name"]


FULL_ONLY = ("segment_unlisted", "segment_missing")
KINDS = (*FULL_ONLY, "segment_category", "segment_duplicate", "segment_id", "panoptic_mode",
         "size_mismatch", "missing_file")  # fmt: skip


def test_check_tool_names_each_bad_annotation_of_a_spec_dataset(tmp_path, names, capsys):
    ds = make_panoptic_dataset(str(tmp_path / "data"), n=len(KINDS) + 1)
    spec = _spec(tmp_path, "t_ptool", ds)
    names.append("t_ptool_val")
    argv = ["t_ptool_val", "--spec", spec, "--workers", "1"]
    assert check_cli.main(argv) == 0
    assert "t_ptool_val: 9 records, 0 error(s)" in capsys.readouterr().out

    broken = {kind: _break(ds, kind, k) for k, kind in enumerate(KINDS)}  # the last stays good
    write_json(ds["json_file"], ds["data"])
    assert check_cli.main(argv) == 1
    out = capsys.readouterr().out
    lines = out.splitlines()
    for kind, png in broken.items():
        line = next((x for x in lines if f"[{kind}]" in x), None)
        assert line is not None and line.startswith("error: record"), (kind, out)
        assert os.path.join(ds["panoptic_root"], png) in line, (kind, line)
    assert f"t_ptool_val: 9 records, {len(KINDS)} error(s)" in out
    assert check_cli.main([*argv, "--level", "light"]) == 1
    out = capsys.readouterr().out
    assert not any(f"[{kind}]" in out for kind in FULL_ONLY)
    assert all(f"[{kind}]" in out for kind in KINDS if kind not in FULL_ONLY)


def test_check_tool_reports_a_broken_panoptic_json(tmp_path, ds, names, capsys):
    spec = _spec(tmp_path, "t_pjson", ds)
    names.append("t_pjson_val")
    ds["data"]["annotations"][1]["image_id"] = 77
    del ds["data"]["categories"][0]["isthing"]
    write_json(ds["json_file"], ds["data"])
    assert check_cli.main(["t_pjson_val", "--spec", spec, "--workers", "1"]) == 1
    out = capsys.readouterr().out
    assert "[json_schema]" in out and "image_id 77, which is not in 'images'" in out
    assert "(id 11) has isthing 'missing'" in out
    with pytest.raises(CocoPanopticJsonError, match="COCO panoptic-format datasets"):
        DatasetCatalog.get("t_pjson_val")


def test_instances_json_must_fit_the_panoptic_one(tmp_path, ds, names):
    root = os.path.relpath(ds["root"], tmp_path)
    spec = _spec(tmp_path, "t_pfit", ds, "", f", instances: {root}/instances.json")
    register_dataset_spec(spec)
    names.append("t_pfit_val")
    ds["instances"]["categories"][1]["name"] = "wolf"
    write_json(ds["instances_json"], ds["instances"])
    with pytest.raises(CocoPanopticJsonError, match="not the thing categories of the panoptic"):
        DatasetCatalog.get("t_pfit_val")


# --------------------------------------------------------------------------- shapes, panoptic
@pytest.fixture
def shapes_views(tmp_path):
    names = register_shapes("t_pshapes", root=str(tmp_path), num_train=NUM, num_val=2,
                            image_size=SIZE, seed=3)  # fmt: skip
    yield tmp_path, names
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_shapes_panoptic_views_are_registered_lazily(shapes_views):
    root, names = shapes_views
    assert names[-2:] == ["t_pshapes_panoptic_train", "t_pshapes_panoptic_val"]
    assert os.listdir(root) == []
    meta = MetadataCatalog.get("t_pshapes_panoptic_train")
    assert meta.evaluator_type == ["sem_seg", "coco", "coco_panoptic_seg"]
    assert meta.thing_classes == ["circle", "square", "triangle"]
    assert meta.stuff_classes == ["things", "background"]
    assert meta.thing_dataset_id_to_contiguous_id == {1: 0, 2: 1, 3: 2}
    assert meta.stuff_dataset_id_to_contiguous_id == {4: 1, 0: 0}
    assert meta.ignore_label == 255 and len(meta.thing_colors) == 3 and len(meta.stuff_colors) == 2
    assert meta.panoptic_json.endswith(os.path.join("panoptic", "train", "panoptic_train.json"))
    assert meta.panoptic_root.endswith(os.path.join("panoptic", "train", "pan_seg"))
    assert meta.sem_seg_root.endswith(os.path.join("panoptic", "train", "sem_seg_stuff"))
    assert meta.json_file == MetadataCatalog.get("t_pshapes_train").json_file
    records = DatasetCatalog.get("t_pshapes_panoptic_train")
    assert len(records) == NUM
    keys = {"file_name", "image_id", "height", "width", "annotations", "sem_seg_file_name"}
    assert all(keys | {"pan_seg_file_name", "segments_info"} <= set(r) for r in records)
    for path in (meta.panoptic_json, meta.panoptic_root, meta.sem_seg_root, meta.json_file):
        assert os.path.exists(path), path
    assert not os.path.exists(os.path.join(os.path.dirname(meta.panoptic_root), "..", "val"))


def test_shapes_panoptic_ground_truth_round_trips(shapes_views):
    records = DatasetCatalog.get("t_pshapes_panoptic_train")
    plain = {r["image_id"]: r for r in DatasetCatalog.get("t_pshapes_train")}
    n_things = n_void = 0
    for record in records:
        ids = read_panoptic_ids(record["pan_seg_file_name"])
        sem4 = cv2.imread(plain[record["image_id"]]["sem_seg_file_name"], cv2.IMREAD_UNCHANGED)
        segments = {s["id"]: s for s in record["segments_info"]}
        assert set(np.unique(ids).tolist()) - {0} == set(segments)  # PNG ids = listed ones
        covered = np.zeros(ids.shape, bool)
        for ann in record["annotations"]:
            mask = _decode_polygons(ann["segmentation"], SIZE, SIZE)
            (sid,) = set(np.unique(ids[mask]).tolist())  # one segment holds the instance
            assert (ids == sid).sum() == mask.sum()  # ... and nothing else
            seg = segments[sid]
            assert seg["isthing"] and seg["category_id"] == ann["category_id"]
            assert seg["bbox"] == ann["bbox"] and seg["area"] == mask.sum()
            covered |= mask
            n_things += 1
        (background,) = [s for s in segments.values() if not s["isthing"]]
        assert background["category_id"] == 1  # stuff_classes[1] == "background"
        np.testing.assert_array_equal(ids == background["id"], sem4 == 0)
        void = ids == 0
        np.testing.assert_array_equal(void, (sem4 > 0) & ~covered)  # dropped tiny instances
        n_void += void.any()
        separated = cv2.imread(record["sem_seg_file_name"], cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(separated, np.where(sem4 == 0, 1, 0))
        assert sum(s["area"] for s in segments.values()) == (~void).sum()
    assert n_things >= NUM
    meta = MetadataCatalog.get("t_pshapes_panoptic_train")
    assert check_dataset_records(records, metadata=meta, level="full") == {}


def test_shapes_panoptic_json_follows_the_coco_panoptic_format(shapes_views):
    DatasetCatalog.get("t_pshapes_panoptic_val")
    meta = MetadataCatalog.get("t_pshapes_panoptic_val")
    with open(meta.panoptic_json) as f:
        data = json.load(f)
    with open(meta.json_file) as f:
        instances = json.load(f)
    assert data["images"] == instances["images"]
    assert [(c["id"], c["name"], c["isthing"]) for c in data["categories"]] == [
        (1, "circle", 1), (2, "square", 1), (3, "triangle", 1), (4, "background", 0)
    ]  # fmt: skip
    assert all(len(c["color"]) == 3 for c in data["categories"])
    categories = {c["id"] for c in data["categories"]}
    assert sorted(a["image_id"] for a in data["annotations"]) == [i["id"] for i in data["images"]]
    for ann in data["annotations"]:
        assert set(ann) == {"image_id", "file_name", "segments_info"}
        assert os.path.isfile(os.path.join(meta.panoptic_root, ann["file_name"]))
        ids = [s["id"] for s in ann["segments_info"]]
        assert len(ids) == len(set(ids)) and all(0 < i < 256**3 for i in ids)
        for s in ann["segments_info"]:
            assert set(s) == {"id", "category_id", "iscrowd", "bbox", "area"}
            assert s["category_id"] in categories and s["iscrowd"] == 0
        png = Image.open(os.path.join(meta.panoptic_root, ann["file_name"]))
        assert png.mode == "RGB" and png.size == (SIZE, SIZE)


def test_shapes_panoptic_is_valid_for_panopticapi(shapes_views):
    """panopticapi's own per-image evaluation of the ground truth against itself: it raises
    on PNG ids missing from the JSON (and the reverse) or unknown categories; the result is
    every segment matched with IoU 1."""
    evaluation = pytest.importorskip("panopticapi.evaluation")  # optional: evaluation extra
    DatasetCatalog.get("t_pshapes_panoptic_train")
    meta = MetadataCatalog.get("t_pshapes_panoptic_train")
    with open(meta.panoptic_json) as f:
        data = json.load(f)
    pairs = [(ann, copy.deepcopy(ann)) for ann in data["annotations"]]
    categories = {c["id"]: c for c in data["categories"]}
    stat = evaluation.pq_compute_single_core(
        0, pairs, meta.panoptic_root, meta.panoptic_root, categories
    )
    counts = {c: 0 for c in categories}
    for ann in data["annotations"]:
        for s in ann["segments_info"]:
            counts[s["category_id"]] += 1
    for category, count in counts.items():
        assert (stat[category].tp, stat[category].fp, stat[category].fn) == (count, 0, 0)
        assert stat[category].iou == pytest.approx(count)
    results, _ = stat.pq_average(categories, isthing=None)
    assert results["pq"] == pytest.approx(1.0)
    assert results["n"] == sum(n > 0 for n in counts.values()) >= 2


def _ground_truth_as_prediction(records):
    inputs = [{"file_name": r["file_name"], "image_id": r["image_id"]} for r in records]
    outputs = []
    for r in records:
        ids = torch.from_numpy(read_panoptic_ids(r["pan_seg_file_name"]).astype(np.int32))
        segments = [{k: s[k] for k in ("id", "category_id", "isthing")} for s in r["segments_info"]]
        outputs.append({"panoptic_seg": (ids, segments)})
    return inputs, outputs


@pytest.mark.parametrize("source", ["shapes", "spec"])
def test_detectron2s_panoptic_evaluator_reads_the_metadata(source, shapes_views, tmp_path, names):
    """detectron2's COCOPanopticEvaluator, given the ground truth as the prediction (contiguous
    ids + isthing, as PanopticFPN outputs them), maps the ids back through the metadata and
    scores PQ 100 against panoptic_json / panoptic_root."""
    pytest.importorskip("panopticapi.evaluation")  # optional: evaluation extra
    from detectron2.evaluation import COCOPanopticEvaluator

    name = "t_pshapes_panoptic_val"
    if source == "spec":
        ds = make_panoptic_dataset(str(tmp_path / "spec_data"))
        name = register_dataset_spec(_spec(tmp_path, "t_peval", ds))[0]
        names.append(name)
    records = DatasetCatalog.get(name)
    evaluator = COCOPanopticEvaluator(name, str(tmp_path / "pq"))
    evaluator.reset()
    evaluator.process(*_ground_truth_as_prediction(records))
    pq = evaluator.evaluate()["panoptic_seg"]
    assert pq["PQ"] == pytest.approx(100.0) and pq["PQ_th"] == pytest.approx(100.0)
    assert pq["PQ_st"] == pytest.approx(100.0)


def _tree(folder):
    out = {}
    for base, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(base, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


def test_shapes_panoptic_is_deterministic_and_derived_once(tmp_path, monkeypatch):
    a = generate_shapes_panoptic(str(tmp_path / "a"), "val", 4, SIZE, seed=2)
    b = generate_shapes_panoptic(str(tmp_path / "b"), "val", 4, SIZE, seed=2)
    assert _tree(a["split_dir"]) == _tree(b["split_dir"])
    assert ".complete" in _tree(a["split_dir"]) and len(_tree(a["split_dir"])) == 10
    png = os.path.join(a["panoptic_root"], "000000.png")
    old = os.stat(png).st_mtime_ns - 10**9
    os.utime(png, ns=(old, old))
    assert generate_shapes_panoptic(str(tmp_path / "a"), "val", 4, SIZE, seed=2) == a
    assert os.stat(png).st_mtime_ns == old  # the marker matched: nothing rewritten
    monkeypatch.setattr(shapes_mod, "PANOPTIC_VERSION", shapes_mod.PANOPTIC_VERSION + 1)
    generate_shapes_panoptic(str(tmp_path / "a"), "val", 4, SIZE, seed=2)
    assert os.stat(png).st_mtime_ns != old  # a new panoptic version: derived again
    panoptic_dir = os.path.dirname(a["split_dir"])
    assert sorted(os.listdir(panoptic_dir)) == [".val.lock", "val"]


def test_an_existing_shapes_split_is_not_regenerated(tmp_path):
    dataset_dir = generate_shapes(str(tmp_path), "train", 3, SIZE, seed=0)
    source = os.path.join(dataset_dir, "train")
    json_file = os.path.join(dataset_dir, "annotations", "instances_train.json")
    files = [json_file] + [os.path.join(b, n) for b, _, ns in os.walk(source) for n in ns]
    stamps = {}
    for path in files:
        old = os.stat(path).st_mtime_ns - 10**9
        os.utime(path, ns=(old, old))
        stamps[path] = old
    before = _tree(source)
    generate_shapes_panoptic(str(tmp_path), "train", 3, SIZE, seed=0)
    assert {p: os.stat(p).st_mtime_ns for p in files} == stamps
    assert _tree(source) == before
    assert sorted(os.listdir(dataset_dir)) == [".train.lock", "annotations", "panoptic", "train"]


def test_concurrent_panoptic_derivation_is_safe(tmp_path):
    reference = generate_shapes_panoptic(str(tmp_path / "ref"), "train", NUM, SIZE, seed=1)
    errors = []

    def work():
        try:
            generate_shapes_panoptic(str(tmp_path / "x"), "train", NUM, SIZE, seed=1)
        except Exception as e:  # noqa: BLE001  (reported below)
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    done = generate_shapes_panoptic(str(tmp_path / "x"), "train", NUM, SIZE, seed=1)
    assert _tree(done["split_dir"]) == _tree(reference["split_dir"])
    assert not [n for n in os.listdir(os.path.dirname(done["split_dir"])) if "-" in n]


def test_panoptic_folder_is_no_split_name(tmp_path):
    for split in ("panoptic", "annotations"):
        with pytest.raises(ValueError, match="folder of the dataset itself"):
            generate_shapes(str(tmp_path), split, 2, SIZE)


def test_default_shapes_panoptic_names_registered():
    for split in ("train", "val"):
        meta = MetadataCatalog.get(f"shapes_panoptic_{split}")
        assert f"shapes_panoptic_{split}" in DatasetCatalog.list()
        assert meta.stuff_classes == ["things", "background"]
        assert meta.shapes_params["tag"] == "" and meta.shapes_params["split"] == split
