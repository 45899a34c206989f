"""Training: a task-agnostic trainer core (resume, DDP, EMA, fault handling, run directories,
reporting) and the classification task that plugs into it; the paper's recipe and a short one."""

from effnet.core.lazy import lazy_exports

_EXPORTS = {
    "TrainConfig": "effnet.training.config",
    "Trainer": "effnet.training.trainer",
    "TrainingError": "effnet.training.trainer",
    "ClassificationTrainer": "effnet.training.classify",
    "train": "effnet.training.launch",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
