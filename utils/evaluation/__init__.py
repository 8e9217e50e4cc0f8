"""Evaluation: fingerprint, per-category store, scoring loop, metrics, result tables and pictures."""
