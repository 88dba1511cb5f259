"""Backbone selection (`python -m ftlab.select`): rank candidate backbones on a data set from their frozen
features (LogME, kNN and linear-probe accuracy) before fine-tuning any of them."""

from ftlab.selection.rank import Selection, SelectSettings, select
from ftlab.selection.scores import knn_accuracy, logme, probe_accuracy

__all__ = ["SelectSettings", "Selection", "knn_accuracy", "logme", "probe_accuracy", "select"]
