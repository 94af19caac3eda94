"""Kill and resume: a run SIGKILLed during a step and again during a checkpoint write, then
resumed (once with another number of loader workers), ends with exactly the weights and the
evaluation of the uninterrupted run (CPU, fixed seed). tests/engine/kill_resume_driver.py is
the run; each start continues from the last complete checkpoint (--resume semantics)."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DRIVER = os.path.join(HERE, "kill_resume_driver.py")


def _run(out, root, workers, *extra, kill_on=None):
    """The driver's stdout lines; with ``kill_on``, SIGKILL it when a line starts with it."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",  # same kernels, same summation order in every run
        "PYTHONPATH": os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]),
    }
    with open(os.path.join(out + ".log"), "a") as log:
        proc = subprocess.Popen(
            [sys.executable, DRIVER, str(out), str(root), str(workers), *extra],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=env,
        )
        lines = []
        for line in proc.stdout:
            lines.append(line.strip())
            if kill_on is not None and line.startswith(kill_on):
                proc.send_signal(signal.SIGKILL)
                break
        proc.stdout.close()
        code = proc.wait(timeout=600)
    if kill_on is None and code != 0:
        with open(out + ".log") as f:
            raise AssertionError(f"driver failed ({code}):\n{f.read()[-4000:]}")
    if kill_on is not None:
        assert code == -signal.SIGKILL, f"never reached {kill_on!r}: {lines[-5:]}"
    return lines


def _iters(lines):
    return [int(x.split()[1]) for x in lines if x.startswith("ITER ")]


def _result(lines):
    return json.loads(next(x for x in lines if x.startswith("RESULT "))[len("RESULT ") :])


def _weights(out):
    return torch.load(os.path.join(out, "model_final.pth"), map_location="cpu", weights_only=True)


@pytest.mark.slow
def test_killed_twice_then_resumed_equals_the_uninterrupted_run(tmp_path):
    root = tmp_path / "data"
    whole = str(tmp_path / "whole")
    killed = str(tmp_path / "killed")

    expected = _run(whole, root, 2)
    assert _iters(expected) == list(range(12))

    # 1. killed in the middle of iteration 7 (checkpoints after iterations 2 and 5)
    first = _run(killed, root, 2, kill_on="ITER 6")
    assert _iters(first) == list(range(7))
    # 2. resumed from iteration 5's checkpoint, killed while writing iteration 8's
    second = _run(killed, root, 2, "--slow-save", "8", kill_on="SAVING 8")
    assert _iters(second) == [6, 7]  # iteration 8 ran; its checkpoint write was cut short
    assert any(n.startswith(".model_0000008.pth.") for n in os.listdir(killed))  # half-written
    with open(os.path.join(killed, "last_checkpoint")) as f:
        assert f.read().strip() == "model_0000005.pth"  # the half-written one is not named
    assert not os.path.exists(os.path.join(killed, "model_0000008.pth"))
    # 3. resumed again, from iteration 5, with no loader workers this time
    third = _run(killed, root, 0)
    assert _iters(third) == list(range(6, 12))

    got, want = _weights(killed), _weights(whole)
    assert got["iteration"] == want["iteration"] == 11
    assert set(got["model"]) == set(want["model"])
    differ = [k for k in want["model"] if not torch.equal(got["model"][k], want["model"][k])]
    assert not differ, f"weights differ from the uninterrupted run: {differ[:5]}"
    assert _result(third) == _result(expected)
    assert not [n for n in os.listdir(killed) if n.endswith(".tmp")]  # removed on resume
    for name in os.listdir(killed):  # every checkpoint left behind is complete
        if name.endswith(".pth"):
            torch.load(os.path.join(killed, name), map_location="cpu", weights_only=True)
