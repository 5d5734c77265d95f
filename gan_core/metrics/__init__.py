"""Offline metrics on a feature network trained on the run's own data (no downloads)."""
from .cas import classification_accuracy_score
from .classifier import FeatureNet, SmallCNN, accuracy, fit_classifier, load_or_train
from .fidelity import label_fidelity
from .frechet import frechet_distance
from .memorization import memorization
from .prdc import prdc
from .probe import TrainingProbe
from .table import METRICS, TRAINING_METRICS, Metric, is_better, quality_bar, within
from .suite import cheap_metrics, compare_in_parts, full_metrics, sample_generator

__all__ = ["FeatureNet", "SmallCNN", "accuracy", "fit_classifier", "load_or_train", "frechet_distance", "prdc",
           "label_fidelity", "classification_accuracy_score", "memorization", "cheap_metrics", "full_metrics",
           "compare_in_parts", "sample_generator", "TrainingProbe", "METRICS", "TRAINING_METRICS",
           "Metric", "is_better", "quality_bar", "within"]
