"""`ganpipe train`: one Ray Train run (driver.py) of the worker loop (worker.py, rules in loop.py)."""
from .driver import TrainingError, TrainOutcome, run_training

__all__ = ["run_training", "TrainOutcome", "TrainingError"]
