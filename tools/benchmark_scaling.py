#!/usr/bin/env python
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
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings
from typing import Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = "fcn_resnet50"  # torchvision_equivalent_cfg's name; the heaviest model per pixel here
TITLE = "FCN-ResNet50"


@dataclasses.dataclass(frozen=True)
class Sizes:
    points: tuple = ((256, 1), (512, 1), (1024, 1), (256, 2), (256, 4), (256, 8))
    classes: int = 21
    warmup: int = 1
    repeats: int = 3


TINY = Sizes(points=((32, 1), (64, 1), (32, 2)), warmup=0, repeats=1)


def _status_kib(field: str) -> Optional[int]:
    """A "kB" field of /proc/self/status (Linux), or None elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> None:
    """Reset this process' VmHWM to its current RSS (Linux >= 4.0); best effort."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak_rss_bytes() -> int:
    """This process' peak resident set: VmHWM, which belongs to the process' own address
    space. Not ``ru_maxrss``: Linux carries that over fork + exec, so a child started by a
    large parent reports at least the parent's size."""
    kib = _status_kib("VmHWM")
    if kib is not None:
        return kib * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _rss_bytes() -> int:
    """This process' resident set now (Linux); elsewhere its peak so far."""
    kib = _status_kib("VmRSS")
    return kib * 1024 if kib is not None else _peak_rss_bytes()


def measure_point(size: int, batch: int, classes: int, warmup: int, repeats: int, device: str):
    """Median training-step seconds, forward GFLOP and peak memory growth (bytes) of our
    FCN-ResNet50 on ``batch`` images of ``size`` x ``size`` (runs in this process)."""
    sys.path.insert(0, REPO)
    import seg_plugins  # noqa: F401  (first: repairs detectron2 where needed)

    # isort: split
    import torch
    from detectron2.modeling import build_model
    from detectron2.utils.analysis import FlopCountAnalysis

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
        _reset_peak_rss()
        base = _rss_bytes()
    for _ in range(warmup):
        step()
    seconds = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() - base if cuda else _peak_rss_bytes() - base

    # FLOPs last: fvcore's trace would raise the CPU peak before the steps are measured.
    model.eval()  # FLOPs of the forward: the eval pass plus the aux head (as benchmark.py)
    analysis = FlopCountAnalysis(model, [{"image": x["image"].float()} for x in inputs])
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flops = analysis.total()
        with torch.no_grad():
            images = torch.stack([x["image"] for x in inputs]).float().to(device)
            feature = model.backbone(images)[model.aux_head.in_feature]
        aux = FlopCountAnalysis(model.aux_head, {model.aux_head.in_feature: feature})
        aux.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        flops += aux.total()
    del feature, images

    return {
        "size": size,
        "batch": batch,
        "seconds": statistics.median(seconds),
        "gflop": 2 * flops / 1e9,  # fvcore counts one per multiply-add
        "peak_bytes": peak,
    }


def run_point(size: int, batch: int, sizes: Sizes, device: str) -> dict:
    """``measure_point`` in a fresh Python process (its own peak memory)."""
    cmd = [
        sys.executable, os.path.abspath(__file__), "--point", str(size), str(batch),
        "--classes", str(sizes.classes), "--warmup", str(sizes.warmup),
        "--repeats", str(sizes.repeats), "--device", device,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(
            f"scaling point {size}x{size} batch {batch} failed (exit {proc.returncode}):\n"
            f"{proc.stderr[-3000:]}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


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
    lines = [
        "| input | batch | step time (median) | time growth | FLOP growth | time / FLOP growth "
        "| achieved GFLOP/s | peak memory growth | memory growth |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        t_growth = r["seconds"] / base["seconds"]
        f_growth = r["gflop"] / base["gflop"]
        m_growth = r["peak_bytes"] / base["peak_bytes"] if base["peak_bytes"] > 0 else float("nan")
        lines.append(
            f"| {r['size']}x{r['size']} | {r['batch']} | {r['seconds']:.3f} s | "
            f"{t_growth:.2f} | {f_growth:.2f} | {t_growth / f_growth:.2f} | "
            f"{3 * r['gflop'] / r['seconds']:.1f} | {_mib(r['peak_bytes'])} | {m_growth:.2f} |"
        )
    return lines


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
