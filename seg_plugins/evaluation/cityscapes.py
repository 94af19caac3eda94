"""The official Cityscapes numbers (cityscapesscripts), under result keys of their own.

detectron2 v0.6's ``CityscapesSemSegEvaluator`` reports under ``"sem_seg"`` and its
``CityscapesInstanceEvaluator`` under ``"segm"``: the keys of
:class:`~seg_plugins.evaluation.SemSegMetricsEvaluator` and of ``COCOEvaluator``, and
``DatasetEvaluators`` asserts that keys are unique. The subclasses here compute nothing
themselves; they report detectron2's results under the dataset's ``evaluator_type`` instead
(``"cityscapes_sem_seg"``, ``"cityscapes_instance"``) and fail early, with the fix, where
detectron2 v0.6 would fail late or not at all:

- One machine only. Every process writes its predictions (PNG / txt files) into a temporary
  folder of the main process, which then runs cityscapesscripts on them. detectron2 v0.6
  does not check this (later releases assert ``comm.get_local_size() ==
  comm.get_world_size()``); ``reset`` does.
- Every ``*_gtFine_labelIds.png`` / ``*_gtFine_instanceIds.png`` under the metadata's
  ``gt_dir`` is evaluated and needs a prediction, so the data set's records must cover
  ``gt_dir`` exactly. cityscapesscripts ends the process (``sys.exit``) when one is missing;
  that becomes a ``RuntimeError`` here.
- Semantic: prediction channel ``c`` is Cityscapes trainId ``c`` (19 classes), so the
  data set's ``stuff_classes`` must be the Cityscapes trainId names, in order.
- Instance: ``thing_classes`` must be Cityscapes label names that have instances.

cityscapesscripts 2.3.0 calls ``np.in1d``, removed in numpy 2.4 (setup.py pins numpy below).
"""

from __future__ import annotations

import glob
import os
from collections import OrderedDict

from detectron2.data import MetadataCatalog
from detectron2.evaluation import CityscapesInstanceEvaluator, CityscapesSemSegEvaluator
from detectron2.utils import comm

__all__ = ["CityscapesOfficialInstanceEvaluator", "CityscapesOfficialSemSegEvaluator"]


def _labels():
    """cityscapesscripts' labels table (imported lazily, like detectron2 does)."""
    try:
        from cityscapesscripts.helpers import labels
    except ImportError as e:
        raise ImportError(
            "the official Cityscapes evaluation needs cityscapesscripts: pip install "
            "'cityscapesscripts>=2.2' (a dependency of seg_plugins)"
        ) from e
    return labels


def cityscapes_train_names() -> list[str]:
    """The 19 evaluated Cityscapes classes in trainId order ("road", ..., "bicycle")."""
    return [_labels().trainId2label[t].name for t in range(19)]


class _Official:
    """Mixin: checks, the renamed result key and a readable cityscapesscripts failure."""

    result_key = ""
    gt_pattern = ""

    def _check_gt_dir(self, dataset_name: str) -> None:
        self._dataset_name = dataset_name
        gt_dir = getattr(MetadataCatalog.get(dataset_name), "gt_dir", None)
        if not gt_dir:
            raise ValueError(
                f"dataset '{dataset_name}' has no metadata 'gt_dir'; set "
                f"MetadataCatalog.get('{dataset_name}').gt_dir to its gtFine/<split> folder "
                "(the official Cityscapes evaluation reads the ground truth from there)"
            )
        self._gt_dir = gt_dir
        if not glob.glob(os.path.join(gt_dir, "*", self.gt_pattern)):
            raise FileNotFoundError(
                f"dataset '{dataset_name}': no {self.gt_pattern} in {gt_dir}/<city>/ (its "
                "metadata 'gt_dir'); point gt_dir at Cityscapes' gtFine/<split> folder"
            )

    def reset(self) -> None:
        if comm.get_local_size() != comm.get_world_size():
            raise RuntimeError(
                f"{type(self).__name__} works on one machine only ({comm.get_world_size()} "
                f"processes, {comm.get_local_size()} on this machine): predictions go to a "
                "local folder of the main process. Evaluate on one machine, or drop "
                "'cityscapes_*' from the dataset's evaluator_type"
            )
        super().reset()

    def evaluate(self):
        try:
            results = super().evaluate()
        except SystemExit as e:  # cityscapesscripts' printError calls sys.exit(-1)
            raise RuntimeError(
                f"cityscapesscripts stopped evaluating '{self._dataset_name}' (its 'ERROR:' "
                "line is printed above). Usually a ground-truth file has no prediction: the "
                f"data set's records must cover every {self.gt_pattern} under {self._gt_dir}"
            ) from e
        if results is None:  # not the main process
            return None
        ((_, metrics),) = results.items()
        return OrderedDict([(self.result_key, metrics)])


class CityscapesOfficialSemSegEvaluator(_Official, CityscapesSemSegEvaluator):
    """detectron2's ``CityscapesSemSegEvaluator`` (cityscapesscripts'
    evalPixelLevelSemanticLabeling on labelIds): ``IoU`` (the official mIoU over the 19
    classes), ``iIoU``, ``IoU_sup``, ``iIoU_sup`` (categories), in percent, under
    ``"cityscapes_sem_seg"``.

    Example::

        evaluator = CityscapesOfficialSemSegEvaluator("cityscapes_fine_sem_seg_val")
        inference_on_dataset(model, loader, evaluator)["cityscapes_sem_seg"]["IoU"]
    """

    result_key = "cityscapes_sem_seg"
    gt_pattern = "*_gtFine_labelIds.png"

    def __init__(self, dataset_name: str):
        super().__init__(dataset_name)
        self._check_gt_dir(dataset_name)
        names = list(getattr(self._metadata, "stuff_classes", None) or [])
        if names and names != cityscapes_train_names():
            raise ValueError(
                f"dataset '{dataset_name}': the official Cityscapes evaluation reads prediction "
                f"channel c as Cityscapes trainId c, but stuff_classes are {names[:5]}...; "
                "use the Cityscapes trainId class list (detectron2's builtin 'cityscapes' "
                "metadata) or evaluator_type 'sem_seg'"
            )


class CityscapesOfficialInstanceEvaluator(_Official, CityscapesInstanceEvaluator):
    """detectron2's ``CityscapesInstanceEvaluator`` (cityscapesscripts'
    evalInstanceLevelSemanticLabeling): mask ``AP`` (IoU 0.5:0.95) and ``AP50`` in percent,
    averaged over the 8 Cityscapes instance classes present, under ``"cityscapes_instance"``.

    Example::

        evaluator = CityscapesOfficialInstanceEvaluator("cityscapes_fine_instance_seg_val")
        inference_on_dataset(model, loader, evaluator)["cityscapes_instance"]["AP"]
    """

    result_key = "cityscapes_instance"
    gt_pattern = "*_gtFine_instanceIds.png"

    def __init__(self, dataset_name: str):
        name2label = _labels().name2label
        super().__init__(dataset_name)
        self._check_gt_dir(dataset_name)
        names = list(getattr(self._metadata, "thing_classes", None) or [])
        bad = [n for n in names if n not in name2label or not name2label[n].hasInstances]
        if not names or bad:
            raise ValueError(
                f"dataset '{dataset_name}': thing_classes {bad or names} are not Cityscapes "
                "instance classes; the official evaluation writes predictions as Cityscapes "
                "label ids (use detectron2's builtin 'cityscapes' metadata) or use "
                "evaluator_type 'coco'"
            )
