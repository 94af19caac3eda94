"""The torch.jit.script deprecation warnings of detectron2's and fvcore's imports are hidden
in one place (seg_plugins.compat.quiet_jit_script_deprecation), and only those."""

import subprocess
import sys

SCRIPT = """
import warnings
warnings.simplefilter("error", FutureWarning)  # any FutureWarning fails the import
import seg_plugins
import seg_plugins.engine, seg_plugins.engine.cli, seg_plugins.export
import seg_plugins.tools.predict, seg_plugins.tools.export
import detectron2.export
import torch
try:
    torch.jit.script(torch.nn.Linear(2, 2))  # the user's own call still warns
except FutureWarning as e:
    assert "torch.jit.script" in str(e), e
    print("USER-WARNED")
"""


def test_imports_quiet_and_user_calls_still_warn():
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "USER-WARNED" in r.stdout
    assert "FutureWarning" not in r.stderr


def test_without_the_filter_detectron2_imports_do_warn():
    """The check above could fail: importing detectron2's modeling without seg_plugins warns
    (torch >= 2.9; fvcore / detectron2 call torch.jit.script at import)."""
    code = (
        "import warnings, torch\n"
        "warnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    import fvcore.nn.focal_loss\n"
        "print(sum('torch.jit.script' in str(x.message) for x in w))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert int(r.stdout.split()[-1]) > 0
