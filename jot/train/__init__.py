"""The generic training loop, mesh/sharding helpers and checkpoints."""
from jot.errors import UserError
from jot.train.loop import Interrupted, TrainingDiverged, evaluate, train

__all__ = ["Interrupted", "TrainingDiverged", "UserError", "evaluate", "train"]
