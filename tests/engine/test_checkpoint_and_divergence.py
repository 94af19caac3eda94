"""Atomic checkpoints (a failed write leaves the previous checkpoint and last_checkpoint
intact), the trainer's RNG state in checkpoints, and the non-finite loss policy
(SOLVER.SKIP_NONFINITE_STEPS)."""

import errno
import itertools
import json
import os
import random

import numpy as np
import pytest
import torch
from detectron2.utils.events import EventStorage

import seg_plugins  # noqa: F401  (first: repairs detectron2 where needed)

# isort: split
from seg_plugins.engine.checkpoint import AtomicCheckpointer, rng_state, set_rng_state
from seg_plugins.engine.loop import TrainLoop


# ----------------------------------------------------------------------------- checkpoints
def test_checkpoint_and_last_checkpoint_are_written_whole(tmp_path):
    model = torch.nn.Linear(3, 2)
    ckpt = AtomicCheckpointer(model, str(tmp_path))
    ckpt.save("model_0000001", iteration=1)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    data = torch.load(tmp_path / "model_0000001.pth", weights_only=True)
    assert data["iteration"] == 1 and torch.equal(data["model"]["weight"], model.weight)
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth"]


def test_disk_full_during_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = torch.nn.Linear(3, 2)
    ckpt = AtomicCheckpointer(model, str(tmp_path))
    ckpt.save("model_0000001", iteration=1)
    before = (tmp_path / "model_0000001.pth").read_bytes()

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"partial bytes")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with torch.no_grad():
        model.weight.add_(1.0)
    with pytest.raises(OSError, match=r"could not save checkpoint .*model_0000002.pth: No space"
                       r" left on device; nothing was replaced \(the previous checkpoint "
                       r"'model_0000001.pth' is intact\)"):
        ckpt.save("model_0000002", iteration=2)
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth"]  # no temp
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert (tmp_path / "model_0000001.pth").read_bytes() == before
    assert ckpt.get_checkpoint_file().endswith("model_0000001.pth")


def test_interrupted_writes_are_removed_on_the_next_start(tmp_path):
    (tmp_path / ".model_0000003.pth.ab12cd.tmp").write_bytes(b"half")
    (tmp_path / ".last_checkpoint.x1y2.tmp").write_text("model_")
    (tmp_path / "notes.tmp").write_text("not ours")
    AtomicCheckpointer(torch.nn.Linear(1, 1), str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["notes.tmp"]


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    state = rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1))
    torch.save({"rng": state}, tmp_path / "s.pth")
    loaded = torch.load(tmp_path / "s.pth", weights_only=True)["rng"]
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    set_rng_state(loaded)
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected


# ----------------------------------------------------------------------------- divergence
class _Scripted(torch.nn.Module):
    """A model whose loss at call i is losses[i] (times a parameter, so it has gradients)."""

    def __init__(self, losses):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))
        self.losses = list(losses)
        self.calls = 0

    def forward(self, batch):
        value = self.losses[self.calls]
        self.calls += 1
        return {"loss_a": self.w * 1.0, "loss_b": self.w * value}


def _loop(losses, skips=0, last="output/model_0000004.pth"):
    model = _Scripted(losses)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loop = TrainLoop(
        model, itertools.repeat([{}]), opt, max_skipped_steps=skips, last_checkpoint=lambda: last
    )
    return model, loop


def _steps(loop, n):
    with EventStorage(0) as storage:
        for i in range(n):
            loop.iter = storage.iter = i
            loop.run_step()
    return storage


def test_a_non_finite_loss_stops_before_touching_the_weights():
    model, loop = _loop([1.0, float("nan")])
    with pytest.raises(FloatingPointError) as info:
        _steps(loop, 2)
    message = str(info.value)
    assert "iteration 1" in message and "loss_b" in message and "loss_a" not in message.split(
        "(this process' terms")[0]
    assert "Last complete checkpoint: output/model_0000004.pth" in message
    assert "SOLVER.SKIP_NONFINITE_STEPS" in message
    assert model.w.item() == pytest.approx(1.0 - 0.1 * 2.0)  # only step 0 was applied


def test_skipping_is_counted_bounded_and_saved():
    model, loop = _loop([1.0, float("inf"), 1.0, float("nan"), 1.0, float("nan")], skips=2)
    with pytest.raises(FloatingPointError, match="after 2 skipped step"):
        _steps(loop, 6)
    # steps 0, 2, 4 applied (gradient 2 each), 1 and 3 skipped, 5 stopped the run
    assert model.w.item() == pytest.approx(1.0 - 3 * 0.1 * 2.0)
    assert loop.skipped_steps == 3
    assert loop.state_dict()["skipped_steps"] == 3


def test_skipped_steps_reach_the_event_storage():
    _, loop = _loop([float("nan"), 1.0], skips=1)
    storage = _steps(loop, 2)
    assert storage.history("skipped_steps").latest() == 1
    assert storage.history("total_loss").latest() == pytest.approx(2.0)


def test_negative_skip_budget_is_refused():
    with pytest.raises(ValueError, match="SOLVER.SKIP_NONFINITE_STEPS=-1"):
        _loop([1.0], skips=-1)


# ----------------------------------------------------------------------------- metrics.json
def test_metrics_are_cut_back_to_the_resumed_iteration(tmp_path):
    from seg_plugins.engine.checkpoint import trim_metrics_for_resume
    from seg_plugins.evaluation.curves import read_metrics_json

    path = tmp_path / "metrics.json"
    lines = [json.dumps({"iteration": i, "total_loss": 1.0 / (i + 1)}) + "\n" for i in range(10)]
    path.write_text("".join(lines) + '{"iteration": 10, "total_lo')  # cut by a kill
    assert trim_metrics_for_resume(str(path), 6) == 5  # iterations 6-9 and the partial line
    assert path.read_text() == "".join(lines[:6])
    with open(path, "a") as f:  # the resumed run appends
        f.write(json.dumps({"iteration": 6, "total_loss": 0.5}) + "\n")
    assert [r["iteration"] for r in read_metrics_json(str(path))] == list(range(7))
    assert trim_metrics_for_resume(str(path), 7) == 0
    assert trim_metrics_for_resume(str(tmp_path / "missing.json"), 3) == 0
