"""Benchmark: seg_plugins through detectron2 vs plain PyTorch / torchvision, in one table.

    python tools/benchmark.py                            # writes docs/benchmarks.md
    python tools/benchmark.py --tiny --output /tmp/b.md  # seconds: a check of the script
    python tools/benchmark.py --only fcn_r50 flops --repeats 5 --device cuda

Sub-benchmarks (``--only``): ``fcn_r50``, ``deeplabv3_r50``, ``unet`` (training step and
inference of our model vs the same architecture as a plain module in a hand-written loop),
``evaluator`` (tools/benchmark_evaluator.py's functions), ``loader`` (tools/benchmark_loader.py's
shapes pipelines), ``flops`` (achieved FLOP/s of each selected model's training step vs
this machine's matmul peak; needs a model), ``options`` (the speed options of docs/speed.md
vs our float32 default; ``--compile`` adds torch.compile) and ``scaling``
(tools/benchmark_scaling.py: step time and peak memory vs input size and batch). Each row
compares ours with a reference measured in the same run: medians over ``--repeats`` timed
runs after ``--warmup`` runs, the two sides taking turns. HEADER below says what every row
measures. Exit status 1 when a row misses its target (never with ``--tiny``, whose sizes
mean nothing).
"""

import argparse
import dataclasses
import os
import shutil
import statistics
import sys
import tempfile
from typing import Optional

import seg_plugins  # noqa: F401  (first: repairs detectron2 where needed)

# isort: split
import torch
import torch.nn.functional as F
import torchvision
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model
from torch import nn

from seg_plugins.engine import Trainer
from seg_plugins.engine.acceleration import amp_dtype, compile_model, to_channels_last
from seg_plugins.modeling.convert_torchvision import torchvision_equivalent_cfg
from seg_plugins.utils.memory import keep_freed_memory

from . import common
from . import evaluator as bench_evaluator
from . import loader as bench_loader
from . import scaling as bench_scaling

MODELS = {"fcn_r50": "FCN-ResNet50", "deeplabv3_r50": "DeepLabV3-ResNet50", "unet": "U-Net"}
BENCHMARKS = (*MODELS, "evaluator", "loader", "flops", "options", "scaling")
TORCHVISION_NAMES = {"fcn_r50": "fcn_resnet50", "deeplabv3_r50": "deeplabv3_resnet50"}
UNET_CONFIG = "configs/Base-UNet.yaml"
IGNORE = 255
MAX_TRAIN_RATIO, MAX_INFERENCE_RATIO = 1.05, 1.03
# Inference runs are short (1-3 s on a CPU) and their target tight: 3x the timed runs.
INFER_REPEATS = 3
MIN_EVALUATOR_SPEEDUP, MIN_LOADER_RATIO, MIN_PEAK_FRACTION = 10.0, 2.0, 0.5
COLUMNS = ("sub-benchmark", "ours (median)", "reference (median)", "ratio", "target", "pass")
HEADER = """# seg_plugins vs plain PyTorch / torchvision

`python tools/benchmark.py` writes this file (about 35 minutes on a 2-core CPU with
`--repeats 5 --compile`, the command behind the figures below; `--tiny`
checks the script in seconds; `--only NAME ...` runs some rows; `--device cuda`). Each row
compares ours with a reference measured in the same process run: warm-up runs of each side,
then timed runs, the two sides taking turns; figures are medians. Same inputs, float32
compute, same number of classes, same torch threads on both sides.

- **training step** (forward + backward + optimizer step, batch 2) and **inference** (eval,
  `torch.inference_mode`, batch 1): our model from detectron2's `build_model`, called as
  `model(batched_inputs)` with dicts of a uint8 "image" (3, H, W) and an int64 "sem_seg"
  (H, W) (our normalisation, padding, loss and, in eval, `sem_seg_postprocess`) vs the same
  architecture as a plain module in a hand-written loop: the uint8 batch made float and
  normalised with the same PIXEL_MEAN / PIXEL_STD, forward, `F.cross_entropy(ignore_index=255)`,
  backward, the config's optimizer (type and SOLVER hyper-parameters; ours has detectron2's
  parameter groups, without weight decay on norm layers).
  - FCN-ResNet50, DeepLabV3-ResNet50: `torchvision_equivalent_cfg` (output stride 8, aux
    FCN head on res4 weighted by MODEL.AUX_HEAD.LOSS_WEIGHT 0.5) vs torchvision's
    `fcn_resnet50` / `deeplabv3_resnet50(weights=None, weights_backbone=None,
    num_classes=21, aux_loss=True)`, loss `CE(out) + 0.5 CE(aux)`, SGD. torchvision runs its
    aux head whenever it has one, ours only in training: the reference's is removed for
    inference. Both return logits at the input size; ours after one more same-size bilinear
    resize (`sem_seg_postprocess`), counted as ours.
  - U-Net: `configs/Base-UNet.yaml` (width 64, depth 4, BN, 1x1 conv + bilinear upsampling)
    vs `PlainUNet` in tools/benchmarks/vs_pytorch.py, the same layers in plain PyTorch (equal
    parameter counts asserted); AdamW, as the config says.

  Target: ours / reference <= 1.05 (training step), <= 1.03 (inference). On the CPU the
  process keeps freed memory for reuse, as the Trainer does (SOLVER.CPU_KEEP_FREED_MEMORY,
  default on), for both sides alike.
- **evaluator**: tools/benchmark_evaluator.py's Cityscapes-sized predictions (19x1024x2048
  float32 logits, ground truth read from PNGs): ms per image of `SemSegMetricsEvaluator` vs
  detectron2's `SemSegEvaluator`, identical numbers asserted; the warm-up repeats are run and
  dropped. Target: reference / ours >= 10.
- **loader**: tools/benchmark_loader.py's shapes pipelines: the images/s that
  `Trainer.build_train_loader` delivers (2 workers) vs the images/s that the training step of
  the pipeline's model consumes (8 x 128x128 batches of that loader). Target: at least 2x.
- **FLOP/s**: our training step's achieved FLOP/s = 3 x forward FLOPs / median step time
  (the usual convention: the backward costs about twice the forward; the optimizer step is
  not counted), forward FLOPs counted by fvcore (detectron2's `FlopCountAnalysis`: our eval
  forward on the training batch plus the aux head, which eval skips), 2 FLOP per
  multiply-add; vs this machine's peak: the median FLOP/s of 30 float32 `torch.mm` of two
  2048x2048 matrices (8192x8192 on CUDA), measured before and after the models, the larger
  kept. Target (ResNet-50 models, CPU): at least half the
  peak. On CUDA, cuDNN convolutions may use TF32 (PyTorch's default) while `torch.mm` does
  not, so the fraction may exceed 1.
"""

OPTIONS_HEADER = """## Speed options (docs/speed.md)

Our FCN-ResNet50 (as above) with each option of seg_plugins.engine.acceleration against its
float32 default, measured in the same run, the variants taking turns: "ours" is the option,
"reference" the default, ratio < 1 is faster. Training: channels-last weights
(MODEL.CHANNELS_LAST), autocast to the device's fast reduced precision (SOLVER.AMP.ENABLED:
bfloat16 on CPU, float16 on CUDA), both, and with `--compile` torch.compile (MODEL.COMPILE,
inductor; its compilation happens in the warm-up). Inference (TEST.AMP.ENABLED and the
evaluation's `torch.inference_mode`): against `torch.no_grad`, detectron2's evaluation mode."""

SCALING_HEADER = """## Scaling (tools/benchmark_scaling.py)

Our FCN-ResNet50's training step (forward, backward, SGD step; float32) as the input size and
the batch grow, each point in a fresh process; growth = this point / the first point. The
FLOPs are fvcore's forward count (x3 for the step, as above): a step that grows faster than
its FLOPs ("time / FLOP growth" > 1) is losing efficiency. Peak memory growth: on CPU the
process' peak resident set during the steps (VmHWM) minus its resident set with the model,
optimizer and batch built (activations, gradients, optimizer state and allocator caching); on CUDA
max_memory_allocated minus the memory allocated before the first step."""


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How much to run: full (the benchmark) or tiny (a check of the script)."""

    hw: tuple = (512, 512)  # model inputs
    train_batch: int = 2  # inference: 1 image
    classes: int = 21
    unet_opts: tuple = ()  # overrides of configs/Base-UNet.yaml
    eval_images: int = 10
    eval_hw: tuple = (1024, 2048)
    eval_classes: int = 19
    matmul_n: int = 2048  # on CPU
    matmul_n_cuda: int = 8192
    matmul_calls: int = 30


TINY = Sizes(
    hw=(64, 64),
    unet_opts=("MODEL.UNET.BASE_CHANNELS", 4, "MODEL.UNET.DEPTH", 2),
    eval_images=2,
    eval_hw=(64, 128),
    matmul_n=256,
    matmul_n_cuda=1024,
    matmul_calls=2,
)


@dataclasses.dataclass
class Row:
    """One line of the table."""

    name: str
    ours: str
    reference: str
    ratio: float
    target: str  # "-" when the row has none
    passed: Optional[bool]  # None: no target


log = common.stderr_logger("benchmark")


# ----------------------------------------------------------------------------- models
@dataclasses.dataclass
class Pair:
    """Our model (detectron2) and the reference module of the same architecture."""

    title: str
    cfg: CfgNode
    ours: nn.Module
    reference: nn.Module
    aux_classifier: Optional[nn.Module]  # torchvision's aux head, removed for inference


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def resnet_pair(key: str, sizes: Sizes, device: torch.device) -> Pair:
    """Our FCN / DeepLabV3-ResNet50 (torchvision_equivalent_cfg) and torchvision's own."""
    name = TORCHVISION_NAMES[key]
    cfg = torchvision_equivalent_cfg(name, sizes.classes, aux=True)
    cfg.MODEL.DEVICE = str(device)
    torch.manual_seed(0)
    ours = build_model(cfg)
    builder = getattr(torchvision.models.segmentation, name)
    reference = builder(
        weights=None,
        weights_backbone=None,
        num_classes=sizes.classes,
        aux_loss=cfg.MODEL.AUX_HEAD.ENABLED,
    ).to(device)
    return Pair(MODELS[key], cfg, ours, reference, reference.aux_classifier)


def conv_block(c_in: int, c_out: int, norm: bool) -> nn.Sequential:
    """Two (3x3 conv - BN - ReLU): (N, c_in, H, W) -> (N, c_out, H, W), as our DoubleConv."""
    layers = []
    for c in (c_in, c_out):
        layers.append(nn.Conv2d(c, c_out, 3, padding=1, bias=not norm))
        layers += [nn.BatchNorm2d(c_out)] if norm else []
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class PlainUNet(nn.Module):
    """A U-Net in plain PyTorch with our U-Net's layers: (N, C, H, W) -> logits (N, K, H, W),
    H and W multiples of 2**depth. Encoder stage i: ``conv_block`` to channels[i], a 2x2
    max-pool between stages; decoder level i (deepest first): a 1x1 conv (or a 2x2 transposed
    conv) to channels[i], bilinear resize to the skip's size, concatenation, ``conv_block``;
    a 1x1 classifier."""

    def __init__(self, in_channels: int, num_classes: int, channels: list, *, norm, transposed):
        super().__init__()
        self.down = nn.ModuleList()
        for c_in, c_out in zip([in_channels, *channels], channels):
            self.down.append(conv_block(c_in, c_out, norm))
        self.up, self.fuse = nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(len(channels) - 1)):
            deep, skip = channels[i + 1], channels[i]
            if transposed:
                self.up.append(nn.ConvTranspose2d(deep, skip, 2, stride=2))
            else:
                self.up.append(nn.Conv2d(deep, skip, 1))
            self.fuse.append(conv_block(2 * skip, skip, norm))
        self.classifier = nn.Conv2d(channels[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        skips.pop()  # the deepest stage is x itself
        for up, fuse in zip(self.up, self.fuse):
            skip = skips.pop()
            x = up(x)
            if x.shape[-2:] != skip.shape[-2:]:
                x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = fuse(torch.cat([x, skip], dim=1))
        return self.classifier(x)


def unet_cfg(sizes: Sizes, device: str = "cpu", opts: tuple = ()) -> CfgNode:
    """configs/Base-UNet.yaml with ``sizes.classes`` classes, the tiny widths and ``opts``."""
    overrides = ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", sizes.classes, "MODEL.DEVICE", str(device)]
    return common.load_config(UNET_CONFIG, [*overrides, *sizes.unet_opts, *opts])


def plain_unet(cfg: CfgNode) -> PlainUNet:
    """The :class:`PlainUNet` of cfg's MODEL.UNET and MODEL.SEM_SEG_HEAD.NUM_CLASSES."""
    unet = cfg.MODEL.UNET
    if unet.NORM not in ("BN", ""):
        raise ValueError(f"PlainUNet: MODEL.UNET.NORM={unet.NORM!r}; set it to 'BN' or ''")
    channels = [
        min(int(round(unet.BASE_CHANNELS * unet.CHANNEL_MULTIPLIER**i)), unet.MAX_CHANNELS)
        for i in range(unet.DEPTH + 1)
    ]
    return PlainUNet(
        len(cfg.MODEL.PIXEL_MEAN),
        cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
        channels,
        norm=unet.NORM == "BN",
        transposed=unet.UPSAMPLE == "transposed",
    )


def unet_pair(key: str, sizes: Sizes, device: torch.device) -> Pair:
    cfg = unet_cfg(sizes, str(device))
    torch.manual_seed(0)
    ours = build_model(cfg)
    reference = plain_unet(cfg).to(device)
    if count_parameters(ours) != count_parameters(reference):
        raise AssertionError(
            f"PlainUNet has {count_parameters(reference)} parameters, our U-Net "
            f"{count_parameters(ours)}: the reference does not match the config"
        )
    return Pair(MODELS[key], cfg, ours, reference, None)


PAIRS: dict = {"fcn_r50": resnet_pair, "deeplabv3_r50": resnet_pair, "unet": unet_pair}


# ----------------------------------------------------------------------------- steps
def make_batch(sizes: Sizes, device: torch.device) -> tuple:
    """uint8 images of shape (N, 3, H, W) and int64 targets of shape (N, H, W) (a band of
    IGNORE pixels at the bottom), on ``device``."""
    g = torch.Generator().manual_seed(0)
    (h, w), n = sizes.hw, sizes.train_batch
    images = torch.randint(0, 256, (n, 3, h, w), generator=g, dtype=torch.uint8)
    targets = torch.randint(0, sizes.classes, (n, h, w), generator=g)
    targets[:, -max(h // 8, 1) :] = IGNORE
    return images.to(device), targets.to(device)


def our_steps(pair: Pair, images: torch.Tensor, targets: torch.Tensor) -> tuple:
    """(training step, inference) callables of our model, with detectron2's inputs."""
    optimizer = Trainer.build_optimizer(pair.cfg, pair.ours)
    train_inputs = [{"image": x, "sem_seg": y} for x, y in zip(images, targets)]
    infer_inputs = [{"image": images[0]}]

    def train():
        loss = sum(pair.ours(train_inputs).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def infer():
        with torch.inference_mode():
            return pair.ours(infer_inputs)[0]["sem_seg"]

    return train, infer


def reference_optimizer(cfg: CfgNode, model: nn.Module) -> torch.optim.Optimizer:
    """cfg.SOLVER's optimizer type and hyper-parameters, on all of ``model``'s parameters."""
    s = cfg.SOLVER
    if s.OPTIMIZER == "AdamW":
        return torch.optim.AdamW(
            model.parameters(), lr=s.BASE_LR, betas=tuple(s.BETAS), weight_decay=s.WEIGHT_DECAY
        )
    return torch.optim.SGD(
        model.parameters(),
        lr=s.BASE_LR,
        momentum=s.MOMENTUM,
        nesterov=s.NESTEROV,
        weight_decay=s.WEIGHT_DECAY,
    )


def reference_steps(pair: Pair, images: torch.Tensor, targets: torch.Tensor) -> tuple:
    """(training step, inference) callables of the reference in a hand-written loop."""
    model, cfg = pair.reference, pair.cfg
    mean = torch.tensor(cfg.MODEL.PIXEL_MEAN, device=images.device).view(1, -1, 1, 1)
    std = torch.tensor(cfg.MODEL.PIXEL_STD, device=images.device).view(1, -1, 1, 1)
    head_weight, aux_weight = cfg.MODEL.SEM_SEG_HEAD.LOSS_WEIGHT, cfg.MODEL.AUX_HEAD.LOSS_WEIGHT
    optimizer = reference_optimizer(cfg, model)

    def forward(x: torch.Tensor) -> dict:
        out = model((x.float() - mean) / std)
        return out if isinstance(out, dict) else {"out": out}

    def train():
        out = forward(images)
        loss = head_weight * F.cross_entropy(out["out"], targets, ignore_index=IGNORE)
        if "aux" in out:  # torchvision's aux head: ours adds it as loss_aux
            loss = loss + aux_weight * F.cross_entropy(out["aux"], targets, ignore_index=IGNORE)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def infer():
        with torch.inference_mode():
            return forward(images[:1])["out"]

    return train, infer


def set_mode(pair: Pair, training: bool) -> None:
    """train() / eval() both sides. torchvision runs its aux head whenever it has one, eval
    included; ours runs it in training only: the reference loses it in eval."""
    pair.ours.train(training)
    pair.reference.train(training)
    if pair.aux_classifier is not None:
        pair.reference.aux_classifier = pair.aux_classifier if training else None


def time_row(name: str, seconds: dict, max_ratio: float) -> Row:
    ratio = seconds["ours"] / seconds["reference"]
    ours, reference = common.fmt_seconds(seconds["ours"]), common.fmt_seconds(seconds["reference"])
    return Row(name, ours, reference, ratio, f"ours / ref <= {max_ratio:.2f}", ratio <= max_ratio)


# ----------------------------------------------------------------------------- FLOP/s
def forward_gflop(model: nn.Module, sizes: Sizes, device: torch.device) -> float:
    """GFLOP (2 per multiply-add) of our training forward on the training batch: the eval
    forward (backbone, head, resize) plus the aux head, which eval skips."""
    model.eval()
    (h, w), n = sizes.hw, sizes.train_batch
    images = [{"image": torch.zeros(3, h, w, device=device)} for _ in range(n)]
    count = common.fvcore_flops(model, images)
    if model.aux_head is not None:
        name = model.aux_head.in_feature
        with torch.no_grad():
            feature = model.backbone(torch.zeros(n, 3, h, w, device=device))[name]
        count += common.fvcore_flops(model.aux_head, {name: feature})
    return 2 * count / 1e9


def matmul_peak_gflops(sizes: Sizes, device: torch.device) -> float:
    """Median GFLOP/s (2 n**3 per call) of a float32 n x n ``torch.mm``."""
    n = sizes.matmul_n if device.type == "cpu" else sizes.matmul_n_cuda
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    seconds = common.time_calls({"mm": lambda: torch.mm(a, b)}, 2, sizes.matmul_calls, device)["mm"]
    return 2 * n**3 / seconds / 1e9


def flops_row(title: str, achieved: float, peak: float, has_target: bool) -> Row:
    fraction = achieved / peak
    target = f"achieved / peak >= {MIN_PEAK_FRACTION:.2f}" if has_target else "-"
    passed = fraction >= MIN_PEAK_FRACTION if has_target else None
    name = f"{title} training FLOP/s"
    return Row(name, f"{achieved:.1f} GFLOP/s", f"{peak:.1f} GFLOP/s", fraction, target, passed)


# ----------------------------------------------------------------------------- benchmarks
def benchmark_model(key: str, sizes: Sizes, args, device: torch.device, count_flops) -> tuple:
    """([training step row, inference row], achieved training GFLOP/s or None)."""
    pair = PAIRS[key](key, sizes, device)
    ours_m, ref_m = count_parameters(pair.ours) / 1e6, count_parameters(pair.reference) / 1e6
    log(f"{pair.title}: {ours_m:.2f} M parameters (ours), {ref_m:.2f} M (reference)")
    images, targets = make_batch(sizes, device)
    ours_train, ours_infer = our_steps(pair, images, targets)
    ref_train, ref_infer = reference_steps(pair, images, targets)
    set_mode(pair, training=True)
    log(f"{pair.title}: training step ...")
    calls = {"ours": ours_train, "reference": ref_train}
    train = common.time_calls(calls, args.warmup, args.repeats, device)
    log(f"{pair.title}: training step ours {train['ours']:.3f} s, ref {train['reference']:.3f} s")
    set_mode(pair, training=False)
    log(f"{pair.title}: inference ...")
    calls = {"ours": ours_infer, "reference": ref_infer}
    infer = common.time_calls(calls, args.warmup, INFER_REPEATS * args.repeats, device)
    log(f"{pair.title}: inference ours {infer['ours']:.3f} s, ref {infer['reference']:.3f} s")
    rows = [
        time_row(f"{pair.title} training step", train, MAX_TRAIN_RATIO),
        time_row(f"{pair.title} inference", infer, MAX_INFERENCE_RATIO),
    ]
    if not count_flops:
        return rows, None
    log(f"{pair.title}: counting FLOPs ...")
    return rows, 3 * forward_gflop(pair.ours, sizes, device) / train["ours"]


def benchmark_evaluator(sizes: Sizes, args) -> Row:
    """tools/benchmark_evaluator.py's run: ms per image of ours vs detectron2's."""
    root = tempfile.mkdtemp(prefix="bench_all_evaluator_")
    name = f"bench_all_evaluator_{os.getpid()}"
    (h, w), n, k = sizes.eval_hw, sizes.eval_images, sizes.eval_classes
    # CPU logits, as before: the CUDA evaluator figure is tools/benchmark_evaluator.py's
    run_args = argparse.Namespace(repeats=args.warmup + args.repeats, classes=k, device="cpu")
    log(f"evaluator: {n} images of {k}x{h}x{w} logits, {run_args.repeats} repeats ...")
    try:
        records = bench_evaluator.register(name, root, n, k, h, w)
        out = bench_evaluator.run(run_args, records, name)
    finally:
        for catalog in (DatasetCatalog, MetadataCatalog):
            if name in catalog.list():
                catalog.remove(name)
        shutil.rmtree(root, ignore_errors=True)
    ours = next(key for key in out["seconds"] if key.startswith("seg_plugins"))
    theirs = next(key for key in out["seconds"] if key != ours)
    for ours_res, theirs_res in zip(out["results"][ours], out["results"][theirs]):
        mismatches = bench_evaluator.compare(ours_res, theirs_res)
        if mismatches:
            raise AssertionError(f"the evaluators' numbers differ: {sorted(mismatches)[:5]}")
    ms = {key: statistics.median(s[args.warmup :]) / n * 1000 for key, s in out["seconds"].items()}
    speedup = ms[theirs] / ms[ours]
    return Row(
        "evaluator: SemSegMetricsEvaluator vs SemSegEvaluator",
        f"{ms[ours]:.1f} ms/image",
        f"{ms[theirs]:.1f} ms/image",
        speedup,
        f"ref / ours >= {MIN_EVALUATOR_SPEEDUP:.0f}",
        speedup >= MIN_EVALUATOR_SPEEDUP,
    )


def benchmark_loader(args) -> list:
    """tools/benchmark_loader.py's shapes pipelines: loader images/s vs step images/s."""
    base = bench_loader.TINY if args.tiny else bench_loader.Sizes()
    # Only the shapes pipelines are measured: the Cityscapes-sized files are made small.
    sizes = dataclasses.replace(
        base,
        repeats=args.repeats,
        step_warmup=args.warmup,
        city_images=1,
        city_hw=(64, 128),
        crop_hw=(32, 64),
    )
    tmp = tempfile.mkdtemp(prefix="bench_all_loader_")
    names, rows = [], []
    try:
        pipelines, names, _ = bench_loader.pipelines(tmp, sizes, args.tiny)
        for pipeline in (p for p in pipelines if p.name.startswith("shapes")):
            res = bench_loader.measure(pipeline, sizes, args.device)
            ratio = res["loader"] / res["step"]
            rows.append(
                Row(
                    f"loader vs training step: {pipeline.name}",
                    f"{res['loader']:.1f} images/s",
                    f"{res['step']:.1f} images/s",
                    ratio,
                    f"loader / step >= {MIN_LOADER_RATIO:.0f}",
                    ratio >= MIN_LOADER_RATIO,
                )
            )
    finally:
        for name in names:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def benchmark_options(sizes: Sizes, args, device: torch.device) -> list:
    """Speed options (seg_plugins.engine.acceleration, docs/speed.md) of our FCN-ResNet50
    against its float32 default, training step and inference, in the same run."""
    cfg = torchvision_equivalent_cfg(TORCHVISION_NAMES["fcn_r50"], sizes.classes, aux=True)
    cfg.MODEL.DEVICE = str(device)
    models = {}
    for layout in ("default", "channels_last", "compiled"):
        if layout == "compiled" and not args.compile:
            continue
        torch.manual_seed(0)
        models[layout] = build_model(cfg)
    to_channels_last(models["channels_last"])
    if args.compile:
        compile_model(models["compiled"])
    optimizers = {key: Trainer.build_optimizer(cfg, m) for key, m in models.items()}
    images, targets = make_batch(sizes, device)
    train_inputs = [{"image": x, "sem_seg": y} for x, y in zip(images, targets)]
    infer_inputs = [{"image": images[0]}]
    dtype = amp_dtype("auto", device.type)  # float16 on CUDA, bfloat16 on the CPU
    low = str(dtype).replace("torch.", "")

    def autocast(amp):  # amp: False (float32), True (the device's default) or a dtype
        chosen = amp if isinstance(amp, torch.dtype) else dtype
        return torch.autocast(device.type, dtype=chosen, enabled=bool(amp))

    def train(layout: str, amp):
        def call():
            with autocast(amp):
                loss = sum(models[layout](train_inputs).values())
            optimizers[layout].zero_grad(set_to_none=True)
            loss.backward()
            optimizers[layout].step()

        return call

    def infer(layout: str, amp, grad_mode=torch.inference_mode):
        def call():
            with grad_mode(), autocast(amp):
                return models[layout](infer_inputs)[0]["sem_seg"]

        return call

    variants = {
        "float32": ("default", False),
        "channels-last": ("channels_last", False),
        f"{low} autocast": ("default", True),
        f"channels-last + {low} autocast": ("channels_last", True),
    }
    if device.type == "cuda":  # both reduced precisions on a GPU (SOLVER.AMP.PRECISION)
        variants["bfloat16 autocast"] = ("default", torch.bfloat16)
    if args.compile:
        variants["torch.compile (inductor)"] = ("compiled", False)
    rows = []
    title = MODELS["fcn_r50"]
    for model in models.values():
        model.train()
    log(f"options: {title} training step, {list(variants)} ...")
    calls = {name: train(*v) for name, v in variants.items()}
    train_s = common.time_calls(
        calls, max(args.warmup, 1 if args.compile else 0), args.repeats, device
    )
    for model in models.values():
        model.eval()
    infer_variants = {"no_grad": ("default", False, torch.no_grad)}
    infer_variants.update({k: (*v, torch.inference_mode) for k, v in variants.items()})
    infer_variants["inference_mode"] = infer_variants.pop("float32")
    log(f"options: {title} inference, {list(infer_variants)} ...")
    calls = {name: infer(*v) for name, v in infer_variants.items()}
    warmup = max(args.warmup, 1 if args.compile else 0)
    infer_s = common.time_calls(calls, warmup, INFER_REPEATS * args.repeats, device)
    for name, seconds in train_s.items():
        if name != "float32":
            rows.append(
                option_row(f"{title} training step: {name} vs float32", seconds, train_s["float32"])
            )
    for name, seconds in infer_s.items():
        if name != "no_grad":
            rows.append(
                option_row(
                    f"{title} inference: {name} vs no_grad, float32", seconds, infer_s["no_grad"]
                )
            )
    return rows


def option_row(name: str, seconds: float, baseline: float) -> Row:
    fmt = common.fmt_seconds
    return Row(name, fmt(seconds), fmt(baseline), seconds / baseline, "-", None)


# ----------------------------------------------------------------------------- report
def table(rows: list) -> list:
    cells = []
    for row in rows:
        verdict = "-" if row.passed is None else ("yes" if row.passed else "**no**")
        cells.append((row.name, row.ours, row.reference, f"{row.ratio:.2f}", row.target, verdict))
    return common.markdown_table(COLUMNS, cells)


def report(
    rows: list,
    args,
    sizes: Sizes,
    device: torch.device,
    load_start: float,
    option_rows: list = (),
    scaling: list = (),
) -> str:
    (h, w), (eh, ew) = sizes.hw, sizes.eval_hw
    n = sizes.matmul_n if device.type == "cpu" else sizes.matmul_n_cuda
    tiny = " --tiny: a check of the script, not a measurement." if args.tiny else ""
    lines = [
        HEADER,
        f"Machine: {common.machine()}; device {device}; torch threads {torch.get_num_threads()}; "
        f"{common.today()}; {common.load_note(load_start)}.{tiny}",
        f"Medians of {args.repeats} timed run(s) per side ({INFER_REPEATS * args.repeats} for "
        f"inference) after {args.warmup} warm-up run(s). "
        f"Models: {sizes.classes} classes, float32, training batch {sizes.train_batch} x "
        f"3x{h}x{w}, inference 1 x 3x{h}x{w}. Evaluator: {sizes.eval_images} images of "
        f"{sizes.eval_classes}x{eh}x{ew} logits. Peak: float32 torch.mm of {n}x{n} matrices.",
        "",
        *table(rows),
    ]
    if option_rows:
        lines += ["", OPTIONS_HEADER, "", *table(option_rows)]
    if scaling:
        lines += ["", SCALING_HEADER, "", *bench_scaling.table(scaling)]
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes, 1 repeat (a check)")
    parser.add_argument("--repeats", type=int, help="timed runs per side (default 3; tiny 1)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument(
        "--compile", action="store_true", help="options: add torch.compile rows (minutes more)"
    )
    parser.add_argument(
        "--output", help="the Markdown report (default docs/benchmarks.md; none with --tiny)"
    )
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.tiny else 3
    if args.repeats < 1 or args.warmup < 0:
        parser.error(f"need --repeats >= 1 and --warmup >= 0; got {args.repeats}, {args.warmup}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA device is available; use --device cpu")
    if "flops" in args.only and not set(MODELS) & set(args.only):
        parser.error(f"--only flops needs a model too ({', '.join(MODELS)}): its training step")
    if args.output is None and not args.tiny:
        args.output = os.path.join(common.REPO, "docs", "benchmarks.md")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    sizes, device = (TINY if args.tiny else Sizes()), torch.device(args.device)
    torch.manual_seed(0)
    if device.type == "cpu" and not args.tiny:
        # The allocator setting the Trainer runs CPU training with (SOLVER.CPU_KEEP_FREED_MEMORY,
        # on by default), for the whole process, so for both sides of every row: without it
        # glibc unmaps and page-faults large activations in again every step, a cost that
        # swings with the host's memory pressure (docs/speed.md, "Scaling").
        keep_freed_memory()
        log("CPU: freed memory kept for reuse (SOLVER.CPU_KEEP_FREED_MEMORY), both sides")
    load_start = common.load_average()
    count_flops = "flops" in args.only
    peaks = [matmul_peak_gflops(sizes, device)] if count_flops else []
    rows, achieved = [], {}
    for key in [name for name in MODELS if name in args.only]:
        model_rows, gflops = benchmark_model(key, sizes, args, device, count_flops)
        rows += model_rows
        if gflops is not None:
            achieved[key] = gflops
    flop_rows = []
    if count_flops:
        # The peak is the best the machine sustains: measured before and after the models,
        # the larger kept (a busy moment of a shared machine lowers one of them).
        peaks.append(matmul_peak_gflops(sizes, device))
        peak = max(peaks)
        log(f"matmul peak: {', '.join(f'{p:.1f}' for p in peaks)} GFLOP/s; {peak:.1f} kept")
        for key, gflops in achieved.items():
            has_target = key in TORCHVISION_NAMES and device.type == "cpu"
            flop_rows.append(flops_row(MODELS[key], gflops, peak, has_target))
    if "evaluator" in args.only:
        rows.append(benchmark_evaluator(sizes, args))
    if "loader" in args.only:
        rows += benchmark_loader(args)
    option_rows = benchmark_options(sizes, args, device) if "options" in args.only else []
    scaling = []
    if "scaling" in args.only:
        scaling_sizes = (
            bench_scaling.TINY
            if args.tiny
            else bench_scaling.Sizes(warmup=args.warmup, repeats=args.repeats)
        )
        scaling = bench_scaling.measure(scaling_sizes, args.device, log)
    text = report(rows + flop_rows, args, sizes, device, load_start, option_rows, scaling)
    print(text, end="")
    if args.output:
        common.write_markdown(args.output, text)
        log(f"wrote {args.output}")
    missed = [row.name for row in rows + flop_rows if row.passed is False]
    if missed:
        log(f"below target: {missed}")
    return 1 if missed and not args.tiny else 0


if __name__ == "__main__":
    sys.exit(main())
