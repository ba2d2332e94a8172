"""The generic training loop, mesh/sharding helpers and checkpoints."""
from jot.train.loop import TrainingDiverged, evaluate, train

__all__ = ["TrainingDiverged", "evaluate", "train"]
