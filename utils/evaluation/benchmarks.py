"""What differs between benchmarks: one `Benchmark` per `--dataset` (BENCHMARKS), which the runner calls.

A benchmark says which splits test.py may score, which split gives thresholds without test labels, which
unlabelled splits an evaluation-server submission holds, and its own metrics beyond the seven of
METRIC_KEYS (`OwnInputs` -> {name: value}):

- mvtec_loco: sPRO AUC at FPR 0.05 and 0.3, per subset and their mean (utils/evaluation/spro.py), and the
  image AUROC of each anomaly type against the good images.
- mvtec_ad2: AU-PRO integrated to FPR 0.05 (the official MVTec AD definition at the benchmark's limit), and
  SegF1: the pixel F1 of the maps binarised at a threshold taken from the validation/good images alone
  (their NORMAL_QUANTILE pixel quantile, as `pixel_normal_threshold` of thresholds.json), pooled over the
  category's test_public pixels.
- real_iad: image AUROC / AP / F1-max per sample: a sample (its views share `Record.sample_id`) is anomalous
  if any view is, and scores the max over its views. The seven usual metrics are per view.
Other datasets have none. Adding a benchmark means adding its loader (dataset/) and, if anything differs,
its entry here. Every metric function is pure: the runner passes the stored maps and records.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dataset import Record
from dataset.mvtec_loco import read_defects_config
from utils.evaluation.metrics import compute_metrics, image_metrics
from utils.evaluation.native import PixelView
from utils.evaluation.spro import LOCO_TYPES, loco_spro_metrics
from utils.evaluation.store import CategoryResult
from utils.evaluation.thresholds import normal_pixel_threshold


@dataclass(frozen=True)
class OwnInputs:
    """What a benchmark's own metrics read for one scored, labelled category.

    records: in store order; view: the pixels the metrics read (eval_size or native); category_dir: the
    category's folder in the dataset; threshold: from the benchmark's threshold split (NaN without one).
    """

    records: Sequence[Record]
    result: CategoryResult
    view: PixelView
    category_dir: Path
    threshold: float = math.nan


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


def mvtec_ad2_metrics(own: OwnInputs) -> dict[str, float]:
    """{"pixel_aupro_0.05", "pixel_seg_f1", "seg_threshold"} of one test_public category.

    own.threshold: from `validation_threshold` (NaN: SegF1 is NaN).
    """
    result, view = own.result, own.view
    aupro = compute_metrics(
        result.labels, result.scores, view.masks, view.maps, fpr_limit=AD2_FPR_LIMIT, pixels=view.ranking
    )  # the category's pixels are ranked once (PixelView.ranking), shared with the usual metrics
    return {
        "pixel_aupro_0.05": aupro["pixel_aupro"],
        "pixel_seg_f1": seg_f1(view.masks, view.maps, own.threshold),
        "seg_threshold": own.threshold,
    }


def loco_metrics(own: OwnInputs) -> dict[str, float]:
    """sPRO (logical / structural / their mean at FPR 0.05 and 0.3) and the image AUROC of each type."""
    records, result = own.records, own.result
    types = [r.defect_type for r in records]
    configs = read_defects_config(own.category_dir)
    out = loco_spro_metrics(configs, types, [r.regions for r in records], own.view.maps, own.view.native)
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


def real_iad_metrics(own: OwnInputs) -> dict[str, float]:
    """{"sample_image_auroc", "sample_image_ap", "sample_image_f1_max"} (module docstring)."""
    ids = [r.sample_id or r.image_path for r in own.records]
    labels, scores = sample_scores(ids, own.result.labels, own.result.scores)
    return image_metrics(labels, scores, "sample_image")


def no_metrics(own: OwnInputs) -> dict[str, float]:
    """A benchmark without metrics of its own."""
    return {}


@dataclass(frozen=True)
class Benchmark:
    """What one `--dataset` scores and reports beyond the usual test split and seven metrics.

    test_splits: the values `--test_split` may take; threshold_split: scored first, its good images give
    thresholds without test labels (SegF1, the submission's thresholded maps); submission_splits: the
    unlabelled splits an evaluation-server submission (`--ad2_submission`) holds; metrics: its own metrics.
    """

    metrics: Callable[[OwnInputs], dict[str, float]] = no_metrics
    test_splits: tuple[str, ...] = ("test",)
    threshold_split: str | None = None
    submission_splits: tuple[str, ...] = ()


BENCHMARKS: dict[str, Benchmark] = {
    "mvtec_loco": Benchmark(loco_metrics),
    "mvtec_ad2": Benchmark(
        mvtec_ad2_metrics,
        test_splits=("test", "test_private", "test_private_mixed"),
        threshold_split="validation",
        submission_splits=("test_private", "test_private_mixed"),
    ),
    "real_iad": Benchmark(real_iad_metrics),
}


def benchmark_of(dataset: str) -> Benchmark:
    """The `Benchmark` of `--dataset` (a plain one for sets without anything of their own)."""
    return BENCHMARKS.get(dataset, Benchmark())
