"""Trained models from checkpoints: loading, metrics, plots."""
