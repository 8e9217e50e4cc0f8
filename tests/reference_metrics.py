"""The image- and pixel-level metrics computed with scikit-learn: the independent reference that
tests/test_metrics.py and benchmarks/bench_metrics.py both compare `compute_metrics` with."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score


def f1_max(y: np.ndarray, s: np.ndarray) -> float:
    """Best F1 over every threshold of sklearn's precision-recall curve. y: (N,) {0, 1}; s: (N,) scores."""
    precision, recall, _ = precision_recall_curve(y, s)
    with np.errstate(invalid="ignore"):
        return float(np.nanmax(2 * precision * recall / (precision + recall)))


def sklearn_metrics(
    labels: np.ndarray, scores: np.ndarray, masks: np.ndarray, maps: np.ndarray
) -> dict[str, float]:
    """AUROC, AP and F1-max at image level (labels, scores: (N,)) and pixel level (masks (N, H, W) bool,
    maps (N, H, W) real, read as float64)."""
    y, s = masks.ravel(), maps.ravel().astype(np.float64)
    return {
        "image_auroc": roc_auc_score(labels, scores),
        "image_ap": average_precision_score(labels, scores),
        "image_f1_max": f1_max(labels, scores),
        "pixel_auroc": roc_auc_score(y, s),
        "pixel_ap": average_precision_score(y, s),
        "pixel_f1_max": f1_max(y, s),
    }
