"""Training, evaluation and prediction: the Trainer (detectron2's DefaultTrainer wired to the
model's task), tools/train_net.py's entry point, the launcher and the Predictor."""

from .launch import launch
from .trainer import Trainer

__all__ = ["Trainer", "launch"]
