from .coco import AtomicCOCOEvaluator
from .sem_seg_evaluation import SemSegMetricsEvaluator, metrics_from_confusion

__all__ = ["AtomicCOCOEvaluator", "SemSegMetricsEvaluator", "metrics_from_confusion"]
