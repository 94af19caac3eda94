"""Benchmark: how long each command-line tool takes to answer ``--help``.

Every tool parses its command line before importing torch and detectron2
(seg_plugins_cli), so ``--help`` and a mistaken flag answer at once. This runs each tool's
``--help`` as a user does, a new process each time (the repository's tools/*.py script, and
the installed console script when it sits beside this Python), and prints the median wall
time of --repeats runs against two references measured in the same run, alternating with
the tools: the bare interpreter (``python -c pass``) and ``python -c "import seg_plugins"``
(what every --help cost when the tools imported the package first). Target: under 1 s.

    python tools/benchmark_cli_help.py [--repeats 7] [--markdown out.md]
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

from . import common

TARGET_S = 1.0


def _commands() -> dict:
    from seg_plugins_cli import TOOLS

    scripts = {
        "train": "train_net", "predict": "predict", "export": "export_model",
        "check": "check_dataset", "stats": "dataset_stats", "visualize": "visualize_data",
        "plot_metrics": "plot_metrics",
    }  # fmt: skip
    bin_dir = os.path.dirname(sys.executable)
    commands = {
        "reference: python -c pass": [sys.executable, "-c", "pass"],
        "reference: python -c 'import seg_plugins'": [
            sys.executable,
            "-W",
            "ignore",
            "-c",
            "import seg_plugins",
        ],  # fmt: skip
    }
    for console, module in TOOLS.items():
        script = os.path.join(common.REPO, "tools", f"{scripts[module]}.py")
        commands[f"tools/{scripts[module]}.py --help"] = [sys.executable, script, "--help"]
        installed = os.path.join(bin_dir, console)
        if os.path.isfile(installed):
            commands[f"{console} --help"] = [installed, "--help"]
    return commands


def _time(cmd) -> float:
    tic = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=common.REPO)
    elapsed = time.perf_counter() - tic
    if r.returncode != 0:
        raise common.ChildError(f"{' '.join(cmd)} exited {r.returncode}: {r.stderr[-2000:]}")
    return elapsed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="runs per command (7)")
    parser.add_argument("--markdown", help="also write the report (Markdown) here")
    args = parser.parse_args(argv)
    commands = _commands()
    load = common.load_average()
    times = {name: [] for name in commands}
    for _ in range(args.repeats):  # alternate: a busy moment slows every command alike
        for name, cmd in commands.items():
            times[name].append(_time(cmd))
    base = statistics.median(times["reference: python -c pass"])
    lines = [
        f"Machine: {common.machine()}; {common.today()}; {common.load_note(load)}; median of "
        f"{args.repeats} runs each, alternating",
        "",
        "| command | median s | x bare interpreter | under 1 s |",
        "|---|---|---|---|",
    ]
    slow = []
    for name, values in times.items():
        median = statistics.median(values)
        ok = median < TARGET_S
        if not ok and not name.startswith("reference"):
            slow.append(name)
        lines.append(f"| `{name}` | {median:.3f} | {median / base:.1f} | {'yes' if ok else 'NO'} |")
    common.emit(lines, args.markdown)
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
