"""The embedded default dataset "shapes": synthetic circles, squares and triangles.

Every image (S x S RGB, S = ``image_size``) holds 1-4 objects of random size, position,
rotation and colour (colour is *not* tied to the class) on a textured, noisy background
(random colour + smooth gradient + low-frequency noise + per-pixel Gaussian noise), so the
task is not thresholding. Later objects occlude earlier ones; the instance annotations are
the *visible* masks, and an instance with fewer than ``MIN_VISIBLE_AREA`` visible pixels is
dropped from them (its pixels keep their class in the semantic map). Placements that would
cut a hole into an earlier object's visible mask are redrawn, so every instance mask is
exactly representable by COCO polygons (works with INPUT.MASK_FORMAT "polygon" and
"bitmask"; ``COCO.annToMask`` reproduces the visible mask pixel for pixel).

Generation is deterministic: image ``i`` of split ``s`` depends only on (seed, s, i). Files,
under ``<root>/shapes`` (default parameters) or ``<root>/shapes_<tag>``::

    {split}/images/000000.png     RGB image
    {split}/sem_seg/000000.png    uint8 label map: 0 background, 1 circle, 2 square,
                                  3 triangle (255 = ignore; the generator writes none)
    {split}/.complete             written last: generator version + parameters
    annotations/instances_{split}.json   COCO instances (category ids 1..3, ids from 1)
    panoptic/{split}/...          panoptic ground truth derived from the files above on the
                                  first use of a panoptic view, with a marker and a lock of
                                  its own (:func:`generate_shapes_panoptic`)

Example::

    import seg_plugins  # registers shapes_{,sem_seg_,instance_,panoptic_}{train,val}
    from detectron2.data import DatasetCatalog, MetadataCatalog

    dicts = DatasetCatalog.get("shapes_val")  # generates datasets/shapes/val on first use
    MetadataCatalog.get("shapes_sem_seg_val").stuff_classes  # ['background', 'circle', ...]

Names: ``shapes_sem_seg_{train,val}`` (semantic labels, evaluator_type "sem_seg"),
``shapes_instance_{train,val}`` (COCO instances, "coco"), ``shapes_{train,val}`` (both) and
``shapes_panoptic_{train,val}`` (instances + COCO panoptic + "separated" semantic labels, for
Panoptic FPN), see :func:`register_shapes`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import time
import uuid
import zlib
from collections.abc import Iterator

import cv2
import numpy as np
import pycocotools.mask as mask_util
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from .coco_panoptic import convert_segments, panoptic_from_masks, separated_metadata
from .io import id2rgb

__all__ = [
    "generate_shapes",
    "generate_shapes_panoptic",
    "load_shapes",
    "load_shapes_panoptic",
    "register_shapes",
    "render_shapes_image",
]

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 1
STUFF_CLASSES = ["background", "circle", "square", "triangle"]
THING_CLASSES = STUFF_CLASSES[1:]
STUFF_COLORS = [[70, 70, 70], [220, 20, 60], [0, 130, 230], [250, 170, 30]]
IGNORE_LABEL = 255
MIN_VISIBLE_AREA = 20  # pixels; smaller visible instances are dropped from the annotations
_DEFAULTS = {"num_train": 1000, "num_val": 100, "image_size": 128, "seed": 0}
# Panoptic ground truth, derived from the files above (a version of its own: bumping it
# derives the panoptic files again, never the images). Things keep their instance category
# ids 1..3; the stuff class "background" is category 4.
PANOPTIC_VERSION = 1
BACKGROUND_CATEGORY_ID = 4
_RESERVED_FOLDERS = ("annotations", "panoptic")
_MAX_PLACEMENT_TRIES = 10


# --------------------------------------------------------------------------- rendering
def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Textured background, float32 of shape (S, S, 3), and its base colour (3,)."""
    base = rng.uniform(30.0, 225.0, 3)
    theta = rng.uniform(0.0, 2.0 * np.pi)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / size
    ramp = (xs * np.cos(theta) + ys * np.sin(theta))[..., None] - 0.5
    image = base + ramp * rng.uniform(-70.0, 70.0, 3)
    for cells, sigma in ((4, 25.0), (10, 10.0)):  # low- and mid-frequency noise
        grid = rng.normal(0.0, sigma, (cells, cells, 3)).astype(np.float32)
        image = image + cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
    return image.astype(np.float32), base


def _object_mask(rng: np.random.Generator, category: int, size: int) -> np.ndarray:
    """Filled mask (S, S) uint8 of one object. ``r`` is chosen so that all classes have the
    same area (pi r^2) for the same r: size alone says nothing about the class."""
    r = rng.uniform(10.0, 35.0) * size / 128.0
    center = rng.uniform(0.1 * size, 0.9 * size, 2)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    mask = np.zeros((size, size), np.uint8)
    shift = 4  # cv2 draws with 1/16 pixel precision
    if category == 1:  # circle
        c = tuple(int(v) for v in np.round(center * 16))
        cv2.circle(mask, c, round(r * 16), 1, -1, cv2.LINE_8, shift)
        return mask
    if category == 2:  # square (slightly rectangular), rotated
        side = r * np.sqrt(np.pi)
        aspect = np.sqrt(rng.uniform(0.8, 1.25))
        box = ((center[0], center[1]), (side * aspect, side / aspect), np.degrees(angle))
        corners = cv2.boxPoints(box)
    else:  # triangle, near-equilateral; circumradius of the equal-area equilateral one
        jitter = rng.uniform(-0.15, 0.15, 3)
        phis = angle + np.arange(3) * 2.0 * np.pi / 3.0 + jitter
        corners = center + 1.555 * r * np.stack([np.cos(phis), np.sin(phis)], axis=1)
    pts = np.round(np.asarray(corners) * 16).astype(np.int32)
    cv2.fillPoly(mask, [pts], 1, cv2.LINE_8, shift)
    return mask


def _has_hole(mask: np.ndarray) -> bool:
    """Whether a binary mask (H, W) encloses background pixels."""
    _, hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    return hierarchy is not None and bool((hierarchy[0, :, 3] != -1).any())


def _place_object(
    rng: np.random.Generator, owner: np.ndarray, index: int
) -> tuple[int, np.ndarray] | None:
    """Draw one object on top of ``owner`` (S, S) int8 (-1 = background, k = object k).
    Returns (category, mask) or None when every try would cut a hole into a visible mask."""
    size = owner.shape[0]
    for _ in range(_MAX_PLACEMENT_TRIES):
        category = int(rng.integers(1, 4))
        mask = _object_mask(rng, category, size)
        trial = np.where(mask > 0, np.int8(index), owner)
        if not any(_has_hole((trial == k).astype(np.uint8)) for k in range(index)):
            owner[...] = trial
            return category, mask
    return None


def _object_color(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    """A random RGB colour (3,), not too close to the background's base colour."""
    color = rng.uniform(0.0, 255.0, 3)
    for _ in range(20):
        if np.linalg.norm(color - background) >= 80.0:
            break
        color = rng.uniform(0.0, 255.0, 3)
    return color


def render_shapes_image(
    rng: np.random.Generator, size: int = 128
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, np.ndarray]]]:
    """Render one image.

    Returns:
        image: (S, S, 3) uint8 RGB.
        sem_seg: (S, S) uint8, the class of the top-most object (0 = background).
        instances: list of (category 1..3, visible mask (S, S) bool), in drawing order,
            without the instances whose visible area is below ``MIN_VISIBLE_AREA``.
    """
    image, base = _background(rng, size)
    owner = np.full((size, size), -1, np.int8)
    categories = []
    for _ in range(int(rng.integers(1, 5))):
        placed = _place_object(rng, owner, len(categories))
        if placed is None:
            continue
        categories.append(placed[0])
        image[placed[1] > 0] = _object_color(rng, base)
    image = cv2.GaussianBlur(image, (3, 3), 0.7)  # soft edges, as a camera would give
    illumination = cv2.resize(
        rng.uniform(0.85, 1.15, (3, 3)).astype(np.float32), (size, size), cv2.INTER_CUBIC
    )
    image = image * illumination[..., None] + rng.normal(0.0, rng.uniform(4.0, 12.0), image.shape)
    sem_seg = np.zeros((size, size), np.uint8)
    instances = []
    for k, category in enumerate(categories):
        visible = owner == k
        sem_seg[visible] = category
        if visible.sum() >= MIN_VISIBLE_AREA:
            instances.append((category, visible))
    return np.clip(np.round(image), 0, 255).astype(np.uint8), sem_seg, instances


# --------------------------------------------------------------------------- annotations
def mask_to_polygons(mask: np.ndarray) -> list[list[float]]:
    """COCO polygons (one per connected part) of a hole-free binary mask (H, W).

    The contour is traced on the mask upsampled 2x, so the polygon runs a quarter pixel
    inside each boundary pixel's edges: rasterising it (pycocotools, corner-origin pixels)
    gives back exactly the same pixels, and a one-pixel part still has 4 vertices.
    """
    big = cv2.resize(mask.astype(np.uint8), None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for contour in contours:
        points = (contour.reshape(-1, 2).astype(np.float64) + 0.5) / 2.0
        if len(points) >= 3:
            polygons.append([float(v) for v in points.ravel()])
    return polygons


def _coco_annotation(mask: np.ndarray, category: int, ann_id: int, image_id: int) -> dict:
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    bbox = [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1]
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category,
        "segmentation": mask_to_polygons(mask),
        "bbox": bbox,
        "area": int(mask.sum()),
        "iscrowd": 0,
    }


# --------------------------------------------------------------------------- generation
def _image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Per-image generator: depends on (seed, split, index) only, not on the order."""
    return np.random.default_rng([seed, zlib.crc32(split.encode("utf-8")), index])


def _write_split(tmp_dir: str, split: str, params: dict) -> dict:
    """Write images and label maps under ``tmp_dir``; return the COCO dict."""
    size = params["image_size"]
    for sub in ("images", "sem_seg"):
        os.makedirs(os.path.join(tmp_dir, sub))  # also creates tmp_dir
    images, annotations = [], []
    for index in range(params["num_images"]):
        image, sem_seg, instances = render_shapes_image(
            _image_rng(params["seed"], split, index), size
        )
        name = f"{index:06d}.png"
        cv2.imwrite(os.path.join(tmp_dir, "images", name), image[:, :, ::-1])  # RGB->BGR
        cv2.imwrite(os.path.join(tmp_dir, "sem_seg", name), sem_seg)
        image_id = index + 1  # COCO ids start at 1 (COCOeval treats a matched id 0 as none)
        images.append({"id": image_id, "file_name": name, "height": size, "width": size})
        for category, mask in instances:
            annotations.append(_coco_annotation(mask, category, len(annotations) + 1, image_id))
    categories = [
        {"id": i + 1, "name": name, "supercategory": "shape"}
        for i, name in enumerate(THING_CLASSES)
    ]
    info = {"description": f"seg_plugins synthetic shapes, {split}", "params": params}
    return {"info": info, "images": images, "annotations": annotations, "categories": categories}


def _read_marker(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _is_complete(dataset_dir: str, split: str, params: dict) -> bool:
    marker = os.path.join(dataset_dir, split, ".complete")
    json_file = os.path.join(dataset_dir, "annotations", f"instances_{split}.json")
    return _read_marker(marker) == params and os.path.isfile(json_file)


def _write_json(obj: dict, path: str) -> None:
    """Write atomically (temporary file + os.replace): readers never see half a file."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, separators=(",", ":"))
    os.replace(tmp, path)


def _replace_folder(folder: str, new: str, unique: str) -> None:
    """Put the complete folder ``new`` in the place of ``folder`` (an incomplete or stale
    one is moved aside, then removed): readers see the old folder or the new, never half."""
    if os.path.isdir(folder):
        old = os.path.join(os.path.dirname(folder), f".{os.path.basename(folder)}.old-{unique}")
        os.rename(folder, old)
        shutil.rmtree(old)
    os.rename(new, folder)


@contextlib.contextmanager
def _file_lock(path: str) -> Iterator[None]:
    """Exclusive inter-process lock (POSIX flock). Where fcntl is missing (Windows) this
    is a no-op: the temp-dir + rename still keeps every finished split whole."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _dataset_dir(root: str, tag: str) -> str:
    return os.path.join(root, f"shapes_{tag}" if tag else "shapes")


def _check_params(split: str, num_images: int, image_size: int, seed: int) -> None:
    if not split or os.sep in split or split.startswith("."):
        raise ValueError(f"split must be a plain folder name like 'train', got {split!r}")
    if split in _RESERVED_FOLDERS:
        raise ValueError(f"split {split!r} is a folder of the dataset itself; name it otherwise")
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32 (objects of 10-35 px at 128), got {image_size}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")


def _split_params(split: str, num_images: int, image_size: int, seed: int) -> dict:
    """What a split's ``.complete`` marker records."""
    return {
        "generator_version": GENERATOR_VERSION,
        "split": split,
        "num_images": int(num_images),
        "image_size": int(image_size),
        "seed": int(seed),
    }


def generate_shapes(
    root: str, split: str, num_images: int, image_size: int = 128, seed: int = 0, *, tag: str = ""
) -> str:
    """Generate one split of the shapes dataset unless its ``.complete`` marker matches.

    Args:
        root: the datasets folder (like ``$DETECTRON2_DATASETS``); files go to
            ``<root>/shapes`` (``tag=""``) or ``<root>/shapes_<tag>``.
        split: "train", "val", ...; also part of every image's random seed.
        num_images, image_size, seed: what to generate; a marker with other values (or an
            older generator version) makes the split be generated again.

    Returns:
        The dataset folder (``<root>/shapes[_<tag>]``).

    Safe when several processes call it at once: they serialise on a file lock, and the
    split is built in a temporary folder that is renamed into place with its marker.
    """
    _check_params(split, num_images, image_size, seed)
    dataset_dir = _dataset_dir(root, tag)
    params = _split_params(split, num_images, image_size, seed)
    if _is_complete(dataset_dir, split, params):
        return dataset_dir
    os.makedirs(os.path.join(dataset_dir, "annotations"), exist_ok=True)
    with _file_lock(os.path.join(dataset_dir, f".{split}.lock")):
        if _is_complete(dataset_dir, split, params):  # made by another process meanwhile
            return dataset_dir
        _generate_locked(dataset_dir, split, params)
    return dataset_dir


def _generate_locked(dataset_dir: str, split: str, params: dict) -> None:
    split_dir = os.path.join(dataset_dir, split)
    json_file = os.path.join(dataset_dir, "annotations", f"instances_{split}.json")
    logger.info(
        "Generating shapes split %r: %d images of %dx%d, seed %d, into %s",
        split,
        params["num_images"],
        params["image_size"],
        params["image_size"],
        params["seed"],
        split_dir,
    )
    start = time.perf_counter()
    with contextlib.suppress(FileNotFoundError):
        # An old split loses its marker first: a crash below then cannot leave a new json
        # beside an old split that still claims to be complete.
        os.remove(os.path.join(split_dir, ".complete"))
    # Not tempfile.mkdtemp: its mode 0700 would stay on the renamed folder.
    unique = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp_dir = os.path.join(dataset_dir, f".{split}.tmp-{unique}")
    try:
        _write_json(_write_split(tmp_dir, split, params), json_file)
        _write_json(params, os.path.join(tmp_dir, ".complete"))
        _replace_folder(split_dir, tmp_dir, unique)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    logger.info(
        "Generated shapes split %r in %.1f s (annotations: %s)",
        split,
        time.perf_counter() - start,
        json_file,
    )


# --------------------------------------------------------------------------- panoptic
def _panoptic_categories() -> list[dict]:
    """COCO panoptic categories: the instances' things (ids 1..3) and the background."""
    things = [
        {"id": i + 1, "name": name, "supercategory": "shape", "isthing": 1, "color": list(color)}
        for i, (name, color) in enumerate(zip(THING_CLASSES, STUFF_COLORS[1:]))
    ]
    background = {"id": BACKGROUND_CATEGORY_ID, "name": STUFF_CLASSES[0]}
    background.update(supercategory="background", isthing=0, color=list(STUFF_COLORS[0]))
    return [*things, background]


def _panoptic_files(split_dir: str, split: str) -> dict[str, str]:
    return {
        "split_dir": split_dir,
        "panoptic_root": os.path.join(split_dir, "pan_seg"),
        "sem_seg_root": os.path.join(split_dir, "sem_seg_stuff"),
        "panoptic_json": os.path.join(split_dir, f"panoptic_{split}.json"),
    }


def _panoptic_paths(dataset_dir: str, split: str) -> dict[str, str]:
    return _panoptic_files(os.path.join(dataset_dir, "panoptic", split), split)


def _instance_mask(segmentation: list, height: int, width: int) -> np.ndarray:
    rle = mask_util.merge(mask_util.frPyObjects(segmentation, height, width))
    return mask_util.decode(rle).astype(bool)


def _write_panoptic_split(tmp_dir: str, dataset_dir: str, split: str) -> dict:
    """Write the panoptic PNGs and the separated semantic maps of a generated split under
    ``tmp_dir``; return the COCO panoptic dict. Things are the instances (their visible
    masks), stuff the semantic map's background; thing pixels without an instance (dropped
    as smaller than MIN_VISIBLE_AREA) are VOID in the PNG and "things" (0) in the semantic
    map, which says what they are."""
    out = _panoptic_files(tmp_dir, split)
    for key in ("panoptic_root", "sem_seg_root"):
        os.makedirs(out[key])
    json_file = os.path.join(dataset_dir, "annotations", f"instances_{split}.json")
    with open(json_file, encoding="utf-8") as f:
        coco = json.load(f)
    by_image: dict[int, list] = {image["id"]: [] for image in coco["images"]}
    for ann in coco["annotations"]:
        by_image[ann["image_id"]].append(ann)
    # separated labels: background (0) -> 1, the thing classes -> 0, ignore stays ignore
    to_stuff = np.full(256, IGNORE_LABEL, np.uint8)
    to_stuff[0], to_stuff[1 : len(STUFF_CLASSES)] = 1, 0
    annotations = []
    for image in coco["images"]:
        name, h, w = image["file_name"], image["height"], image["width"]
        sem_seg = cv2.imread(
            os.path.join(dataset_dir, split, "sem_seg", name), cv2.IMREAD_UNCHANGED
        )
        things = [
            (ann["category_id"], _instance_mask(ann["segmentation"], h, w))
            for ann in by_image[image["id"]]
        ]
        ids, segments = panoptic_from_masks(things, [(BACKGROUND_CATEGORY_ID, sem_seg == 0)])
        cv2.imwrite(os.path.join(out["panoptic_root"], name), id2rgb(ids)[:, :, ::-1])
        cv2.imwrite(os.path.join(out["sem_seg_root"], name), to_stuff[sem_seg])
        annotations.append({"image_id": image["id"], "file_name": name, "segments_info": segments})
    info = {"description": f"seg_plugins synthetic shapes, {split}, panoptic"}
    return {
        "info": info,
        "images": coco["images"],
        "annotations": annotations,
        "categories": _panoptic_categories(),
    }


def _panoptic_marker(split: str, num_images: int, image_size: int, seed: int) -> dict:
    source = _split_params(split, num_images, image_size, seed)
    return {"panoptic_version": PANOPTIC_VERSION, "source": source}


def _panoptic_complete(paths: dict, marker: dict) -> bool:
    found = _read_marker(os.path.join(paths["split_dir"], ".complete"))
    return found == marker and os.path.isfile(paths["panoptic_json"])


def generate_shapes_panoptic(
    root: str, split: str, num_images: int, image_size: int = 128, seed: int = 0, *, tag: str = ""
) -> dict[str, str]:
    """Derive the panoptic ground truth of one split (generated first when needed) unless its
    own ``.complete`` marker matches; the split's images, label maps and instances are
    read, never rewritten.

    Files, under ``<root>/shapes[_<tag>]/panoptic/<split>/``: ``pan_seg/000000.png`` (COCO
    panoptic PNG, RGB, id = R + 256 G + 256^2 B, 0 = VOID), ``sem_seg_stuff/000000.png``
    (detectron2's "separated" labels: 0 things, 1 background, 255 ignore),
    ``panoptic_<split>.json`` (COCO panoptic) and ``.complete`` (the panoptic version and
    the source split's parameters), built in a temporary folder renamed into place, under a
    file lock of its own (``panoptic/.<split>.lock``).

    Returns:
        {"split_dir", "panoptic_root", "sem_seg_root", "panoptic_json"}: paths.
    """
    dataset_dir = generate_shapes(root, split, num_images, image_size, seed, tag=tag)
    paths = _panoptic_paths(dataset_dir, split)
    marker = _panoptic_marker(split, num_images, image_size, seed)
    if _panoptic_complete(paths, marker):
        return paths
    panoptic_dir = os.path.dirname(paths["split_dir"])
    os.makedirs(panoptic_dir, exist_ok=True)
    with _file_lock(os.path.join(panoptic_dir, f".{split}.lock")):
        if not _panoptic_complete(paths, marker):  # or made by another process meanwhile
            _derive_panoptic_locked(dataset_dir, split, marker, paths["split_dir"])
    return paths


def _derive_panoptic_locked(dataset_dir: str, split: str, marker: dict, split_dir: str) -> None:
    start = time.perf_counter()
    unique = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp_dir = os.path.join(os.path.dirname(split_dir), f".{split}.tmp-{unique}")
    try:
        panoptic = _write_panoptic_split(tmp_dir, dataset_dir, split)
        _write_json(panoptic, _panoptic_files(tmp_dir, split)["panoptic_json"])
        _write_json(marker, os.path.join(tmp_dir, ".complete"))
        _replace_folder(split_dir, tmp_dir, unique)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    logger.info(
        "Derived the panoptic ground truth of shapes split %r in %.1f s (%s)",
        split,
        time.perf_counter() - start,
        split_dir,
    )


# --------------------------------------------------------------------------- registration
def load_shapes(
    root: str, split: str, num_images: int, image_size: int, seed: int, tag: str, name: str
) -> list[dict]:
    """Generate the split if needed; return detectron2 dataset dicts (instances with
    contiguous category ids 0..2, polygons, XYWH_ABS boxes, plus ``sem_seg_file_name``)."""
    dataset_dir = generate_shapes(root, split, num_images, image_size, seed, tag=tag)
    image_root = os.path.join(dataset_dir, split, "images")
    sem_seg_root = os.path.join(dataset_dir, split, "sem_seg")
    json_file = os.path.join(dataset_dir, "annotations", f"instances_{split}.json")
    dicts = load_coco_json(json_file, image_root, dataset_name=name)
    for record in dicts:
        stem = os.path.basename(record["file_name"])
        record["sem_seg_file_name"] = os.path.join(sem_seg_root, stem)
    return dicts


def load_shapes_panoptic(
    root: str, split: str, num_images: int, image_size: int, seed: int, tag: str, name: str
) -> list[dict]:
    """Generate the split and its panoptic ground truth if needed; return the records of
    :func:`load_shapes` with ``sem_seg_file_name`` the separated labels (0 things, 1
    background), plus ``pan_seg_file_name`` and ``segments_info`` (contiguous
    ``category_id`` + ``isthing``, as detectron2's ``load_coco_panoptic_json``)."""
    paths = generate_shapes_panoptic(root, split, num_images, image_size, seed, tag=tag)
    dicts = load_shapes(root, split, num_images, image_size, seed, tag, name)
    with open(paths["panoptic_json"], encoding="utf-8") as f:
        by_image = {ann["image_id"]: ann for ann in json.load(f)["annotations"]}
    meta = separated_metadata(_panoptic_categories())
    maps = meta["thing_dataset_id_to_contiguous_id"], meta["stuff_dataset_id_to_contiguous_id"]
    for record in dicts:
        ann = by_image[record["image_id"]]
        record["sem_seg_file_name"] = os.path.join(paths["sem_seg_root"], ann["file_name"])
        record["pan_seg_file_name"] = os.path.join(paths["panoptic_root"], ann["file_name"])
        record["segments_info"] = convert_segments(ann["segments_info"], *maps)
    return dicts


def _panoptic_metadata(dataset_dir: str, split: str, params: dict) -> dict[str, object]:
    """detectron2's "separated" metadata (stuff_classes ["things", "background"]) and paths."""
    paths = _panoptic_paths(dataset_dir, split)
    return {
        **separated_metadata(_panoptic_categories()),
        "ignore_label": IGNORE_LABEL,
        "json_file": os.path.join(dataset_dir, "annotations", f"instances_{split}.json"),
        "image_root": os.path.join(dataset_dir, split, "images"),
        "sem_seg_root": paths["sem_seg_root"],
        "panoptic_root": paths["panoptic_root"],
        "panoptic_json": paths["panoptic_json"],
        "shapes_params": params,
    }


def _metadata(dataset_dir: str, split: str, params: dict) -> dict[str, object]:
    return {
        "stuff_classes": list(STUFF_CLASSES),
        "stuff_colors": [list(c) for c in STUFF_COLORS],
        "thing_classes": list(THING_CLASSES),
        "thing_colors": [list(c) for c in STUFF_COLORS[1:]],
        "thing_dataset_id_to_contiguous_id": {i + 1: i for i in range(len(THING_CLASSES))},
        "ignore_label": IGNORE_LABEL,
        "json_file": os.path.join(dataset_dir, "annotations", f"instances_{split}.json"),
        "image_root": os.path.join(dataset_dir, split, "images"),
        "sem_seg_root": os.path.join(dataset_dir, split, "sem_seg"),
        "shapes_params": params,  # what register_shapes compares on re-registration
    }


def _default_root() -> str:
    # Same convention as detectron2's builtin datasets: relative to the working directory.
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


# The views registered per split, as detectron2 registers Cityscapes: one name per task,
# each with one evaluator_type (a string), because detectron2's stock tools/train_net.py
# compares evaluator_type with strings; plus the combined name (both annotations, a list
# of evaluator types) for models that learn both, and the panoptic one (the derived panoptic
# ground truth, semantic labels in Panoptic FPN's "separated" convention). view -> (name
# infix, evaluator_type, record key dropped from that view).
_VIEWS = {
    "all": ("", ["sem_seg", "coco"], None),
    "sem_seg": ("_sem_seg", "sem_seg", "annotations"),
    "instance": ("_instance", "coco", "sem_seg_file_name"),
    "panoptic": ("_panoptic", ["sem_seg", "coco", "coco_panoptic_seg"], None),
}


def _load_view(drop: str | None, *args) -> list[dict]:
    dicts = load_shapes(*args)
    if drop is not None:
        for record in dicts:
            record.pop(drop, None)
    return dicts


def register_shapes(
    name_prefix: str = "shapes",
    root: str | None = None,
    num_train: int = 1000,
    num_val: int = 100,
    image_size: int = 128,
    seed: int = 0,
) -> list[str]:
    """Register the embedded dataset under four views of each split; generates nothing.

    - ``{name_prefix}_sem_seg_{split}``: semantic labels only, ``evaluator_type`` "sem_seg";
    - ``{name_prefix}_instance_{split}``: instance annotations only, "coco";
    - ``{name_prefix}_{split}``: both, ``evaluator_type`` ["sem_seg", "coco"] (seg_plugins'
      Trainer evaluates what the model predicts);
    - ``{name_prefix}_panoptic_{split}``: instances, panoptic ground truth
      (``pan_seg_file_name``, ``segments_info``) and semantic labels in detectron2's
      "separated" convention (0 things, 1 background; ``stuff_classes`` ["things",
      "background"]), ``evaluator_type`` ["sem_seg", "coco", "coco_panoptic_seg"]: Panoptic
      FPN (:func:`generate_shapes_panoptic`).

    All read the same files, generated on the first ``DatasetCatalog.get`` (the panoptic
    files, derived from them, on the first get of a panoptic view). Default
    parameters use ``<root>/shapes``; others ``<root>/shapes_<size>px_<train>-<val>_seed<seed>``
    so that two configurations never overwrite each other. ``root`` defaults to
    ``$DETECTRON2_DATASETS`` or ``datasets``. Registering a name again with the same
    parameters does nothing; with other parameters it raises ValueError.

    Returns:
        The registered dataset names: ``[{p}_train, {p}_val, {p}_sem_seg_train,
        {p}_sem_seg_val, {p}_instance_train, {p}_instance_val, {p}_panoptic_train,
        {p}_panoptic_val]``.
    """
    root = _default_root() if root is None else os.path.expanduser(str(root))
    args = {"num_train": num_train, "num_val": num_val, "image_size": image_size, "seed": seed}
    tag = "" if args == _DEFAULTS else f"{image_size}px_{num_train}-{num_val}_seed{seed}"
    names = []
    for view, (infix, evaluator_type, drop) in _VIEWS.items():
        for split, num_images in (("train", num_train), ("val", num_val)):
            _check_params(split, num_images, image_size, seed)
            name = f"{name_prefix}{infix}_{split}"
            params = {
                "root": root,
                "tag": tag,
                "split": split,
                "num_images": num_images,
                "image_size": image_size,
                "seed": seed,
            }
            if _already_registered(name, params):
                names.append(name)
                continue
            load_args = (root, split, num_images, image_size, seed, tag, name)
            if view == "panoptic":
                loader = functools.partial(load_shapes_panoptic, *load_args)
                metadata = _panoptic_metadata(_dataset_dir(root, tag), split, params)
            else:
                loader = functools.partial(_load_view, drop, *load_args)
                metadata = _metadata(_dataset_dir(root, tag), split, params)
            DatasetCatalog.register(name, loader)
            metadata["evaluator_type"] = evaluator_type
            MetadataCatalog.get(name).set(**metadata)
            names.append(name)
    return names


def _already_registered(name: str, params: dict) -> bool:
    """True if ``name`` is registered with these params; raise if with others."""
    if name not in DatasetCatalog.list():
        if name in MetadataCatalog.list():  # stale metadata of a removed dataset
            MetadataCatalog.remove(name)
        return False
    old = MetadataCatalog.get(name).get("shapes_params")
    if old == params:
        return True
    raise ValueError(
        f"dataset {name!r} is already registered (shapes parameters {old}), so it cannot be "
        f"registered with {params}. Pass another name_prefix to register_shapes, or call "
        f"DatasetCatalog.remove({name!r}) and MetadataCatalog.remove({name!r}) first."
    )
