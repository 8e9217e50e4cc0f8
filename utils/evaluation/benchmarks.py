"""The metrics a benchmark reports beyond the seven of METRIC_KEYS, from a finished category.

- mvtec_loco: sPRO AUC at FPR 0.05 and 0.3 for logical, structural and all regions (utils/evaluation/spro.py),
  and the image AUROC of each anomaly type against the good images.
- mvtec_ad2: AU-PRO integrated to FPR 0.05 (the official MVTec AD definition at the benchmark's limit), and
  SegF1: the pixel F1 of the maps binarised at a threshold taken from the validation/good images alone
  (their NORMAL_QUANTILE pixel quantile, as `pixel_normal_threshold` of thresholds.json), pooled over the
  category's test_public pixels.
- real_iad: image AUROC / AP / F1-max per sample: a sample (its views share `Record.sample_id`) is anomalous
  if any view is, and scores the max over its views. The seven usual metrics are per view.
Other datasets have none. Every function is pure: the runner passes the stored maps and records.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dataset import Record
from utils.evaluation.metrics import compute_metrics, image_metrics
from utils.evaluation.spro import LOCO_TYPES, loco_spro_metrics
from utils.evaluation.store import CategoryResult
from utils.evaluation.thresholds import normal_pixel_threshold

AD2_FPR_LIMIT = 0.05


def seg_f1(masks: np.ndarray, maps: np.ndarray, threshold: float) -> float:
    """Pooled pixel F1 of "score >= threshold": 2 TP / (2 TP + FP + FN); NaN for a NaN threshold or no
    anomalous pixel. masks: (N, H, W) bool; maps: (N, H, W) float (read image by image)."""
    if math.isnan(threshold):
        return math.nan
    tp = fp = fn = 0
    for mask, image_map in zip(masks, maps, strict=True):
        hit = np.asarray(image_map, dtype=np.float32) >= np.float32(threshold)
        mask = np.asarray(mask, dtype=bool)
        tp += int(np.count_nonzero(hit & mask))
        fp += int(np.count_nonzero(hit & ~mask))
        fn += int(np.count_nonzero(~hit & mask))
    return math.nan if tp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def validation_threshold(validation_maps: np.ndarray | None) -> float:
    """SegF1's threshold: the NORMAL_QUANTILE quantile of the (V, S, S) validation/good pixel scores; NaN
    without validation maps."""
    if validation_maps is None or not len(validation_maps):
        return math.nan
    return normal_pixel_threshold(validation_maps, np.zeros(len(validation_maps), dtype=np.int64))


def mvtec_ad2_metrics(result: CategoryResult, threshold: float) -> dict[str, float]:
    """{"pixel_aupro_0.05", "pixel_seg_f1", "seg_threshold"} of one test_public category.

    threshold: from `validation_threshold` (NaN: SegF1 is NaN).
    """
    aupro = compute_metrics(
        result.labels, result.scores, result.masks, result.maps, fpr_limit=AD2_FPR_LIMIT, pixels=result.pixels
    )  # the category's pixels are ranked once (CategoryResult.pixels), shared with the usual metrics
    return {
        "pixel_aupro_0.05": aupro["pixel_aupro"],
        "pixel_seg_f1": seg_f1(result.masks, result.maps, threshold),
        "seg_threshold": threshold,
    }


def loco_metrics(records: Sequence[Record], result: CategoryResult, category_dir: Path) -> dict[str, float]:
    """sPRO (logical / structural / all at FPR 0.05 and 0.3) and the image AUROC of each anomaly type."""
    types = [r.defect_type for r in records]
    out = loco_spro_metrics(category_dir, types, [r.regions for r in records], result.maps)
    for kind in LOCO_TYPES:
        keep = np.asarray([t in ("good", kind) for t in types])
        prefix = f"{kind.split('_')[0]}_image"
        out[f"{prefix}_auroc"] = image_metrics(result.labels[keep], result.scores[keep], prefix)[
            f"{prefix}_auroc"
        ]
    return out


def sample_scores(
    sample_ids: Sequence[str], labels: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(labels, scores) per sample, in order of first appearance: max over the sample's views of each."""
    index: dict[str, int] = {}
    for sid in sample_ids:
        index.setdefault(sid, len(index))
    rows = np.asarray([index[s] for s in sample_ids])
    sample_labels = np.zeros(len(index), dtype=np.int64)
    sample_max = np.full(len(index), -np.inf)
    np.maximum.at(sample_labels, rows, np.asarray(labels, dtype=np.int64))
    np.maximum.at(sample_max, rows, np.asarray(scores, dtype=np.float64))
    return sample_labels, sample_max


def real_iad_metrics(records: Sequence[Record], result: CategoryResult) -> dict[str, float]:
    """{"sample_image_auroc", "sample_image_ap", "sample_image_f1_max"} (module docstring)."""
    ids = [r.sample_id or r.image_path for r in records]
    labels, scores = sample_scores(ids, result.labels, result.scores)
    return image_metrics(labels, scores, "sample_image")


def benchmark_metrics(
    dataset: str,
    records: Sequence[Record],
    result: CategoryResult,
    category_dir: Path,
    seg_threshold: float = math.nan,
) -> dict[str, float]:
    """The extra metrics of `dataset` for one category ({} for sets without any); see the module docstring.

    records: the evaluated records in store order; category_dir: the category's folder in the dataset
    (LOCO reads defects_config.json there); seg_threshold: MVTec AD 2's `validation_threshold`.
    """
    if dataset == "mvtec_loco":
        return loco_metrics(records, result, category_dir)
    if dataset == "mvtec_ad2":
        return mvtec_ad2_metrics(result, seg_threshold)
    if dataset == "real_iad":
        return real_iad_metrics(records, result)
    return {}
