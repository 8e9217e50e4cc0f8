"""utils/evaluation/compare.py: the modes x datasets table averages seeds and ignores undefined metrics."""

from __future__ import annotations

import json
import math

from dataset import MVTEC_CATEGORIES
from utils.evaluation import compare
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
    assert "| fewshot | mvtec | 2 | 85.0 ± 5.0 | 85.0 ± 5.0 | 85.0 ± 5.0 | 85.0 ± 5.0 | 85.0 ± 5.0 |" in table
    assert table.index("| text |") < table.index("| fewshot |")  # fixed order, not by folder name
    assert "| text | mvtec | 1 | 50.0 |" in table


def test_modes_are_named_from_the_settings_in_a_fixed_order(tmp_path):
    """Rows text, mutual, text+mutual, fewshot K=1, fewshot K=4, whatever the folders are called; a run in
    a folder not named after its mode (train.sh's mvtec_to_visa) keeps its own row, after its mode's."""
    configs = {
        "fewshot": {"visual": "fewshot", "shots": 4, "visual_weight": 0.5},
        "few1": {"visual": "fewshot", "shots": 1, "visual_weight": 0.5},
        "text+mutual": {"visual": "mutual", "visual_weight": 0.5},
        "mutual": {"visual": "mutual", "visual_weight": 1.0},
        "text": {"visual": "none", "visual_weight": 0.5},
        "mvtec_to_visa": {"visual": "none", "visual_weight": 0.5, "checkpoint": "last.safetensors"},
    }
    for folder, config in configs.items():
        for dataset in ("visa", "mvtec"):
            _write(tmp_path / folder / dataset, dataset, 0.5)
            doc = json.loads((tmp_path / folder / dataset / "results.json").read_text())
            (tmp_path / folder / dataset / "results.json").write_text(json.dumps({**doc, "config": config}))
    modes = ("text", "mvtec_to_visa (text)", "mutual", "text+mutual", "few1 (fewshot K=1)", "fewshot K=4")
    assert list(collect_runs(tmp_path)) == [
        (mode, dataset) for mode in modes for dataset in ("mvtec", "visa")
    ]


def test_rows_name_their_categories_and_test_images(tmp_path):
    """A run of 1 of 15 MVTec AD categories does not read as "mvtec": compare.md names it and counts."""
    _write(tmp_path / "text" / "mvtec", "mvtec", 0.5)
    _write(tmp_path / "mutual" / "mvtec", "mvtec", 0.6)
    for mode, categories in (("text", ["bottle"]), ("mutual", list(MVTEC_CATEGORIES))):
        path = tmp_path / mode / "mvtec" / "results.json"
        doc = json.loads(path.read_text())
        doc["categories"] = {c: doc["mean"] for c in categories}
        doc["run"] = {"categories": {c: {"images": 10} for c in categories}}
        path.write_text(json.dumps(doc))
    assert compare.main(str(tmp_path)) == 0
    table = (tmp_path / "compare.md").read_text()
    assert "| I-AUROC |" in table and table.splitlines()[2].endswith("| AUPRO | categories | test images |")
    assert "| text | mvtec | 1 | 50.0 |" in table and table.count("| 1 of 15: bottle | 10 |") == 1
    assert "| mutual | mvtec | 1 | 60.0 |" in table and "| all 15 | 150 |" in table
