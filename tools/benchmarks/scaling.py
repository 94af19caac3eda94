"""Scaling of our training step: time and peak memory as the image and the batch grow,
against the growth that the FLOPs predict.

    python tools/benchmark_scaling.py                  # FCN-ResNet50, 256-1024 px, batch 1-8
    python tools/benchmark_scaling.py --tiny           # seconds: a check of the script

tools/benchmark.py runs it as its ``scaling`` sub-benchmark and appends the table to
docs/benchmarks.md. Each point (input size, batch) runs in a fresh process, so that its peak
memory is its own: on CPU the growth of the process' peak resident set (VmHWM, reset
before the first step) over its resident set with the model, optimizer and batch built; on
CUDA ``max_memory_allocated`` over the memory allocated before the first step. Both count
activations, gradients and optimizer state; the CPU figure also counts the allocator's
cached, not yet returned blocks. On CPU each point first applies the Trainer's allocator
setting (SOLVER.CPU_KEEP_FREED_MEMORY, seg_plugins/utils/memory.py).
"""

import argparse
import dataclasses
import json
import sys

from . import common

MODEL = "fcn_resnet50"  # torchvision_equivalent_cfg's name; the heaviest model per pixel here
TITLE = "FCN-ResNet50"


@dataclasses.dataclass(frozen=True)
class Sizes:
    points: tuple = ((256, 1), (512, 1), (1024, 1), (256, 2), (256, 4), (256, 8))
    classes: int = 21
    warmup: int = 1
    repeats: int = 3


TINY = Sizes(points=((32, 1), (64, 1), (32, 2)), warmup=0, repeats=1)


def measure_point(size: int, batch: int, classes: int, warmup: int, repeats: int, device: str):
    """Median training-step seconds, forward GFLOP and peak memory growth (bytes) of our
    FCN-ResNet50 on ``batch`` images of ``size`` x ``size`` (runs in this process)."""
    import seg_plugins  # noqa: F401  (first: repairs detectron2 where needed)

    # isort: split
    import torch
    from detectron2.modeling import build_model

    from seg_plugins.engine import Trainer
    from seg_plugins.modeling.convert_torchvision import torchvision_equivalent_cfg
    from seg_plugins.utils.memory import keep_freed_memory

    if device == "cpu":
        keep_freed_memory()  # as the Trainer does on CPU (SOLVER.CPU_KEEP_FREED_MEMORY)
    torch.manual_seed(0)
    cfg = torchvision_equivalent_cfg(MODEL, classes, aux=True)
    cfg.MODEL.DEVICE = device
    model = build_model(cfg)
    optimizer = Trainer.build_optimizer(cfg, model)
    g = torch.Generator().manual_seed(0)
    inputs = [
        {
            "image": torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8),
            "sem_seg": torch.randint(0, classes, (size, size), generator=g),
        }
        for _ in range(batch)
    ]

    def step():
        loss = sum(model(inputs).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        common.reset_peak_rss()
        base = common.rss_bytes()
    seconds = common.time_calls({"step": step}, warmup, repeats, device)["step"]
    peak = torch.cuda.max_memory_allocated() - base if cuda else common.peak_rss_bytes() - base

    # FLOPs last: fvcore's trace would raise the CPU peak before the steps are measured.
    model.eval()  # FLOPs of the forward: the eval pass plus the aux head (as benchmark.py)
    flops = common.fvcore_flops(model, [{"image": x["image"].float()} for x in inputs])
    with torch.no_grad():
        images = torch.stack([x["image"] for x in inputs]).float().to(device)
        feature = model.backbone(images)[model.aux_head.in_feature]
    flops += common.fvcore_flops(model.aux_head, {model.aux_head.in_feature: feature})
    del feature, images

    return {
        "size": size,
        "batch": batch,
        "seconds": seconds,
        "gflop": 2 * flops / 1e9,  # fvcore counts one per multiply-add
        "peak_bytes": peak,
    }


def run_point(size: int, batch: int, sizes: Sizes, device: str) -> dict:
    """``measure_point`` in a fresh Python process (its own peak memory)."""
    args = ["--point", size, batch, "--classes", sizes.classes, "--warmup", sizes.warmup]
    args += ["--repeats", sizes.repeats, "--device", device]
    try:
        return common.run_child("scaling", args)
    except common.ChildError as err:
        raise RuntimeError(
            f"scaling point {size}x{size} batch {batch} failed (exit {err.returncode}):\n"
            f"{err.stderr[-3000:]}"
        ) from None


def measure(sizes: Sizes, device: str = "cpu", log=print) -> list:
    results = []
    for size, batch in sizes.points:
        log(f"scaling: {TITLE} training step, {size}x{size}, batch {batch} ...")
        res = run_point(size, batch, sizes, device)
        log(
            f"scaling: {size}x{size} batch {batch}: {res['seconds']:.3f} s, "
            f"{res['peak_bytes'] / 2**20:.0f} MiB"
        )
        results.append(res)
    return results


def _mib(num_bytes: float) -> str:
    return f"{num_bytes / 2**20:,.0f} MiB"


def table(results: list) -> list:
    """Markdown lines: each point against the first (growth = this point / the first)."""
    base = results[0]
    header = (
        "input", "batch", "step time (median)", "time growth", "FLOP growth",
        "time / FLOP growth", "achieved GFLOP/s", "peak memory growth", "memory growth",
    )  # fmt: skip
    rows = []
    for r in results:
        t_growth = r["seconds"] / base["seconds"]
        f_growth = r["gflop"] / base["gflop"]
        m_growth = r["peak_bytes"] / base["peak_bytes"] if base["peak_bytes"] > 0 else float("nan")
        rows.append(
            (
                f"{r['size']}x{r['size']}",
                r["batch"],
                f"{r['seconds']:.3f} s",
                f"{t_growth:.2f}",
                f"{f_growth:.2f}",
                f"{t_growth / f_growth:.2f}",
                f"{3 * r['gflop'] / r['seconds']:.1f}",
                _mib(r["peak_bytes"]),
                f"{m_growth:.2f}",
            )
        )
    return common.markdown_table(header, rows)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (a check of the script)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--point", nargs=2, type=int, metavar=("SIZE", "BATCH"), help="internal")
    parser.add_argument("--classes", type=int, default=Sizes.classes)
    parser.add_argument("--warmup", type=int, default=Sizes.warmup)
    parser.add_argument("--repeats", type=int, default=Sizes.repeats)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.point:  # one point, in this process: JSON on the last line of stdout
        size, batch = args.point
        res = measure_point(size, batch, args.classes, args.warmup, args.repeats, args.device)
        print(json.dumps(res))
        return 0
    sizes = TINY if args.tiny else Sizes(warmup=args.warmup, repeats=args.repeats)
    print("\n".join(table(measure(sizes, args.device))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
