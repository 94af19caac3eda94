"""detectron2's COCOEvaluator, with atomic output files and scored on the images it was given.

Two differences from detectron2's :class:`~detectron2.evaluation.COCOEvaluator`, both
invisible when nothing went wrong:

- its files (``coco_instances_results.json``, ``instances_predictions.pth``) are written
  atomically: during ``evaluate`` the ``PathManager`` of detectron2's coco_evaluation module
  opens files for writing through :func:`seg_plugins.utils.file_io.atomic_open` (a temporary
  file renamed into place), so a kill or a full disk never leaves half a file;
- by default it scores the images that went through ``process`` (gathered over all
  processes), through the public ``evaluate(img_ids=...)``. COCOEvaluator reads its ground
  truth from the dataset's JSON, where images that the dataset checks left out
  (``DATASETS.SKIP_BAD_SAMPLES``) would count as missed detections. When no image was
  skipped, the images seen are every image of the JSON, and the figures are detectron2's.
"""

from __future__ import annotations

import itertools
import sys

from detectron2.evaluation import COCOEvaluator
from detectron2.utils import comm

from ..utils.file_io import AtomicWritesPathManager

__all__ = ["AtomicCOCOEvaluator"]


class AtomicCOCOEvaluator(COCOEvaluator):
    """:class:`~detectron2.evaluation.COCOEvaluator` writing its files atomically and scoring
    the images it was given (see the module docstring); same arguments."""

    def reset(self):
        super().reset()
        self.seen_image_ids: list[int] = []

    def process(self, inputs, outputs):
        super().process(inputs, outputs)
        self.seen_image_ids.extend(x["image_id"] for x in inputs)

    def evaluate(self, img_ids=None):
        if img_ids is None:
            # every process calls evaluate (detectron2's inference_on_dataset), so the
            # gather is collective; the main process scores all, the others return {}
            seen = self.seen_image_ids
            if comm.get_world_size() > 1:
                seen = list(itertools.chain(*comm.gather(seen, dst=0)))
            img_ids = sorted(set(seen)) or None
        module = sys.modules[COCOEvaluator.__module__]
        real = module.PathManager
        module.PathManager = AtomicWritesPathManager(real)
        try:
            return super().evaluate(img_ids)
        finally:
            module.PathManager = real
