"""Dataset mapper for semantic segmentation: dataset dict -> model input.

Shapes: image (C, H, W) uint8, sem_seg (H, W) int64 (class indices, ``ignore_label`` =
not labelled). Nothing is padded: padding to the backbone's ``size_divisibility`` is the
model's job (as in detectron2's ``SemanticSegmentor``).
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from PIL import Image

from .augmentations import (
    MultiChannelResizeTransform,
    build_pad_to_crop,
    build_photometric_distortion,
)
from .io import check_channels, check_format_channels, read_image, read_label
from .labels import apply_label_transform
from .validation import DataProblemError, Problem, check_label_values

__all__ = ["RandomResizeRatio", "SemSegDatasetMapper", "build_sem_seg_augmentations"]

logger = logging.getLogger(__name__)


class RandomResizeRatio(T.Augmentation):
    """Resize the whole image by a ratio drawn uniformly from [min_ratio, max_ratio]
    (DeepLab's random scale). Label maps are resized with nearest neighbour.

    detectron2's ``T.ResizeScale`` scales relative to a fixed target size instead, which
    does not fit datasets whose images differ in size.
    """

    def __init__(self, min_ratio: float, max_ratio: float, interp: int = Image.BILINEAR):
        super().__init__()
        if not 0 < min_ratio <= max_ratio:
            raise ValueError(
                f"expected 0 < min_ratio <= max_ratio, got ({min_ratio}, {max_ratio}); "
                f"set INPUT.SEM_SEG.RESIZE_RATIO_RANGE to e.g. [0.5, 2.0]"
            )
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> T.Transform:
        h, w = image.shape[:2]
        ratio = np.random.uniform(self.min_ratio, self.max_ratio)
        new_h, new_w = max(1, round(h * ratio)), max(1, round(w * ratio))
        # not T.ResizeTransform: PIL would treat a 2- / 4-channel uint8 image as LA / RGBA
        return MultiChannelResizeTransform(h, w, new_h, new_w, self.interp)


INTENSITY_MODES = ("none", "zscore", "percentile", "window")


def normalize_intensity(image: np.ndarray, mode: str, percentiles=(0.5, 99.5), window=(0, 255)):
    """Per-image intensity normalisation of an image of shape (H, W, C), per channel; for
    16-bit / float medical images (CT windows, MRI, microscopy) before augmentation.

    - "none": unchanged.
    - "zscore": (x - mean) / std per channel (nnU-Net's MRI scheme); pair with PIXEL_MEAN 0
      and PIXEL_STD 1. A constant channel becomes 0.
    - "percentile": clipped to the image's [p_lo, p_hi] percentiles, rescaled to 0..255.
    - "window": clipped to the fixed [lo, hi] (e.g. a CT window in HU), rescaled to 0..255.

    Returns float32 of the same shape (uint8 unchanged for "none").
    """
    if mode == "none":
        return image
    x = image.astype(np.float32)
    if mode == "zscore":
        mean = x.mean(axis=(0, 1), keepdims=True)
        std = x.std(axis=(0, 1), keepdims=True)
        return (x - mean) / np.where(std > 0, std, 1.0)
    if mode == "percentile":
        lo = np.percentile(x, percentiles[0], axis=(0, 1), keepdims=True)
        hi = np.percentile(x, percentiles[1], axis=(0, 1), keepdims=True)
    elif mode == "window":
        lo, hi = float(window[0]), float(window[1])
    else:
        raise ValueError(
            f"INPUT.INTENSITY_NORM.MODE must be one of {INTENSITY_MODES}, got {mode!r}"
        )
    scale = 255.0 / np.maximum(np.asarray(hi, np.float32) - lo, 1e-6)
    return ((np.clip(x, lo, hi) - lo) * scale).astype(np.float32)


def _check_intensity_cfg(mode: str, percentiles, window) -> None:
    if mode not in INTENSITY_MODES:
        raise ValueError(
            f"INPUT.INTENSITY_NORM.MODE must be one of {INTENSITY_MODES}, got {mode!r}"
        )
    if mode == "percentile" and not (
        len(percentiles) == 2 and 0 <= percentiles[0] < percentiles[1] <= 100
    ):
        raise ValueError(
            f"INPUT.INTENSITY_NORM.PERCENTILES must be [low, high] with 0 <= low < high <= 100, "
            f"got {list(percentiles)}"
        )
    if mode == "window" and not (len(window) == 2 and window[0] < window[1]):
        raise ValueError(
            f"INPUT.INTENSITY_NORM.WINDOW must be [low, high] with low < high, got {list(window)}"
        )


def build_sem_seg_augmentations(cfg, is_train: bool, ignore_label: int = 255) -> list:
    """Training: random scale (INPUT.SEM_SEG.RESIZE_RATIO_RANGE), crop (INPUT.CROP with
    INPUT.SEM_SEG.CROP_SINGLE_CATEGORY_MAX_AREA), flip (INPUT.RANDOM_FLIP), photometric
    distortion (INPUT.SEM_SEG.PHOTOMETRIC), padding up to the crop size with the ignore label
    (INPUT.SEM_SEG.PAD_TO_CROP). Test: none, as the model predicts at the original size."""
    if not is_train:
        return []
    augs = []
    lo, hi = (float(v) for v in cfg.INPUT.SEM_SEG.RESIZE_RATIO_RANGE)
    if (lo, hi) != (1.0, 1.0):
        augs.append(RandomResizeRatio(lo, hi))
    if cfg.INPUT.CROP.ENABLED:
        augs.append(
            T.RandomCrop_CategoryAreaConstraint(
                cfg.INPUT.CROP.TYPE,
                cfg.INPUT.CROP.SIZE,
                cfg.INPUT.SEM_SEG.CROP_SINGLE_CATEGORY_MAX_AREA,
                ignore_label,
            )
        )
    flip = cfg.INPUT.RANDOM_FLIP
    if flip not in ("none", "horizontal", "vertical"):
        raise ValueError(
            f"INPUT.RANDOM_FLIP must be 'none', 'horizontal' or 'vertical', got {flip!r}"
        )
    if flip != "none":
        augs.append(T.RandomFlip(horizontal=flip == "horizontal", vertical=flip == "vertical"))
    # after the geometry; padding last so padded pixels stay exactly 0
    photometric = build_photometric_distortion(cfg)  # None unless PHOTOMETRIC.ENABLED
    if photometric is not None:
        augs.append(photometric)
    pad = build_pad_to_crop(cfg, ignore_label)  # None unless PAD_TO_CROP with an absolute crop
    if pad is not None:
        augs.append(pad)
    return augs


class SemSegDatasetMapper:
    """Read an image and its label map, augment both alike, return model input.

    Input: a detectron2 dataset dict with ``file_name`` and (required in training)
    ``sem_seg_file_name``. Output: the dict (deep copy) with ``image`` (C, H, W) uint8,
    ``sem_seg`` (H, W) int64 when a label file is given, ``height``/``width`` of the
    original image; ``annotations`` (instances) are removed.

    Example::

        import seg_plugins
        from detectron2.data import DatasetCatalog, transforms as T
        from seg_plugins.data import SemSegDatasetMapper

        mapper = SemSegDatasetMapper(
            is_train=True, augmentations=[T.RandomFlip()], image_format="RGB"
        )
        batch = mapper(DatasetCatalog.get("shapes_val")[0])
        batch["image"].shape, batch["sem_seg"].shape  # (3, 128, 128), (128, 128)
    """

    @configurable
    def __init__(
        self,
        *,
        is_train: bool = True,
        augmentations: list | None = None,
        image_format: str = "BGR",
        ignore_label: int = 255,
        intensity_norm: str = "none",
        intensity_percentiles: tuple = (0.5, 99.5),
        intensity_window: tuple = (0.0, 255.0),
        num_classes: int | None = None,
        input_channels: int | None = None,
    ):
        """
        Args:
            is_train: training requires ``sem_seg_file_name`` in every dict.
            augmentations: ``detectron2.data.transforms`` Augmentations / Transforms,
                applied to image and label map together.
            image_format: format of ``image`` ("BGR", "RGB", ...; cfg.INPUT.FORMAT).
            ignore_label: label of unlabelled pixels, stored as ``self.ignore_label``;
                ``from_config`` also gives it to the crop's category-area constraint.
            intensity_norm, intensity_percentiles, intensity_window: per-image intensity
                normalisation right after reading (:func:`normalize_intensity`;
                cfg.INPUT.INTENSITY_NORM.{MODE, PERCENTILES, WINDOW}).
            num_classes: K; when given, a label map holding values other than 0..K-1 and
                ``ignore_label`` raises :class:`~seg_plugins.data.validation.DataProblemError`
                naming the file (``from_config``: the dataset's ``stuff_classes``).
            input_channels: channels the model takes (``from_config``: len(PIXEL_MEAN));
                an image with another count is an error naming the file.
        """
        self.num_classes = num_classes
        self.input_channels = input_channels
        if input_channels is not None:
            check_format_channels(image_format, input_channels)
        _check_intensity_cfg(intensity_norm, intensity_percentiles, intensity_window)
        self.intensity_norm = intensity_norm
        self.intensity_percentiles = tuple(intensity_percentiles)
        self.intensity_window = tuple(intensity_window)
        self.is_train = is_train
        self.augmentations = T.AugmentationList(list(augmentations or []))
        self.image_format = image_format
        self.ignore_label = ignore_label
        mode = "training" if is_train else "inference"
        logger.info("[SemSegDatasetMapper] Augmentations used in %s: %s", mode, augmentations)

    @classmethod
    def from_config(cls, cfg, is_train: bool = True, dataset_name: str | None = None) -> dict:
        """Metadata (ignore label, classes) of ``dataset_name``, else of DATASETS.TRAIN[0]."""
        ignore_label, num_classes = 255, None
        if dataset_name is None and cfg.DATASETS.TRAIN:
            dataset_name = cfg.DATASETS.TRAIN[0]
        if dataset_name is not None:
            meta = MetadataCatalog.get(dataset_name)
            ignore_label = meta.get("ignore_label", 255)
            classes = meta.get("stuff_classes", None)
            num_classes = len(classes) if classes else None
        return {
            "num_classes": num_classes,
            "input_channels": len(cfg.MODEL.PIXEL_MEAN),
            "is_train": is_train,
            "augmentations": build_sem_seg_augmentations(cfg, is_train, ignore_label),
            "image_format": cfg.INPUT.FORMAT,
            "ignore_label": ignore_label,
            "intensity_norm": cfg.INPUT.INTENSITY_NORM.MODE,
            "intensity_percentiles": tuple(cfg.INPUT.INTENSITY_NORM.PERCENTILES),
            "intensity_window": tuple(cfg.INPUT.INTENSITY_NORM.WINDOW),
        }

    def _read_label(self, dataset_dict: dict, image: np.ndarray) -> np.ndarray | None:
        label_file = dataset_dict.get("sem_seg_file_name")
        if label_file is None:
            if self.is_train:
                raise ValueError(
                    f"dataset record {dataset_dict.get('file_name')!r} (image_id "
                    f"{dataset_dict.get('image_id')}) has no 'sem_seg_file_name', which "
                    f"SemSegDatasetMapper needs in training; register the dataset with "
                    f"label maps (e.g. detectron2.data.datasets.load_sem_seg) or use an "
                    f"instance-segmentation mapper for it."
                )
            return None
        label = apply_label_transform(
            read_label(label_file), dataset_dict.get("sem_seg_label_transform")
        )
        if label.shape != image.shape[:2]:
            msg = (
                f"label map is {label.shape[0]}x{label.shape[1]} (HxW) but its image "
                f"{dataset_dict['file_name']!r} is {image.shape[0]}x{image.shape[1]}; they must "
                f"have the same size (was one of them resized?)"
            )
            raise DataProblemError([Problem("size_mismatch", label_file, msg)])
        if self.num_classes:
            problem = check_label_values(label, self.num_classes, self.ignore_label, label_file)
            if problem is not None:
                raise DataProblemError([problem])
        if label.dtype != np.uint8:
            # F.interpolate (used by ResizeTransform beyond uint8) has no integer kernels;
            # float32 holds every 16-bit index exactly.
            label = label.astype(np.float32)
        return label

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict = copy.deepcopy(dataset_dict)
        image = read_image(dataset_dict["file_name"], format=self.image_format)
        if self.input_channels is not None:
            check_channels(image, self.input_channels, dataset_dict["file_name"])
        utils.check_image_size(dataset_dict, image)
        image = normalize_intensity(
            image, self.intensity_norm, self.intensity_percentiles, self.intensity_window
        )
        label = self._read_label(dataset_dict, image)

        aug_input = T.AugInput(image, sem_seg=label)
        self.augmentations(aug_input)
        image, label = aug_input.image, aug_input.sem_seg

        image = np.ascontiguousarray(image.transpose(2, 0, 1))
        if not image.flags.writeable:  # a resized 1-channel image is a view of PIL's buffer
            image = image.copy()
        dataset_dict["image"] = torch.as_tensor(image)
        if label is not None:
            dataset_dict["sem_seg"] = torch.as_tensor(np.ascontiguousarray(label).astype("long"))
        dataset_dict.pop("annotations", None)
        return dataset_dict
