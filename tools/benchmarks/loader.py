"""Benchmark: does the training data loader keep up with the training step?

    python tools/benchmark_loader.py --output docs/benchmarks_loader.md   # ~2 min, 2-core CPU
    python tools/benchmark_loader.py --tiny --output /tmp/loader.md       # seconds: a check

For each pipeline, in one run: the images/s that ``Trainer.build_train_loader(cfg)`` delivers
with DATALOADER.NUM_WORKERS 2 (the main process only takes batches: the workers' rate), then
the images/s of the training step (forward + backward + optimizer step) on one batch of that
loader, built beforehand and reused (no loader in the loop). The ratio loader / step > 1 means
the loader is not the bottleneck. The two are measured one after the other, never at once:
on a 2-core machine they would compete for the same cores (in real training they do).

Pipelines: (a) the embedded ``shapes`` (128x128) with configs/shapes/unet_shapes.yaml and
configs/shapes/deeplabv3_R18_shapes.yaml, 8 images per batch; (b) Cityscapes-sized:
synthetic 1024x2048 RGB PNGs and label PNGs (19 classes, ~8% ignored) written to a temporary
folder, registered with ``register_sem_seg_folder``, with the augmentation of
configs/cityscapes/*.yaml (random scale 0.5-2.0, 512x1024 crop with a 0.75 category-area
limit, horizontal flip), 2 images per batch (the per-GPU batch of mmsegmentation's 4x2
recipe); its step is the DeepLabV3-R18 of the shapes config (half-width ResNet-18, output
stride 8) with 19 classes on those 512x1024 crops.

Medians over --repeats timed windows after a warm-up (worker start-up, first batches; the
loader is built once per pipeline). ``--tiny``: 32x32 shapes, 64x128 "Cityscapes" images
cropped to 32x64, tiny model widths, 1 repeat; checks that the script runs, its numbers
mean nothing.
"""

import argparse
import dataclasses
import os
import shutil
import statistics
import sys
import tempfile
import time

import seg_plugins  # noqa: F401  (first: repairs detectron2 where needed)

# isort: split
import cv2
import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model

from seg_plugins.data import register_sem_seg_folder, register_shapes
from seg_plugins.engine import Trainer

from . import common

NUM_WORKERS = 2
CITYSCAPES_CLASSES = 19
CONFIGS = {
    "unet": "configs/shapes/unet_shapes.yaml",
    "deeplab": "configs/shapes/deeplabv3_R18_shapes.yaml",
    "cityscapes": "configs/cityscapes/deeplabv3_R101_os8_cityscapes_80k.yaml",
}
_DEEPLAB_WIDTHS = ("RESNETS.STEM_OUT_CHANNELS", "RESNETS.RES2_OUT_CHANNELS", "ASPP.CHANNELS")
TINY_MODELS = {
    "unet": ["MODEL.UNET.BASE_CHANNELS", 4, "MODEL.UNET.DEPTH", 2],
    "deeplab": [
        item for key in (*_DEEPLAB_WIDTHS, "AUX_HEAD.CHANNELS") for item in (f"MODEL.{key}", 8)
    ],
}
HEADER = """# Data loader throughput vs the training step

`python tools/benchmark_loader.py --output docs/benchmarks_loader.md` (about 2 minutes on a
2-core CPU; `--tiny` checks the script in seconds). For each pipeline: the images/s that
`Trainer.build_train_loader(cfg)` delivers with `DATALOADER.NUM_WORKERS 2` (the main process
only takes batches, so this is the workers' rate), and the images/s of one training step
(forward + backward + optimizer step) on a batch of that same loader built beforehand (no
loader in the loop). **loader / step > 1: the loader is not the bottleneck.**

The two are measured one after the other, never at once: on a 2-core machine the loader's
worker processes and the step's threads would compete for the same cores, and neither number
would mean anything. In real training they do run at once, so on a machine this small the
training speed is below both figures; with a GPU the step leaves the CPU to the workers, and
the loader figure is the ceiling on images/s.

- **shapes**: the embedded dataset (128x128 PNGs; random flip), 8 images per batch, with
  `configs/shapes/unet_shapes.yaml` and `configs/shapes/deeplabv3_R18_shapes.yaml`.
- **Cityscapes-sized**: synthetic 1024x2048 RGB PNGs (smooth colour fields plus noise,
  about Cityscapes' 2.2 MB per `leftImg8bit` file) with 19-class label PNGs (~8% ignored),
  written to a temporary folder and registered with `register_sem_seg_folder`; the
  augmentation of `configs/cityscapes/*.yaml`: random scale 0.5-2.0, 512x1024 crop (a
  crop's largest class at most 75% of it, up to 10 tries), horizontal flip. 2 images per
  batch: the per-GPU batch of mmsegmentation's 4x2 recipe. The step: the DeepLabV3-R18 of
  the shapes config (half-width ResNet-18, output stride 8, ASPP 64 channels, auxiliary
  head) with 19 classes, on the 512x1024 crops; the files are read from the page cache.

Medians over the repeats, each a timed window after a warm-up (worker start-up and first
batches; the loader is built once per pipeline).
"""


@dataclasses.dataclass
class Pipeline:
    """One row: the loader's config and the step's model config (the same loader batch)."""

    name: str
    data: str  # what the loader reads and yields, for the table
    loader_config: str
    loader_opts: list
    step_config: str
    step_opts: list
    batch: int


@dataclasses.dataclass
class Sizes:
    """How much to run: full (the benchmark) or tiny (a check of the script)."""

    shapes_size: int = 128
    city_hw: tuple = (1024, 2048)
    crop_hw: tuple = (512, 1024)
    city_images: int = 8
    loader_warmup: int = 2 * NUM_WORKERS  # batches
    shapes_batches: int = 40  # per repeat
    city_batches: int = 12
    step_warmup: int = 2
    steps: int = 5  # per repeat; the Cityscapes-sized step: 3
    repeats: int = 3


TINY = Sizes(32, (64, 128), (32, 64), 4, 2, 4, 2, 1, 1, 1)


# ----------------------------------------------------------------------------- data
def _smooth(rng: np.random.Generator, cells: tuple, hw: tuple, channels: int) -> np.ndarray:
    low = rng.standard_normal((*cells, channels)).astype(np.float32)
    return cv2.resize(low, (hw[1], hw[0]), interpolation=cv2.INTER_CUBIC).reshape(*hw, channels)


def write_cityscapes_like(root: str, count: int, hw: tuple, seed: int = 0) -> tuple:
    """``count`` RGB PNGs of size ``hw`` and their label PNGs (19 classes in blobs, ~8%
    ignored) under ``root``/{images,labels}; returns the two folders."""
    rng = np.random.default_rng(seed)
    image_dir, label_dir = os.path.join(root, "images"), os.path.join(root, "labels")
    for folder in (image_dir, label_dir):
        os.makedirs(folder)
    for i in range(count):
        colour = 128 + 60 * _smooth(rng, (8, 16), hw, 3) + 1.2 * rng.standard_normal((*hw, 3))
        cv2.imwrite(f"{image_dir}/{i:04d}.png", np.clip(colour, 0, 255).astype(np.uint8))
        label = _smooth(rng, (6, 12), hw, CITYSCAPES_CLASSES).argmax(axis=2).astype(np.uint8)
        label[_smooth(rng, (4, 8), hw, 1)[:, :, 0] > 1.4] = 255
        cv2.imwrite(f"{label_dir}/{i:04d}.png", label)
    return image_dir, label_dir


def mean_file_mb(folder: str) -> float:
    sizes = [os.path.getsize(os.path.join(folder, n)) for n in os.listdir(folder)]
    return statistics.mean(sizes) / 2**20


def pipelines(tmp: str, sizes: Sizes, tiny: bool) -> tuple:
    """(the pipelines, names registered for them, a note on the synthetic files)."""
    # OUTPUT_DIR: where the Trainer's loader writes skipped_samples.json when the dataset
    # checks skip something; inside ``tmp``, never the configs' ./output/<name>.
    workers = ["DATALOADER.NUM_WORKERS", NUM_WORKERS, "MODEL.DEVICE", "cpu"]
    workers += ["OUTPUT_DIR", os.path.join(tmp, "output")]
    names, shapes = [], "shapes_train"
    if tiny:
        prefix = f"bench_loader_shapes_{os.getpid()}"
        names += register_shapes(prefix, root=tmp, num_train=16, num_val=1, image_size=32)
        shapes = names[0]
    city = f"bench_loader_cityscapes_{os.getpid()}"
    city_root = os.path.join(tmp, "city")
    image_dir, label_dir = write_cityscapes_like(city_root, sizes.city_images, sizes.city_hw)
    register_sem_seg_folder(
        city, image_dir, label_dir, stuff_classes=[f"c{k}" for k in range(CITYSCAPES_CLASSES)]
    )
    names.append(city)
    batch = 4 if tiny else 8
    shapes_opts = [*workers, "DATASETS.TRAIN", (shapes,), "SOLVER.IMS_PER_BATCH", batch]
    city_opts = [*workers, "DATASETS.TRAIN", (city,), "SOLVER.IMS_PER_BATCH", 2]
    city_opts += ["INPUT.CROP.SIZE", tuple(sizes.crop_hw)]
    deeplab_19 = ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", CITYSCAPES_CLASSES]
    tiny_opts = TINY_MODELS if tiny else {"unet": [], "deeplab": []}
    s, (h, w), (ch, cw) = sizes.shapes_size, sizes.city_hw, sizes.crop_hw
    shapes_data = f"{s}x{s} PNG, flip"
    city_data = f"{h}x{w} PNG, scale 0.5-2, crop {ch}x{cw}, flip"
    city_step_opts = city_opts + deeplab_19 + tiny_opts["deeplab"]
    rows = [
        Pipeline(
            "shapes / U-Net",
            shapes_data,
            CONFIGS["unet"],
            shapes_opts,
            CONFIGS["unet"],
            shapes_opts + tiny_opts["unet"],
            batch,
        ),
        Pipeline(
            "shapes / DeepLabV3-R18",
            shapes_data,
            CONFIGS["deeplab"],
            shapes_opts,
            CONFIGS["deeplab"],
            shapes_opts + tiny_opts["deeplab"],
            batch,
        ),
        Pipeline(
            "Cityscapes-sized / DeepLabV3-R18",
            city_data,
            CONFIGS["cityscapes"],
            city_opts,
            CONFIGS["deeplab"],
            city_step_opts,
            2,
        ),
    ]
    note = f"{h}x{w} synthetic PNGs: {mean_file_mb(image_dir):.2f} MB per image on average"
    return rows, names, note


# ----------------------------------------------------------------------------- timing
def load_cfg(config: str, opts: list):
    cfg = common.load_config(config, opts)
    cfg.freeze()
    return cfg


def time_loader(cfg, warmup: int, batches: int, repeats: int) -> tuple:
    """(images/s of each timed window, one batch of the loader)."""
    loader = iter(Trainer.build_train_loader(cfg))
    for _ in range(warmup):
        kept = next(loader)
    rates = []
    for _ in range(repeats):
        images, start = 0, time.perf_counter()
        for _ in range(batches):
            images += len(next(loader))
        rates.append(images / (time.perf_counter() - start))
    del loader  # stops the workers
    return rates, kept


def time_step(cfg, batch: list, warmup: int, steps: int, repeats: int, device: str) -> list:
    """Images/s of forward + backward + optimizer step on ``batch``, per timed window."""
    model = build_model(cfg).to(device)
    optimizer = Trainer.build_optimizer(cfg, model)
    model.train()

    def step():
        losses = model(batch)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        rates.append(steps * len(batch) / (time.perf_counter() - start))
    return rates


def measure(row: Pipeline, sizes: Sizes, device: str) -> dict:
    city = row.name.startswith("Cityscapes")
    batches = sizes.city_batches if city else sizes.shapes_batches
    steps = min(sizes.steps, 3) if city else sizes.steps
    loader_cfg = load_cfg(row.loader_config, row.loader_opts)
    print(f"{row.name}: loader ...", file=sys.stderr, flush=True)
    loader, batch = time_loader(loader_cfg, sizes.loader_warmup, batches, sizes.repeats)
    print(f"{row.name}: step ...", file=sys.stderr, flush=True)
    step_cfg = load_cfg(row.step_config, [*row.step_opts, "MODEL.DEVICE", device])
    step = time_step(step_cfg, batch, sizes.step_warmup, steps, sizes.repeats, device)
    return {
        "loader": statistics.median(loader),
        "step": statistics.median(step),
        "batch_hw": tuple(batch[0]["image"].shape[-2:]),
    }


# ----------------------------------------------------------------------------- report
def table(rows: list, results: list, device: str) -> list:
    header = (
        "pipeline", "loader input", "batch", f"loader images/s ({NUM_WORKERS} workers)",
        f"step images/s ({device})", "loader / step",
    )  # fmt: skip
    cells = []
    for row, res in zip(rows, results):
        h, w = res["batch_hw"]
        ratio = res["loader"] / res["step"]
        cells.append(
            (row.name, row.data, f"{row.batch} x {h}x{w}", f"{res['loader']:.1f}",
             f"{res['step']:.2f}", f"{ratio:.1f}")
        )  # fmt: skip
    return common.markdown_table(header, cells)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes, 1 repeat (a check)")
    parser.add_argument("--repeats", type=int, help="timed windows per figure (default 3)")
    parser.add_argument("--output", help="also write the Markdown report to this file")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    sizes = dataclasses.replace(TINY if args.tiny else Sizes())
    if args.repeats is not None:
        if args.repeats < 1:
            parser.error(f"--repeats must be >= 1, got {args.repeats}")
        sizes.repeats = args.repeats
    load_start = common.load_average()
    tmp = tempfile.mkdtemp(prefix="bench_loader_")
    names = []
    try:
        rows, names, note = pipelines(tmp, sizes, args.tiny)
        results = [measure(row, sizes, args.device) for row in rows]
    finally:
        for name in names:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        shutil.rmtree(tmp, ignore_errors=True)
    tiny = " --tiny: a check of the script, not a measurement." if args.tiny else ""
    lines = [
        HEADER,
        f"Machine: {common.machine()}; torch threads for the step: {torch.get_num_threads()}; "
        f"{common.today()}; {common.load_note(load_start)}.{tiny}",
        f"Median of {sizes.repeats} repeat(s); {note}.",
        "",
        *table(rows, results, args.device),
    ]
    common.emit(lines, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
