"""One comparison of several runs (results/compare.md): a block per dataset (per meta.json folder for
`--dataset meta_json`), a row per mode, the 7 metrics and the dataset's own ones (results.json
"benchmark_metrics", e.g. sPRO).

    python -m utils.evaluation.compare results     # reads results/<mode>/<dataset>[/seed_<s>]/results.json

Each results.json gives its dataset, its mean row and its settings, which name its mode
(`results.run_label`: text, mutual, text+mutual, fewshot K=<shots>; the folder name when it has no
settings). Runs of one mode and dataset (one per few-shot seed, also when a `--shot_seeds` run holds them)
are averaged metric by metric, ignoring undefined (null) values, with ± the standard deviation over runs
(ddof = 0) when there are several, and the number of runs is shown, with the categories and test images
each row covers (a run of 1 of 15 categories says so). Rows come in a fixed order: text,
mutual, text+mutual, fewshot by K, then any other folder; datasets by name within a mode. A results.json
that cannot be read (truncated, half-written) is skipped with a warning. Runs of a visual mode add a block
per dataset: the fused map beside the visual map alone and the text map alone (results.json "visual_only",
"text_only"; `signal_table`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any

from dataset import fixed_categories, set_name
from utils.evaluation.metrics import METRIC_KEYS
from utils.evaluation.results import (
    COLUMN_TITLES,
    SIGNAL_SECTIONS,
    image_counts,
    label_order,
    mean_metrics_of,
    own_keys,
    percent_cell,
    run_label,
    std_metrics_of,
)
from utils.files import atomic_write_text


def collect_runs(root: Path) -> dict[tuple[str, str], list[dict[str, float]]]:
    """{(mode, dataset): [mean metrics of each run]} from `root/<mode>/**/results.json`, in table order.

    A results.json of several seeds (`--shot_seeds`, with a "seeds" section) counts as its seeds' runs, whose
    means it holds; the seed_<s>/results.json below it are then not read a second time.
    """
    return runs_of(counted_docs(root))


Docs = list[tuple[tuple[str, str], dict[str, Any]]]  # ((row name, dataset), results.json) per counted run


def runs_of(docs: Docs) -> dict[tuple[str, str], list[dict[str, float]]]:
    """`collect_runs` of the runs `counted_docs` found."""
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    for key, doc in docs:
        means = [run["mean"] for run in doc["seeds"]["runs"].values()] if "seeds" in doc else [doc["mean"]]
        extra = doc.get("benchmark_metrics", {}).get("mean", {})
        runs.setdefault(key, []).extend(_numbers({**mean, **extra}) for mean in means)
    return dict(sorted(runs.items(), key=lambda item: (row_order(item[0][0]), item[0][1])))


def counted_docs(root: Path) -> Docs:
    """((row name, dataset), results.json) of every run `collect_runs` counts, by path; the seed_<s> folders
    of a mean over seeds are left out (that mean's "seeds" section holds them)."""
    docs = {path: doc for path in sorted(root.glob("*/**/results.json")) if (doc := read_run(path))}
    averaged = [path.parent for path, doc in docs.items() if "seeds" in doc]
    counted = []
    for path, doc in docs.items():
        if any(folder in path.parent.parents for folder in averaged):
            continue
        folder = path.relative_to(root).parts[0]
        config = doc["config"] if isinstance(doc.get("config"), dict) else None
        label = run_label(config) if config is not None else folder
        dataset = set_name(doc["dataset"], (config or {}).get("dataset_path"))  # meta_json: its folder
        counted.append(((row_name(folder, label), dataset), doc))
    return counted


def scopes_of(docs: Docs) -> dict[tuple[str, str], tuple[str, str]]:
    """{(mode, dataset): (categories, test images)} of the rows of `runs_of(docs)`, as table cells.

    Categories: `all 15` when a run covers every published category of its benchmark, else `1 of 15:
    bottle` (own folders: the names); test images from the "run" section ("–" when it has none). Runs of
    one row that differ are joined with " / ".
    """
    cells: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for key, doc in docs:
        cell = scope_cells(doc["dataset"], list(doc.get("categories", {})), image_counts(doc.get("run")))
        if cell not in cells.setdefault(key, []):
            cells[key].append(cell)
    return {key: (" / ".join(c for c, _ in v), " / ".join(n for _, n in v)) for key, v in cells.items()}


def scope_cells(dataset: str, categories: list[str], counts: tuple[int, int] | None) -> tuple[str, str]:
    """(categories cell, test images cell) of one run; see `scopes_of`."""
    published = fixed_categories(dataset)  # a meta.json's classes are its own: no published list
    if not categories:
        names = "–"
    elif published and set(published) <= set(categories):
        names = f"all {len(published)}"
    elif published:
        names = f"{len(categories)} of {len(published)}: {', '.join(categories)}"
    else:
        names = ", ".join(categories)
    return names, str(counts[0]) if counts else "–"


def row_name(folder: str, label: str) -> str:
    """A row's mode: the label (`fewshot K=4`) when the folder is named after its mode, else `folder (label)`.

    Runs of one mode in other folders (e.g. train.sh's `mvtec_to_visa`, a text run with a checkpoint) stay
    rows of their own.
    """
    head = label.partition(" K=")[0]
    return label if folder in (label, head) else f"{folder} ({label})"


def row_order(name: str) -> tuple[tuple[int, int, str], bool, str]:
    """Sort key of a row name: its label's place in MODE_ORDER, then plain mode folders first, then name."""
    folder, _, label = name.partition(" (")
    return (label_order(label.rstrip(")")), True, folder) if label else (label_order(name), False, name)


def read_run(path: Path) -> dict[str, Any] | None:
    """A results.json with its dataset and mean row, or None with a warning (truncated, edited, half-written).

    A run interrupted while its results.json was written, or a file cut short by a copy, must not stop the
    table of every other run.
    """
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        means = [r["mean"] for r in doc["seeds"]["runs"].values()] if "seeds" in doc else [doc["mean"]]
        if isinstance(doc["dataset"], str) and all(_numbers(m) for m in means):
            return doc
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    warnings.warn(f"skipped {path}: not a complete results.json of test.py (rerun that run)", stacklevel=2)
    return None


def _numbers(mean: dict[str, float | None]) -> dict[str, float]:
    """A results.json mean row (and its benchmark metrics) with undefined (null) metrics as NaN."""
    return {k: math.nan if v is None else float(v) for k, v in mean.items()}


def compare_table(
    runs: dict[tuple[str, str], list[dict[str, float]]],
    scopes: dict[tuple[str, str], tuple[str, str]] | None = None,
) -> str:
    """Markdown in percent: a block per dataset (in order of appearance), one row per mode in table order:
    the mean over its runs ± their std ("–" = undefined) of METRIC_KEYS and of the dataset's own metrics,
    then (with `scopes`, from `scopes_of`) the categories and test images the row covers."""
    blocks = []
    scope_titles = ["categories", "test images"] if scopes is not None else []
    for name in dict.fromkeys(dataset for _, dataset in runs):
        rows = {mode: means for (mode, dataset), means in runs.items() if dataset == name}
        keys = list(dict.fromkeys([*METRIC_KEYS, *(k for ms in rows.values() for m in ms for k in m)]))
        titles = [COLUMN_TITLES.get(k, k) for k in keys] + scope_titles
        header = "| mode | dataset | runs | " + " | ".join(titles) + " |"
        lines = [f"### {name}: mode comparison (%)", "", header, "|" + "---|" * (len(titles) + 3)]
        for mode, means in rows.items():
            mean = mean_metrics_of(means, keys)
            std = std_metrics_of(means, keys) if len(means) > 1 else {}
            cells = [percent_cell(mean[key], std.get(key)) for key in keys]
            cells += list((scopes or {}).get((mode, name), ("–", "–")))[: len(scope_titles)]
            lines.append(f"| {mode} | {name} | {len(means)} | " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def collect_signals(root: Path) -> dict[tuple[str, str], dict[str, list[dict[str, float]]]]:
    """{(mode, dataset): {"fused"/"visual_only"/"text_only": [mean of each run]}} of the visual-mode runs
    under `root` (each results.json with a "visual_only" section, one per few-shot seed), in table order."""
    found: dict[tuple[str, str], dict[str, list[dict[str, float]]]] = {}
    for path in sorted(root.glob("*/**/results.json")):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            means = {"fused": _with_own(doc), **{k: _with_own(doc[k]) for k in SIGNAL_SECTIONS.values()}}
            folder = path.relative_to(root).parts[0]
            dataset = set_name(doc["dataset"], doc["config"].get("dataset_path"))  # meta_json: its folder
            key = (row_name(folder, run_label(doc["config"])), dataset)
        except (ValueError, KeyError, TypeError, AttributeError):
            continue  # no signals (visual none), or unreadable: collect_runs has warned
        rows = found.setdefault(key, {})
        for name, mean in means.items():
            rows.setdefault(name, []).append(_numbers(mean))
    return dict(sorted(found.items(), key=lambda item: (row_order(item[0][0]), item[0][1])))


def _with_own(section: dict[str, Any]) -> dict[str, Any]:
    """A results.json section's "mean" row with its benchmark's own metrics ("benchmark_metrics")."""
    return {**section["mean"], **section.get("benchmark_metrics", {}).get("mean", {})}


def signal_table(signals: dict[tuple[str, str], dict[str, list[dict[str, float]]]]) -> str:
    """Markdown in percent, a block per dataset: per visual-mode row, the fused map, the visual map alone and
    the text map alone (mean over runs ± std), so whether fusion helps is read off at once."""
    blocks = []
    for name in dict.fromkeys(dataset for _, dataset in signals):
        rows = {key: maps for key, maps in signals.items() if key[1] == name}
        signal_rows = [
            m for maps in rows.values() for kind, ms in maps.items() if kind != "fused" for m in ms
        ]
        keys = [*METRIC_KEYS, *own_keys(signal_rows)]  # the own metrics the signals have (sPRO, ...)
        header = "| mode | map | runs | " + " | ".join(COLUMN_TITLES.get(k, k) for k in keys) + " |"
        lines = [f"### {name}: fused map, visual map alone, text map alone (%)", "", header]
        lines.append("|" + "---|" * (len(keys) + 3))
        for (mode, _), maps in rows.items():
            for kind, means in maps.items():
                mean = mean_metrics_of(means, keys)
                std = std_metrics_of(means, keys) if len(means) > 1 else {}
                cells = [percent_cell(mean[key], std.get(key)) for key in keys]
                lines.append(
                    f"| {mode} | {kind.replace('_', ' ')} | {len(means)} | " + " | ".join(cells) + " |"
                )
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def main(root: str) -> int:
    docs = counted_docs(Path(root))
    runs = runs_of(docs)
    if not runs:
        print(f"error: no <mode>/<dataset>/results.json under {root}: run test.sh first", file=sys.stderr)
        return 2
    signals = collect_signals(Path(root))
    table = compare_table(runs, scopes_of(docs)) + ("\n" + signal_table(signals) if signals else "")
    atomic_write_text(Path(root) / "compare.md", table)
    print(table, end="")
    return 0


if __name__ == "__main__":  # python -m utils.evaluation.compare [ROOT]  (test.sh runs it at the end)
    parser = argparse.ArgumentParser(description="compare.md: one table of every run under ROOT")
    parser.add_argument("root", nargs="?", default="results", help="test.sh's OUTPUT_ROOT (default: results)")
    sys.exit(main(parser.parse_args().root))
