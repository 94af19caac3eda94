"""Speed options of training and evaluation, all off by default (docs/speed.md):

- ``SOLVER.AMP.ENABLED``: mixed precision in training, on CPU as on GPU. detectron2's own
  ``AMPTrainer`` (v0.6) asserts CUDA and always uses float16 with a gradient scaler;
  :class:`~seg_plugins.engine.loop.TrainLoop` runs ``torch.autocast`` on the model's device with
  ``SOLVER.AMP.PRECISION`` ("auto": float16 on CUDA, as detectron2; bfloat16 on CPU, where
  oneDNN has bfloat16 kernels and float16 has none worth using) and a gradient scaler only
  where it is needed (float16: its 5-bit exponent underflows small gradients; bfloat16 has
  float32's exponent range).
- ``TEST.AMP.ENABLED``: the same autocast in evaluation (:class:`InferenceRunner`).
  Evaluation always runs under ``torch.inference_mode`` (no autograd bookkeeping at all;
  detectron2's ``inference_on_dataset`` uses ``no_grad``), and reduced-precision outputs are
  cast back to float32 for the evaluators.
- ``MODEL.CHANNELS_LAST``: convolution weights (and so activations) in NHWC memory order
  (:func:`to_channels_last`), the layout oneDNN and cuDNN's tensor-core kernels prefer.
- ``MODEL.COMPILE.*``: ``torch.compile`` of the backbone and heads (:func:`compile_model`),
  in place (``nn.Module.compile``), so checkpoints keep their keys.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Optional

import torch
from detectron2.structures import Boxes, Instances
from torch import nn

from .loop import TrainLoop, amp_dtype, model_device

__all__ = [
    "InferenceRunner",
    "TrainLoop",
    "amp_dtype",
    "compile_model",
    "to_channels_last",
]

logger = logging.getLogger(__name__)

def _autocast(device: torch.device, dtype: Optional[torch.dtype]):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _to_float32(value: Any) -> Any:
    """``value`` with reduced-precision floating tensors (in tensors, Boxes, Instances, dicts,
    lists and tuples) cast to float32; everything else unchanged."""
    if isinstance(value, torch.Tensor):
        low = value.is_floating_point() and value.dtype in (torch.float16, torch.bfloat16)
        return value.float() if low else value
    if isinstance(value, Boxes):
        return Boxes(_to_float32(value.tensor))
    if isinstance(value, Instances):
        out = Instances(value.image_size)
        for name, field in value.get_fields().items():
            out.set(name, _to_float32(field))
        return out
    if isinstance(value, dict):
        return {k: _to_float32(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_float32(v) for v in value)
    return value


class InferenceRunner(nn.Module):
    """``model`` for evaluation: its forward under ``torch.inference_mode`` and, with
    ``dtype``, ``torch.autocast`` on the model's device, outputs cast back to float32.

    An ``nn.Module`` so that detectron2's ``inference_on_dataset`` (which puts the model in
    eval mode for the run, and back after) takes it where it takes the model.
    """

    def __init__(self, model: nn.Module, dtype: Optional[torch.dtype] = None):
        super().__init__()
        self.model = model
        self.dtype = dtype

    def forward(self, batched_inputs):
        device = model_device(self.model)
        with torch.inference_mode(), _autocast(device, self.dtype):
            outputs = self.model(batched_inputs)
        return _to_float32(outputs) if self.dtype is not None else outputs


def to_channels_last(model: nn.Module) -> nn.Module:
    """``model`` with its 4-d parameters and buffers (convolution weights) in channels-last
    memory order, in place; a convolution whose weight is channels-last gives channels-last
    output, so the activations follow from the first layer on. Values are unchanged
    (``load_state_dict`` copies into the existing layout)."""
    return model.to(memory_format=torch.channels_last)


# Submodules compiled by MODEL.COMPILE: the dense, fixed-shape part of every model. detectron2's
# proposal generators and ROI heads have data-dependent shapes (a recompile per image).
_COMPILED_PARTS = ("backbone", "sem_seg_head", "aux_head")


def compile_model(model: nn.Module, *, backend: str = "inductor", mode: str = "") -> list:
    """``torch.compile`` the backbone and semantic / auxiliary heads of ``model`` in place
    (``nn.Module.compile``: parameter names, hence checkpoints, do not change). Returns the
    names of the parts compiled. The first call of each part (and of each new input shape)
    compiles it: tens of seconds on a CPU for a ResNet-50."""
    compiled = []
    for name in _COMPILED_PARTS:
        part = getattr(model, name, None)
        if isinstance(part, nn.Module):
            part.compile(backend=backend, mode=mode or None)
            compiled.append(name)
    if not compiled:
        raise ValueError(
            f"MODEL.COMPILE.ENABLED: {type(model).__name__} has none of {_COMPILED_PARTS} to "
            f"compile; turn MODEL.COMPILE.ENABLED off for this model"
        )
    logger.info(f"torch.compile (backend {backend!r}, mode {mode or 'default'!r}): {compiled}")
    return compiled


def apply_speed_options(model: nn.Module, cfg) -> nn.Module:
    """MODEL.CHANNELS_LAST and MODEL.COMPILE.* on a built model, in place (docs/speed.md)."""
    if cfg.MODEL.CHANNELS_LAST:
        to_channels_last(model)
    if cfg.MODEL.COMPILE.ENABLED:
        compile_model(model, backend=cfg.MODEL.COMPILE.BACKEND, mode=cfg.MODEL.COMPILE.MODE)
    return model
