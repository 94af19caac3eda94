"""Export of the semantic models to ONNX and TorchScript, with the preprocessing inside.

The exported graph is :class:`ExportableSemSeg`: it takes the *raw* image, float32 of
shape (N, C, H, W) in INPUT.FORMAT's channel order with the values the Trainer reads
(0..255 for 8-bit images), and returns logits of shape (N, K, H, W), exactly what the
PyTorch model returns for the whole-image mode (TEST.SEM_SEG.MODE "whole"):

    normalise ((x - PIXEL_MEAN) / PIXEL_STD) -> backbone -> head -> logits resized to
    (H, W), the image's own size (as the PyTorch model runs a batch of same-size images;
    FCN-8s on VGG, whose head crops its scores, pads to the backbone's size divisibility
    first and crops back instead)

H and W are dynamic in both formats (any size; no resizing happens inside). What is *not*
in the graph: sliding windows and test-time augmentation (TEST.SEM_SEG.MODE "slide",
FLIP, SCALES; a runtime can run them around the exported network, as
:class:`seg_plugins.modeling.inference.SemSegInference` does), the dense CRF (refused:
mean-field iterations over all pixel pairs are not a graph worth exporting), and the
class map (argmax) / probabilities (softmax), left to the caller so that both are
available. Binary models (NUM_CLASSES 1) return the one foreground logit channel.

Mask R-CNN (and any detectron2 ``GeneralizedRCNN``): :func:`export_instance_model` goes
through detectron2's own tracing support (``detectron2.export.TracingAdapter``), as its
``tools/deploy/export_model.py`` does. On this stack (torch 2.14, detectron2 v0.6 with the
compat layer) ``torch.jit.trace`` works, and so does ONNX through the TorchScript-based
exporter (``dynamo=False``, dynamic H and W; onnxruntime agrees to ~1e-5 at three sizes,
tested), while the ``torch.export``-based ONNX exporter fails (data-dependent shapes of the
proposals). The graph is detectron2's inference *before* its postprocessing: input the
(C, H, W) float32 image as the model takes it (already resized to INPUT.MIN_SIZE_TEST by
the caller), outputs flattened ``Instances`` fields: boxes (in that image's pixels), classes,
mask logits of shape (R, 1, 28, 28) (not pasted into the image), scores, image size.

Every export is verified: :func:`max_abs_difference` runs the exported file (onnxruntime for
ONNX, ``torch.jit.load`` for TorchScript) against the PyTorch model on random images of
several sizes. ``tools/export_model.py`` is the command line.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .utils.file_io import atomic_open

__all__ = [
    "ExportableSemSeg",
    "export_instance_model",
    "export_onnx",
    "export_torchscript",
    "instance_max_abs_difference",
    "load_exported",
    "max_abs_difference",
]

logger = logging.getLogger(__name__)


class ExportableSemSeg(nn.Module):
    """A semantic model of this package (eval mode) as raw image -> logits; see the module
    docstring. ``model`` is shared, not copied."""

    def __init__(self, model: nn.Module):
        super().__init__()
        for part in ("backbone", "sem_seg_head", "pixel_mean", "pixel_std"):
            if not hasattr(model, part):
                raise TypeError(
                    f"{type(model).__name__} has no {part}: only semantic models (UNet, FCN, "
                    "DeepLabV3, DeepLabV3Plus, SemanticSegmentor) are exported this way"
                )
        if getattr(model, "crf", None) is not None:
            raise ValueError(
                "MODEL.CRF.ENABLED: the dense CRF is not exported; export with "
                "MODEL.CRF.ENABLED False and run the CRF on the exported model's logits"
            )
        inference = getattr(model, "inference", None)
        if inference is not None and not inference.is_plain:
            logger.warning(
                "TEST.SEM_SEG asks for %s%s; the exported model is the whole-image network "
                "(run windows / TTA around it)",
                inference.mode,
                " with TTA" if inference.flip or inference.scales != (1.0,) else "",
            )
        self.backbone = model.backbone
        self.sem_seg_head = model.sem_seg_head
        self.register_buffer("pixel_mean", model.pixel_mean.detach().clone().view(1, -1, 1, 1))
        self.register_buffer("pixel_std", model.pixel_std.detach().clone().view(1, -1, 1, 1))
        self.size_divisibility = max(int(model.backbone.size_divisibility), 1)
        self.exact_size = callable(getattr(model.sem_seg_head, "logits_at", None))
        self.eval()

    def forward(self, image: Tensor) -> Tensor:
        x = (image - self.pixel_mean) / self.pixel_std
        height, width = x.shape[-2], x.shape[-1]
        if self.exact_size:  # as EncoderDecoderSegmentor's whole-image inference
            return self.sem_seg_head.logits_at(self.backbone(x), (height, width))
        div = self.size_divisibility
        if div > 1:  # as detectron2's ImageList.from_tensors: zeros after normalisation
            x = F.pad(x, (0, (div - width % div) % div, 0, (div - height % div) % div))
        logits = self.sem_seg_head(self.backbone(x))[0]
        return logits[:, :, :height, :width]


def _example(channels: int, size: Sequence[int], seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, channels, *size, generator=g) * 255.0


def export_onnx(
    model: nn.Module, path: str, example_size: Sequence[int] = (512, 512), opset: int = 18
) -> str:
    """Write ``model`` (a semantic model) as ONNX with dynamic batch, height and width;
    input "image" (N, C, H, W) float32, output "logits" (N, K, H, W). Returns ``path``."""
    wrapper = ExportableSemSeg(model)
    example = _example(wrapper.pixel_mean.shape[1], example_size)
    batch, height, width = (torch.export.Dim(n) for n in ("batch", "height", "width"))
    with torch.no_grad():
        program = torch.onnx.export(
            wrapper,
            (example,),
            input_names=["image"],
            output_names=["logits"],
            opset_version=opset,
            dynamo=True,
            dynamic_shapes={"image": {0: batch, 2: height, 3: width}},
            verbose=False,
        )
    with atomic_open(path, "wb") as f:
        f.write(program.model_proto.SerializeToString())
    return path


def export_torchscript(
    model: nn.Module, path: str, example_size: Sequence[int] = (512, 512)
) -> str:
    """Write ``model`` as TorchScript (``torch.jit.trace`` of :class:`ExportableSemSeg`;
    the image size stays dynamic because the padding and crop are traced from the input's
    shape). Returns ``path``."""
    wrapper = ExportableSemSeg(model)
    example = _example(wrapper.pixel_mean.shape[1], example_size)
    with torch.no_grad():
        traced = torch.jit.trace(wrapper, (example,), check_trace=False)
    with atomic_open(path, "wb") as f:
        torch.jit.save(traced, f)
    return path


# onnxruntime sessions alive in this process (made by load_exported). A forked child, such
# as a DataLoader worker, inherits them with their thread pool's state copied while the
# pool's threads waited on a condition variable; those threads exist only in the parent, so
# destroying a session in the child (its garbage collector freeing a cycle that held one)
# waits for them forever. A forked child therefore keeps every such session alive; it never
# uses them, and the parent is unaffected (tests/test_export.py).
_ORT_SESSIONS: "weakref.WeakSet" = weakref.WeakSet()
_KEPT_IN_FORKED_CHILD: list = []


def _keep_sessions_in_forked_child() -> None:
    _KEPT_IN_FORKED_CHILD.extend(_ORT_SESSIONS)


os.register_at_fork(after_in_child=_keep_sessions_in_forked_child)


def load_exported(path: str):
    """A callable numpy (N, C, H, W) float32 -> numpy logits for an exported file: an
    onnxruntime session (CPU) for ``.onnx``, ``torch.jit.load`` for ``.pt`` / ``.ts``."""
    if path.endswith(".onnx"):
        import onnxruntime as ort  # optional dependency: pip install seg_plugins[export]

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        _ORT_SESSIONS.add(session)

        def run_onnx(image: np.ndarray) -> np.ndarray:
            return session.run(["logits"], {"image": np.ascontiguousarray(image, np.float32)})[0]

        return run_onnx
    module = torch.jit.load(path, map_location="cpu").eval()

    def run_torchscript(image: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(np.ascontiguousarray(image, np.float32))).numpy()

    return run_torchscript


def max_abs_difference(
    path: str, model: nn.Module, sizes: Sequence[Sequence[int]], batch: int = 1
) -> dict[tuple[int, int], float]:
    """{(H, W): max |exported - PyTorch|} over random images of each size; the PyTorch side
    is the model's own forward (whole-image mode), logits of every image of the batch."""
    run = load_exported(path)
    wrapper = ExportableSemSeg(model)
    channels = wrapper.pixel_mean.shape[1]
    out = {}
    for i, size in enumerate(sizes):
        images = torch.cat([_example(channels, size, seed=100 + i + j) for j in range(batch)])
        with torch.inference_mode():
            plain = getattr(model, "inference", None)
            model.inference = None  # the batched whole-image forward, as exported
            try:
                expected = torch.stack(
                    [r["sem_seg"] for r in model([{"image": x} for x in images])]
                )
            finally:
                model.inference = plain
        got = run(images.numpy())
        if got.shape != tuple(expected.shape):
            raise AssertionError(
                f"{os.path.basename(path)}: output {got.shape} at {tuple(size)}, PyTorch "
                f"gives {tuple(expected.shape)}"
            )
        out[tuple(int(v) for v in size)] = float(np.abs(got - expected.numpy()).max())
    return out


def _instance_adapter(model: nn.Module, example: Tensor):
    from detectron2.export import TracingAdapter  # detectron2's tracing support

    def inference(m, inputs):
        return [{"instances": m.inference(inputs, do_postprocess=False)[0]}]

    return TracingAdapter(model, [{"image": example}], inference)


def export_instance_model(
    model: nn.Module, path: str, fmt: str, example_size: Sequence[int] = (512, 512)
) -> str:
    """Write a detectron2 ``GeneralizedRCNN`` (Mask R-CNN) as TorchScript (``fmt``
    "torchscript") or ONNX ("onnx") through detectron2's TracingAdapter; see the module
    docstring for its inputs and outputs. Returns ``path``."""
    if not hasattr(model, "roi_heads"):
        raise TypeError(f"{type(model).__name__} is not a detectron2 R-CNN")
    example = _example(model.pixel_mean.numel(), example_size)[0]
    adapter = _instance_adapter(model.eval(), example)
    with torch.no_grad(), atomic_open(path, "wb") as f:
        if fmt == "torchscript":
            torch.jit.save(torch.jit.trace(adapter, adapter.flattened_inputs), f)
        elif fmt == "onnx":
            torch.onnx.export(
                adapter,
                adapter.flattened_inputs,
                f,
                dynamo=False,  # torch.export fails on the proposals' data-dependent shapes
                opset_version=17,
                input_names=["image"],
                dynamic_axes={"image": {1: "height", 2: "width"}},
            )
        else:
            raise ValueError(f"format {fmt!r}: 'onnx' or 'torchscript'")
    model.eval()  # the exporter may leave it in training mode
    return path


def instance_max_abs_difference(
    path: str, model: nn.Module, sizes: Sequence[Sequence[int]]
) -> dict[tuple[int, int], float]:
    """{(H, W): max |exported - PyTorch|} over the flattened outputs of
    :func:`export_instance_model`'s graph, on random images of each size."""
    channels = model.pixel_mean.numel()
    if path.endswith(".onnx"):
        import onnxruntime as ort

        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])

        def run(image):
            return session.run(None, {"image": image.numpy()})

    else:
        module = torch.jit.load(path, map_location="cpu")

        def run(image):
            with torch.no_grad():
                return [t.numpy() for t in module(image)]

    out = {}
    for i, size in enumerate(sizes):
        image = _example(channels, size, seed=200 + i)[0]
        adapter = _instance_adapter(model.eval(), image)
        with torch.no_grad():
            expected = [t.numpy() for t in adapter(image)]
        got = run(image)
        shapes = [tuple(g.shape) for g in got], [tuple(e.shape) for e in expected]
        if shapes[0] != shapes[1]:
            raise AssertionError(f"{os.path.basename(path)} at {tuple(size)}: outputs {shapes}")
        diffs = [float(np.abs(g - e).max()) if e.size else 0.0 for g, e in zip(got, expected)]
        out[tuple(int(v) for v in size)] = max(diffs)
    return out
