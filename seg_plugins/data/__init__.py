"""Datasets, readers and mappers.

Importing this package registers the embedded default dataset ``shapes_train`` /
``shapes_val`` (files are generated on first use, under ``$DETECTRON2_DATASETS/shapes``
or ``./datasets/shapes``; see :mod:`seg_plugins.data.shapes`).
"""

from .io import read_image, read_label
from .mapper import SemSegDatasetMapper
from .shapes import generate_shapes, register_shapes

__all__ = [
    "SemSegDatasetMapper",
    "generate_shapes",
    "read_image",
    "read_label",
    "register_shapes",
]

register_shapes()  # cheap: registers names and metadata, generates nothing
