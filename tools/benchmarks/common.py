"""What the benchmarks share: the machine they ran on, medians of alternating timed runs,
memory and FLOP counts, configs, child processes, training runs and their metrics, and the
Markdown they write.

torch, detectron2 and seg_plugins are imported inside the functions that use them: a
benchmark that needs none of them up front (tools/benchmark_demo.py, the parents of the
per-point child processes) starts in a fraction of a second.
"""

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Union

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE = "tools.benchmarks"  # the package's name when the repository root is on the path


# ----------------------------------------------------------------------------- the run
def machine() -> str:
    """The CPU model, its core count, the GPU (or "no GPU") and torch's version."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}"


def today() -> str:
    return time.strftime("%Y-%m-%d")


def load_average() -> float:
    """The 1-minute load average now: a busy shared machine slows every figure."""
    return os.getloadavg()[0]


def load_note(start: float) -> str:
    """The 1-minute load average at the start (``start``) and now."""
    return f"1-minute load average {start:.1f} at the start, {load_average():.1f} at the end"


def stderr_logger(prefix: str) -> Callable[[str], None]:
    """A ``log(message)`` that prints "[prefix] message" to stderr at once."""

    def log(message: str) -> None:
        print(f"[{prefix}] {message}", file=sys.stderr, flush=True)

    return log


def fmt_seconds(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1000:.1f} ms"


# ----------------------------------------------------------------------------- timing
def synchronize(device) -> None:
    """Wait for ``device``'s queued kernels (a no-op on the CPU)."""
    _synchronizer(device)()


def _synchronizer(device) -> Callable[[], None]:
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def time_calls(calls: Dict[str, Callable], warmup: int, repeats: int, device="cpu") -> dict:
    """Median seconds of one call of each callable: ``warmup`` untimed calls each, then
    ``repeats`` timed calls each, the callables taking turns (the order alternating), each
    timed call between two synchronisations of ``device``."""
    sync = _synchronizer(device)
    for call in calls.values():
        for _ in range(warmup):
            call()
    seconds = {key: [] for key in calls}
    for r in range(repeats):
        for key in list(calls)[:: 1 if r % 2 == 0 else -1]:
            sync()
            start = time.perf_counter()
            calls[key]()
            sync()
            seconds[key].append(time.perf_counter() - start)
    return {key: statistics.median(values) for key, values in seconds.items()}


# ----------------------------------------------------------------------------- memory
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


def reset_peak_rss() -> None:
    """Reset this process' VmHWM to its current resident set (Linux >= 4.0); best effort."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def maxrss_bytes() -> int:
    """``getrusage(RUSAGE_SELF).ru_maxrss`` in bytes. Linux carries it over fork + exec: a
    child started by a large parent reports at least the parent's size."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def peak_rss_bytes() -> int:
    """This process' peak resident set: VmHWM, which belongs to the process' own address
    space (not :func:`maxrss_bytes`, which may be the parent's); ru_maxrss elsewhere."""
    kib = _status_kib("VmHWM")
    return kib * 1024 if kib is not None else maxrss_bytes()


def rss_bytes() -> int:
    """This process' resident set now (Linux); elsewhere its peak so far."""
    kib = _status_kib("VmRSS")
    return kib * 1024 if kib is not None else peak_rss_bytes()


# ----------------------------------------------------------------------------- models
def load_config(config: str, opts: Sequence = ()):
    """A detectron2 config with seg_plugins' keys: ``config`` (relative to the repository
    root, or absolute), then the ``KEY VALUE`` overrides ``opts``."""
    import seg_plugins  # first: repairs detectron2 where needed

    # isort: split
    from detectron2.config import get_cfg

    cfg = get_cfg()
    seg_plugins.add_seg_plugins_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, config))
    cfg.merge_from_list(list(opts))
    return cfg


def fvcore_flops(model, inputs) -> float:
    """fvcore's count (1 per multiply-add) of ``model(inputs)``, via detectron2's adapter,
    without its warnings about unsupported ops and Python-side checks."""
    from detectron2.utils.analysis import FlopCountAnalysis

    analysis = FlopCountAnalysis(model, inputs)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's warnings about Python-side checks
        return analysis.total()


# ----------------------------------------------------------------------------- processes
class ChildError(RuntimeError):
    """A benchmark's child process exited with an error."""

    def __init__(self, returncode: int, stderr: str):
        super().__init__(f"exit {returncode}:\n{stderr[-3000:]}")
        self.returncode, self.stderr = returncode, stderr


def run_child(module: str, args: Sequence[str], timeout: Optional[float] = None) -> dict:
    """``python -m tools.benchmarks.<module> ARGS`` in a fresh process (its own peak memory)
    from the repository root; the JSON object on the last line of its stdout. Raises
    :class:`ChildError` when it fails, ``subprocess.TimeoutExpired`` after ``timeout`` s."""
    cmd = [sys.executable, "-m", f"{PACKAGE}.{module}", *map(str, args)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise ChildError(proc.returncode, proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def train_net(config: str, output_dir: str, opts: Sequence[str] = ()) -> dict:
    """tools/train_net.py on ``config`` in a fresh ``output_dir`` (emptied first):
    {"wall_s"} and, when it failed, {"error": "exit N"} (its stderr's end printed)."""
    shutil.rmtree(output_dir, ignore_errors=True)
    cmd = [sys.executable, "tools/train_net.py", "--config-file", config, "OUTPUT_DIR", output_dir]
    start = time.perf_counter()
    proc = subprocess.run([*cmd, *opts], cwd=REPO, capture_output=True, text=True)
    res = {"wall_s": time.perf_counter() - start}
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        res["error"] = f"exit {proc.returncode}"
    return res


def metrics_records(output_dir: str) -> List[dict]:
    """The records of OUTPUT_DIR/metrics.json (detectron2's JSON lines)."""
    with open(os.path.join(output_dir, "metrics.json")) as f:
        return [json.loads(line) for line in f if line.strip()]


def final_metrics(output_dir: str) -> dict:
    """The last value of every key in OUTPUT_DIR/metrics.json."""
    last = {}
    for record in metrics_records(output_dir):
        last.update(record)
    return last


def sem_seg_miou(output_dir: str, dataset: str = "shapes_sem_seg_val") -> float:
    """The mIoU of OUTPUT_DIR/inference/<dataset>/sem_seg_evaluation.json."""
    path = os.path.join(output_dir, "inference", dataset, "sem_seg_evaluation.json")
    with open(path) as f:
        return json.load(f)["metrics"]["mIoU"]


# ----------------------------------------------------------------------------- Markdown
def markdown_row(cells: Iterable) -> str:
    """One line of a Markdown table."""
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence] = ()) -> List[str]:
    """The lines of a Markdown table: the header, its rule, one line per row of cells."""
    return [markdown_row(header), "|" + "---|" * len(header), *map(markdown_row, rows)]


def emit(lines: Sequence[str], markdown: Optional[str] = None) -> None:
    """Print a report's lines, and write them to ``markdown`` (atomically) when given."""
    print("\n".join(lines))
    if markdown:
        write_markdown(markdown, lines)


def write_markdown(path: str, text: Union[str, Sequence[str]]) -> None:
    """Write ``text`` (or its lines, newline-terminated) to ``path`` atomically."""
    from seg_plugins.utils.file_io import atomic_write_text

    if not isinstance(text, str):
        text = "\n".join(text) + "\n"
    atomic_write_text(path, text)
