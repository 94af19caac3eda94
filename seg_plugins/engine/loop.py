"""The training step: detectron2's ``SimpleTrainer.run_step`` plus mixed precision on any
device (SOLVER.AMP.*) and an answer to non-finite losses (SOLVER.SKIP_NONFINITE_STEPS).

Non-finite losses. detectron2 raises ``FloatingPointError("Loss became infinite or NaN at
iteration=...")`` from its metric writer, on the main process only, after the backward. Here
the check runs on every process before the optimizer step (in a multi-process run the
processes agree through one all-reduce, so they stop, or skip, together), and:

- with SOLVER.SKIP_NONFINITE_STEPS = 0 (default) training stops with a FloatingPointError
  naming the iteration, the loss terms that are not finite and the last complete
  checkpoint to resume from; nothing has been applied to the weights;
- with N > 0 such a step is skipped (no optimizer step, gradients dropped), logged, counted
  in the event storage ("skipped_steps") and in the checkpoint; the (N+1)-th stops training
  as above: a run that keeps diverging is not hidden.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Optional

import torch
from detectron2.engine import SimpleTrainer
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage
from torch import distributed as dist

__all__ = ["TrainLoop", "amp_dtype"]

logger = logging.getLogger(__name__)

_PRECISIONS = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def amp_dtype(precision: str, device_type: str) -> torch.dtype:
    """The autocast dtype that ``SOLVER.AMP.PRECISION`` names on ``device_type``."""
    if precision == "auto":
        return torch.float16 if device_type == "cuda" else torch.bfloat16
    if precision not in _PRECISIONS:
        raise ValueError(
            f"SOLVER.AMP.PRECISION={precision!r}; use 'auto' (float16 on CUDA, bfloat16 on "
            f"CPU), 'float16' or 'bfloat16'"
        )
    return _PRECISIONS[precision]


def with_amp(cfg, enabled: bool):
    """A copy of ``cfg`` with SOLVER.AMP.ENABLED = ``enabled`` (frozen if ``cfg`` was)."""
    cfg = cfg.clone()
    frozen = cfg.is_frozen()
    cfg.defrost()
    cfg.SOLVER.AMP.ENABLED = enabled
    if frozen:
        cfg.freeze()
    return cfg


def model_device(model: torch.nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


class TrainLoop(SimpleTrainer):
    """``SimpleTrainer`` with optional autocast and the non-finite loss policy above.

    Args:
        model, data_loader, optimizer: as ``SimpleTrainer``.
        precision: None (float32) or SOLVER.AMP.PRECISION ("auto", "float16", "bfloat16"):
            the forward (losses included) under ``torch.autocast`` on the model's device,
            float32 master weights; a gradient scaler for float16 on CUDA only (float16's
            5-bit exponent underflows small gradients; bfloat16 has float32's range).
        max_skipped_steps: SOLVER.SKIP_NONFINITE_STEPS.
        last_checkpoint: returns the path of the last complete checkpoint ("" if none), for
            the error message.
    """

    def __init__(
        self,
        model,
        data_loader,
        optimizer,
        *,
        precision: Optional[str] = None,
        max_skipped_steps: int = 0,
        last_checkpoint: Callable[[], str] = lambda: "",
    ):
        super().__init__(model, data_loader, optimizer)
        self._setup(precision, max_skipped_steps, last_checkpoint)

    @classmethod
    def taking_over(cls, trainer: SimpleTrainer, **kwargs) -> "TrainLoop":
        """A TrainLoop that continues ``trainer`` (the SimpleTrainer detectron2's
        DefaultTrainer builds): same model, optimizer and data-loader iterator (a second
        ``iter(data_loader)`` would start a second set of loader workers)."""
        new = cls.__new__(cls)
        new.__dict__.update(trainer.__dict__)
        kwargs.setdefault("precision", None)
        kwargs.setdefault("max_skipped_steps", 0)
        kwargs.setdefault("last_checkpoint", lambda: "")
        new._setup(**kwargs)
        return new

    def _setup(self, precision, max_skipped_steps, last_checkpoint) -> None:
        if int(max_skipped_steps) < 0:
            raise ValueError(
                f"SOLVER.SKIP_NONFINITE_STEPS={max_skipped_steps}; use 0 (stop at the first "
                f"non-finite loss) or the number of steps that may be skipped"
            )
        self.max_skipped_steps = int(max_skipped_steps)
        self.skipped_steps = 0
        self.last_checkpoint = last_checkpoint
        self.device = model_device(self.model)
        self.dtype = None if precision is None else amp_dtype(precision, self.device.type)
        self.grad_scaler = None
        if self.dtype is None:
            return
        if self.dtype == torch.float16 and self.device.type == "cpu":
            logger.warning(
                "SOLVER.AMP.PRECISION float16 on CPU: few CPU kernels are fast in float16; "
                "bfloat16 ('auto') is the CPU's fast reduced precision"
            )
        if self.dtype == torch.float16 and self.device.type == "cuda":
            self.grad_scaler = torch.amp.GradScaler("cuda")
        logger.info(
            f"Mixed precision: autocast to {str(self.dtype).replace('torch.', '')} on "
            f"{self.device.type}" + (", with a gradient scaler" if self.grad_scaler else "")
        )

    def run_step(self):
        assert self.model.training, f"[{type(self).__name__}] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start

        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            loss_dict = self.model(data)
            if isinstance(loss_dict, torch.Tensor):
                losses = loss_dict
                loss_dict = {"total_loss": loss_dict}
            else:
                losses = sum(loss_dict.values())

        self.optimizer.zero_grad()
        if self.grad_scaler is None:
            losses.backward()
        else:
            self.grad_scaler.scale(losses).backward()
        # One host sync, as detectron2's metric writer (which follows) makes anyway.
        if not self._finite_everywhere(losses):
            self._non_finite(loss_dict)
            self.optimizer.zero_grad()
            return
        self._write_metrics(loss_dict, data_time)
        if self.grad_scaler is None:
            self.optimizer.step()
        else:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()

    @staticmethod
    def _finite_everywhere(losses: torch.Tensor) -> bool:
        total = losses.detach().float().reshape(1).clone()
        if comm.get_world_size() > 1:
            dist.all_reduce(total)  # NaN / inf in any process make the sum non-finite
        return bool(torch.isfinite(total).all())

    def _non_finite(self, loss_dict: dict) -> None:
        values = {k: float(v.detach().float()) for k, v in loss_dict.items()}
        bad = [k for k, v in values.items() if not torch.isfinite(torch.tensor(v))]
        where = (
            f"{', '.join(bad)} (this process' terms: {values})"
            if bad
            else f"another process' loss (this process' terms are finite: {values})"
        )
        self.skipped_steps += 1
        if self.skipped_steps <= self.max_skipped_steps:
            logger.warning(
                f"Skipped the optimizer step of iteration {self.iter}: non-finite {where}; "
                f"{self.skipped_steps} of at most {self.max_skipped_steps} steps skipped "
                f"(SOLVER.SKIP_NONFINITE_STEPS)"
            )
            if comm.is_main_process():
                get_event_storage().put_scalar("skipped_steps", self.skipped_steps)
            return
        last = self.last_checkpoint() or "none saved yet"
        budget = (
            f"after {self.max_skipped_steps} skipped step(s) (SOLVER.SKIP_NONFINITE_STEPS)"
            if self.max_skipped_steps
            else "(SOLVER.SKIP_NONFINITE_STEPS is 0)"
        )
        raise FloatingPointError(
            f"Loss became infinite or NaN at iteration {self.iter} {budget}: {where}. This "
            f"step was not applied. Last complete checkpoint: {last}. Lower SOLVER.BASE_LR, "
            f"enable SOLVER.CLIP_GRADIENTS or check the labels, then resume with --resume; "
            f"or set SOLVER.SKIP_NONFINITE_STEPS to skip a few such steps"
        )

    def state_dict(self):
        state = super().state_dict()
        state["skipped_steps"] = self.skipped_steps
        if self.grad_scaler is not None:
            state["grad_scaler"] = self.grad_scaler.state_dict()
        return state

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self.skipped_steps = int(state_dict.get("skipped_steps", 0))
        if self.grad_scaler is not None and "grad_scaler" in state_dict:
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])
