"""The generic training loop, checkpoints, and ``restore`` for readers
of a trained model."""
from jot.errors import UserError
from jot.train.loop import Interrupted, Restored, TrainingDiverged, evaluate, restore, train
from jot.train.workdir import NoRun

__all__ = ["Interrupted", "NoRun", "Restored", "TrainingDiverged", "UserError", "evaluate", "restore", "train"]
