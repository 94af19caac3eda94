#!/usr/bin/env python3
"""The GPU kit: prove training, evaluation, AMP and speed on a bare GPU machine in one run.

The GPU machines lent to this project (an H200, 16 cores, for 15 minutes in all, start
included) come with Python 3.12, torch, torchvision, numpy, matplotlib, tensorboard, onnx /
onnxruntime, pytest and hypothesis, but without detectron2 and the rest of its stack, and they
cannot download anything. So the work is split in two:

``prepare`` (here, with the project venv; ``make gpu-kit``) collects into ``.gpu_kit/`` (git
ignored, carried to the device; about 6 MiB, at most 60):

- cp312 manylinux / pure-Python wheels of every package in :data:`KIT_PACKAGES`, at the
  versions the project venv runs (``pip download --only-binary``; packages published as
  sdists only, fvcore and iopath, are built into pure wheels here with ``pip wheel``);
- the official detectron2 main source (``../shared/detectron2-main-*.tar.gz`` or
  ``SEG_PLUGINS_D2_SOURCE``);
- ``manifest.json``: the files, versions and sizes.

With ``--check`` it also asks pip's resolver, in a dry run for CPython 3.12 on manylinux, to
install the kit on top of what the device provides: a conflict or a missing dependency fails.

``run`` (there: ``python3 tools/gpu_kit.py run --out $OUT``; only the standard library until
the kit is installed) installs the wheels of the packages the device lacks into
``.gpu_kit/site``, unpacks detectron2 and builds its CUDA ops with nvcc when that fits in
``--build-budget`` seconds (otherwise it runs without compiled ops, through
``seg_plugins.compat``, as the v0.6 fallback does), then runs these steps, each time-boxed,
with its log in ``$OUT/logs/`` and its figures in ``$OUT/gpu_report.md``:

1. ``tests``: the CUDA-only tests and the model / loss / evaluator / Predictor / export tests,
   on a machine where CUDA is available (tests then take their CUDA paths);
2. ``benchmark``: ``tools/benchmark.py --device cuda`` (ours vs torchvision, AMP fp16 /
   bf16, channels-last, compile, FLOP/s against the measured matmul peak);
3. ``demo``: ``configs/shapes/unet_shapes.yaml`` on CUDA to its final mIoU, with wall time;
4. ``mask_rcnn``: ``configs/shapes/mask_rcnn_R18_FPN_GN_shapes.yaml`` on CUDA to its AP;
5. ``evaluator``: ``tools/benchmark_evaluator.py --device cuda`` (CUDA logits, ours vs
   detectron2's, numbers asserted equal).

``run --tiny`` does the same on the CPU with tiny sizes (2 iterations, small data, a few
tests), without installing or building anything: the CI test of the run's logic.
"""

from __future__ import annotations

import argparse
import glob
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KIT = os.path.join(REPO, ".gpu_kit")
MAX_KIT_MIB = 60

# What the GPU machine lacks (../shared/DESIGN.md, "The GPU machine"): detectron2's stack,
# cityscapesscripts and shapely, and their own dependencies that it does not have.
KIT_PACKAGES = (
    "pycocotools",
    "shapely",
    "fvcore",
    "iopath",
    "yacs",
    "omegaconf",
    "hydra-core",
    "antlr4-python3-runtime",
    "cityscapesScripts",
    "termcolor",
    "tabulate",
    "portalocker",
    "PyYAML",
    "tqdm",
    "cloudpickle",
    "coloredlogs",
    "humanfriendly",
    "pyquaternion",
    "appdirs",
    "typing",
    "requests",
    "urllib3",
    "idna",
    "charset-normalizer",
    "certifi",
    "tzdata",  # python-dateutil >= 2.9's (matplotlib's); installed only where missing
)
# What the device has (and the kit must not replace): the resolver check takes these from the
# package index, at the device's versions where they matter.
DEVICE_PROVIDES = {"numpy": "2.5", "pillow": None}  # (and torch, which no kit package needs)
DEVICE_PYTHON = "3.12"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")

STEPS = ("tests", "benchmark", "demo", "mask_rcnn", "evaluator")
# seconds per step on the device: the whole run must fit in about 9 minutes, start included
# (the device tool stops a command at 600 s: these add up to 510, plus the install)
BUDGETS = {"build": 120, "tests": 90, "benchmark": 90, "demo": 80, "mask_rcnn": 100,
           "evaluator": 30}  # fmt: skip
CUDA_TESTS = (
    "tests/test_cuda_parity.py",  # loss, models, evaluator, Predictor: CPU vs CUDA
    "tests/engine/test_acceleration.py",
    "tests/compat/test_official_main_repairs.py",
    "tests/modeling/test_losses.py",
    "tests/modeling/test_all_models.py",
    "tests/evaluation/test_sem_seg_evaluation.py",
    "tests/engine/test_predictor.py",
    "tests/test_export.py",
)
GPU_BENCHMARKS = ("fcn_r50", "deeplabv3_r50", "unet", "flops", "options")
TINY_TESTS = ("tests/modeling/test_losses.py", "-k", "binary")


class KitError(RuntimeError):
    """A kit that cannot be prepared or run; the message names the fix."""


def _log(message: str) -> None:
    print(f"[gpu-kit] {message}", file=sys.stderr, flush=True)


def _pip(python: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([python, "-m", "pip", *args], text=True, capture_output=True, **kwargs)


# ----------------------------------------------------------------------------- prepare
def pinned_versions(packages=KIT_PACKAGES) -> dict:
    """{package: version} as this Python (the project venv) has them installed."""
    versions, missing = {}, []
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    if missing:
        raise KitError(
            f"{missing} are not installed in {sys.executable}: run prepare with the project "
            "venv's Python (.venv/bin/python tools/gpu_kit.py prepare; make gpu-kit)"
        )
    return versions


def _target_args() -> list:
    args = ["--only-binary=:all:", "--python-version", DEVICE_PYTHON, "--implementation", "cp"]
    for platform in PLATFORMS:
        args += ["--platform", platform]
    return args


def _canonical(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _wheel_of(name: str, version: str, folder: str):
    """The wheel of name==version in folder, or None (names compare as PEP 503 does)."""
    want = re.sub(r"[-_.]+", "_", name).lower()
    for path in glob.glob(os.path.join(folder, "*.whl")):
        dist, ver = os.path.basename(path).split("-")[:2]
        if re.sub(r"[-_.]+", "_", dist).lower() == want and ver == version:
            return path
    return None


def download_wheels(versions: dict, folder: str) -> dict:
    """Wheels for CPython 3.12 on manylinux of every ``name==version`` into ``folder``: a
    binary from the index where one exists, else built here from the sdist (which must give
    a pure-Python ``-none-any`` wheel). Returns {name: wheel path}."""
    os.makedirs(folder, exist_ok=True)
    wheels = {}
    for name, version in sorted(versions.items()):
        found = _wheel_of(name, version, folder)
        if found is None:
            spec = f"{name}=={version}"
            r = _pip(sys.executable, "download", "--no-deps", "-q", "-d", folder,
                     *_target_args(), spec)  # fmt: skip
            if r.returncode != 0:  # no wheel for the device: build a pure one from the sdist
                _log(f"{spec}: no cp312 wheel on the index; building it from its sdist")
                r = _pip(sys.executable, "wheel", "--no-deps", "-q", "-w", folder, spec)
                if r.returncode != 0:
                    raise KitError(f"{spec}: neither a wheel nor a buildable sdist:\n{r.stderr}")
            found = _wheel_of(name, version, folder)
        if found is None or not (found.endswith("-none-any.whl") or "cp312" in found
                                 or "abi3" in found):  # fmt: skip
            raise KitError(f"{name}=={version}: {found} does not install on CPython 3.12")
        wheels[name] = found
    return wheels


def detectron2_source() -> str:
    """The detectron2 main snapshot to carry: SEG_PLUGINS_D2_SOURCE (a .tar.gz) or the newest
    ../shared/detectron2-main-*.tar.gz."""
    source = os.environ.get("SEG_PLUGINS_D2_SOURCE")
    if source:
        if not source.endswith((".tar.gz", ".tgz")) or not os.path.isfile(source):
            raise KitError(f"SEG_PLUGINS_D2_SOURCE={source}: give a .tar.gz of detectron2")
        return source
    found = sorted(glob.glob(os.path.join(REPO, "..", "shared", "detectron2-main-*.tar.gz")))
    if not found:
        raise KitError(
            "no detectron2 source: put detectron2-main-*.tar.gz in ../shared or set "
            "SEG_PLUGINS_D2_SOURCE=path/to/detectron2.tar.gz"
        )
    return os.path.abspath(found[-1])


def prepare(kit: str = KIT, *, check: bool = False) -> dict:
    """Fill ``kit`` (wheels, detectron2 source, manifest.json); returns the manifest."""
    versions = pinned_versions()
    wheels = download_wheels(versions, os.path.join(kit, "wheels"))
    source = detectron2_source()
    carried = os.path.join(kit, os.path.basename(source))
    if not os.path.isfile(carried) or os.path.getsize(carried) != os.path.getsize(source):
        shutil.copyfile(source, carried)
    files = sorted(wheels.values()) + [carried]
    size = sum(os.path.getsize(f) for f in files)
    if size > MAX_KIT_MIB * 2**20:
        raise KitError(f"the kit holds {size / 2**20:.1f} MiB, over {MAX_KIT_MIB} MiB")
    manifest = {
        "python": DEVICE_PYTHON,
        "packages": versions,
        "wheels": {name: os.path.basename(path) for name, path in wheels.items()},
        "detectron2": os.path.basename(carried),
        "mib": round(size / 2**20, 2),
    }
    with open(os.path.join(kit, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
    if check:
        check_resolution(kit, manifest)
    _log(f"kit ready in {kit}: {len(wheels)} wheels + {manifest['detectron2']}, "
         f"{manifest['mib']} MiB")  # fmt: skip
    return manifest


def check_resolution(kit: str, manifest: dict) -> list:
    """pip's resolver, dry run for CPython 3.12 / manylinux: the kit's packages at their
    versions plus what the device provides (from the index, numpy at the device's minor
    version). Raises KitError on a conflict, or when the resolution needs a package that is
    neither in the kit nor provided by the device. Returns the resolved names."""
    requirements = [f"{name}=={version}" for name, version in manifest["packages"].items()]
    requirements += [f"{n}=={v}.*" if v else n for n, v in DEVICE_PROVIDES.items()]
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "report.json")
        # --ignore-requires-python: pip install checks Requires-Python against the running
        # interpreter even with --python-version; the wheels' tags (cp312 / abi3 / none), and
        # pip download's own check when the kit's wheels were fetched, stand for it
        args = ["install", "--dry-run", "--ignore-installed", "--ignore-requires-python", "-q"]
        args += ["--report", report, "--target", os.path.join(tmp, "t")]
        args += ["--find-links", os.path.join(kit, "wheels"), *_target_args(), *requirements]
        r = _pip(sys.executable, *args)
        if r.returncode != 0:
            raise KitError(f"the kit does not resolve for CPython {DEVICE_PYTHON}:\n{r.stderr}")
        with open(report) as f:
            resolved = {_canonical(item["metadata"]["name"]) for item in json.load(f)["install"]}
    known = {_canonical(n) for n in manifest["packages"]} | set(DEVICE_PROVIDES)
    # what the device has beside numpy / torch / Pillow (matplotlib, tensorboard, ...)
    known |= {"contourpy", "cycler", "fonttools", "kiwisolver", "pyparsing", "python-dateutil",
              "six", "packaging", "matplotlib", "typing-extensions", "setuptools"}  # fmt: skip
    unknown = sorted(resolved - known)
    if unknown:
        raise KitError(f"the kit's packages need {unknown}, neither in the kit nor on the device")
    return sorted(resolved)


# ----------------------------------------------------------------------------- run
def install(kit: str, site: str) -> list:
    """Install the kit's wheels of packages this Python lacks into ``site`` (no deps, no
    index); returns their names."""
    with open(os.path.join(kit, "manifest.json")) as f:
        manifest = json.load(f)
    missing = []
    for name in manifest["packages"]:
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    if missing:
        wheels = [os.path.join(kit, "wheels", manifest["wheels"][name]) for name in missing]
        r = _pip(sys.executable, "install", "--no-deps", "--no-index", "-q", "--target", site,
                 *wheels)  # fmt: skip
        if r.returncode != 0:
            raise KitError(f"installing the kit failed:\n{r.stderr}")
    return missing


def setup_detectron2(kit: str, work: str, budget: float, env: dict) -> str:
    """Unpack the carried detectron2 into ``work`` and build its ops (CUDA with nvcc) within
    ``budget`` seconds; returns a line saying what was done. Without nvcc, or when the build
    fails or runs out of time, detectron2 runs without compiled ops (seg_plugins.compat)."""
    with open(os.path.join(kit, "manifest.json")) as f:
        tar = os.path.join(kit, json.load(f)["detectron2"])
    src = os.path.join(work, "detectron2-src")
    if not os.path.isdir(src):
        with tarfile.open(tar) as t:
            t.extractall(os.path.join(work, "unpacked"), filter="data")
        # the top-level folder holding setup.py and detectron2/ (projects have their own)
        [top] = [
            os.path.dirname(path)
            for path in glob.glob(os.path.join(work, "unpacked", "*", "setup.py"))
            + glob.glob(os.path.join(work, "unpacked", "setup.py"))
            if os.path.isdir(os.path.join(os.path.dirname(path), "detectron2"))
        ]
        os.replace(top, src)
    zoo = os.path.join(src, "detectron2", "model_zoo", "configs")
    if not os.path.exists(zoo):
        os.symlink(os.path.join(src, "configs"), zoo)
    if shutil.which("nvcc") is None:
        return "detectron2 main from source, no nvcc: without compiled ops (seg_plugins.compat)"
    build_env = dict(env, FORCE_CUDA="1", MAX_JOBS=str(os.cpu_count() or 4))
    tic = time.perf_counter()
    try:
        build = [sys.executable, "setup.py", "build_ext", "--inplace"]
        r = subprocess.run(
            build, cwd=src, env=build_env, capture_output=True, text=True, timeout=budget
        )
    except subprocess.TimeoutExpired:
        _remove_built_ops(src)
        return f"detectron2 main: CUDA build over {budget:.0f} s, stopped; without compiled ops"
    took = time.perf_counter() - tic
    if r.returncode != 0:
        _remove_built_ops(src)
        tail = r.stderr.strip().splitlines()[-3:]
        return f"detectron2 main: CUDA build failed ({took:.0f} s: {tail}); without compiled ops"
    return f"detectron2 main built with CUDA ops by nvcc in {took:.0f} s"


def _remove_built_ops(src: str) -> None:
    for path in glob.glob(os.path.join(src, "detectron2", "_C*.so")):
        os.remove(path)


# Tiny mode trains on a tiny "shapes" registered in the same process as train_net's main.
_TINY_TRAIN = """
import sys
from seg_plugins.data import register_shapes
from seg_plugins.engine.cli import main
register_shapes("gpu_kit_tiny", root=sys.argv[1], num_train=4, num_val=2, image_size=64)
main(sys.argv[2:])
"""


def _step_commands(tiny: bool, device: str, work: str) -> dict:
    py = sys.executable
    if tiny:
        train = [py, "-c", _TINY_TRAIN, os.path.join(work, "tiny_datasets")]
        small = ["SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS",
                 "1", "DATALOADER.NUM_WORKERS", "0"]  # fmt: skip
        sem = [*small, "DATASETS.TRAIN", "('gpu_kit_tiny_sem_seg_train',)", "DATASETS.TEST",
               "('gpu_kit_tiny_sem_seg_val',)", "MODEL.UNET.BASE_CHANNELS", "4"]  # fmt: skip
        inst = [*small, "DATASETS.TRAIN", "('gpu_kit_tiny_instance_train',)", "DATASETS.TEST",
                "('gpu_kit_tiny_instance_val',)"]  # fmt: skip
    else:
        train, sem, inst = [py, "tools/train_net.py"], [], []
    tests = TINY_TESTS if tiny else CUDA_TESTS
    return {
        "tests": [
            py,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:tests.tree_check",
            *tests,
        ],  # fmt: skip
        "benchmark": [
            py,
            "tools/benchmark.py",
            "--device",
            device,
            # the model comparisons, FLOP/s against the matmul peak and the speed options (AMP
            # float16 and bfloat16, channels-last); the loader / scaling rows are CPU figures
            *(["--tiny", "--only", "unet"] if tiny else ["--only", *GPU_BENCHMARKS]),
        ],  # fmt: skip
        "demo": [
            *train,
            "--config-file",
            "configs/shapes/unet_shapes.yaml",
            "MODEL.DEVICE",
            device,
            "OUTPUT_DIR",
            os.path.join(work, "demo"),
            *sem,
        ],  # fmt: skip
        "mask_rcnn": [
            *train,
            "--config-file",
            "configs/shapes/mask_rcnn_R18_FPN_GN_shapes.yaml",
            "MODEL.DEVICE",
            device,
            "OUTPUT_DIR",
            os.path.join(work, "mask_rcnn"),
            *inst,
        ],  # fmt: skip
        # --target 0: the speed-up is reported, not judged; different numbers still fail
        "evaluator": [
            py,
            "tools/benchmark_evaluator.py",
            "--device",
            device,
            "--target",
            "0",
            *(
                ["--images", "2", "--repeats", "1", "--height", "64", "--width", "128"]
                if tiny
                else ["--images", "20"]
            ),
        ],  # fmt: skip
    }


_FIGURES = {
    "tests": re.compile(r"^=* ?(\d+ (?:passed|failed)[^=]*?) ?=*$", re.M),
    "demo": re.compile(r"Final sem_seg: (.*)$", re.M),
    "mask_rcnn": re.compile(r"Final segm: (.*)$", re.M),
    "benchmark": re.compile(r"^\|.*\|$", re.M),
    "evaluator": re.compile(r"^\|.*\|$|^Identical numbers.*$", re.M),
}


def figures(step: str, output: str) -> list:
    """The lines of a step's output that carry its figures."""
    return _FIGURES[step].findall(output)[-40:]


def run_steps(steps, *, tiny: bool, device: str, out: str, work: str, env: dict) -> list:
    """Run each step (time-boxed) with its log in out/logs; returns one dict per step."""
    os.makedirs(os.path.join(out, "logs"), exist_ok=True)
    commands = _step_commands(tiny, device, work)
    results = []
    for step in steps:
        budget = 600 if tiny else BUDGETS[step]
        tic = time.perf_counter()
        try:
            r = subprocess.run(commands[step], cwd=REPO, env=env, capture_output=True,
                               text=True, timeout=budget)  # fmt: skip
            output = r.stdout + r.stderr
            status = "ok" if r.returncode == 0 else f"exit {r.returncode}"
        except subprocess.TimeoutExpired as e:
            output = _text(e.stdout) + _text(e.stderr)
            status = f"over its {budget} s budget, stopped"
        seconds = time.perf_counter() - tic
        with open(os.path.join(out, "logs", f"{step}.log"), "w") as f:
            f.write(" ".join(commands[step]) + "\n\n" + output)
        results.append({"step": step, "status": status, "seconds": round(seconds, 1),
                        "figures": figures(step, output)})  # fmt: skip
        _log(f"{step}: {status} in {seconds:.0f} s")
    return results


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value or ""


def write_report(path: str, setup_lines: list, results: list, *, tiny: bool) -> None:
    lines = ["# GPU kit report" + (" (tiny CPU mode: a check of the kit, no figures)" if tiny
                                   else ""), ""]  # fmt: skip
    lines += [f"- {line}" for line in setup_lines] + [""]
    lines += ["| step | status | wall s |", "|---|---|---|"]
    lines += [f"| {r['step']} | {r['status']} | {r['seconds']} |" for r in results]
    for r in results:
        lines += ["", f"## {r['step']}", "", *(r["figures"] or ["(no figures: see its log)"])]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def _environment(site: str, d2_src: str | None) -> dict:
    env = dict(os.environ)
    # the repository first: detectron2's source tree has a `tools` package of its own
    paths = [p for p in (REPO, site, d2_src) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def run(out: str, *, tiny: bool = False, steps=STEPS, kit: str = KIT) -> list:
    """Set the device up from the kit and run ``steps``; writes out/gpu_report.md."""
    os.makedirs(out, exist_ok=True)
    work = os.path.join(kit, "work")
    os.makedirs(work, exist_ok=True)
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    setup_lines = [f"python {sys.version.split()[0]}; {now}"]
    site = d2_src = None
    if tiny:
        device = "cpu"
        setup_lines.append("tiny CPU mode: this Python's packages and detectron2 as they are")
    else:
        device = "cuda"
        site = os.path.join(kit, "site")
        tic = time.perf_counter()
        installed = install(kit, site)
        setup_lines.append(f"installed from the kit in {time.perf_counter() - tic:.0f} s: "
                           f"{', '.join(installed) or 'nothing (all present)'}")  # fmt: skip
        env = _environment(site, None)
        setup_lines.append(setup_detectron2(kit, work, BUDGETS["build"], env))
        d2_src = os.path.join(work, "detectron2-src")
    env = _environment(site, d2_src)
    env["DETECTRON2_DATASETS"] = os.path.join(work, "datasets")
    probe = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=REPO, env=env,
        capture_output=True, text=True,
    )  # fmt: skip
    setup_lines.append(probe.stdout.strip() or f"probe failed: {probe.stderr.strip()[-500:]}")
    results = run_steps(steps, tiny=tiny, device=device, out=out, work=work, env=env)
    write_report(os.path.join(out, "gpu_report.md"), setup_lines, results, tiny=tiny)
    return results


# Run in the prepared environment: what is there.
_PROBE = """
import seg_plugins, torch, detectron2
from seg_plugins import compat
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA"
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {gpu}; detectron2 "
      f"{detectron2.__version__}, compiled ops: {compat.has_compiled_ops()}")
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="collect the kit into .gpu_kit/ (here, project venv)")
    p.add_argument("--check", action="store_true", help="also dry-run pip's resolver for 3.12")
    r = sub.add_parser("run", help="set up the device from the kit and run the steps")
    r.add_argument("--out", required=True, help="folder for gpu_report.md and logs/")
    r.add_argument("--tiny", action="store_true", help="CPU, tiny sizes: a check of the kit")
    r.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    args = parser.parse_args(argv)
    try:
        if args.command == "prepare":
            prepare(check=args.check)
            return 0
        results = run(args.out, tiny=args.tiny, steps=args.steps)
    except KitError as e:
        print(f"gpu_kit: error: {e}", file=sys.stderr)
        return 2
    return 0 if all(r["status"] == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
