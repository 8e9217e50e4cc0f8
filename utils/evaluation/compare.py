"""One comparison of several runs (results/compare.md): a block per dataset, a row per mode, the 7 metrics
and the dataset's own ones (results.json "benchmark_metrics", e.g. sPRO).

    python -m utils.evaluation.compare results     # reads results/<mode>/<dataset>[/seed_<s>]/results.json

Each results.json gives its dataset and its mean row; runs of one mode and dataset (one per few-shot seed,
also when a `--shot_seeds` run holds them) are averaged metric by metric, ignoring undefined (null) values,
and the number of runs is shown.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from utils.evaluation.metrics import METRIC_KEYS
from utils.evaluation.results import COLUMN_TITLES, mean_metrics_of
from utils.files import atomic_write_text


def collect_runs(root: Path) -> dict[tuple[str, str], list[dict[str, float]]]:
    """{(mode, dataset): [mean metrics of each run]} from `root/<mode>/**/results.json` (sorted paths).

    A results.json of several seeds (`--shot_seeds`, with a "seeds" section) counts as its seeds' runs, whose
    means it holds; the seed_<s>/results.json below it are then not read a second time.
    """
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    docs = {path: json.loads(path.read_text()) for path in sorted(root.glob("*/**/results.json"))}
    averaged = [path.parent for path, doc in docs.items() if "seeds" in doc]
    for path, doc in docs.items():
        if any(folder in path.parent.parents for folder in averaged):
            continue  # one seed of a mean over seeds: counted through that mean's "seeds" section
        means = [run["mean"] for run in doc["seeds"]["runs"].values()] if "seeds" in doc else [doc["mean"]]
        mode = path.relative_to(root).parts[0]
        extra = doc.get("benchmark_metrics", {}).get("mean", {})
        runs.setdefault((mode, doc["dataset"]), []).extend(_numbers({**mean, **extra}) for mean in means)
    return runs


def _numbers(mean: dict[str, float | None]) -> dict[str, float]:
    """A results.json mean row (and its benchmark metrics) with undefined (null) metrics as NaN."""
    return {k: math.nan if v is None else float(v) for k, v in mean.items()}


def compare_table(runs: dict[tuple[str, str], list[dict[str, float]]]) -> str:
    """Markdown in percent: a block per dataset (in order of appearance), one row per mode: the mean over its
    runs ("–" = undefined) of METRIC_KEYS and of the dataset's own metrics."""
    blocks = []
    for name in dict.fromkeys(dataset for _, dataset in runs):
        rows = {mode: means for (mode, dataset), means in runs.items() if dataset == name}
        keys = list(dict.fromkeys([*METRIC_KEYS, *(k for ms in rows.values() for m in ms for k in m)]))
        header = "| mode | dataset | runs | " + " | ".join(COLUMN_TITLES.get(k, k) for k in keys) + " |"
        lines = [f"### {name}: mode comparison (%)", "", header, "|" + "---|" * (len(keys) + 3)]
        for mode, means in rows.items():
            mean = mean_metrics_of(means, keys)
            cells = ["–" if math.isnan(mean[key]) else f"{100 * mean[key]:.1f}" for key in keys]
            lines.append(f"| {mode} | {name} | {len(means)} | " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def main(root: str) -> int:
    runs = collect_runs(Path(root))
    if not runs:
        print(f"error: no <mode>/<dataset>/results.json under {root}: run test.sh first", file=sys.stderr)
        return 2
    atomic_write_text(Path(root) / "compare.md", compare_table(runs))
    print(compare_table(runs), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "results"))
