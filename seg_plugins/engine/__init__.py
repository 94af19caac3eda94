from .launch import launch
from .trainer import Trainer, model_outputs

__all__ = ["Trainer", "launch", "model_outputs"]
