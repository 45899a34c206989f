"""Training and evaluation: the paper's recipe, resumable, on one process or many."""

from effnet.training.evaluate import evaluate, evaluate_weights
from effnet.training.loop import Trainer, TrainingError, train
from effnet.training.recipe import TrainConfig

__all__ = ["TrainConfig", "Trainer", "TrainingError", "evaluate", "evaluate_weights", "train"]
