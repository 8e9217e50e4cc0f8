"""Result files (JSON/CSV/Markdown) and the pure parts of the visualiser."""

import csv
import json
import math

import cv2
import numpy as np
import pytest

from utils.evaluation.metrics import METRIC_KEYS
from utils.evaluation.results import markdown_table, mean_metrics, write_results
from utils.evaluation.visualization import (
    draw_boxes,
    heatmap_overlay,
    pick_for_visualization,
    save_curves,
    save_mask,
    save_rgb,
)


def _metrics(value: float) -> dict[str, float]:
    return dict.fromkeys(METRIC_KEYS, value)


def test_mean_ignores_undefined_categories():
    per_category = {"a": _metrics(0.5), "b": _metrics(1.0), "c": {**_metrics(0.0), "pixel_aupro": math.nan}}
    mean = mean_metrics(per_category)
    assert mean["image_auroc"] == pytest.approx(0.5)
    assert mean["pixel_aupro"] == pytest.approx(0.75)  # NaN of "c" left out
    assert math.isnan(mean_metrics({"a": {**_metrics(1.0), "pixel_ap": math.nan}})["pixel_ap"])


def test_write_results_schema_and_round_trip(tmp_path):
    per_category = {"bottle": _metrics(0.9), "wood": {**_metrics(0.7), "pixel_aupro": math.nan}}
    write_results(tmp_path, "mvtec", per_category, {"eval_size": 256})
    doc = json.loads((tmp_path / "results.json").read_text())
    assert set(doc) == {"dataset", "categories", "mean", "config"}
    assert doc["dataset"] == "mvtec" and doc["config"] == {"eval_size": 256}
    assert set(doc["categories"]["bottle"]) == set(METRIC_KEYS) == set(doc["mean"])
    assert doc["categories"]["wood"]["pixel_aupro"] is None  # NaN is written as null
    assert doc["mean"]["image_auroc"] == pytest.approx(0.8)
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert [r["category"] for r in rows] == ["bottle", "wood", "mean"]
    assert float(rows[0]["pixel_ap"]) == pytest.approx(0.9)
    md = (tmp_path / "results.md").read_text()
    assert "| bottle | 90.0 |" in md and "| **mean** | **80.0** |" in md and "–" in md


def test_write_results_adds_the_run_section_only_when_given(tmp_path):
    run = {"python": "3.x", "device": "cpu", "categories": {"bottle": {"images": 3, "scored": 3}}}
    doc = write_results(tmp_path, "mvtec", {"bottle": _metrics(0.9)}, {}, run)
    assert json.loads((tmp_path / "results.json").read_text()) == doc
    assert list(doc) == ["dataset", "categories", "mean", "config", "run"] and doc["run"] == run


def test_markdown_columns_match_metrics():
    table = markdown_table({"x": _metrics(1.0)}, _metrics(1.0), "visa")
    header = table.splitlines()[2]
    assert header.count("|") == len(METRIC_KEYS) + 2


def test_pick_for_visualization_worst_errors_first():
    labels = np.array([1, 1, 0, 0, 1])
    scores = np.array([0.9, 0.1, 0.8, 0.2, 0.5])
    # worst false negative (label 1, lowest score) = 1, worst false positive (label 0, highest) = 2, ...
    assert pick_for_visualization(labels, scores, 4) == [1, 2, 4, 3]
    assert pick_for_visualization(labels, scores, 10) == [1, 2, 4, 3, 0]


def test_heatmap_overlay_shape_and_blend():
    image = np.zeros((20, 30, 3), np.uint8)
    out = heatmap_overlay(image, np.ones((10, 15), np.float32), alpha=1.0)
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    assert tuple(out[5, 5]) == (128, 0, 0)  # jet colormap at 1.0 is dark red (RGB)
    assert (heatmap_overlay(image, np.ones((20, 30)), alpha=0.0) == 0).all()


def test_draw_boxes_marks_the_box_edges_only():
    image = np.zeros((100, 100, 3), np.uint8)
    out = draw_boxes(image, [("scratch", 0.87, (20.0, 40.0, 60.0, 80.0))])
    assert out[60, 20].any() and out[80, 40].any()  # left and bottom edges drawn
    assert not out[60, 40].any()  # inside left empty
    assert not image.any()  # input untouched


def test_save_curves_writes_pngs(tmp_path):
    curves = {
        "image": {
            "fpr": np.array([0, 1.0]),
            "tpr": np.array([0, 1.0]),
            "precision": np.array([1, 0.5]),
            "recall": np.array([0, 1.0]),
        }
    }
    paths = save_curves(tmp_path / "bottle", curves, "bottle")
    assert [p.name for p in paths] == ["bottle_roc.png", "bottle_pr.png"]
    assert all(p.stat().st_size > 1000 for p in paths)


def test_png_writers_round_trip_and_fail_loudly(tmp_path):
    mask = np.zeros((5, 7), dtype=bool)
    mask[1:3, 2:6] = True
    save_mask(tmp_path / "m.png", mask)
    assert np.array_equal(cv2.imread(str(tmp_path / "m.png"), cv2.IMREAD_GRAYSCALE) > 0, mask)
    rgb = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    save_rgb(tmp_path / "c.png", rgb)
    assert np.array_equal(cv2.imread(str(tmp_path / "c.png"))[..., ::-1], rgb)
    with pytest.raises(OSError):  # cv2.imwrite only returned False here
        save_mask(tmp_path / "missing_folder" / "m.png", mask)
