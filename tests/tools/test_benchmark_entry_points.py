"""tools/benchmark*.py are the entry scripts of the tools.benchmarks package: imported, each is
its module's ``main``; run from the repository root, the script (tools/ first on the import
path) and ``python -m tools.benchmarks.<name>`` (what the per-point child processes run) both
work."""

import glob
import importlib
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODULES = {  # entry script -> module of tools/benchmarks/
    "benchmark": "vs_pytorch",
    "benchmark_cli_help": "cli_help",
    "benchmark_crf": "crf",
    "benchmark_demo": "demo",
    "benchmark_evaluator": "evaluator",
    "benchmark_export": "export",
    "benchmark_inference_memory": "inference_memory",
    "benchmark_instance": "instance",
    "benchmark_loader": "loader",
    "benchmark_models": "models",
    "benchmark_scaling": "scaling",
}


def test_every_entry_script_is_its_module_s_main():
    scripts = glob.glob(os.path.join(REPO, "tools", "benchmark*.py"))
    assert sorted(os.path.basename(s)[:-3] for s in scripts) == sorted(MODULES)
    for script, module in MODULES.items():
        entry = importlib.import_module(f"tools.{script}")
        assert entry.main is importlib.import_module(f"tools.benchmarks.{module}").main


# The two benchmarks that import nothing heavy before parsing their arguments: fast to ask.
@pytest.mark.parametrize(
    "command",
    [
        ["tools/benchmark_scaling.py", "--help"],
        ["tools/benchmark_demo.py", "--help"],
        ["-m", "tools.benchmarks.scaling", "--help"],
    ],
)
def test_commands_run_from_the_repository_root(command):
    r = subprocess.run(
        [sys.executable, *command], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("usage: ")
