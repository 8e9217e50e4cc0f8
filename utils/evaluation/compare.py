"""One comparison table of several runs: modes x datasets x the 7 metrics (results/compare.md).

    python -m utils.evaluation.compare results     # reads results/<mode>/<dataset>[/seed_<s>]/results.json

Each results.json gives its dataset and its mean row; runs of one mode and dataset (one per few-shot seed)
are averaged metric by metric, ignoring undefined (null) values, and the number of runs is shown.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

from utils.evaluation.metrics import METRIC_KEYS
from utils.evaluation.results import COLUMN_TITLES
from utils.files import atomic_write_text


def collect_runs(root: Path) -> dict[tuple[str, str], list[dict[str, float]]]:
    """{(mode, dataset): [mean metrics of each run]} from `root/<mode>/**/results.json` (sorted paths)."""
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    for path in sorted(root.glob("*/**/results.json")):
        doc = json.loads(path.read_text())
        mode = path.relative_to(root).parts[0]
        mean = {k: math.nan if doc["mean"][k] is None else float(doc["mean"][k]) for k in METRIC_KEYS}
        runs.setdefault((mode, doc["dataset"]), []).append(mean)
    return runs


def compare_table(runs: dict[tuple[str, str], list[dict[str, float]]]) -> str:
    """A Markdown table in percent, one row per (mode, dataset): the mean over its runs ("–" = undefined)."""
    header = "| mode | dataset | runs | " + " | ".join(COLUMN_TITLES[k] for k in METRIC_KEYS) + " |"
    lines = ["### mode comparison (%)", "", header, "|" + "---|" * (len(METRIC_KEYS) + 3)]
    for (mode, dataset), means in runs.items():
        cells = []
        for key in METRIC_KEYS:
            values = [m[key] for m in means if not math.isnan(m[key])]
            cells.append(f"{100 * float(np.mean(values)):.1f}" if values else "–")
        lines.append(f"| {mode} | {dataset} | {len(means)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


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
