"""Evaluation: the per-category results store, metrics, result tables and pictures."""
