"""Fixtures shared by the evaluation tests."""

import uuid

import seg_plugins  # noqa: F401  (first: repairs detectron2 where needed)

# isort: split
import pytest
from detectron2.data import MetadataCatalog


@pytest.fixture
def dataset():
    """A factory of uniquely named datasets' metadata; removed after the test."""
    names = []

    def make(stuff_classes, **meta):
        name = f"test_sem_seg_{uuid.uuid4().hex[:8]}"
        MetadataCatalog.get(name).set(stuff_classes=list(stuff_classes), **meta)
        names.append(name)
        return name

    yield make
    for name in names:
        MetadataCatalog.remove(name)
