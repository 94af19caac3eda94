"""Checks on written PNGs, shared by the figure tests (test_plots, test_visualizer,
test_curves)."""

import os

import numpy as np
from PIL import Image


def png_array(path) -> np.ndarray:
    """The PNG at ``path`` as (H, W, 3) uint8 RGB."""
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def assert_not_blank(array: np.ndarray) -> None:
    """More than 20 distinct colours: a drawn figure, not an empty or single-colour canvas."""
    assert len(np.unique(array.reshape(-1, array.shape[-1]), axis=0)) > 20


def no_temp_files(folder) -> bool:
    """No temporary file of an atomic write is left in ``folder``."""
    return not [n for n in os.listdir(folder) if n.endswith(".tmp")]
