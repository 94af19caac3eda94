"""A tiny Cityscapes-format data set for tests, made the way Cityscapes made its own.

Polygons are written to ``*_gtFine_polygons.json`` and rasterised by cityscapesscripts' own
converters (json2labelImg / json2instanceImg, the tools behind the released label PNGs);
``*_gtFine_labelTrainIds.png`` comes from ``createTrainIdLabelImgs``, the script detectron2's
loader tells users to run. The layout is the one detectron2 and cityscapesscripts expect::

    root/leftImg8bit/<split>/<city>/<city>_<seq>_000019_leftImg8bit.png        RGB
    root/gtFine/<split>/<city>/<city>_<seq>_000019_gtFine_{polygons.json, labelIds.png,
        labelTrainIds.png, instanceIds.png, color.png}

Each H x W image (default 64 x 128) has sky, building, vegetation, sidewalk, road, a pole and
a traffic sign; void regions (unlabeled = id 0 between the buildings, "static" id 4, "ego
vehicle" id 1 along the bottom, a "license plate" polygon with id -1 that is never drawn);
two or three cars and one or two persons (instance ids 26000+k and 24000+k); the first image
has a "cargroup" crowd region (instance id 26, below 1000). Classes such as bus, train and
truck never occur, so they are absent from the ground truth.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager

import numpy as np
from cityscapesscripts.helpers.annotation import Annotation
from cityscapesscripts.helpers.labels import name2label
from cityscapesscripts.preparation import createTrainIdLabelImgs
from cityscapesscripts.preparation.json2instanceImg import createInstanceImage
from cityscapesscripts.preparation.json2labelImg import json2labelImg
from PIL import Image

CITIES = ("frankfurt", "lindau")


def gt_file(image_file: str, kind: str) -> str:
    """The ``*_gtFine_<kind>.png`` ("labelIds", "instanceIds", ...) of a leftImg8bit image."""
    city_dir, name = os.path.split(image_file)
    split_dir, city = os.path.split(city_dir)
    images_dir, split = os.path.split(split_dir)
    stem = name[: -len("leftImg8bit.png")]
    root = os.path.dirname(images_dir)
    return os.path.join(root, "gtFine", split, city, f"{stem}gtFine_{kind}.png")


def _box(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def _scene(rng: np.random.Generator, h: int, w: int, first: bool) -> list:
    """Cityscapes polygon objects, drawn in list order (later ones cover earlier ones)."""
    objects = [
        ("sky", _box(0, 0, w - 1, h // 4)),
        ("building", _box(0, h // 8, w // 2 - 6, h // 2)),  # the gap stays "unlabeled" (0)
        ("building", _box(w // 2 + 6, h // 8, w - 1, h // 2)),
        ("vegetation", _box(int(rng.integers(4, w // 3)), h // 4, w // 2 - 8, h // 2)),
        ("sidewalk", _box(0, h // 2, w - 1, h // 2 + 5)),
        ("road", [[0, h // 2 + 5], [w - 1, h // 2 + 5], [w - 1, h - 1], [0, h - 1]]),
        ("pole", _box(w - 20, h // 8, w - 19, h // 2)),
        ("traffic sign", _box(w - 23, h // 8, w - 16, h // 8 + 5)),
        ("static", _box(2, h // 2 - 6, 9, h // 2 + 2)),
    ]
    if first:
        objects.append(("cargroup", _box(w - 30, h // 2 + 2, w - 2, h // 2 + 14)))
    for _ in range(int(rng.integers(2, 4))):
        x, y = int(rng.integers(0, w - 28)), int(rng.integers(h // 2, h - 22))
        car = [[x, y + 4], [x + 6, y], [x + 20, y], [x + 26, y + 4], [x + 26, y + 14],
               [x, y + 14]]
        objects.append(("car", car))
        objects.append(("license plate", _box(x + 10, y + 10, x + 16, y + 12)))
    for _ in range(int(rng.integers(1, 3))):
        x, y = int(rng.integers(10, w - 10)), int(rng.integers(h // 2 - 12, h // 2 + 10))
        objects.append(("person", _box(x, y, x + 6, y + 18)))
    objects.append(("ego vehicle", _box(0, h - 5, w - 1, h - 1)))
    return [{"label": label, "polygon": poly} for label, poly in objects]


def _instance_png(gt: str) -> None:
    """json2instanceImg's drawing, saved as a 16-bit PNG like the released files: its own
    ``save`` of the 32-bit "I" image fails on Pillow >= 13 ("cannot write mode I as PNG")."""
    annotation = Annotation()
    annotation.fromJsonFile(gt + "polygons.json")
    ids = np.asarray(createInstanceImage(annotation, "ids"))
    assert ids.max() < 2**16, ids.max()
    Image.fromarray(ids.astype(np.uint16)).save(gt + "instanceIds.png")


@contextmanager
def _env(name: str, value: str):
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            del os.environ[name]
        else:
            os.environ[name] = old


def make_cityscapes(
    root, split: str = "val", *, per_city: int = 2, height: int = 64, width: int = 128,
    seed: int = 0,
) -> tuple[str, str]:
    """Write the data set under ``root``; returns (image_dir, gt_dir) of the split, the two
    folders detectron2's ``load_cityscapes_*`` functions take."""
    root = str(root)
    rng = np.random.default_rng(seed)
    image_dir = os.path.join(root, "leftImg8bit", split)
    gt_dir = os.path.join(root, "gtFine", split)
    for c, city in enumerate(CITIES):
        os.makedirs(os.path.join(image_dir, city), exist_ok=True)
        os.makedirs(os.path.join(gt_dir, city), exist_ok=True)
        for i in range(per_city):
            stem = f"{city}_{i:06d}_000019"
            gt = os.path.join(gt_dir, city, f"{stem}_gtFine_")
            polygons = {"imgHeight": height, "imgWidth": width,
                        "objects": _scene(rng, height, width, first=c == 0 and i == 0)}
            with open(gt + "polygons.json", "w") as f:
                json.dump(polygons, f)
            json2labelImg(gt + "polygons.json", gt + "labelIds.png", "ids")
            json2labelImg(gt + "polygons.json", gt + "color.png", "color")
            _instance_png(gt)
            # The photo: each class' Cityscapes colour plus noise.
            ids = np.asarray(Image.open(gt + "labelIds.png"))
            palette = np.zeros((256, 3), np.int16)
            for label in name2label.values():
                if label.id >= 0:
                    palette[label.id] = label.color
            photo = palette[ids] + rng.integers(-20, 21, (height, width, 3))
            Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8)).save(
                os.path.join(image_dir, city, f"{stem}_leftImg8bit.png")
            )
    with _env("CITYSCAPES_DATASET", root):
        createTrainIdLabelImgs.main()  # *_gtFine_labelTrainIds.png for every polygons.json
    return image_dir, gt_dir
