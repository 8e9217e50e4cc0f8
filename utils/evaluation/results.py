"""Write evaluation results: results.json, results.csv and results.md (a category x metric table)."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from utils.evaluation.metrics import METRIC_KEYS
from utils.files import atomic_write_text

# Column titles of the Markdown table, in METRIC_KEYS order.
COLUMN_TITLES = {
    "image_auroc": "I-AUROC",
    "image_ap": "I-AP",
    "image_f1_max": "I-F1max",
    "pixel_auroc": "P-AUROC",
    "pixel_ap": "P-AP",
    "pixel_f1_max": "P-F1max",
    "pixel_aupro": "AUPRO",
}


def mean_metrics(per_category: Mapping[Any, Mapping[str, float]]) -> dict[str, float]:
    """Average each metric over categories (or runs), ignoring NaN (undefined) entries; NaN if none is."""
    return _reduce(per_category, np.mean)


def mean_metrics_of(rows: Sequence[Mapping[str, float]], keys: Sequence[str]) -> dict[str, float]:
    """The mean of each of `keys` over `rows` (runs), ignoring NaN and rows without the key; NaN if none."""
    return _reduce(dict(enumerate(rows)), np.mean, keys)


def std_metrics(runs: Mapping[Any, Mapping[str, float]]) -> dict[str, float]:
    """Population standard deviation (ddof = 0) of each metric over runs, ignoring NaN; NaN if none is."""
    return _reduce(runs, np.std)


def _reduce(
    rows: Mapping[Any, Mapping[str, float]],
    reduce: Callable[[list[float]], Any],
    keys: Sequence[str] = METRIC_KEYS,
) -> dict:
    result = {}
    for key in keys:
        values = [m[key] for m in rows.values() if key in m and not math.isnan(m[key])]
        result[key] = float(reduce(values)) if values else math.nan
    return result


def _json_number(value: float) -> float | None:
    """NaN is not valid JSON: undefined metrics are written as null."""
    return None if math.isnan(value) else value


def json_metrics(metrics: Mapping[str, float]) -> dict[str, float | None]:
    """{metric: value} in METRIC_KEYS order as written to results.json (undefined = null)."""
    return {k: _json_number(metrics[k]) for k in METRIC_KEYS}


def write_results(
    out_dir: Path,
    dataset: str,
    per_category: Mapping[str, Mapping[str, float]],
    config: Mapping[str, Any],
    run: Mapping[str, Any] | None = None,
    visual: Mapping[str, Any] | None = None,
    seeds: Mapping[str, Any] | None = None,
    extra: Mapping[str, Mapping[str, float]] | None = None,
) -> dict[str, Any]:
    """Write results.json, results.csv and results.md into `out_dir`; return the JSON document.

    results.json = {"dataset": str, "categories": {cat: {metric: value}}, "mean": {metric: value},
    "config": {...}, "run": {...}}; undefined metrics are null; "run" (versions, commit, device, timing:
    utils/run_record.py) only when `run` is given; "visual" (mode, and for few-shot the shots, seed and
    reference image paths per category: utils/evaluation/runner.py) only when `visual` is given; "seeds"
    (each few-shot seed's run, the spread over seeds: utils/evaluation/seeds.py) only when `seeds` is given;
    "benchmark_metrics" ({"categories", "mean"} of a set's own metrics: utils/evaluation/benchmarks.py, and
    the defect-type accuracy) only when `extra` has any, also as a second table in results.md.
    CSV and Markdown hold one row per category and a mean row.
    """
    mean = mean_metrics(per_category)
    doc = {
        "dataset": dataset,
        "categories": {c: json_metrics(m) for c, m in per_category.items()},
        "mean": json_metrics(mean),
        "config": dict(config),
    }
    if run is not None:
        doc["run"] = dict(run)
    if visual is not None:
        doc["visual"] = dict(visual)
    if seeds is not None:
        doc["seeds"] = dict(seeds)
    extra_keys = list(dict.fromkeys(k for m in (extra or {}).values() for k in m))
    if extra_keys:
        extra_mean = _reduce(extra or {}, np.mean, extra_keys)
        doc["benchmark_metrics"] = {
            "categories": {c: {k: _json_number(v) for k, v in m.items()} for c, m in (extra or {}).items()},
            "mean": {k: _json_number(v) for k, v in extra_mean.items()},
        }
    atomic_write_text(out_dir / "results.json", json.dumps(doc, indent=2))
    rows = [(c, m) for c, m in per_category.items()] + [("mean", mean)]
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(["category", *METRIC_KEYS])
    writer.writerows([name, *(f"{m[k]:.6f}" for k in METRIC_KEYS)] for name, m in rows)
    atomic_write_text(out_dir / "results.csv", table.getvalue())
    markdown = markdown_table(per_category, mean, dataset)
    if extra_keys:
        markdown += "\n" + markdown_table(extra or {}, extra_mean, f"{dataset}: its own metrics", extra_keys)
    atomic_write_text(out_dir / "results.md", markdown)
    return doc


def _percent(value: float) -> str:
    return "–" if math.isnan(value) else f"{100 * value:.1f}"


def markdown_table(
    per_category: Mapping[str, Mapping[str, float]],
    mean: Mapping[str, float],
    dataset: str,
    keys: Sequence[str] = METRIC_KEYS,
) -> str:
    """A Markdown table in percent: one row per category, a bold mean row; "–" marks undefined metrics.

    `keys`: the columns (titles from COLUMN_TITLES, else the key itself); a key a row lacks shows "–".
    """
    header = "| Category | " + " | ".join(COLUMN_TITLES.get(k, k) for k in keys) + " |"
    lines = [f"### {dataset} (%)", "", header, "|" + "---|" * (len(keys) + 1)]
    for name, metrics in per_category.items():
        lines.append(f"| {name} | " + " | ".join(_percent(metrics.get(k, math.nan)) for k in keys) + " |")
    lines.append("| **mean** | " + " | ".join(f"**{_percent(mean[k])}**" for k in keys) + " |")
    return "\n".join(lines) + "\n"
