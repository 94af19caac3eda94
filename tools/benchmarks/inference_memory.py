"""Benchmark: peak memory and wall time of whole-image vs sliding-window inference.

For every image size, each mode (TEST.SEM_SEG.MODE "whole" and "slide") runs in a fresh child
process, so that one mode's high-water mark cannot hide the other's. The child builds the
model (random weights: memory and time do not depend on them), makes a random uint8 image,
runs one crop-sized image through it (warm-up: kernel set-up would otherwise dominate the
windows' time), takes a baseline, runs one eval forward (normalisation, inference, resize to
the input size) and reports the wall time and the peak memory above the baseline:

- CPU: peak RSS of the process (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) minus its RSS
  after the model and the image were made;
- CUDA: ``torch.cuda.max_memory_allocated`` minus the memory allocated before the forward.

A child that runs past ``--timeout`` is killed and reported as such.

    python tools/benchmark_inference_memory.py [--config configs/shapes/deeplabv3_R18_shapes.yaml]
        [--sizes 4096x4096 1024x2048] [--crop 512] [--strides 512 341] [--window-batch 1]
"""

import argparse
import json
import math
import subprocess
import sys
import time

from . import common

MIB = 2**20


def _size(text: str) -> tuple:
    h, w = text.lower().split("x")
    return int(h), int(w)


def child(args) -> None:
    """Build the model, run one image in one mode, print a JSON line of the figures."""
    import seg_plugins  # noqa: F401  (first: repairs detectron2 where needed)

    # isort: split
    import torch
    from detectron2.modeling import build_model

    cfg = common.load_config(
        args.config,
        ["MODEL.DEVICE", args.device, "TEST.SEM_SEG.MODE", args.mode]
        + ["TEST.SEM_SEG.CROP_SIZE", [args.crop] * 2, "TEST.SEM_SEG.STRIDE", [args.stride] * 2]
        + ["TEST.SEM_SEG.WINDOW_BATCH_SIZE", args.window_batch],
    )
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    h, w = _size(args.child)
    image = torch.randint(0, 256, (len(cfg.MODEL.PIXEL_MEAN), h, w), dtype=torch.uint8)
    cuda = args.device.startswith("cuda")
    image = image.to(args.device)
    with torch.no_grad():  # the same warm-up in both modes: one crop-sized image (kernel set-up)
        model([{"image": image[:, : args.crop, : args.crop]}])
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = common.rss_bytes()
    start = time.perf_counter()
    with torch.no_grad():
        out = model([{"image": image}])[0]["sem_seg"]
    if cuda:
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    if cuda:
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = common.maxrss_bytes() - base
    assert out.shape[-2:] == (h, w) and bool(torch.isfinite(out).all())
    print(json.dumps({"wall_s": wall, "peak_mib": peak / MIB}))


def run_child(args, size: str, mode: str, stride: int) -> dict:
    child_args = ["--child", size, "--mode", mode, "--stride", stride]
    for flag in ("config", "device", "crop", "window_batch"):
        child_args += [f"--{flag.replace('_', '-')}", getattr(args, flag)]
    try:
        return common.run_child("inference_memory", child_args, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"not done after {args.timeout:.0f} s (killed)"}
    except common.ChildError as err:
        sys.stderr.write(err.stderr[-2000:])
        killed = " (killed: out of memory?)" if err.returncode == -9 else ""
        return {"error": f"exit {err.returncode}{killed}"}


def windows(size: str, crop: int, stride: int) -> int:
    from seg_plugins.modeling.inference import window_starts

    return math.prod(len(window_starts(n, crop, stride)) if n > crop else 1 for n in _size(size))


def row(size: str, mode: str, n_windows: int, res: dict, whole: dict) -> str:
    if "error" in res:
        return common.markdown_row((size, mode, n_windows, res["error"], "-", "-", "-"))
    ratio_mem = ratio_time = "-"
    if "error" not in whole:
        ratio_mem = f"{whole['peak_mib'] / max(res['peak_mib'], 1e-9):.1f}"
        ratio_time = f"{res['wall_s'] / whole['wall_s']:.2f}"
    figures = (f"{res['wall_s']:.1f}", f"{res['peak_mib']:.0f}", ratio_mem, ratio_time)
    return common.markdown_row((size, mode, n_windows, *figures))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/shapes/deeplabv3_R18_shapes.yaml")
    parser.add_argument("--sizes", nargs="+", default=["4096x4096", "1024x2048"])
    parser.add_argument("--crop", type=int, default=512, help="TEST.SEM_SEG.CROP_SIZE (square)")
    parser.add_argument(
        "--strides", nargs="+", type=int, default=[512, 341], help="TEST.SEM_SEG.STRIDE values"
    )
    parser.add_argument("--window-batch", type=int, default=1, help="WINDOW_BATCH_SIZE")
    parser.add_argument("--device", default="", help="cpu / cuda; default: cuda if available")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per child run")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--stride", type=int, default=512, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0
    if not args.device:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    memory = "peak RSS" if args.device == "cpu" else "max_memory_allocated"
    columns = ("image", "mode", "windows", "wall s", f"peak memory MiB ({memory} above baseline)")
    columns += ("memory: whole / this", "time: this / whole")
    load_start = common.load_average()  # a shared CPU slows many small windows more than one pass
    rows = []
    for size in args.sizes:
        whole = run_child(args, size, "whole", args.crop)
        rows.append(row(size, "whole", 1, whole, whole))
        print(rows[-1], flush=True)
        for stride in args.strides:
            res = run_child(args, size, "slide", stride)
            mode = f"slide, stride {stride}"
            rows.append(row(size, mode, windows(size, args.crop, stride), res, whole))
            print(rows[-1], flush=True)
    lines = [
        f"Machine: {common.machine()}; device {args.device}; {common.today()}",
        f"Model: `{args.config}` (random weights), one uint8 image; slide: {args.crop}x"
        f"{args.crop} windows, {args.window_batch} per forward pass. 1-minute load average "
        f"at start / end: {load_start:.1f} / {common.load_average():.1f}.",
        "",
        *common.markdown_table(columns),
        *rows,
    ]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
