"""Fixtures shared by the data tests."""

import pytest

import seg_plugins  # noqa: F401  must come before detectron2 submodules (repairs the install)

# isort: split
from detectron2.data import DatasetCatalog, MetadataCatalog


@pytest.fixture
def names():
    """Dataset names registered by a test; removed from both catalogs afterwards."""
    registered = []
    yield registered
    for name in registered:
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
