"""Semantic segmentation metrics from one int64 confusion matrix per dataset.

Shapes: K classes; H, W an image's height and width.

Conventions (see docs/metrics.md):
- ``conf[g, p]`` counts pixels of ground-truth class g predicted as p. Pixels whose ground
  truth is ``ignore_label`` are dropped before counting; any other ground-truth value
  outside [0, K) is an error naming the file (it would otherwise be silently dropped).
- IoU_c = TP / (TP + FP + FN). mIoU averages IoU over the classes with a non-empty union
  (present in the ground truth or predicted): a class predicted but absent from the ground
  truth scores 0 and counts, as in detectron2 and mmsegmentation.
- Acc_c = TP / (TP + FN) (recall); mAcc averages over classes present in the ground truth.
- pAcc = sum TP / number of counted pixels. fwIoU weighs IoU_c by the class' pixel share.
- Dice_c = 2 TP / (2 TP + FP + FN); mDice averages like mIoU.
All figures are reported in percent, as detectron2 does.

Binary mode (a model with MODEL.SEM_SEG_HEAD.NUM_CLASSES 1 outputs one foreground-logit
channel): the prediction is foreground where sigmoid(logit) > ``binary_threshold``
(:func:`seg_plugins.modeling.losses.binary_logits_to_two_class`) and the dataset counts as 2
classes, 0 = background and 1 = foreground, so every metric above is reported for both
(mIoU / mDice average them; read ``IoU-<foreground>`` / ``Dice-<foreground>`` for the
foreground-only figure). The dataset's ``stuff_classes`` should name both, e.g.
["background", "vessel"]; a dataset naming a single class (["vessel"]) is read as its
foreground and "background" is prepended. Ground-truth values other than 0, 1 and the ignore
label are an error naming the file (a 0/255 mask must be mapped to 0/1 first).

The matrix is accumulated with ``torch.bincount`` on the device the predictions live on
(no per-image host transfer) and summed across processes with a single all-reduce.
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch
import torch.distributed as dist
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from tabulate import tabulate

from ..data.io import read_label
from ..modeling.losses import binary_logits_to_two_class, check_binary_threshold
from ..utils.file_io import atomic_write_text

__all__ = ["SemSegMetricsEvaluator", "metrics_from_confusion"]

logger = logging.getLogger(__name__)


class SemSegMetricsEvaluator(DatasetEvaluator):
    """mIoU, fwIoU, mAcc, pAcc, mDice and per-class IoU / Acc / Dice / precision.

    Example::

        evaluator = SemSegMetricsEvaluator("shapes_val", output_dir="./output")
        results = inference_on_dataset(model, data_loader, evaluator)
        results["sem_seg"]["mIoU"]
    """

    def __init__(
        self,
        dataset_name: str,
        *,
        distributed: bool = True,
        output_dir: str | None = None,
        num_classes: int | None = None,
        ignore_label: int | None = None,
        binary_threshold: float = 0.5,
    ):
        """
        Args:
            dataset_name: a MetadataCatalog name with ``stuff_classes`` (and ``ignore_label``).
            distributed: sum the confusion matrix across processes in ``evaluate``.
            output_dir: where sem_seg_evaluation.json goes; None = nowhere.
            num_classes: K, overriding ``len(stuff_classes)``; 1 means binary (2 classes).
            ignore_label: overrides the metadata's ``ignore_label`` (default 255).
            binary_threshold: foreground probability above which a one-channel prediction
                counts as foreground (MODEL.SEM_SEG_HEAD.BINARY_THRESHOLD).
        """
        meta = MetadataCatalog.get(dataset_name)
        self._dataset_name = dataset_name
        self._distributed = distributed
        self._output_dir = output_dir
        self._class_names: list[str] = list(getattr(meta, "stuff_classes", []) or [])
        self._num_classes = int(num_classes if num_classes is not None else len(self._class_names))
        if self._num_classes <= 0:
            raise ValueError(
                f"dataset '{dataset_name}': no classes; set MetadataCatalog.get('{dataset_name}')"
                ".stuff_classes or pass num_classes"
            )
        if self._num_classes <= 2 and len(self._class_names) == 1:  # binary: names foreground
            name = self._class_names[0]
            self._class_names = ["background", name if name != "background" else "foreground"]
        self._num_classes = max(self._num_classes, 2)  # 1 = binary = background + foreground
        if len(self._class_names) != self._num_classes:
            self._class_names = [str(i) for i in range(self._num_classes)]
        self._binary_threshold = check_binary_threshold(binary_threshold)
        self._ignore_label = int(
            ignore_label if ignore_label is not None else getattr(meta, "ignore_label", 255)
        )
        self._conf: torch.Tensor | None = None

    def reset(self) -> None:
        self._conf = None

    def process(self, inputs: Sequence[dict], outputs: Sequence[dict]) -> None:
        for inp, out in zip(inputs, outputs):
            pred = self._predicted_classes(out["sem_seg"], inp.get("file_name"))
            gt_file = inp.get("sem_seg_file_name")
            if gt_file is None:
                raise KeyError(
                    f"dataset '{self._dataset_name}': record {inp.get('file_name')} has no "
                    "'sem_seg_file_name'; the semantic evaluator needs ground-truth label maps"
                )
            gt = torch.from_numpy(read_label(gt_file).astype(np.int64)).to(pred.device)
            if gt.shape != pred.shape:
                raise ValueError(
                    f"{gt_file}: ground truth is {tuple(gt.shape)} but the prediction for "
                    f"{inp.get('file_name')} is {tuple(pred.shape)}; the model must output at "
                    "the original image size (check the dataset's height/width)"
                )
            self._accumulate(pred, gt, gt_file)

    def _predicted_classes(self, logits: torch.Tensor, file_name) -> torch.Tensor:
        """Class ids of shape (H, W) from logits of shape (K, H, W), or (1, H, W) (binary)."""
        channels = logits.shape[0]
        if channels == 1 and self._num_classes == 2:
            logits = binary_logits_to_two_class(logits, self._binary_threshold)
        elif channels != self._num_classes:
            # An argmax >= K would alias another cell of the flattened confusion matrix.
            raise ValueError(
                f"dataset '{self._dataset_name}' has {self._num_classes} classes but the "
                f"prediction for {file_name} has {channels} channels; set "
                f"MODEL.SEM_SEG_HEAD.NUM_CLASSES to {self._num_classes} (or to 1, binary mode, "
                "for a 2-class background/foreground dataset)"
            )
        return logits.argmax(dim=0)

    def _accumulate(self, pred: torch.Tensor, gt: torch.Tensor, gt_file: str) -> None:
        k = self._num_classes
        keep = gt != self._ignore_label
        gt, pred = gt[keep], pred[keep]
        bad = (gt < 0) | (gt >= k)
        if bool(bad.any()):
            values = sorted(set(gt[bad].unique().tolist()))[:10]
            binary = " (binary: 0 = background, 1 = foreground)" if k == 2 else ""
            raise ValueError(
                f"{gt_file}: label values {values} are neither classes 0..{k - 1}{binary} nor "
                f"the ignore label {self._ignore_label}; fix the labels or the dataset's "
                "ignore_label"
            )
        counts = torch.bincount(gt * k + pred, minlength=k * k).reshape(k, k)
        self._conf = counts if self._conf is None else self._conf + counts

    def _reduced_confusion(self) -> np.ndarray:
        k = self._num_classes
        conf = self._conf
        if conf is None:
            conf = torch.zeros((k, k), dtype=torch.int64)
        if self._distributed and comm.get_world_size() > 1:
            if dist.get_backend() == "nccl" and conf.device.type != "cuda":
                conf = conf.cuda()
            dist.all_reduce(conf)
        return conf.cpu().numpy()

    def evaluate(self) -> dict[str, dict[str, float]]:
        conf = self._reduced_confusion()
        if not comm.is_main_process():
            return {}
        if conf.sum() == 0:
            logger.warning("[%s] no labelled pixel was evaluated", self._dataset_name)
        res = metrics_from_confusion(conf, self._class_names)
        self._log_table(res)
        if self._output_dir:
            os.makedirs(self._output_dir, exist_ok=True)
            payload = {
                "dataset": self._dataset_name,
                "metrics": res,
                "class_names": self._class_names,
                "confusion_matrix": conf.tolist(),
            }
            atomic_write_text(
                os.path.join(self._output_dir, "sem_seg_evaluation.json"),
                json.dumps(payload, indent=1),
            )
        return OrderedDict(sem_seg=res)

    def _log_table(self, res: dict[str, float]) -> None:
        rows = [
            [name, res[f"IoU-{name}"], res[f"ACC-{name}"], res[f"Dice-{name}"]]
            for name in self._class_names
        ]
        table = tabulate(
            rows, headers=["class", "IoU", "Acc", "Dice"], floatfmt=".2f", tablefmt="pipe"
        )
        logger.info(
            "Semantic segmentation on %s: mIoU %.2f  fwIoU %.2f  mAcc %.2f  pAcc %.2f  "
            "mDice %.2f\n%s",
            self._dataset_name,
            res["mIoU"],
            res["fwIoU"],
            res["mACC"],
            res["pACC"],
            res["mDice"],
            table,
        )


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan, dtype=np.float64)
    ok = den > 0
    out[ok] = num[ok] / den[ok]
    return out


def metrics_from_confusion(conf: np.ndarray, class_names: Sequence[str]) -> dict[str, float]:
    """Metrics (percent) from a (K, K) confusion matrix, rows = ground truth.

    Classes that are undefined for a metric (e.g. Acc of a class absent from the ground
    truth) are NaN per class and left out of the mean.
    """
    conf = conf.astype(np.float64)
    tp = np.diag(conf)
    gt = conf.sum(axis=1)
    pred = conf.sum(axis=0)
    union = gt + pred - tp
    iou, acc, dice, prec = (
        _ratio(tp, union),
        _ratio(tp, gt),
        _ratio(2 * tp, gt + pred),
        _ratio(tp, pred),
    )
    total = gt.sum()
    valid_union, valid_gt = union > 0, gt > 0

    def mean(values, valid):
        return float(np.mean(values[valid]) * 100) if valid.any() else float("nan")

    res = OrderedDict()
    res["mIoU"] = mean(iou, valid_union)
    res["fwIoU"] = (
        float(np.sum(iou[valid_gt] * gt[valid_gt]) / total * 100) if total else float("nan")
    )
    res["mACC"] = mean(acc, valid_gt)
    res["pACC"] = float(tp.sum() / total * 100) if total else float("nan")
    res["mDice"] = mean(dice, valid_union)
    for i, name in enumerate(class_names):
        for key, values in (("IoU", iou), ("ACC", acc), ("Dice", dice), ("Precision", prec)):
            res[f"{key}-{name}"] = float(values[i] * 100)
    return res
