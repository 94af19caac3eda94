"""Datasets, readers and mappers.

Importing this package registers (names and metadata only; nothing is read or generated):

- the embedded default dataset ``shapes_train`` / ``shapes_val`` (files are generated on
  first use, under ``$DETECTRON2_DATASETS/shapes`` or ``./datasets/shapes``; see
  :mod:`seg_plugins.data.shapes`);
- the datasets of the reference configs that detectron2 does not register itself:
  ``voc_2012_sem_seg_{train,val}``, ``voc_2012_aug_sem_seg_train`` and
  ``medical_binary_{train,val}`` (see :mod:`seg_plugins.data.builtin` and datasets/README.md).

Other datasets: :func:`register_sem_seg_folder` (image + label folders),
:func:`register_cityscapes` (a Cityscapes tree elsewhere), COCO-format JSON
(:mod:`seg_plugins.data.coco`), COCO panoptic JSON + PNGs
(:mod:`seg_plugins.data.coco_panoptic`), or a YAML / JSON dataset spec named in
``DATASETS.SPECS`` (:mod:`seg_plugins.data.spec`). Checks: :mod:`seg_plugins.data.validation`.
"""

from .builtin import (
    load_sem_seg_folder,
    register_builtin_datasets,
    register_medical_binary,
    register_sem_seg_folder,
    register_voc_2012_sem_seg,
)
from .cityscapes import register_cityscapes
from .coco import register_coco_instances_checked
from .coco_panoptic import register_coco_panoptic_checked
from .io import read_image, read_label
from .mapper import SemSegDatasetMapper
from .shapes import generate_shapes, generate_shapes_panoptic, register_shapes
from .spec import register_dataset_spec, register_dataset_specs
from .statistics import instance_statistics, sem_seg_statistics, suggest_class_weights
from .validation import DataProblemError

__all__ = [
    "DataProblemError",
    "SemSegDatasetMapper",
    "generate_shapes",
    "generate_shapes_panoptic",
    "instance_statistics",
    "load_sem_seg_folder",
    "read_image",
    "read_label",
    "register_builtin_datasets",
    "register_cityscapes",
    "register_coco_instances_checked",
    "register_coco_panoptic_checked",
    "register_dataset_spec",
    "register_dataset_specs",
    "register_medical_binary",
    "register_sem_seg_folder",
    "register_shapes",
    "register_voc_2012_sem_seg",
    "sem_seg_statistics",
    "suggest_class_weights",
]

register_shapes()  # cheap: registers names and metadata, generates nothing
register_builtin_datasets()  # cheap: lists no files until DatasetCatalog.get
