"""Label-value conventions of a dataset, stated at registration and applied wherever its
label maps are read (the mapper, the evaluator, the checks), so that training and
evaluation see the same classes.

A record names its convention in ``sem_seg_label_transform``, a small dict (kept per record
because one mapper serves several datasets, and the evaluator sees only records):

- ``{"name": "reduce_zero_label", "ignore_label": I}``: ADE20K / mmsegmentation style
  labels 0..K where 0 means "not labelled": 0 becomes I, k becomes k - 1 (the value I itself
  stays I).
- ``{"name": "binary_0_255"}``: a binary mask saved as 0 / 255: 255 becomes 1 (foreground).
  Which of 0/1 or 0/255 a dataset uses is stated by the user (``mask_values``), never
  guessed, since 255 is also the usual ignore value.

Without the key, label values are class indices as stored.
"""

from __future__ import annotations

import numpy as np

from .io import read_label

__all__ = ["LABEL_TRANSFORMS", "apply_label_transform", "label_transform_for", "read_sem_seg"]

LABEL_TRANSFORMS = ("reduce_zero_label", "binary_0_255")
MASK_VALUES = ("0/1", "0/255")


def label_transform_for(
    *, reduce_zero_label: bool = False, mask_values: str | None = None, ignore_label: int = 255
) -> dict | None:
    """The ``sem_seg_label_transform`` of a dataset registered with these options (None:
    labels are class indices as stored)."""
    if mask_values is not None and mask_values not in MASK_VALUES:
        raise ValueError(f"mask_values must be one of {MASK_VALUES} or None, got {mask_values!r}")
    if reduce_zero_label and mask_values is not None:
        raise ValueError(
            "reduce_zero_label and mask_values exclude each other: mask_values describes a "
            "binary mask (0 = background), reduce_zero_label labels whose 0 is 'not labelled'"
        )
    if reduce_zero_label:
        if not 0 <= ignore_label <= 255:
            raise ValueError(
                f"reduce_zero_label needs an ignore label in 0..255, got {ignore_label}"
            )
        return {"name": "reduce_zero_label", "ignore_label": int(ignore_label)}
    if mask_values == "0/255":
        if ignore_label == 255:
            return {"name": "binary_0_255"}
        raise ValueError(
            f"mask_values '0/255' with ignore_label {ignore_label}: 255 must be the foreground "
            f"value, so leave ignore_label at 255 (no pixel will be ignored)"
        )
    return None


def apply_label_transform(label: np.ndarray, transform: dict | None) -> np.ndarray:
    """``label`` (H, W) with the record's convention applied (a new array; uint8 stays uint8)."""
    if transform is None:
        return label
    name = transform.get("name")
    if name == "reduce_zero_label":
        ignore = transform.get("ignore_label", 255)
        if label.dtype == np.uint8:  # one table lookup
            lut = np.arange(256, dtype=np.int16) - 1
            lut[0] = ignore
            lut[ignore] = ignore
            return lut.astype(np.uint8)[label]
        out = label.astype(np.int32) - 1
        out[(label == 0) | (label == ignore)] = ignore
        return out
    if name == "binary_0_255":
        out = label.copy()
        out[label == 255] = 1
        return out
    raise ValueError(
        f"unknown sem_seg_label_transform {transform!r}; expected 'name' in {LABEL_TRANSFORMS}"
    )


def read_sem_seg(record: dict) -> np.ndarray:
    """The label map of a record (``sem_seg_file_name``) with its convention applied."""
    label = read_label(record["sem_seg_file_name"])
    return apply_label_transform(label, record.get("sem_seg_label_transform"))
