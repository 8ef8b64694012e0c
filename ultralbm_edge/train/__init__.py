"""Training and distillation with the paper's recipe."""

from .trainer import TrainConfig, train

__all__ = ["TrainConfig", "train"]
