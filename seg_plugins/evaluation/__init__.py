from .sem_seg_evaluation import SemSegMetricsEvaluator, metrics_from_confusion

__all__ = ["SemSegMetricsEvaluator", "metrics_from_confusion"]
