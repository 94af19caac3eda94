"""``seg_plugins.Predictor``: a trained model as a function from images to predictions.

In the spirit of detectron2's ``DefaultPredictor``, for every model of this package and for
detectron2's Mask R-CNN / Panoptic FPN::

    from seg_plugins import Predictor
    predictor = Predictor.from_checkpoint("output/unet_shapes/model_final.pth")
    classes = predictor("image.png")["classes"]          # (H, W) class of every pixel

A checkpoint written by the Trainer carries its config (:func:`Predictor.from_checkpoint`
needs nothing else); for other weights give the config:
``Predictor.from_config_file("configs/shapes/unet_shapes.yaml", "model_final.pth")``.

Inputs (one, or a list for :meth:`Predictor.predict`, which batches them):

- a path: read as the Trainer's test loader reads it (``seg_plugins.data.io.read_image``:
  INPUT.FORMAT, 16-bit and float images, ``.npy``, EXIF orientation);
- a NumPy array (H, W) or (H, W, C): 3-channel arrays are taken as BGR, OpenCV's order and
  what ``DefaultPredictor`` takes (``cv2.imread`` output), unless ``input_format="RGB"`` says
  otherwise; they are converted to INPUT.FORMAT. Other channel counts are used as stored;
- a PIL image: converted from its mode (RGB / RGBA / L / 16-bit) to INPUT.FORMAT.

Semantic models then run the config's inference mode (TEST.SEM_SEG: whole image, sliding
windows, flip / scale TTA) and INPUT.INTENSITY_NORM, exactly as in evaluation. Each result is
a dict with, for semantic models, ``"classes"`` ((H, W) int64 NumPy; binary models
thresholded at MODEL.SEM_SEG_HEAD.BINARY_THRESHOLD), ``"probabilities"`` ((K, H, W)
float32 softmax, or (1, H, W) sigmoid of the foreground for binary models; only with
``probabilities=True``) and ``"sem_seg"`` (the logits tensor); for instance models
``"instances"`` (detectron2 ``Instances`` on the CPU, at the input's size).

The model runs in eval mode under ``torch.inference_mode`` (and autocast with
TEST.AMP.ENABLED) on MODEL.DEVICE; "cuda" falls back to the CPU when CUDA is absent.
Weights load through :class:`~seg_plugins.engine.checkpoint.SafeCheckpointer` and must
cover the whole model: a missing parameter is an error, not a half-random prediction.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from detectron2.data import transforms as T
from detectron2.modeling import build_model
from PIL import Image, ImageOps

from ..data.io import RAW_FORMAT, read_image
from ..data.mapper import normalize_intensity
from ..modeling.task import SemanticTask, task_of
from .acceleration import InferenceRunner
from .checkpoint import CheckpointError, SafeCheckpointer, config_from_checkpoint
from .loop import amp_dtype

__all__ = ["InputReader", "Predictor"]

logger = logging.getLogger(__name__)

_ARRAY_FORMATS = ("BGR", "RGB")


class InputReader:
    """One input (path, NumPy array, PIL image) as the (H, W, C) array the model's
    pipeline takes: INPUT.FORMAT's channels, INPUT.INTENSITY_NORM applied (module
    docstring). Shared by :class:`Predictor` and tools/predict.py's ONNX runtime path."""

    def __init__(self, cfg):
        self.input_format = cfg.INPUT.FORMAT
        self.channels = len(cfg.MODEL.PIXEL_MEAN)
        node = cfg.INPUT.INTENSITY_NORM
        self.intensity = (node.MODE, tuple(node.PERCENTILES), tuple(node.WINDOW))

    def __call__(self, item, input_format: str = "BGR", name: str = "input") -> np.ndarray:
        image = self._read(item, input_format)
        if image.shape[2] != self.channels:
            raise ValueError(
                f"{name}: {image.shape[2]} channel(s), but the model takes {self.channels} "
                f"(MODEL.PIXEL_MEAN); INPUT.FORMAT is {self.input_format!r}"
            )
        return normalize_intensity(image, *self.intensity)

    def _to_model_format(self, image: np.ndarray, given: str) -> np.ndarray:
        """A 3-channel array in ``given`` order ("BGR" / "RGB") as INPUT.FORMAT."""
        if image.ndim == 3 and image.shape[2] == 3 and given != self.input_format:
            if self.input_format in _ARRAY_FORMATS:
                image = image[:, :, ::-1]
            elif self.input_format == "L":  # grey from colour, as PIL's "L" conversion
                rgb = image[:, :, ::-1] if given == "BGR" else image
                image = np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).convert("L"))
        return image

    def _read(self, item, input_format: str) -> np.ndarray:
        """(H, W, C) array in INPUT.FORMAT of one input."""
        if isinstance(item, (str, os.PathLike)):
            return read_image(os.fspath(item), format=self.input_format)
        if isinstance(item, Image.Image):
            img = ImageOps.exif_transpose(item)
            colour = img.mode in ("RGB", "RGBA", "P", "CMYK", "YCbCr", "LA", "PA")
            if self.channels == 3 and img.mode != "RGB":
                img = img.convert("RGB")
            elif self.channels == 1 and colour:
                img = img.convert("L")
            array = np.asarray(img)
            return self._as_hwc(self._to_model_format(array, "RGB"), "PIL image")
        if isinstance(item, np.ndarray):
            if input_format not in _ARRAY_FORMATS:
                raise ValueError(
                    f"input_format={input_format!r}: the channel order of 3-channel arrays, "
                    f"one of {list(_ARRAY_FORMATS)}"
                )
            return self._as_hwc(self._to_model_format(item, input_format), "array")
        raise TypeError(
            f"cannot predict a {type(item).__name__}; give a path, a NumPy array (H, W[, C]) "
            "or a PIL image"
        )

    def _as_hwc(self, image: np.ndarray, what: str) -> np.ndarray:
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3 or min(image.shape) < 1:
            raise ValueError(f"{what} of shape {image.shape}; expected (H, W) or (H, W, C)")
        if image.dtype != np.uint8 and self.input_format != RAW_FORMAT:
            image = image.astype(np.float32)
        return image


class Predictor:
    """Predictions of one trained model for paths, NumPy arrays and PIL images.

    Args:
        cfg: a config with ``add_seg_plugins_config`` applied (cloned; not modified).
        weights: checkpoint to load; None = cfg.MODEL.WEIGHTS (required either way).
        device: overrides MODEL.DEVICE.

    Raises:
        CheckpointError: no weights, or weights that do not fit the model.
    """

    def __init__(self, cfg, weights: str | None = None, *, device: str | None = None):
        cfg = cfg.clone()
        cfg.defrost()
        if weights is not None:
            cfg.MODEL.WEIGHTS = weights
        if device is not None:
            cfg.MODEL.DEVICE = device
        if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
            logger.info("CUDA is not available: predicting on the CPU")
            cfg.MODEL.DEVICE = "cpu"
        cfg.freeze()
        self.cfg = cfg
        self.task = task_of(cfg)  # semantic / instance / panoptic: inputs and outputs
        self.outputs = self.task.outputs
        self.reader = InputReader(cfg)
        self.binary_threshold = float(cfg.MODEL.SEM_SEG_HEAD.BINARY_THRESHOLD)
        self.model = build_model(cfg).eval()
        self._load_weights(cfg)
        dtype = None
        if cfg.TEST.AMP.ENABLED:
            dtype = amp_dtype(cfg.SOLVER.AMP.PRECISION, torch.device(cfg.MODEL.DEVICE).type)
        self._run = InferenceRunner(self.model, dtype).eval()
        # Instance models resize as detectron2's test loader does; semantic ones predict at
        # the original size (their test-time augmentation is TEST.SEM_SEG, inside the model).
        self._resize = None
        if "instances" in self.outputs:
            size = cfg.INPUT.MIN_SIZE_TEST
            self._resize = T.ResizeShortestEdge([size, size], cfg.INPUT.MAX_SIZE_TEST)

    @classmethod
    def from_checkpoint(
        cls,
        path: str,
        config_file: str | None = None,
        opts: Sequence | None = None,
        **kwargs,
    ) -> "Predictor":
        """A Predictor from a checkpoint alone: the config is the one saved in it (every
        checkpoint the Trainer writes carries its config).

        Args:
            path: the checkpoint, e.g. ``output/unet_shapes/model_final.pth``.
            config_file: a YAML config that wins over the saved one (a warning lists the
                keys where they differ); needed for checkpoints without a config (older
                ones, detectron2's model zoo, converted torchvision weights).
            opts: KEY, VALUE, ... overrides, merged last.
            kwargs: as :class:`Predictor` (``device``).

        Raises:
            CheckpointError: no config saved and no ``config_file`` (the message says which
                file to pass), or weights that do not fit the model.

        Example::

            predictor = Predictor.from_checkpoint("output/unet_shapes/model_final.pth")
            predictor = Predictor.from_checkpoint(path, opts=["TEST.SEM_SEG.FLIP", True])

        See :func:`~seg_plugins.engine.checkpoint.config_from_checkpoint`.
        """
        cfg = config_from_checkpoint(path, config_file, opts or ())
        return cls(cfg, path, **kwargs)

    @classmethod
    def from_config_file(
        cls, config_file: str, weights: str | None = None, opts: Sequence = (), **kwargs
    ) -> "Predictor":
        """A Predictor from a YAML config (merged safely: no Python objects from YAML tags)
        and ``opts`` (KEY, VALUE, ... overrides); ``weights`` as :class:`Predictor`.
        ``config_file`` is a path, or the name of a config shipped with the package
        (``"shapes/unet_shapes.yaml"``, :mod:`seg_plugins.model_zoo`). Unlike
        :meth:`from_checkpoint` it does not read the checkpoint's saved config."""
        from detectron2.config import get_cfg

        from .. import model_zoo
        from ..config import add_seg_plugins_config

        if not os.path.isfile(config_file):
            config_file = model_zoo.get_config_file(config_file)  # FileNotFoundError names it
        cfg = get_cfg()
        add_seg_plugins_config(cfg)
        cfg.merge_from_file(config_file, allow_unsafe=False)
        cfg.merge_from_list(list(opts))
        return cls(cfg, weights, **kwargs)

    def _load_weights(self, cfg) -> None:
        weights = cfg.MODEL.WEIGHTS
        if not weights:
            raise CheckpointError(
                "Predictor needs weights: pass weights=path/to/model_final.pth or set MODEL.WEIGHTS"
            )
        checkpointer = SafeCheckpointer.from_config(cfg, self.model)
        path = weights
        if not os.path.isfile(path) and "://" in path:  # detectron2://, https://
            path = checkpointer.path_manager.get_local_path(path)
        if not os.path.isfile(path):
            raise CheckpointError(f"weights {weights} not found (MODEL.WEIGHTS)")
        checkpointer.load(path, checkpointables=[])  # the model only, no trainer state
        missing = list(checkpointer.last_incompatible.missing_keys)
        if missing:
            raise CheckpointError(
                f"weights {weights} lack {len(missing)} parameters of the configured "
                f"{cfg.MODEL.META_ARCHITECTURE} (e.g. {missing[:3]}); is the config "
                "(--config-file) the one these weights were trained with?"
            )
        logger.info("Loaded %s", weights)

    def _model_input(self, item, input_format: str, name: str) -> dict:
        image = self.reader(item, input_format, name)
        height, width = image.shape[:2]
        if self._resize is not None:
            image = self._resize.get_transform(image).apply_image(image)
        tensor = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if "instances" in self.outputs:
            tensor = tensor.float()  # detectron2's DefaultPredictor feeds float32
        return {"image": tensor, "height": height, "width": width}

    # ------------------------------------------------------------------------- outputs
    def _result(self, output: dict, probabilities: bool) -> dict:
        result = {}
        if "sem_seg" in output:
            logits = output["sem_seg"].float()
            result["sem_seg"] = logits
            # the task's rule (binary mode: sigmoid > MODEL.SEM_SEG_HEAD.BINARY_THRESHOLD)
            result["classes"] = self.task.classes(logits, self.binary_threshold).cpu().numpy()
            if probabilities and isinstance(self.task, SemanticTask):
                result["probabilities"] = self.task.probabilities(logits).cpu().numpy()
        if "instances" in output:
            result["instances"] = output["instances"].to("cpu")
        if "panoptic_seg" in output:
            seg, info = output["panoptic_seg"]
            result["panoptic_seg"] = (seg.cpu().numpy(), info)
        return result

    def __call__(self, image, *, probabilities: bool = False, input_format: str = "BGR") -> dict:
        """The prediction of one image (path, array or PIL image); see the module docstring."""
        return self.predict([image], probabilities=probabilities, input_format=input_format)[0]

    def predict(
        self,
        images: Iterable,
        *,
        batch_size: int = 1,
        probabilities: bool = False,
        input_format: str = "BGR",
    ) -> list[dict]:
        """Predictions of several images, in order. Up to ``batch_size`` images *of the same
        size* share a forward pass: padding a smaller image to a larger one, as a batched
        test loader does, would change what models with global context (ASPP's image
        pooling) predict, so a batch gives exactly the images' single predictions."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        items = list(images)
        results: list = [None] * len(items)
        for start in range(0, len(items), batch_size):
            groups: dict = {}
            for i, item in enumerate(items[start : start + batch_size], start):
                name = os.fspath(item) if isinstance(item, (str, os.PathLike)) else f"input {i}"
                model_input = self._model_input(item, input_format, name)
                groups.setdefault(tuple(model_input["image"].shape), []).append((i, model_input))
            for group in groups.values():
                outputs = self._run([model_input for _, model_input in group])
                for (i, _), out in zip(group, outputs):
                    results[i] = self._result(out, probabilities)
        return results
