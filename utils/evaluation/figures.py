"""A category's figures from one set of its maps, at `metrics_resolution`: one path for every map it has.

The fused map (utils/evaluation/loop.py, benchmark_hooks.py) and each signal it was fused from
(utils/evaluation/signals.py) are measured by the same two functions on a `CategoryResult`:

- `category_metrics`: the seven metrics of METRIC_KEYS,
- `own_metrics`: the benchmark's own (sPRO, AU-PRO@0.05 and SegF1, per-sample image metrics: `Benchmark`),

each reading the result's `PixelView` (utils/evaluation/native.py): the stored (N, S, S) maps, or each map
resized to its image's ground-truth size. A signal's result (`signal_result`) shares the fused result's
labels, masks and view of the ground truth, so the native masks are read once per category. A native
ranking (GBs for a LOCO category) is dropped after each use: one is held at a time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dataset import Record
from utils.evaluation.benchmarks import OwnInputs, benchmark_of
from utils.evaluation.metrics import compute_metrics
from utils.evaluation.native import pixel_view
from utils.evaluation.store import CategoryResult

FPR_LIMIT = 0.3  # AUPRO's integration limit (MVTec AD)


@dataclass(frozen=True)
class Measure:
    """How a category's figures are computed: its dataset's benchmark, its records (store order), the
    resolution (native: each image's size), the AUPRO variant and the category's folder in the dataset."""

    dataset: str
    records: Sequence[Record]
    native: bool
    aupro_variant: str = "official"
    category_dir: Path = Path()


def category_metrics(
    result: CategoryResult, records: Sequence[Record], native: bool, aupro_variant: str
) -> dict[str, float]:
    """The seven metrics (METRIC_KEYS) of `result`'s labels, scores and maps at the resolution `native` says.

    result.maps: (N, S, S) stored maps; result.masks: (N, S, S) stored masks (eval_size) or, native, the
    masks read at each image's size (`records`, in store order).
    """
    view = pixel_view(result, records, native)
    metrics = compute_metrics(
        result.labels,
        result.scores,
        view.masks,
        view.maps,
        fpr_limit=FPR_LIMIT,
        aupro_variant=aupro_variant,
        pixels=view.ranking,
    )
    view.release()  # native: the sPRO of utils/evaluation/spro.py pools its own pixels
    return metrics


def own_metrics(result: CategoryResult, measure: Measure, threshold: float = math.nan) -> dict[str, float]:
    """The benchmark's own metrics of `result` (`Benchmark.metrics`), at the same resolution.

    threshold: SegF1's, from the benchmark's threshold split (NaN without one).
    """
    view = pixel_view(result, measure.records, measure.native)
    own = benchmark_of(measure.dataset).metrics(
        OwnInputs(measure.records, result, view, measure.category_dir, threshold)
    )
    view.release()
    return own


def all_metrics(result: CategoryResult, measure: Measure, threshold: float = math.nan) -> dict[str, float]:
    """`category_metrics` and `own_metrics` of `result` in one dict (seven first)."""
    seven = category_metrics(result, measure.records, measure.native, measure.aupro_variant)
    return {**seven, **own_metrics(result, measure, threshold)}


def signal_result(result: CategoryResult, maps: np.ndarray, scores: Sequence[float]) -> CategoryResult:
    """The result of another map of the same images (a signal): `maps` (N, S, S) and `scores` (N,) with
    `result`'s labels, stored masks and view of the ground truth (`PixelView.with_maps`)."""
    alone = CategoryResult({}, maps, result.masks, result.labels, np.asarray(scores, dtype=np.float64))
    if result.view is not None:
        alone.view = result.view.with_maps(maps)
    return alone
