from .coco import AtomicCOCOEvaluator
from .panoptic import COCOPanopticOfficialEvaluator, PanopticQualityEvaluator
from .sem_seg_evaluation import SemSegMetricsEvaluator, metrics_from_confusion

__all__ = [
    "AtomicCOCOEvaluator",
    "COCOPanopticOfficialEvaluator",
    "PanopticQualityEvaluator",
    "SemSegMetricsEvaluator",
    "metrics_from_confusion",
]
