"""Semantic segmentation metrics from one int64 confusion matrix per dataset.

Shapes: K classes; N cases (images); H, W an image's height and width.

Conventions (definitions and sources in docs/metrics.md):
- ``conf[g, p]`` counts pixels of ground-truth class g predicted as p. Pixels whose ground
  truth is ``ignore_label`` never reach the matrix; any other ground-truth value outside
  [0, K) is an error naming the file (it would otherwise be silently dropped or aliased).
- mIoU, fwIoU, mACC, pACC, mDice, fgDice (mean Dice over the classes other than
  ``background_class``) and per class IoU / ACC (recall) / Dice / Precision:
  :func:`~seg_plugins.evaluation.sem_seg_metrics.metrics_from_confusion`, with a selectable
  convention for classes absent from the ground truth (``absent_classes``).
- Per-case Dice (nnU-Net): Dice of each foreground class in each image, from the same
  per-image bincount; an image where the class is absent from both ground truth and
  prediction is left out for that class. ``caseDice-<name>`` is its mean over the images,
  ``mCaseDice`` the mean over foreground classes. On for 2-class (binary) datasets, and for
  every dataset with ``per_case_dice=True`` (TEST.SEM_SEG_EVAL.PER_CASE_DICE).
All figures are reported in percent, as detectron2 does.

Binary mode (a model with MODEL.SEM_SEG_HEAD.NUM_CLASSES 1 outputs one foreground-logit
channel): the prediction is foreground where sigmoid(logit) > ``binary_threshold``
(:func:`seg_plugins.structures.binary_logits_to_two_class`) and the dataset counts as 2
classes, 0 = background and 1 = foreground, so every metric above is reported for both;
``fgDice`` is then the foreground Dice. The dataset's ``stuff_classes`` should name both,
e.g. ["background", "vessel"]; a dataset naming a single class (["vessel"]) is read as its
foreground and "background" is prepended. Ground-truth values other than 0, 1 and the ignore
label are an error naming the file (a 0/255 mask must be mapped to 0/1 first).

The per-image counts are one ``bincount`` on the device the predictions live on (NumPy on
the CPU: :mod:`seg_plugins.evaluation.confusion`), the dataset matrix is summed across
processes with a single all-reduce, and per-case counts (3 x K numbers per image) are
gathered to the main process only when per-case Dice is on.
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.distributed as dist
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from tabulate import tabulate

from ..data.io import read_label
from ..data.labels import apply_label_transform
from ..structures import binary_logits_to_two_class, check_binary_threshold
from ..utils.file_io import atomic_write_text
from .confusion import (
    argmax_channels_numpy,
    argmax_channels_torch,
    image_confusion_numpy,
    image_confusion_torch,
)
from .sem_seg_metrics import (
    case_dice,
    check_absent_classes,
    mean_case_dice,
    metrics_from_confusion,
)

__all__ = ["SemSegMetricsEvaluator", "metrics_from_confusion"]

logger = logging.getLogger(__name__)

# Logit dtypes the NumPy (CPU) path takes; others (bfloat16, ...) use torch.argmax.
_NUMPY_DTYPES = (torch.float32, torch.float64, torch.float16)
# Beyond a few threads one image's argmax is bound by memory bandwidth, not by cores.
_MAX_THREADS = 8


def _read_gt(gt_file: str, transform) -> np.ndarray:
    return apply_label_transform(read_label(gt_file), transform)


class SemSegMetricsEvaluator(DatasetEvaluator):
    """mIoU, fwIoU, mACC, pACC, mDice, fgDice, per-class IoU / ACC (recall) / Dice /
    Precision, and per-case Dice, from one confusion matrix.

    After :meth:`evaluate` (main process) the inputs of any plot stay available:
    ``confusion_matrix`` ((K, K) int64 array, rows = ground truth), ``class_names``,
    ``results`` (the "sem_seg" dict), ``case_files`` and ``case_dice`` ((N, K) per-case Dice
    in [0, 1], NaN where excluded; None without per-case Dice).

    Example::

        evaluator = SemSegMetricsEvaluator("shapes_val", output_dir="./output")
        evaluator = SemSegMetricsEvaluator(cfg, "shapes_val")  # from TEST.SEM_SEG_EVAL.*
        results = inference_on_dataset(model, data_loader, evaluator)
        results["sem_seg"]["mIoU"]
    """

    @configurable
    def __init__(
        self,
        dataset_name: str,
        *,
        distributed: bool = True,
        output_dir: str | None = None,
        num_classes: int | None = None,
        ignore_label: int | None = None,
        binary_threshold: float = 0.5,
        absent_classes: str = "mmseg",
        background_class: int = 0,
        per_case_dice: bool | None = None,
        num_threads: int | None = None,
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
            absent_classes: convention for classes absent from the ground truth:
                "mmseg", "detectron2_v0.6" or "detectron2_main" (docs/metrics.md).
            background_class: class left out of fgDice and per-case Dice; -1 = none.
            per_case_dice: report per-case Dice; None = only for 2-class datasets.
            num_threads: CPU threads for one image's work (reading its label map while the
                argmax runs, the argmax's rows shared); None = ``torch.get_num_threads()``
                (OMP_NUM_THREADS), 1 = none. The numbers do not depend on it.
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
        self._absent_classes = check_absent_classes(absent_classes)
        if not -1 <= background_class < self._num_classes:
            raise ValueError(
                f"background class {background_class} is not a class of '{dataset_name}' "
                f"(0..{self._num_classes - 1}); set TEST.SEM_SEG_EVAL.BACKGROUND_CLASS to one, "
                "or to -1 for a dataset without background"
            )
        self._background_class = int(background_class)
        self._per_case = self._num_classes == 2 if per_case_dice is None else bool(per_case_dice)
        threads = torch.get_num_threads() if num_threads is None else int(num_threads)
        if threads < 1:
            raise ValueError(f"num_threads must be >= 1 (or None), got {num_threads}")
        self._num_threads = min(threads, _MAX_THREADS)
        self._pool: ThreadPoolExecutor | None = None
        self.confusion_matrix: np.ndarray | None = None
        self.results: dict[str, float] | None = None
        self.case_files: list[str] = []
        self.case_dice: np.ndarray | None = None
        self.reset()

    @classmethod
    def from_config(cls, cfg, dataset_name: str, output_dir: str | None = None):
        """Keyword arguments from TEST.SEM_SEG_EVAL.* and MODEL.SEM_SEG_HEAD.BINARY_THRESHOLD."""
        if "SEM_SEG_EVAL" not in cfg.TEST:
            raise KeyError(
                "cfg has no TEST.SEM_SEG_EVAL; call seg_plugins.add_seg_plugins_config(cfg) "
                "before merging the config file"
            )
        ev = cfg.TEST.SEM_SEG_EVAL
        return {
            "dataset_name": dataset_name,
            "output_dir": output_dir,
            "binary_threshold": cfg.MODEL.SEM_SEG_HEAD.BINARY_THRESHOLD,
            "absent_classes": ev.ABSENT_CLASSES,
            "background_class": ev.BACKGROUND_CLASS,
            "per_case_dice": True if ev.PER_CASE_DICE else None,  # False: 2-class sets only
        }

    @property
    def class_names(self) -> list[str]:
        return list(self._class_names)

    def reset(self) -> None:
        self._conf: torch.Tensor | None = None
        self._cases: list[torch.Tensor] = []  # per image (3, K): TP, gt pixels, pred pixels
        self._case_files: list[str] = []

    def process(self, inputs: Sequence[dict], outputs: Sequence[dict]) -> None:
        for inp, out in zip(inputs, outputs):
            gt_file = inp.get("sem_seg_file_name")
            if gt_file is None:
                raise KeyError(
                    f"dataset '{self._dataset_name}': record {inp.get('file_name')} has no "
                    "'sem_seg_file_name'; the semantic evaluator needs ground-truth label maps"
                )
            counts = self._image_confusion(out["sem_seg"], gt_file, inp)
            self._conf = counts if self._conf is None else self._conf + counts
            if self._per_case:
                self._cases.append(torch.stack([counts.diagonal(), counts.sum(1), counts.sum(0)]))
                self._case_files.append(gt_file)

    def _workers(self) -> ThreadPoolExecutor | None:
        if self._pool is None and self._num_threads > 1:
            self._pool = ThreadPoolExecutor(self._num_threads, thread_name_prefix="sem_seg_eval")
        return self._pool

    def _image_confusion(self, logits: torch.Tensor, gt_file: str, inp: dict) -> torch.Tensor:
        """(K, K) int64 counts of one image, on the device of ``logits`` (K, H, W).

        On the CPU with threads, the label map is decoded (PIL releases the GIL) while the
        argmax's row chunks run on the threads. On the 2-core EPYC of docs/benchmarks.md the
        argmax of 19x1024x2048 logits went from 22.7 to 18 ms, and the evaluator row from
        39.4 to 36.5-37.6 ms per image: the argmax is bound by memory bandwidth more than
        by cores."""
        scores = self._class_scores(logits, inp.get("file_name"))
        numpy_path = scores.device.type == "cpu" and scores.dtype in _NUMPY_DTYPES
        pool = self._workers() if numpy_path else None
        transform = inp.get("sem_seg_label_transform")
        if pool is not None:
            gt_future = pool.submit(_read_gt, gt_file, transform)
        k, ignore = self._num_classes, self._ignore_label
        try:
            if numpy_path:
                pred = argmax_channels_numpy(
                    scores.detach().numpy(), pool=pool, chunks=2 * self._num_threads
                )
            else:
                pred = argmax_channels_torch(scores.detach())
        except FloatingPointError as err:
            if pool is not None:
                gt_future.cancel()
            raise FloatingPointError(
                f"{err} for {inp.get('file_name')}; the model diverged or its weights are broken"
            ) from err
        gt = gt_future.result() if pool is not None else _read_gt(gt_file, transform)
        if tuple(gt.shape) != tuple(scores.shape[1:]):
            raise ValueError(
                f"{gt_file}: ground truth is {tuple(gt.shape)} but the prediction for "
                f"{inp.get('file_name')} is {tuple(scores.shape[1:])}; the model must output "
                "at the original image size (check the dataset's height/width)"
            )
        if numpy_path:
            return torch.from_numpy(image_confusion_numpy(pred, gt, k, ignore, gt_file))
        return image_confusion_torch(pred, gt, k, ignore, gt_file)

    def _class_scores(self, logits: torch.Tensor, file_name) -> torch.Tensor:
        """Scores of shape (K, H, W) from logits of shape (K, H, W), or (1, H, W) (binary)."""
        channels = logits.shape[0]
        if channels == 1 and self._num_classes == 2:
            return binary_logits_to_two_class(logits, self._binary_threshold)
        if channels != self._num_classes:
            # An argmax >= K would alias another cell of the flattened confusion matrix.
            raise ValueError(
                f"dataset '{self._dataset_name}' has {self._num_classes} classes but the "
                f"prediction for {file_name} has {channels} channels; set "
                f"MODEL.SEM_SEG_HEAD.NUM_CLASSES to {self._num_classes} (or to 1, binary mode, "
                "for a 2-class background/foreground dataset)"
            )
        return logits

    def _reduced_confusion(self) -> np.ndarray:
        """The dataset's (K, K) matrix summed over processes: one all-reduce."""
        k = self._num_classes
        conf = self._conf
        if conf is None:
            conf = torch.zeros((k, k), dtype=torch.int64)
        if self._distributed and comm.get_world_size() > 1:
            if dist.get_backend() == "nccl" and conf.device.type != "cuda":
                conf = conf.cuda()
            conf = conf.clone()  # all_reduce works in place; keep this process' counts
            dist.all_reduce(conf)
        return conf.cpu().numpy()

    def _gathered_cases(self) -> tuple[list[str], np.ndarray]:
        """(files, per-case counts of shape (N, 3, K)) of every process, in rank order
        (= dataset order with detectron2's InferenceSampler); empty on other ranks."""
        k = self._num_classes
        stats = (
            torch.stack(self._cases).cpu().numpy()
            if self._cases
            else np.zeros((0, 3, k), dtype=np.int64)
        )
        files = list(self._case_files)
        if self._distributed and comm.get_world_size() > 1:
            parts = comm.gather((files, stats), dst=0)
            if not parts:
                return [], np.zeros((0, 3, k), dtype=np.int64)
            files = [f for part in parts for f in part[0]]
            stats = np.concatenate([part[1] for part in parts])
        return files, stats

    def evaluate(self) -> dict[str, dict[str, float]]:
        if self._pool is not None:  # threads are made again if process() is called again
            self._pool.shutdown()
            self._pool = None
        conf = self._reduced_confusion()
        files, stats = self._gathered_cases() if self._per_case else ([], None)
        if not comm.is_main_process():
            return {}
        if conf.sum() == 0:
            logger.warning("[%s] no labelled pixel was evaluated", self._dataset_name)
        res = metrics_from_confusion(
            conf,
            self._class_names,
            absent_classes=self._absent_classes,
            background_class=self._background_class,
        )
        self.confusion_matrix, self.case_files, self.case_dice = conf, files, None
        if stats is not None:
            self.case_dice = case_dice(stats)
            res.update(
                mean_case_dice(
                    self.case_dice, self._class_names, background_class=self._background_class
                )
            )
            # summary figures (no "-") first, then the per-class ones, as detectron2 prints
            res = OrderedDict(sorted(res.items(), key=lambda item: "-" in item[0]))
        self.results = res
        self._log_table(res)
        if self._output_dir:
            self._write_json(res, conf)
            self._write_plots(res, conf)
        return OrderedDict(sem_seg=res)

    def _write_plots(self, res: dict[str, float], conf: np.ndarray) -> None:
        """per_class_iou.png and confusion_matrix.png next to the json (docs/visualization.md)."""
        from .plots import write_metric_plots  # lazy: importing matplotlib costs ~0.4 s
        from .visualizer import dataset_classes

        write_metric_plots(
            conf,
            self._class_names,
            [res[f"IoU-{name}"] for name in self._class_names],
            self._output_dir,
            dataset_name=self._dataset_name,
            colors=dataset_classes(self._dataset_name, self._num_classes)[1],
            miou=res["mIoU"],  # may differ from the bars' mean under "detectron2_v0.6"
        )

    def _write_json(self, res: dict[str, float], conf: np.ndarray) -> None:
        payload = {
            "dataset": self._dataset_name,
            "absent_classes": self._absent_classes,
            "background_class": self._background_class,
            "metrics": res,
            "class_names": self._class_names,
            "confusion_matrix": conf.tolist(),
        }
        if self.case_dice is not None:
            fg = [i for i in range(self._num_classes) if i != self._background_class]
            payload["per_case_dice"] = [
                {"file_name": f, **{self._class_names[i]: float(100 * d[i]) for i in fg}}
                for f, d in zip(self.case_files, self.case_dice)
            ]
        os.makedirs(self._output_dir, exist_ok=True)
        atomic_write_text(
            os.path.join(self._output_dir, "sem_seg_evaluation.json"),
            json.dumps(payload, indent=1),
        )

    def _log_table(self, res: dict[str, float]) -> None:
        headers = ["class", "IoU", "Acc (recall)", "Dice", "Precision"]
        case = self.case_dice is not None
        if case:
            headers.append("case Dice")
        rows = []
        for name in self._class_names:
            row = [name] + [res[f"{key}-{name}"] for key in ("IoU", "ACC", "Dice", "Precision")]
            if case:
                row.append(res.get(f"caseDice-{name}", "-"))  # "-": the background
            rows.append(row)
        table = tabulate(rows, headers=headers, floatfmt=".2f", tablefmt="pipe")
        summary = "  ".join(f"{k} {v:.2f}" for k, v in res.items() if "-" not in k)
        logger.info(
            "Semantic segmentation on %s (absent classes: %s convention): %s\n%s",
            self._dataset_name,
            self._absent_classes,
            summary,
            table,
        )
