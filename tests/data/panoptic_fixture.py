"""A tiny COCO panoptic-format dataset for the tests, written by hand (not by the package's
own helpers, which the tests check): 24x32 images with two stuff classes ("sky" above,
"grass" below, category ids 10 and 11) and two thing classes ("cat" id 1, "dog" id 2; one
rectangle each), a VOID column at the right edge, segment ids that use all three RGB
channels, image ids from 7 (not 1), plus the COCO instances JSON of the same things and
the semantic labels in detectron2's "separated" convention (0 things, 1 sky, 2 grass, 255
VOID).
"""

import copy
import json
import os

import numpy as np
from PIL import Image

H, W = 24, 32
CATEGORIES = [
    {"id": 11, "name": "grass", "isthing": 0, "color": [0, 160, 40], "supercategory": "plant"},
    {"id": 1, "name": "cat", "isthing": 1, "color": [220, 20, 60], "supercategory": "animal"},
    {"id": 10, "name": "sky", "isthing": 0, "color": [70, 130, 180], "supercategory": "sky"},
    {"id": 2, "name": "dog", "isthing": 1, "color": [0, 0, 230], "supercategory": "animal"},
]
# category id -> segment id (R + 256 G + 256^2 B); the same ids in every image
SEGMENT_IDS = {10: 12, 11: 7 * 65536 + 3 * 256 + 9, 1: 5_000_001, 2: 300}
SEPARATED = {10: 1, 11: 2, 1: 0, 2: 0}  # category id -> separated semantic label


def _masks(k: int) -> dict:
    """category id -> bool mask (H, W) of image k; things overlap no stuff pixel twice."""
    masks = {c: np.zeros((H, W), bool) for c in SEGMENT_IDS}
    masks[10][: H // 2, : W - 1] = True
    masks[11][H // 2 :, : W - 1] = True
    masks[1][2:8, 3 + k : 10 + k] = True
    masks[2][14:20, 15 : 25 - k] = True
    for thing in (1, 2):
        for stuff in (10, 11):
            masks[stuff] &= ~masks[thing]
    return masks


def _bbox(mask: np.ndarray) -> list:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1]


def _polygon(mask: np.ndarray) -> list:
    x, y, w, h = _bbox(mask)  # the rectangles' outlines
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def rgb(ids: np.ndarray) -> np.ndarray:
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)


def write_json(path: str, data) -> str:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
    return path


def make_panoptic_dataset(root: str, n: int = 3, image_ext: str = ".png") -> dict:
    """Write ``root/{images,panoptic,sem_seg}/`` and ``root/{panoptic,instances}.json``.

    Returns:
        {"root", "json_file", "instances_json", "image_root", "panoptic_root",
        "sem_seg_root", "data" (the panoptic dict), "instances" (the instances dict),
        "ids": {image id: (H, W) segment ids}}.
    """
    paths = {key: os.path.join(root, key) for key in ("images", "panoptic", "sem_seg")}
    for folder in paths.values():
        os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    images, annotations, instances, all_ids = [], [], [], {}
    for k in range(n):
        image_id, stem = 7 + k, f"{k:03d}"
        masks = _masks(k)
        ids = np.zeros((H, W), np.int64)
        semantic = np.full((H, W), 255, np.uint8)
        segments = []
        for category, mask in masks.items():
            ids[mask] = SEGMENT_IDS[category]
            semantic[mask] = SEPARATED[category]
            segment = {"id": SEGMENT_IDS[category], "category_id": category, "iscrowd": 0}
            segments.append({**segment, "bbox": _bbox(mask), "area": int(mask.sum())})
            if category in (1, 2):
                instances.append(
                    {
                        "id": len(instances) + 1,
                        "image_id": image_id,
                        "category_id": category,
                        "segmentation": _polygon(mask),
                        "bbox": _bbox(mask),
                        "area": int(mask.sum()),
                        "iscrowd": 0,
                    }
                )
        pixels = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(os.path.join(paths["images"], stem + image_ext))
        Image.fromarray(rgb(ids)).save(os.path.join(paths["panoptic"], f"{stem}.png"))
        Image.fromarray(semantic).save(os.path.join(paths["sem_seg"], f"{stem}.png"))
        images.append({"id": image_id, "file_name": stem + image_ext, "height": H, "width": W})
        annotations.append(
            {"image_id": image_id, "file_name": f"{stem}.png", "segments_info": segments}
        )
        all_ids[image_id] = ids
    data = {"images": images, "annotations": annotations, "categories": copy.deepcopy(CATEGORIES)}
    things = [copy.deepcopy(c) for c in CATEGORIES if c["isthing"]]
    inst = {"images": copy.deepcopy(images), "annotations": instances, "categories": things}
    return {
        "root": root,
        "json_file": write_json(os.path.join(root, "panoptic.json"), data),
        "instances_json": write_json(os.path.join(root, "instances.json"), inst),
        "image_root": paths["images"],
        "panoptic_root": paths["panoptic"],
        "sem_seg_root": paths["sem_seg"],
        "data": data,
        "instances": inst,
        "ids": all_ids,
    }
