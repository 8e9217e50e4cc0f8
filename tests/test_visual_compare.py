"""utils/evaluation/compare.py: the modes x datasets table averages seeds and ignores undefined metrics."""

from __future__ import annotations

import json
import math

from utils.evaluation.compare import collect_runs, compare_table
from utils.evaluation.metrics import METRIC_KEYS


def _write(path, dataset, value):
    path.mkdir(parents=True)
    mean = {k: value for k in METRIC_KEYS}
    mean["pixel_aupro"] = None
    (path / "results.json").write_text(json.dumps({"dataset": dataset, "mean": mean}))


def test_seeds_are_averaged_per_mode_and_dataset(tmp_path):
    _write(tmp_path / "text" / "mvtec", "mvtec", 0.5)
    _write(tmp_path / "fewshot" / "mvtec" / "seed_0", "mvtec", 0.8)
    _write(tmp_path / "fewshot" / "mvtec" / "seed_1", "mvtec", 0.9)
    runs = collect_runs(tmp_path)
    assert sorted(runs) == [("fewshot", "mvtec"), ("text", "mvtec")]
    assert math.isnan(runs[("text", "mvtec")][0]["pixel_aupro"])
    table = compare_table(runs)
    assert "| fewshot | mvtec | 2 | 85.0 | 85.0 | 85.0 | 85.0 | 85.0 | 85.0 | – |" in table
    assert "| text | mvtec | 1 | 50.0 |" in table
