"""Write evaluation results: results.json, results.csv and results.md (a category x metric table)."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dataset import fixed_categories, set_name
from utils.config.schema import SETTINGS
from utils.evaluation.metrics import METRIC_KEYS
from utils.evaluation.modes import MODE_ORDER, mode_of
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


def std_metrics_of(rows: Sequence[Mapping[str, float]], keys: Sequence[str]) -> dict[str, float]:
    """`std_metrics` of each of `keys` over `rows` (runs), ignoring NaN and rows without the key."""
    return _reduce(dict(enumerate(rows)), np.std, keys)


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


def run_label(config: Mapping[str, Any]) -> str:
    """The mode of a run as a paper table names it (`modes.TEST_MODES`): text, mutual, text+mutual or
    `fewshot K=<shots>`."""
    mode = mode_of(config)
    return f"fewshot K={config.get('shots', '?')}" if mode == "fewshot" else mode


def label_order(label: str) -> tuple[int, int, str]:
    """A sort key putting labels in MODE_ORDER (fewshot by K, unknown labels last by name)."""
    head, _, k = label.partition(" K=")
    rank = MODE_ORDER.index(head) if head in MODE_ORDER else len(MODE_ORDER)
    return rank, int(k) if k.isdigit() else 0, label


def image_counts(run: Mapping[str, Any] | None) -> tuple[int, int] | None:
    """(test images, categories) from a results.json "run" section, or None when it holds no counts."""
    counts = (run or {}).get("images") or {
        c: e["images"] for c, e in (run or {}).get("categories", {}).items()
    }
    return (sum(counts.values()), len(counts)) if counts else None


def results_title(
    dataset: str, config: Mapping[str, Any], run: Mapping[str, Any] | None, seeds: Sequence[int] = ()
) -> str:
    """The heading of results.md: the set (`dataset.set_name`: a meta.json set by its folder), mode, prompt
    strategy, K and seeds, image counts."""
    parts = [set_name(dataset, config.get("dataset_path")), run_label(config)]
    if "prompt_strategy" in config:
        parts.append(f"prompts {config['prompt_strategy']}")
    if seeds:
        parts.append(f"seeds {', '.join(map(str, seeds))} (mean ± std over seeds)")
    elif mode_of(config) == "fewshot" and "shot_seed" in config:
        parts.append(f"seed {config['shot_seed']}")
    counts = image_counts(run)
    if counts:
        parts.append(f"{counts[0]} test images in {categories_phrase(dataset, counts[1])}")
    return " · ".join(parts) + " (%)"


def categories_phrase(dataset: str, count: int) -> str:
    """`1 of 15 categories` when a benchmark run covers only some of its published categories, else
    `15 categories` (own folders, meta.json sets and unknown names have no published list)."""
    published = len(fixed_categories(dataset))
    of = f" of {published}" if 0 < count < published else ""
    return f"{count}{of} categor{'y' if count == 1 and not of else 'ies'}"


def prompt_record(prompts: Sequence[str], object_prompt: str | None) -> dict[str, Any]:
    """One category's entry of results.json "prompts": the resolved defect prompts (strategy, extra
    prompts, overrides and learned concepts applied) and the object noun of the object prior (None: none)."""
    return {"prompts": list(prompts), "object_prompt": object_prompt}


def settings_of_test(config: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of `config` test.py uses (declared for it, or YAML-only); train/demo-only keys dropped."""
    return {k: v for k, v in config.items() if k not in SETTINGS or _used_by_test(SETTINGS[k].policy.scripts)}


def _used_by_test(scripts: Sequence[str]) -> bool:
    return not scripts or "test" in scripts


def write_results(
    out_dir: Path,
    dataset: str,
    per_category: Mapping[str, Mapping[str, float]],
    config: Mapping[str, Any],
    run: Mapping[str, Any] | None = None,
    visual: Mapping[str, Any] | None = None,
    seeds: Mapping[str, Any] | None = None,
    extra: Mapping[str, Mapping[str, float]] | None = None,
    signals: Mapping[str, Mapping[str, Mapping[str, float]]] | None = None,
    prompts: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Write results.json, results.csv and results.md into `out_dir`; return the JSON document.

    results.json = {"dataset": str, "categories": {cat: {metric: value}}, "mean": {metric: value}, "config":
    {...}, "run": {...}}; undefined metrics are null; "set" (after "dataset") names a meta.json set by its
    folder (`dataset.set_name`, as its output folder and compare.md do); "run" (versions, commit, device,
    timing: utils/run_record.py) only when `run` is given; "visual" (mode, and for few-shot the shots, seed
    and reference image paths per category: utils/evaluation/runner.py) only when `visual` is given; "seeds"
    (each few-shot seed's run, the spread over seeds: utils/evaluation/seeds.py) only when `seeds` is given;
    "benchmark_metrics" ({"categories", "mean"} of a set's own metrics: utils/evaluation/benchmarks.py, and
    the defect-type accuracy) only when `extra` has any, also as a second table in results.md; "prompts"
    ({category: {"prompts": [...], "object_prompt": noun or null}}: what each category was scored with,
    `prompt_record`) only when `prompts` is given; "visual_only" and "text_only" (`signal_sections`) when
    `signals` ({category: {"text"/"visual": metrics}}, a visual mode) has any, also as a fused / visual only /
    text only block in results.md.
    CSV and Markdown hold one row per category and a mean row; results.md is titled by `results_title` and,
    with `seeds`, shows each value as mean ± std over seeds. "config" keeps the settings test.py uses
    (`settings_of_test`).
    """
    mean = mean_metrics(per_category)
    doc: dict[str, Any] = {"dataset": dataset}
    name = set_name(dataset, config.get("dataset_path"))  # meta_json: the folder holding meta.json
    if name != dataset:
        doc["set"] = name
    doc.update(
        categories={c: json_metrics(m) for c, m in per_category.items()},
        mean=json_metrics(mean),
        config=settings_of_test(config),
    )
    if run is not None:
        doc["run"] = dict(run)
    if visual is not None:
        doc["visual"] = dict(visual)
    if seeds is not None:
        doc["seeds"] = dict(seeds)
    if prompts is not None:
        doc["prompts"] = {c: dict(p) for c, p in prompts.items()}
    extra_keys = list(dict.fromkeys(k for m in (extra or {}).values() for k in m))
    if extra_keys:
        extra_mean = _reduce(extra or {}, np.mean, extra_keys)
        doc["benchmark_metrics"] = {
            "categories": {c: {k: _json_number(v) for k, v in m.items()} for c, m in (extra or {}).items()},
            "mean": {k: _json_number(v) for k, v in extra_mean.items()},
        }
    doc.update(signal_sections(signals or {}))
    atomic_write_text(out_dir / "results.json", json.dumps(doc, indent=2))
    rows = [(c, m) for c, m in per_category.items()] + [("mean", mean)]
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(["category", *METRIC_KEYS])
    writer.writerows([name, *(f"{m[k]:.6f}" for k in METRIC_KEYS)] for name, m in rows)
    atomic_write_text(out_dir / "results.csv", table.getvalue())
    std = None if seeds is None else {c: _from_json(m) for c, m in seeds.get("std", {}).items()}
    title = results_title(dataset, config, run, list(seeds["seeds"]) if seeds else ())
    markdown = markdown_table(per_category, mean, name, title, std)
    if extra_keys:
        own = f"{name}: its own metrics (%)"
        markdown += "\n" + markdown_table(extra or {}, extra_mean, name, own, keys=extra_keys)
    if signals:
        fused = {**mean, **(extra_mean if extra_keys else {})}
        keys = [*METRIC_KEYS, *own_keys(_signal_rows(signals))]
        markdown += "\n" + signals_table(name, {"fused": fused, **_signal_means(signals)}, keys)
    atomic_write_text(out_dir / "results.md", markdown)
    return doc


# results.json section of each signal a visual mode is fused from (utils/evaluation/signals.py).
SIGNAL_SECTIONS: dict[str, str] = {"visual": "visual_only", "text": "text_only"}


def own_keys(rows: Iterable[Mapping[str, float]]) -> list[str]:
    """The keys beyond METRIC_KEYS that `rows` hold (a benchmark's own metrics), in order of appearance."""
    return [k for k in dict.fromkeys(k for row in rows for k in row) if k not in METRIC_KEYS]


def _signal_rows(signals: Mapping[str, Mapping[str, Mapping[str, float]]]) -> list[Mapping[str, float]]:
    return [m for per_signal in signals.values() for m in per_signal.values()]


def _signal_means(signals: Mapping[str, Mapping[str, Mapping[str, float]]]) -> dict[str, dict[str, float]]:
    """{"visual_only"/"text_only": mean over categories} of {category: {"text"/"visual": metrics}}: the
    seven metrics and the benchmark's own ones."""
    keys = [*METRIC_KEYS, *own_keys(_signal_rows(signals))]
    return {
        key: _reduce({c: m[name] for c, m in signals.items()}, np.mean, keys)
        for name, key in SIGNAL_SECTIONS.items()
    }


def signal_sections(signals: Mapping[str, Mapping[str, Mapping[str, float]]]) -> dict[str, Any]:
    """results.json's "visual_only" and "text_only" ({"categories": {category: metrics}, "mean": metrics}):
    the metrics of the visual map alone and of the text map alone, with "benchmark_metrics" ({"categories",
    "mean"}, as the fused map's) when the benchmark has its own; {} without signals (visual none)."""
    if not signals:
        return {}
    means, own = _signal_means(signals), own_keys(_signal_rows(signals))
    sections: dict[str, Any] = {}
    for name, key in SIGNAL_SECTIONS.items():
        section: dict[str, Any] = {
            "categories": {c: json_metrics(m[name]) for c, m in signals.items()},
            "mean": json_metrics(means[key]),
        }
        if own:
            section["benchmark_metrics"] = {
                "categories": {
                    c: {k: _json_number(m[name][k]) for k in own if k in m[name]} for c, m in signals.items()
                },
                "mean": {k: _json_number(means[key][k]) for k in own},
            }
        sections[key] = section
    return sections


def signals_table(
    title: str, rows: Mapping[str, Mapping[str, float]], keys: Sequence[str] = METRIC_KEYS
) -> str:
    """A Markdown block in percent: one row per map (fused, visual_only, text_only), means over categories;
    columns `keys` (a key a row lacks shows "–")."""
    header = "| map | " + " | ".join(COLUMN_TITLES.get(k, k) for k in keys) + " |"
    lines = [f"### {title}: fused map, visual map alone, text map alone (%)", "", header]
    lines.append("|" + "---|" * (len(keys) + 1))
    for name, metrics in rows.items():
        cells = [percent_cell(metrics.get(k, math.nan)) for k in keys]
        lines.append(f"| {name.replace('_', ' ')} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _from_json(metrics: Mapping[str, float | None]) -> dict[str, float]:
    """A JSON metric row (null = undefined) as floats with NaN."""
    return {k: math.nan if metrics.get(k) is None else float(metrics[k]) for k in METRIC_KEYS}


def percent_cell(value: float, std: float | None = None) -> str:
    """A metric in percent with one decimal ("–" when undefined), with ` ± std` when `std` is given."""
    if math.isnan(value):
        return "–"
    spread = "" if std is None or math.isnan(std) else f" ± {100 * std:.1f}"
    return f"{100 * value:.1f}{spread}"


def markdown_table(
    per_category: Mapping[str, Mapping[str, float]],
    mean: Mapping[str, float],
    dataset: str,
    title: str | None = None,
    std: Mapping[str, Mapping[str, float]] | None = None,
    keys: Sequence[str] = METRIC_KEYS,
) -> str:
    """A Markdown table in percent: one row per category, a bold mean row; "–" marks undefined metrics.

    `title`: the heading (default `<dataset> (%)`); `std`: {category or "mean": {metric: std}} shown as
    `value ± std` (the spread over few-shot seeds). `keys`: the columns (titles from COLUMN_TITLES, else
    the key itself); a key a row lacks shows "–".
    """
    header = "| Category | " + " | ".join(COLUMN_TITLES.get(k, k) for k in keys) + " |"
    lines = [f"### {title or f'{dataset} (%)'}", "", header, "|" + "---|" * (len(keys) + 1)]
    spread = std or {}
    for name, metrics in per_category.items():
        cells = [percent_cell(metrics.get(k, math.nan), spread.get(name, {}).get(k)) for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    cells = [f"**{percent_cell(mean[k], spread.get('mean', {}).get(k))}**" for k in keys]
    lines.append("| **mean** | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
