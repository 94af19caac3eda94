"""``seg-plugins-visualize``: a dataset drawn as annotated, or as the training loader hands
it to the model, one PNG per image with its panels and a legend (the command line is parsed
by :mod:`seg_plugins_cli.visualize`, whose ``--help`` documents the pictures).
"""

import dataclasses
import logging
import math
import os
import time
from types import SimpleNamespace

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog, detection_utils
from detectron2.data.catalog import Metadata
from detectron2.utils.logger import setup_logger
from detectron2.utils.visualizer import ColorMode, Visualizer
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from seg_plugins_cli.common import closest, fail

from ..data import read_label
from ..data.labels import apply_label_transform
from ..engine import Trainer
from ..engine.cli import ConfigError, setup_cfg
from ..evaluation.plots import DPI, class_colors, default_palette, save_figure
from ..evaluation.visualizer import (
    dataset_classes,
    display_scale,
    image_for_display,
    read_display_image,
    render_sem_seg,
)
from ..utils.progress import progress_bar

logger = logging.getLogger("seg_plugins.visualize_data")

IGNORE_COLOR = (255, 255, 255)
OUT_OF_RANGE_COLOR = (255, 0, 255)
# Layout of a PNG, in pixels (at DPI): title, panel titles, panels, legend rows.
MARGIN, GAP, TITLE_H, PANEL_TITLE_H, LEGEND_ROW_H, MIN_WIDTH = 8, 8, 22, 18, 20, 360


# ----------------------------------------------------------------------------- classes
@dataclasses.dataclass
class Classes:
    """Names and (K, 3) uint8 colours of the semantic (stuff) and instance (thing) classes."""

    stuff_names: list
    stuff_colors: np.ndarray
    thing_names: list
    thing_colors: np.ndarray
    ignore_label: int

    @classmethod
    def from_metadata(cls, cfg, dataset_name: str) -> "Classes":
        meta = MetadataCatalog.get(dataset_name)
        k = len(meta.get("stuff_classes", None) or []) or cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
        stuff_names, stuff_colors = dataset_classes(dataset_name, k)  # 1 channel = binary
        thing_names = [str(n) for n in meta.get("thing_classes", None) or []]
        thing_colors = class_colors(len(thing_names), meta.get("thing_colors", None))
        ignore = meta.get("ignore_label", None)
        ignore = cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE if ignore is None else ignore
        return cls(stuff_names, stuff_colors, thing_names, thing_colors, int(ignore))

    def thing(self, category: int) -> tuple:
        """(name, RGB colour) of an instance class; an id without a name gets its number."""
        if 0 <= category < len(self.thing_names):
            return self.thing_names[category], tuple(self.thing_colors[category].tolist())
        color = default_palette(256)[(category + 1) % 256]
        return f"class {category}", tuple(color.tolist())


# ----------------------------------------------------------------------------- panels
def display_label(label: np.ndarray, num_classes: int, ignore_label: int) -> np.ndarray:
    """``label`` (H, W) for drawing: classes kept, the ignore label -> K, any other value
    (out of range) -> K + 1."""
    label = np.asarray(label).astype(np.int64)
    out = np.where((label >= 0) & (label < num_classes), label, num_classes + 1)
    out[label == ignore_label] = num_classes
    return out


def sem_seg_legend(label: np.ndarray, classes: Classes) -> list:
    """[(name, RGB)] of what ``label`` (H, W) holds: its classes in index order, then
    "ignore (<value>)" and "out of range (<values>)" when present."""
    k = len(classes.stuff_names)
    values = np.unique(label)
    entries = [
        (classes.stuff_names[v], tuple(classes.stuff_colors[v].tolist()))
        for v in values
        if 0 <= v < k
    ]
    if (values == classes.ignore_label).any():
        entries.append((f"ignore ({classes.ignore_label})", IGNORE_COLOR))
    other = [int(v) for v in values if not (0 <= v < k or v == classes.ignore_label)]
    if other:
        shown = ", ".join(map(str, other[:5])) + (", ..." if len(other) > 5 else "")
        entries.append((f"out of range ({shown})", OUT_OF_RANGE_COLOR))
    return entries


def sem_seg_panel(image_rgb: np.ndarray, label: np.ndarray, classes: Classes, scale: float):
    """(panel, legend entries): the label map drawn over the image by detectron2's
    ``Visualizer.draw_sem_seg`` (class names on the image), ignore and out-of-range pixels
    in their own colours."""
    if label.shape != image_rgb.shape[:2]:
        raise ValueError(
            f"label map of shape {label.shape} does not match its image {image_rgb.shape[:2]}"
        )
    k = len(classes.stuff_names)
    names = [*classes.stuff_names, "ignore", "out of range"]
    colors = np.vstack([classes.stuff_colors, [IGNORE_COLOR, OUT_OF_RANGE_COLOR]])
    drawn = display_label(label, k, classes.ignore_label)
    panel = render_sem_seg(image_rgb, drawn, names, colors.astype(np.uint8), scale=scale)
    return panel, sem_seg_legend(label, classes)


def _thing_metadata(classes: Classes, categories) -> Metadata:
    top = max([len(classes.thing_names) - 1, *categories], default=-1)
    things = [classes.thing(c) for c in range(top + 1)]
    return Metadata(
        thing_classes=[name for name, _ in things], thing_colors=[list(c) for _, c in things]
    )


def record_instances_panel(image_rgb: np.ndarray, record: dict, classes: Classes, scale: float):
    """(panel, legend entries): a record's ``annotations`` by ``Visualizer.draw_dataset_dict``
    (class colours, jittered per instance; crowd regions marked "crowd")."""
    annotations = record.get("annotations") or []
    categories = sorted({int(a["category_id"]) for a in annotations})
    meta = _thing_metadata(classes, categories)
    vis = Visualizer(image_rgb, meta, scale=scale, instance_mode=ColorMode.SEGMENTATION)
    # Only the instances: the semantic labels have their own panel.
    drawn = {"annotations": annotations} if annotations else {}
    panel = vis.draw_dataset_dict(drawn).get_image()
    return panel, [classes.thing(c) for c in categories]


def loader_instances_panel(image_rgb: np.ndarray, instances, classes: Classes, scale: float):
    """(panel, legend entries): the ``instances`` of a loader item (``gt_boxes``,
    ``gt_classes``, ``gt_masks`` when present) by ``Visualizer.overlay_instances``."""
    categories = [int(c) for c in instances.gt_classes.tolist()]
    things = [classes.thing(c) for c in categories]
    vis = Visualizer(image_rgb, _thing_metadata(classes, categories), scale=scale)
    vis.overlay_instances(
        boxes=instances.gt_boxes.tensor.numpy() if instances.has("gt_boxes") else None,
        masks=instances.gt_masks if instances.has("gt_masks") else None,
        labels=[name for name, _ in things],
        assigned_colors=[tuple(v / 255 for v in color) for _, color in things],
    )
    return vis.get_output().get_image(), [classes.thing(c) for c in sorted(set(categories))]


def loader_image_rgb(image, image_format: str) -> np.ndarray:
    """A loader ``image`` (C, H, W) tensor in ``image_format`` as (H, W, 3) uint8 RGB."""
    array = image.detach().cpu().numpy().transpose(1, 2, 0)
    if array.shape[2] != 3:
        array = array[:, :, :1]  # grey: the first channel
    elif image_format == "BGR":
        array = array[:, :, ::-1]
    elif image_format == "YUV-BT.601":
        array = detection_utils.convert_image_to_rgb(array, image_format)
    if array.dtype != np.uint8:
        values = array.astype(np.float32)
        finite = values[np.isfinite(values)]
        if finite.size and finite.min() >= 0 and finite.max() <= 255:
            # already in display units (e.g. INTENSITY_NORM "window" / "percentile")
            array = np.round(np.nan_to_num(values)).astype(np.uint8)
    return image_for_display(array)  # non-uint8: 1st..99th percentile stretched


# ----------------------------------------------------------------------------- figure
def legend_columns(entries: list, width: int) -> int:
    longest = max((len(name) for name, _ in entries), default=1)
    return max(1, min(len(entries), (width - 2 * MARGIN) // (34 + 7 * longest)))


def canvas_size(panel_height: int, panel_width: int, num_panels: int, entries: list) -> tuple:
    """(height, width) in pixels of the PNG for ``num_panels`` panels of that size and the
    legend ``entries``."""
    width = max(2 * MARGIN + num_panels * panel_width + (num_panels - 1) * GAP, MIN_WIDTH)
    rows = math.ceil(len(entries) / legend_columns(entries, width)) if entries else 0
    height = TITLE_H + PANEL_TITLE_H + panel_height + rows * LEGEND_ROW_H + MARGIN
    return height, width


def compose(panels: list, entries: list, title: str) -> Figure:
    """Panels [(title, (h, W, 3) uint8)] of one size side by side, pixel for pixel, with
    the title above and a legend of ``entries`` [(name, RGB)] below."""
    ph, pw = panels[0][1].shape[:2]
    height, width = canvas_size(ph, pw, len(panels), entries)
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    left = (width - len(panels) * pw - (len(panels) - 1) * GAP) // 2
    top = TITLE_H + PANEL_TITLE_H
    fig.text(0.5, 1 - 4 / height, title, ha="center", va="top", fontsize=9)
    for i, (name, array) in enumerate(panels):
        x = left + i * (pw + GAP)
        fig.figimage(array, xo=x, yo=height - top - ph, origin="upper")
        label_y = 1 - (TITLE_H + 2) / height
        fig.text((x + pw / 2) / width, label_y, name, ha="center", va="top", fontsize=8)
    if entries:
        handles = [
            Patch(facecolor=np.asarray(c) / 255, edgecolor="black", label=n) for n, c in entries
        ]
        fig.legend(
            handles=handles,
            loc="upper center",
            bbox_to_anchor=(0.5, 1 - (top + ph + 2) / height),
            ncol=legend_columns(entries, width),
            fontsize=8,
            frameon=False,
            handlelength=1.2,
            columnspacing=1.0,
            borderaxespad=0.0,
        )
    return fig


def _unique(entries: list) -> list:
    return list(dict.fromkeys(entries))


def render(sample: dict, classes: Classes, scale: float | None) -> Figure:
    """The figure of one sample: {"title", "image" (H, W, 3) uint8 RGB, and any of
    "sem_seg" (H, W), "record" (with annotations), "instances"}."""
    image = sample["image"]
    scale = display_scale(*image.shape[:2]) if scale is None else scale
    panels = [("image", Visualizer(image, scale=scale).get_output().get_image())]
    entries = []
    if sample.get("sem_seg") is not None:
        panel, found = sem_seg_panel(image, sample["sem_seg"], classes, scale)
        panels.append(("semantic labels", panel))
        entries += found
    if sample.get("record") is not None:
        panel, found = record_instances_panel(image, sample["record"], classes, scale)
        panels.append(("instances", panel))
        entries += found
    if sample.get("instances") is not None:
        panel, found = loader_instances_panel(image, sample["instances"], classes, scale)
        panels.append(("instances", panel))
        entries += found
    return compose(panels, _unique(entries), sample["title"])


# ----------------------------------------------------------------------------- samples
def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def annotation_samples(records: list, num_images: int):
    """Samples of the first ``num_images`` records, as stored."""
    for record in records[:num_images]:
        image = read_display_image(record["file_name"])
        sample = {"image": image, "stem": _stem(record["file_name"])}
        h, w = image.shape[:2]
        sample["title"] = f"{os.path.basename(record['file_name'])}  ({h}x{w}, as annotated)"
        if record.get("sem_seg_file_name"):
            label = read_label(record["sem_seg_file_name"])
            label = apply_label_transform(label, record.get("sem_seg_label_transform"))
            if label.shape != (h, w):
                raise ValueError(
                    f"label map {record['sem_seg_file_name']!r} is {label.shape[0]}x"
                    f"{label.shape[1]} but its image {record['file_name']!r} is {h}x{w}"
                )
            sample["sem_seg"] = label
        if "annotations" in record:
            sample["record"] = record
        yield sample


def loader_samples(cfg, num_images: int):
    """Samples of the first ``num_images`` images of the training loader."""
    loader = iter(Trainer.build_train_loader(cfg))
    count = 0
    for batch_index in range(num_images):  # at least one image per batch
        for j, item in enumerate(next(loader)):
            image = loader_image_rgb(item["image"], cfg.INPUT.FORMAT)
            h, w = image.shape[:2]
            name = os.path.basename(item.get("file_name", "?"))
            sample = {
                "image": image,
                "stem": _stem(name) + "_loader",
                "title": f"{name}  ({h}x{w} as the model gets it; batch {batch_index}, item {j})",
            }
            if "sem_seg" in item:
                sample["sem_seg"] = item["sem_seg"].numpy()
            if "instances" in item:
                sample["instances"] = item["instances"]
            yield sample
            count += 1
            if count == num_images:
                return


# ----------------------------------------------------------------------------- run
def setup(args):
    """(cfg, dataset name); raises ConfigError on command mistakes."""
    opts = list(args.opts)
    if args.dataset and args.source == "dataloader":
        opts += ["DATASETS.TRAIN", repr((args.dataset,))]
    cfg = setup_cfg(SimpleNamespace(config_file=args.config_file, opts=opts, num_gpus=1))
    name = args.dataset or (cfg.DATASETS.TRAIN[0] if cfg.DATASETS.TRAIN else None)
    if name is None:
        raise ConfigError("the config has no DATASETS.TRAIN; pass --dataset NAME")
    registered = DatasetCatalog.list()
    if name not in registered:
        raise ConfigError(
            f"--dataset: dataset '{name}' is not registered{closest(name, registered)}; "
            "register it in DatasetCatalog (see datasets/README.md)"
        )
    return cfg, name


def run(args) -> int:
    """Draw as ``args`` (:func:`seg_plugins_cli.visualize.parse_args`) say; exit status."""
    setup_logger(name="seg_plugins")
    try:
        cfg, name = setup(args)
    except ConfigError as e:
        return fail(str(e))
    classes = Classes.from_metadata(cfg, name)
    if args.source == "annotation":
        samples = annotation_samples(DatasetCatalog.get(name), args.num_images)
    else:
        samples = loader_samples(cfg, args.num_images)
    start, written = time.perf_counter(), 0
    # Log lines go through tqdm while the bar runs, so the two never interleave.
    with progress_bar(total=args.num_images, unit="image") as progress:
        try:
            for sample in samples:
                path = os.path.join(args.output, f"{written:04d}_{sample['stem']}.png")
                save_figure(render(sample, classes, args.scale), path)
                written += 1
                progress.update()
                logger.debug("[%d/%d] %s", written, args.num_images, path)
        except (OSError, ValueError) as e:  # an unreadable or inconsistent file; both name it
            progress.close()
            return fail(str(e), status=1)
    if written < args.num_images:
        logger.warning("dataset '%s' has only %d records", name, written)
    logger.info(
        "%s (%s): %d PNGs in %s, %.1f s",
        name,
        args.source,
        written,
        args.output,
        time.perf_counter() - start,
    )
    return 0
