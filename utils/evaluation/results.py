"""Write evaluation results: results.json, results.csv and results.md (a category x metric table)."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping
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


def mean_metrics(per_category: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Average each metric over categories, ignoring NaN (undefined) entries; NaN if none is defined."""
    mean = {}
    for key in METRIC_KEYS:
        values = [m[key] for m in per_category.values() if not math.isnan(m[key])]
        mean[key] = float(np.mean(values)) if values else math.nan
    return mean


def _json_number(value: float) -> float | None:
    """NaN is not valid JSON: undefined metrics are written as null."""
    return None if math.isnan(value) else value


def write_results(
    out_dir: Path,
    dataset: str,
    per_category: Mapping[str, Mapping[str, float]],
    config: Mapping[str, Any],
    run: Mapping[str, Any] | None = None,
    visual: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write results.json, results.csv and results.md into `out_dir`; return the JSON document.

    results.json = {"dataset": str, "categories": {cat: {metric: value}}, "mean": {metric: value},
    "config": {...}, "run": {...}}; undefined metrics are null; "run" (versions, commit, device, timing:
    utils/run_record.py) only when `run` is given; "visual" (mode, and for few-shot the shots, seed and
    reference image paths per category: utils/evaluation/runner.py) only when `visual` is given.
    CSV and Markdown hold one row per category and a mean row.
    """
    mean = mean_metrics(per_category)
    doc = {
        "dataset": dataset,
        "categories": {c: {k: _json_number(m[k]) for k in METRIC_KEYS} for c, m in per_category.items()},
        "mean": {k: _json_number(v) for k, v in mean.items()},
        "config": dict(config),
    }
    if run is not None:
        doc["run"] = dict(run)
    if visual is not None:
        doc["visual"] = dict(visual)
    atomic_write_text(out_dir / "results.json", json.dumps(doc, indent=2))
    rows = [(c, m) for c, m in per_category.items()] + [("mean", mean)]
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(["category", *METRIC_KEYS])
    writer.writerows([name, *(f"{m[k]:.6f}" for k in METRIC_KEYS)] for name, m in rows)
    atomic_write_text(out_dir / "results.csv", table.getvalue())
    atomic_write_text(out_dir / "results.md", markdown_table(per_category, mean, dataset))
    return doc


def _percent(value: float) -> str:
    return "–" if math.isnan(value) else f"{100 * value:.1f}"


def markdown_table(
    per_category: Mapping[str, Mapping[str, float]], mean: Mapping[str, float], dataset: str
) -> str:
    """A Markdown table in percent: one row per category, a bold mean row; "–" marks undefined metrics."""
    header = "| Category | " + " | ".join(COLUMN_TITLES[k] for k in METRIC_KEYS) + " |"
    lines = [f"### {dataset} (%)", "", header, "|" + "---|" * (len(METRIC_KEYS) + 1)]
    for name, metrics in per_category.items():
        lines.append(f"| {name} | " + " | ".join(_percent(metrics[k]) for k in METRIC_KEYS) + " |")
    lines.append("| **mean** | " + " | ".join(f"**{_percent(mean[k])}**" for k in METRIC_KEYS) + " |")
    return "\n".join(lines) + "\n"
