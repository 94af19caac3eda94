"""A tiny COCO-format instance dataset for the tests: four 64x64 RGB images with ellipses
(category id 3) and squares (category id 7), listed in the JSON as [7, 3] (not sorted, not
contiguous), image ids 101-104. Masks are written every way COCO allows:

- image 101: two polygons;
- image 102: an uncompressed RLE (counts list) and a compressed RLE (counts string);
- image 103: a polygon and an ``iscrowd`` 1 region (uncompressed RLE, as COCO's crowds);
- image 104: a compressed RLE and a polygon.

Polygons come from :func:`seg_plugins.data.shapes.mask_to_polygons`, which rasterises back
to exactly the drawn pixels, so every annotation decodes to the mask it was drawn from.
"""

import copy
import json
import os

import cv2
import numpy as np
import pycocotools.mask as mask_util
from PIL import Image

from seg_plugins.data.shapes import mask_to_polygons

SIZE = 64
CATEGORIES = [
    {"id": 7, "name": "square", "supercategory": "shape"},
    {"id": 3, "name": "ellipse", "supercategory": "shape"},
]
ELLIPSE, SQUARE = 3, 7
COLORS = {ELLIPSE: (220, 40, 60), SQUARE: (30, 130, 230)}


def ellipse(cx, cy, ax, ay, angle) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), np.uint8)
    cv2.ellipse(mask, (cx, cy), (ax, ay), angle, 0, 360, 1, -1)
    return mask.astype(bool)


def square(x, y, side) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), bool)
    mask[y : y + side, x : x + side] = True
    return mask


def rle_counts(mask: np.ndarray) -> list:
    """COCO's uncompressed RLE counts: column-major runs, starting with background."""
    flat = mask.ravel(order="F").astype(np.int8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    counts = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
    return [0] + counts if flat[0] else counts


def segmentation(mask: np.ndarray, encoding: str):
    if encoding == "polygon":
        return mask_to_polygons(mask)
    if encoding == "rle_list":
        return {"size": [SIZE, SIZE], "counts": rle_counts(mask)}
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [SIZE, SIZE], "counts": rle["counts"].decode("ascii")}


# image id -> [(category id, mask, encoding, iscrowd)]; shapes of one image do not touch
LAYOUT = {
    101: [
        (ELLIPSE, ellipse(20, 22, 12, 8, 30), "polygon", 0),
        (SQUARE, square(38, 30, 18), "polygon", 0),
    ],
    102: [
        (ELLIPSE, ellipse(40, 20, 14, 9, -20), "rle_list", 0),
        (SQUARE, square(6, 34, 22), "rle_string", 0),
    ],
    103: [
        (SQUARE, square(8, 8, 16), "polygon", 0),
        (ELLIPSE, ellipse(44, 44, 14, 12, 0), "rle_list", 1),
    ],
    104: [
        (ELLIPSE, ellipse(28, 42, 16, 10, 60), "rle_string", 0),
        (SQUARE, square(42, 6, 14), "polygon", 0),
    ],
}


def _annotation(ann_id, image_id, category, mask, encoding, iscrowd) -> dict:
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category,
        "segmentation": segmentation(mask, encoding),
        "bbox": [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1],
        "area": int(mask.sum()),
        "iscrowd": iscrowd,
    }


def make_coco_dataset(root: str) -> dict:
    """Write ``root/images/*.png`` and ``root/annotations.json``.

    Returns:
        {"json_file", "image_root", "data": the JSON dict, "masks": {annotation id: (H, W)
        bool}, "files": {image id: file name}}.
    """
    image_root = os.path.join(root, "images")
    os.makedirs(image_root, exist_ok=True)
    rng = np.random.default_rng(0)
    images, annotations, masks, files = [], [], {}, {}
    for image_id, shapes in LAYOUT.items():
        image = np.empty((SIZE, SIZE, 3), np.uint8)
        image[:] = (90, 160, 90)
        image = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
        for category, mask, encoding, iscrowd in shapes:
            image[mask] = COLORS[category]
            ann = _annotation(len(annotations) + 1, image_id, category, mask, encoding, iscrowd)
            annotations.append(ann)
            masks[ann["id"]] = mask
        files[image_id] = f"img_{image_id}.png"
        Image.fromarray(image).save(os.path.join(image_root, files[image_id]))
        images.append({"id": image_id, "file_name": files[image_id], "height": SIZE, "width": SIZE})
    data = {"images": images, "annotations": annotations, "categories": copy.deepcopy(CATEGORIES)}
    json_file = write_json(os.path.join(root, "annotations.json"), data)
    return {
        "json_file": json_file,
        "image_root": image_root,
        "data": data,
        "masks": masks,
        "files": files,
    }


def write_json(path: str, data) -> str:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
    return path
