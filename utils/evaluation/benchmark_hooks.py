"""What the evaluation runner does per category beyond scoring the test split, driven by the dataset's
`Benchmark` (utils/evaluation/benchmarks.py).

The runner calls, per category: `split_to_score` (the samples to score), `score_threshold_split` (MVTec AD
2's validation/good), then after `evaluate_category`: `category_extras` (a set's own metrics, the server
export of an unlabelled split, the defect-type report), `category_signals` (a visual mode: the maps fused,
each measured alone) and, with `--ad2_submission`, `score_submission`.
Categories of an unlabelled split (MVTec AD 2 test_private / test_private_mixed) get `is_unlabelled` = True:
they have no metric, curve, threshold or overlay, and `per_image_csv_unlabelled` writes their scores.
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dataset import ImageDataset, Record, load_dataset
from utils.config.loading import ConfigError
from utils.config.schema import Config
from utils.evaluation.ad2_server import save_server_maps
from utils.evaluation.benchmarks import benchmark_of, validation_threshold
from utils.evaluation.defect_types import (
    REPORTED_DATASETS,
    VOCABULARY_STRATEGIES,
    category_type_report,
    reports_defect_types,
)
from utils.evaluation.figures import Measure, own_metrics
from utils.evaluation.metrics import UndefinedMetricWarning
from utils.evaluation.signals import category_signal_metrics, stored_signal_maps
from utils.evaluation.store import CategoryResult
from utils.files import atomic_write_text

DEFECT_TYPES_CSV = "defect_types.csv"
VALIDATION_DIR = "validation"  # <output_dir>/validation/<category>/: the threshold split's store
SPLITS_DIR = "splits"  # <output_dir>/splits/<split>/<category>/: the stores of a submission's splits

# Scores one split of a category into a store folder and returns its result (None off rank 0): the runner's
# evaluate_category with its EvaluationSpec fixed, called as score(samples, cat_dir, native).
ScoreSplit = Callable[[ImageDataset, Path, bool], CategoryResult | None]


def split_to_score(cfg: Config, category: str, split: str | None = None) -> ImageDataset:
    """A split of one category: `split`, or cfg.data.test_split (Real-IAD at its resolution)."""
    data = cfg.data
    return load_dataset(
        data.dataset,
        data.dataset_path,
        category,
        split or data.test_split,
        data.realiad_resolution,
        data.bit_depth,
    )


def scorer_detector(scorer: Any) -> Any:
    """The `AnomalyDetector` behind test.py's scorer (`utils.pipeline.CategoryScorer.detector`), or None for
    a scorer without one (the defect-type report then cannot run: see `check_benchmark_settings`)."""
    return getattr(scorer, "detector", None)


def check_benchmark_settings(cfg: Config) -> None:
    """One-line ConfigErrors for settings that cannot apply to cfg.data.dataset (before any scoring)."""
    dataset, split, strategy = cfg.data.dataset, cfg.data.test_split, cfg.prompts.prompt_strategy
    benchmark = benchmark_of(dataset)
    if split not in benchmark.test_splits:
        splits = " | ".join(benchmark.test_splits)
        raise ConfigError(f"test_split {split} does not exist for --dataset {dataset}: use {splits}")
    if cfg.evaluation.ad2_submission and not benchmark.submission_splits:
        raise ConfigError(f"ad2_submission needs --dataset mvtec_ad2, got {dataset}")
    target = cfg.evaluation.ad2_submission
    if (
        target
        and Path(target).expanduser().resolve() == Path(cfg.evaluation.output_dir).expanduser().resolve()
    ):
        raise ConfigError(
            "ad2_submission must be a folder of its own (the server rejects the run's other files): "
            f"e.g. {Path(cfg.evaluation.output_dir) / 'submission'}"
        )
    if target and split != "test":
        raise ConfigError(
            f"ad2_submission scores test (test_public) and then {', '.join(benchmark.submission_splits)}: "
            f"drop --test_split {split}"
        )
    if cfg.evaluation.defect_type_report and not reports_defect_types(dataset, strategy):
        raise ConfigError(
            f"defect_type_report needs --dataset {' | '.join(REPORTED_DATASETS)} (folders that name defects) "
            f"and --prompt_strategy {' | '.join(VOCABULARY_STRATEGIES)} (per-category vocabularies); "
            f"got {dataset} and {strategy}"
        )


def is_unlabelled(records: Sequence[Record]) -> bool:
    """True for a split published without labels (every record's label is None)."""
    return bool(records) and all(r.label is None for r in records)


def per_image_csv_unlabelled(records: Sequence[Record], scores: np.ndarray) -> str:
    """per_image.csv of an unlabelled split: path, defect_type (the split), an empty label, image_score."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("path", "defect_type", "label", "image_score"))
    for record, score in zip(records, scores, strict=True):
        writer.writerow([record.image_path, record.defect_type, "", repr(float(score))])
    return buffer.getvalue()


def score_threshold_split(cfg: Config, category: str, out: Path, score: ScoreSplit) -> float:
    """Score the benchmark's threshold split (MVTec AD 2: validation/good) into `<out>/validation/<category>/`
    (resumable like the test split) and return SegF1's threshold from it (`benchmarks.validation_threshold`).
    Every rank calls it; NaN off rank 0 and for benchmarks without such a split (nothing scored)."""
    split = benchmark_of(cfg.data.dataset).threshold_split
    if split is None:
        return math.nan
    samples = split_to_score(cfg, category, split)
    with warnings.catch_warnings():  # the split holds good images only: its image/pixel metrics are undefined
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        result = score(samples, out / VALIDATION_DIR / category, False)
    return math.nan if result is None else validation_threshold(result.maps)


def score_submission(cfg: Config, category: str, out: Path, score: ScoreSplit, threshold: float) -> None:
    """`--ad2_submission DIR`: score each submission split of `category` into `<out>/splits/<split>/` and
    write its maps into DIR in the evaluation server's layout (utils/evaluation/ad2_server.py). Every rank
    calls it; rank 0 writes."""
    target = cfg.evaluation.ad2_submission
    for split in benchmark_of(cfg.data.dataset).submission_splits if target else ():
        samples = split_to_score(cfg, category, split)
        result = score(samples, out / SPLITS_DIR / split / category, False)
        if result is not None:
            save_server_maps(Path(target), category, samples.records, result.maps, threshold)


def category_measure(cfg: Config, category: str, samples: ImageDataset) -> Measure:
    """How the figures of `category`'s maps (fused and signals) are computed under cfg."""
    return Measure(
        cfg.data.dataset,
        samples.records,
        cfg.evaluation.metrics_resolution == "native",
        cfg.evaluation.aupro_variant,
        samples.root / category,
    )


def category_signals(
    out: Path, cfg: Config, category: str, samples: ImageDataset, result: CategoryResult
) -> dict[str, dict[str, float]] | None:
    """{"text"/"visual": the seven metrics and the set's own} of the maps `result` was fused from, measured
    as `result` is (`category_measure`; SegF1 at each map's own validation threshold); None without signals
    (visual none). Stored in `<out>/categories/<category>/signals/` (utils/evaluation/signals.py)."""
    measure = category_measure(cfg, category, samples)
    thresholds = signal_thresholds(cfg, category, out)
    return category_signal_metrics(out / "categories" / category, result, measure, thresholds)


def signal_thresholds(cfg: Config, category: str, out: Path) -> dict[str, float]:
    """SegF1's threshold of each signal ({"text"/"visual": t}), from that signal's maps of the threshold split
    (`score_threshold_split` stored them in `<out>/validation/<category>/signals/`); {} without such a split
    or without signals (visual none)."""
    if benchmark_of(cfg.data.dataset).threshold_split is None:
        return {}
    stored = stored_signal_maps(out / VALIDATION_DIR / category)
    return {name: validation_threshold(maps) for name, maps in stored.items()}


def category_extras(
    out: Path,
    cfg: Config,
    category: str,
    samples: ImageDataset,
    result: CategoryResult,
    threshold: float = math.nan,
    detector: Any = None,
) -> dict[str, float]:
    """A set's own metrics for one scored category, plus its exports (rank 0 only).

    Labelled splits: the `Benchmark.metrics` of cfg.data.dataset (`threshold` from `score_threshold_split`),
    at cfg.evaluation.metrics_resolution. Unlabelled splits: per_image.csv without labels and, with
    save_maps "tiff", their server-layout maps (utils/evaluation/ad2_server.py). With
    cfg.evaluation.defect_type_report: `categories/<category>/defect_types.csv` and "defect_type_accuracy",
    from a detection pass of `detector` over the anomalous images.
    """
    cat_dir = out / "categories" / category
    cat_dir.mkdir(parents=True, exist_ok=True)
    if is_unlabelled(samples.records):
        atomic_write_text(cat_dir / "per_image.csv", per_image_csv_unlabelled(samples.records, result.scores))
        if cfg.evaluation.save_maps == "tiff":
            save_server_maps(out, category, samples.records, result.maps, threshold)
        return {}
    extra = own_metrics(result, category_measure(cfg, category, samples), threshold)
    if cfg.evaluation.defect_type_report:
        report = category_type_report(detector, cfg, samples, category)
        atomic_write_text(cat_dir / DEFECT_TYPES_CSV, report.csv_text())
        extra["defect_type_accuracy"] = report.accuracy
    return extra
