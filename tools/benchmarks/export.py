"""Benchmark: inference latency of PyTorch eager vs TorchScript vs ONNX Runtime (CPU).

    python tools/benchmark_export.py [--repeats 10] [--markdown docs/benchmarks_export.md]
    python tools/benchmark_export.py --tiny      # a check in seconds (tests run this)

For FCN-ResNet50, DeepLabV3-ResNet50, DeepLabV3+-ResNet50 (configs/Base-*.yaml, output
stride 8 / 8 / 16 as configured) and U-Net (configs/Base-UNet.yaml), 21 classes, random
weights: each model is exported with seg_plugins.export (the exported graph includes the
normalisation and padding) and the three runtimes predict the same 1 x 3 x 512 x 512 raw image,
taking turns (order alternating), after one warm-up run each. Eager is the model's own
forward (``model([{"image": ...}])`` under ``torch.inference_mode``: what
``seg_plugins.Predictor`` runs); TorchScript is ``torch.jit.load`` of the exported file;
ONNX Runtime is a CPU session with as many intra-op threads as torch uses. Reported: median
ms per image, the ratio to eager (< 1: faster), and the largest difference of the exported
logits from eager's (asserted <= 1e-4; the tool exits 1 otherwise).
"""

import argparse
import os
import sys
import tempfile
import time

import seg_plugins  # noqa: F401  (first: repairs detectron2 where needed)

# isort: split
import numpy as np
import torch
from detectron2.modeling import build_model

from seg_plugins.export import export_onnx, export_torchscript, load_exported

from . import common

MODELS = {
    "FCN-ResNet50": ("configs/Base-FCN.yaml", ["MODEL.RESNETS.DEPTH", 50]),
    "DeepLabV3-ResNet50": ("configs/Base-DeepLabV3.yaml", ["MODEL.RESNETS.DEPTH", 50]),
    "DeepLabV3+-ResNet50": ("configs/Base-DeepLabV3Plus.yaml", ["MODEL.RESNETS.DEPTH", 50]),
    "U-Net": ("configs/Base-UNet.yaml", []),
}
TINY_OPTS = {  # same architectures, narrow: the check runs in seconds
    "FCN-ResNet50": ["MODEL.RESNETS.DEPTH", 18, "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
                     "MODEL.FCN.CHANNELS", 8],
    "DeepLabV3-ResNet50": ["MODEL.RESNETS.DEPTH", 18, "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
                           "MODEL.ASPP.CHANNELS", 8],
    "DeepLabV3+-ResNet50": ["MODEL.RESNETS.DEPTH", 18, "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
                            "MODEL.ASPP.CHANNELS", 8, "MODEL.DEEPLABV3PLUS.DECODER_CHANNELS", 8],
    "U-Net": ["MODEL.UNET.BASE_CHANNELS", 4, "MODEL.UNET.DEPTH", 3],
}  # fmt: skip
TOLERANCE = 1e-4
COLUMNS = (
    "model", "eager ms", "TorchScript ms (vs eager)", "ONNX Runtime ms (vs eager)",
    "max diff TorchScript / ONNX", "export s",
)  # fmt: skip
HEADER = """# Inference latency: PyTorch eager vs TorchScript vs ONNX Runtime (CPU)

`python tools/benchmark_export.py --markdown docs/benchmarks_export.md`. Each model
(random weights, 21 classes) is exported by `seg_plugins.export` (normalisation and padding
inside the graph); the three runtimes predict the same raw 1x3x512x512 image, taking turns,
after a warm-up run each. Median ms per image; "vs eager" < 1 is faster. "max diff" is the
largest |exported - eager| logit (must be <= 1e-4).
"""


def build(name: str, tiny: bool, classes: int = 21):
    config, opts = MODELS[name]
    opts = [*opts, *(TINY_OPTS[name] if tiny else [])]
    opts += ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", classes, "MODEL.DEVICE", "cpu"]
    cfg = common.load_config(config, opts)
    torch.manual_seed(0)
    return build_model(cfg).eval()


def measure(name: str, args, folder: str) -> dict:
    model = build(name, args.tiny)
    size = (args.size, args.size)
    image = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0)) * 255
    tic = time.perf_counter()
    onnx_file = export_onnx(model, os.path.join(folder, f"{name}.onnx"), size)
    ts_file = export_torchscript(model, os.path.join(folder, f"{name}.ts"), size)
    export_s = time.perf_counter() - tic

    def eager():
        with torch.inference_mode():
            return model([{"image": image[0]}])[0]["sem_seg"].numpy()[None]

    runners = {"eager": eager}
    for key, path in (("TorchScript", ts_file), ("ONNX Runtime", onnx_file)):
        run = load_exported(path)
        runners[key] = lambda run=run: run(image.numpy())
    outputs = {key: run() for key, run in runners.items()}  # warm-up, and the outputs
    diffs = {key: float(np.abs(out - outputs["eager"]).max()) for key, out in outputs.items()}
    seconds = common.time_calls(runners, 0, args.repeats, "cpu")  # warmed up above
    ms = {key: 1000 * value for key, value in seconds.items()}
    return {"ms": ms, "diff": diffs, "export_s": export_s}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--tiny", action="store_true", help="narrow models, 64 px, 2 repeats")
    parser.add_argument("--markdown", help="also write the table to this file")
    args = parser.parse_args(argv)
    if args.tiny:
        args.size, args.repeats = 64, 2
    load_start = common.load_average()
    log = common.stderr_logger("benchmark_export")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_export_") as folder:
        for name in MODELS:
            log(f"{name} ...")
            results.append((name, measure(name, args, folder)))
    rows, worst = [], 0.0
    for name, r in results:
        ms, diff = r["ms"], r["diff"]
        worst = max(worst, diff["TorchScript"], diff["ONNX Runtime"])
        rows.append(
            (
                name,
                f"{ms['eager']:.1f}",
                f"{ms['TorchScript']:.1f} ({ms['TorchScript'] / ms['eager']:.2f})",
                f"{ms['ONNX Runtime']:.1f} ({ms['ONNX Runtime'] / ms['eager']:.2f})",
                f"{diff['TorchScript']:.1e} / {diff['ONNX Runtime']:.1e}",
                f"{r['export_s']:.0f}",
            )
        )
    lines = [
        HEADER,
        f"Machine: {common.machine()}; {torch.get_num_threads()} torch / ORT threads; "
        f"{common.today()}; {common.load_note(load_start)}; {args.size}x{args.size}, median of "
        f"{args.repeats} runs each" + (" (tiny check: narrow models)" if args.tiny else ""),
        "",
        *common.markdown_table(COLUMNS, rows),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        common.write_markdown(args.markdown, text)
    if worst > TOLERANCE:
        print(f"FAIL: an exported model differs from eager by {worst:.1e} > {TOLERANCE:.0e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
