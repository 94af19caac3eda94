from .trainer import Trainer, model_outputs

__all__ = ["Trainer", "model_outputs"]
