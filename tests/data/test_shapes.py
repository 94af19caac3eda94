"""seg_plugins.data.shapes: the deterministic synthetic default dataset."""

import json
import os
import threading

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

import seg_plugins  # noqa: F401  must come before detectron2 submodules (repairs the install)

# isort: split
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.structures import BitMasks, BoxMode

from seg_plugins.data import generate_shapes, register_shapes
from seg_plugins.data import shapes as shapes_mod

SIZE = 64
NUM = 6


def _files(dataset_dir, split="train"):
    """All files of a split, relative path -> bytes."""
    out = {}
    for sub in ("images", "sem_seg"):
        folder = os.path.join(dataset_dir, split, sub)
        for name in sorted(os.listdir(folder)):
            with open(os.path.join(folder, name), "rb") as f:
                out[f"{sub}/{name}"] = f.read()
    with open(os.path.join(dataset_dir, "annotations", f"instances_{split}.json"), "rb") as f:
        out["json"] = f.read()
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 6-image, 64x64 train split; returns its dataset folder."""
    return generate_shapes(str(tmp_path_factory.mktemp("d2")), "train", NUM, SIZE, seed=0)


def _rendered(n=60, size=SIZE, seed=0):
    return [
        shapes_mod.render_shapes_image(shapes_mod._image_rng(seed, "train", i), size)
        for i in range(n)
    ]


def test_layout_and_label_values(tiny):
    assert os.path.basename(tiny) == "shapes"
    names = sorted(os.listdir(os.path.join(tiny, "train", "images")))
    assert names == [f"{i:06d}.png" for i in range(NUM)]
    for name in names:
        image = cv2.imread(os.path.join(tiny, "train", "images", name), cv2.IMREAD_UNCHANGED)
        label = cv2.imread(os.path.join(tiny, "train", "sem_seg", name), cv2.IMREAD_UNCHANGED)
        assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
        assert label.shape == (SIZE, SIZE) and label.dtype == np.uint8
        assert set(np.unique(label)) <= {0, 1, 2, 3}
    with open(os.path.join(tiny, "train", ".complete")) as f:
        marker = json.load(f)
    assert marker["num_images"] == NUM and marker["image_size"] == SIZE and marker["seed"] == 0


def test_deterministic_and_seed_dependent(tiny, tmp_path):
    again = generate_shapes(str(tmp_path / "a"), "train", NUM, SIZE, seed=0)
    assert _files(again) == _files(tiny)
    other = _files(generate_shapes(str(tmp_path / "b"), "train", NUM, SIZE, seed=1))
    same = [k for k in other if k.startswith("images/") and other[k] == _files(tiny)[k]]
    assert same == []


def test_images_do_not_depend_on_generation_order(tiny, tmp_path):
    fewer = _files(generate_shapes(str(tmp_path), "train", 3, SIZE, seed=0))
    full = _files(tiny)
    for key in fewer:
        if key != "json":
            assert fewer[key] == full[key], key
    # Another split with the same seed is different data.
    val = _files(generate_shapes(str(tmp_path), "val", 3, SIZE, seed=0), split="val")
    assert val["images/000000.png"] != full["images/000000.png"]


def test_coco_json_matches_semantic_maps(tiny):
    coco = COCO(os.path.join(tiny, "annotations", "instances_train.json"))
    cats = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    assert cats == {1: "circle", 2: "square", 3: "triangle"}
    assert sorted(coco.getImgIds()) == list(range(1, NUM + 1))
    inter = union = 0
    for img in coco.loadImgs(coco.getImgIds()):
        path = os.path.join(tiny, "train", "sem_seg", img["file_name"])
        sem = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        taken = np.zeros(sem.shape, bool)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=img["id"])):
            m = coco.annToMask(ann).astype(bool)
            assert ann["iscrowd"] == 0 and ann["area"] == m.sum() >= shapes_mod.MIN_VISIBLE_AREA
            ys, xs = np.nonzero(m)
            assert ann["bbox"] == [xs.min(), ys.min(), np.ptp(xs) + 1, np.ptp(ys) + 1]
            assert (sem[m] == ann["category_id"]).all()  # instance pixels carry its class
            assert not (taken & m).any()  # visible masks do not overlap (occlusion)
            taken |= m
        fg = sem > 0
        inter += (taken & fg).sum()
        union += (taken | fg).sum()
    assert inter / union > 0.95  # only tiny dropped instances are missing


def test_instances_reproduce_semantic_map_exactly_up_to_drops():
    n_instances = n_dropped_maps = 0
    for _, sem, instances in _rendered(80):
        for category in (1, 2, 3):
            union = np.zeros(sem.shape, bool)
            for c, visible in instances:
                if c == category:
                    polygons = shapes_mod.mask_to_polygons(visible)
                    assert all(len(p) >= 6 and len(p) % 2 == 0 for p in polygons)
                    rle = mask_util.merge(mask_util.frPyObjects(polygons, *sem.shape))
                    np.testing.assert_array_equal(mask_util.decode(rle).astype(bool), visible)
                    union |= visible
                    n_instances += 1
            missing = (sem == category) & ~union
            assert not (union & (sem != category)).any()
            if missing.any():  # a dropped instance: its visible part is tiny
                n_dropped_maps += 1
                count, _ = cv2.connectedComponents(missing.astype(np.uint8))
                assert missing.sum() < shapes_mod.MIN_VISIBLE_AREA * (count - 1)
    assert n_instances > 100
    assert n_dropped_maps < n_instances / 10


def test_colours_not_tied_to_class_and_background_textured():
    colours = {1: set(), 2: set(), 3: set()}
    for image, sem, instances in _rendered(80):
        for category, visible in instances:
            core = cv2.erode(visible.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
            if core.sum() >= 10:
                mean = image[core].mean(axis=0)
                colours[category].add(tuple((mean // 64).astype(int)))  # 4x4x4 colour bins
        background = image[sem == 0].astype(np.float64)
        assert background.std(axis=0).max() > 5.0  # not a flat colour
    for category, bins in colours.items():
        assert len(bins) >= 10, (category, bins)


@pytest.fixture
def registered(tmp_path):
    prefix = "test_shapes_reg"
    names = register_shapes(prefix, root=str(tmp_path), num_train=5, num_val=3, image_size=SIZE)
    yield tmp_path, names
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_register_is_lazy_and_dicts_have_documented_keys(registered):
    root, names = registered
    assert names == [
        *["test_shapes_reg_train", "test_shapes_reg_val"],
        *["test_shapes_reg_sem_seg_train", "test_shapes_reg_sem_seg_val"],
        *["test_shapes_reg_instance_train", "test_shapes_reg_instance_val"],
        *["test_shapes_reg_panoptic_train", "test_shapes_reg_panoptic_val"],
    ]
    assert os.listdir(root) == []  # registration generated nothing
    dicts = DatasetCatalog.get("test_shapes_reg_val")
    assert len(dicts) == 3
    for d in dicts:
        assert {"file_name", "sem_seg_file_name", "height", "width", "image_id"} <= set(d)
        assert os.path.isfile(d["file_name"]) and os.path.isfile(d["sem_seg_file_name"])
        assert (d["height"], d["width"]) == (SIZE, SIZE)
        for ann in d["annotations"]:
            assert ann["bbox_mode"] == BoxMode.XYWH_ABS and ann["iscrowd"] == 0
            assert ann["category_id"] in (0, 1, 2)
            assert isinstance(ann["segmentation"], list) and len(ann["bbox"]) == 4
    assert sum(len(d["annotations"]) for d in dicts) > 0
    assert not os.path.exists(os.path.join(root, "shapes_64px_5-3_seed0", "train"))


def test_annotations_work_with_detectron2_polygon_format(registered):
    record = DatasetCatalog.get("test_shapes_reg_train")[0]
    sem = cv2.imread(record["sem_seg_file_name"], cv2.IMREAD_UNCHANGED)
    instances = utils.annotations_to_instances(record["annotations"], (SIZE, SIZE), "polygon")
    masks = BitMasks.from_polygon_masks(instances.gt_masks, SIZE, SIZE).tensor.numpy()
    for mask, cls in zip(masks, instances.gt_classes.tolist()):
        assert (sem[mask] == cls + 1).all()


def test_metadata(registered):
    meta = MetadataCatalog.get("test_shapes_reg_train")
    assert meta.stuff_classes == ["background", "circle", "square", "triangle"]
    assert meta.thing_classes == ["circle", "square", "triangle"]
    assert meta.thing_dataset_id_to_contiguous_id == {1: 0, 2: 1, 3: 2}
    assert meta.ignore_label == 255
    assert meta.evaluator_type == ["sem_seg", "coco"]
    assert len({tuple(c) for c in meta.stuff_colors}) == 4
    assert len({tuple(c) for c in meta.thing_colors}) == 3
    assert meta.json_file.endswith(os.path.join("annotations", "instances_train.json"))
    DatasetCatalog.get("test_shapes_reg_train")
    for path in (meta.json_file, meta.image_root, meta.sem_seg_root):
        assert os.path.exists(path), path


def test_one_view_per_task_with_one_evaluator_type(registered):
    """As detectron2 registers Cityscapes: its stock train_net compares evaluator_type with
    strings, so each task's name has one; the combined name keeps both annotations."""
    both = DatasetCatalog.get("test_shapes_reg_val")
    sem = DatasetCatalog.get("test_shapes_reg_sem_seg_val")
    inst = DatasetCatalog.get("test_shapes_reg_instance_val")
    assert MetadataCatalog.get("test_shapes_reg_sem_seg_val").evaluator_type == "sem_seg"
    assert MetadataCatalog.get("test_shapes_reg_instance_val").evaluator_type == "coco"
    assert len(sem) == len(inst) == len(both) == 3
    for b, s, i in zip(both, sem, inst):
        assert "annotations" not in s and s["sem_seg_file_name"] == b["sem_seg_file_name"]
        assert "sem_seg_file_name" not in i and i["annotations"] == b["annotations"]
        assert s["file_name"] == i["file_name"] == b["file_name"]
    for view in ("sem_seg_", "instance_", ""):
        meta = MetadataCatalog.get(f"test_shapes_reg_{view}train")
        assert meta.stuff_classes == ["background", "circle", "square", "triangle"]
        assert meta.thing_classes == ["circle", "square", "triangle"]


def test_reregister_same_ok_different_raises(registered):
    root, names = registered
    again = register_shapes(
        "test_shapes_reg", root=str(root), num_train=5, num_val=3, image_size=SIZE
    )
    assert again == names
    with pytest.raises(ValueError, match="already registered"):
        register_shapes("test_shapes_reg", root=str(root), num_train=7, num_val=3)


def test_default_datasets_registered():
    views = ("shapes_", "shapes_sem_seg_", "shapes_instance_")
    assert {f"{v}{s}" for v in views for s in ("train", "val")} <= set(DatasetCatalog.list())
    meta = MetadataCatalog.get("shapes_val")
    assert meta.evaluator_type == ["sem_seg", "coco"]
    assert MetadataCatalog.get("shapes_sem_seg_val").image_root == meta.image_root
    assert meta.shapes_params["num_images"] == 100 and meta.shapes_params["image_size"] == 128
    assert os.path.basename(os.path.dirname(meta.image_root)) == "val"


def test_regeneration_skipped_when_marker_matches(tmp_path, monkeypatch):
    root = str(tmp_path)
    dataset_dir = generate_shapes(root, "train", 4, SIZE, seed=0)
    first = os.path.join(dataset_dir, "train", "images", "000000.png")
    stamp = os.stat(first).st_mtime_ns
    os.utime(first, ns=(stamp - 10**9, stamp - 10**9))  # clearly older than any rewrite
    stamp = os.stat(first).st_mtime_ns
    generate_shapes(root, "train", 4, SIZE, seed=0)
    assert os.stat(first).st_mtime_ns == stamp

    generate_shapes(root, "train", 3, SIZE, seed=0)  # other params: regenerated
    assert os.stat(first).st_mtime_ns != stamp
    assert len(os.listdir(os.path.join(dataset_dir, "train", "images"))) == 3
    with open(os.path.join(dataset_dir, "annotations", "instances_train.json")) as f:
        assert len(json.load(f)["images"]) == 3

    stamp = os.stat(first).st_mtime_ns
    os.utime(first, ns=(stamp - 10**9, stamp - 10**9))
    stamp = os.stat(first).st_mtime_ns
    monkeypatch.setattr(shapes_mod, "GENERATOR_VERSION", shapes_mod.GENERATOR_VERSION + 1)
    generate_shapes(root, "train", 3, SIZE, seed=0)  # new generator version: regenerated
    assert os.stat(first).st_mtime_ns != stamp
    assert not [n for n in os.listdir(dataset_dir) if ".tmp-" in n or ".old-" in n]


def test_concurrent_generation_is_safe(tmp_path, tiny):
    errors = []

    def work():
        try:
            generate_shapes(str(tmp_path), "train", NUM, SIZE, seed=0)
        except Exception as e:  # noqa: BLE001  (reported below)
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert _files(os.path.join(str(tmp_path), "shapes")) == _files(tiny)


def test_invalid_parameters_rejected(tmp_path):
    with pytest.raises(ValueError, match="image_size"):
        generate_shapes(str(tmp_path), "train", 2, 16)
    with pytest.raises(ValueError, match="num_images"):
        generate_shapes(str(tmp_path), "train", 0, SIZE)
