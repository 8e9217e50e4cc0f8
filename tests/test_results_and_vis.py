"""Result files (JSON/CSV/Markdown) and the pure parts of the visualiser."""

import csv
import json
import math

import cv2
import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from dataset import MVTEC_CATEGORIES, Sample
from utils.config.loading import ConfigError
from utils.config.schema import Config
from utils.evaluation import visualization
from utils.evaluation.metrics import METRIC_KEYS, image_curves
from utils.evaluation.results import markdown_table, mean_metrics, prompt_record, results_title, write_results
from utils.evaluation.seeds import write_seed_mean
from utils.evaluation.store import CategoryResult
from utils.evaluation.thresholds import chosen_mask_threshold, update_thresholds
from utils.evaluation.visualization import (
    draw_boxes,
    heatmap_overlay,
    pick_for_visualization,
    ranked_picks,
    save_curves,
    save_mask,
    save_rgb,
    vis_name,
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


def test_mask_threshold_source_is_the_flag_the_file_or_the_config(tmp_path):
    assert chosen_mask_threshold(None, 0.3, None, True, 256) == (0.3, "--mask_threshold")
    assert chosen_mask_threshold(None, 0.5, "bottle", False, 256) == (0.5, "mask_threshold of the config")
    update_thresholds(tmp_path, "wood", {"pixel_normal_threshold": 0.25}, "mvtec", 32)
    value, source = chosen_mask_threshold(str(tmp_path / "thresholds.json"), 0.5, None, True, 32)
    assert (value, source) == (
        0.25,
        f"pixel_normal_threshold of its only category in {tmp_path / 'thresholds.json'}",
    )
    with pytest.raises(ConfigError, match=r"maps at eval_size 32, but this run scores at 256: pass --eval_s"):
        chosen_mask_threshold(str(tmp_path / "thresholds.json"), 0.5, None, True, 256)


def test_seed_mean_results_md_shows_mean_plus_minus_std_under_a_full_title(tmp_path):
    cfg = {"dataset": "visa", "visual": "fewshot", "shots": 4, "shot_seeds": [0, 1], "shot_seed": 0}
    cfg |= {"prompt_strategy": "mixed", "visual_weight": 0.5}
    per_seed = {0: {"candle": _metrics(0.8)}, 1: {"candle": _metrics(0.9)}}
    write_seed_mean(tmp_path, Config.from_dict(cfg), per_seed, {"images": {"candle": 12}})
    lines = (tmp_path / "results.md").read_text().splitlines()
    assert lines[0] == (
        "### visa · fewshot K=4 · prompts mixed · seeds 0, 1 (mean ± std over seeds) · "
        "12 test images in 1 of 12 categories (%)"
    )
    assert lines[4].startswith("| candle | 85.0 ± 5.0 | 85.0 ± 5.0 |")
    assert lines[5].startswith("| **mean** | **85.0 ± 5.0** |")


def test_curve_legends_carry_the_area_and_pr_is_a_step_curve(tmp_path, monkeypatch):
    """Hand case: 2 good (0.1, 0.4), 2 anomalous (0.35, 0.8): AUROC 3/4, AP = 1/2 * 1 + 1/2 * 2/3 = 5/6."""
    labels, scores = np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])
    curves = {"image": image_curves(labels, scores)}
    _, auroc = visualization.curve_area("roc", "image", curves["image"]["fpr"], curves["image"]["tpr"], None)
    _, ap = visualization.curve_area(
        "pr", "image", curves["image"]["recall"], curves["image"]["precision"], None
    )
    assert auroc == pytest.approx(0.75) == roc_auc_score(labels, scores)
    assert ap == pytest.approx(5 / 6) and ap == pytest.approx(average_precision_score(labels, scores))
    figures = []
    monkeypatch.setattr(visualization.plt, "close", figures.append)
    visualization.save_curves(tmp_path / "c", curves, "cat", {"image_auroc": 0.75, "image_ap": 5 / 6})
    roc, pr = (fig.axes[0] for fig in figures)
    assert roc.get_legend_handles_labels()[1] == ["image (AUROC 0.750)"]
    assert pr.get_legend_handles_labels()[1] == ["image (AP 0.833)"]
    assert pr.get_lines()[0].get_drawstyle() == "steps-pre"


def test_vis_names_say_what_they_show_and_fn_fp_only_at_a_decided_threshold():
    labels = np.array([1, 1, 0, 0, 1])
    scores = np.array([0.9, 0.1, 0.8, 0.2, 0.5])
    without = [(1, "lowest_defect01"), (2, "highest_good01"), (4, "lowest_defect02"), (3, "highest_good02")]
    assert ranked_picks(labels, scores, 4) == without
    assert ranked_picks(labels, scores, 4, math.nan) == without  # an undefined threshold decides nothing
    # at 0.6: 0.1 and 0.5 (defects) are missed, 0.8 (good) is a false alarm, 0.2 (good) passes
    assert ranked_picks(labels, scores, 4, 0.6) == [
        (1, "fn01"),
        (2, "fp01"),
        (4, "fn02"),
        (3, "highest_good02"),
    ]
    # a threshold that separates the classes (100 % I-AUROC): no fn, no fp
    separable = np.array([0.9, 0.7, 0.3, 0.2, 0.8])
    assert not [n for _, n in ranked_picks(labels, separable, 5, 0.5) if n.startswith(("fn", "fp"))]
    assert vis_name("fn01", "crack", "/d/bottle/test/crack/003.png") == "fn01_crack_003.png"
    assert visualization.vis_title("crack", 1, 0.412, 0.5) == "crack  score 0.412 < 0.500: missed"
    assert visualization.vis_title("good", 0, 0.5, 0.5) == "good  score 0.500 ≥ 0.500: false alarm"
    assert visualization.vis_title("good", 0, 0.5, None) == "good  score 0.500"


@pytest.mark.parametrize("shape", [(30, 50), (80, 20)])
def test_overlay_panels_are_one_size_with_the_colour_bar_beside(tmp_path, monkeypatch, shape):
    """The input and the heatmap panels are equally large and level; the colour bar is outside the
    heatmap panel, exactly as tall; the panels take the image's aspect (no letterbox)."""
    figures = []
    monkeypatch.setattr(visualization.plt, "close", figures.append)
    image = np.zeros((*shape, 3), np.uint8)
    visualization.save_overlay(tmp_path / "o.png", image, np.ones((8, 8)), "t", np.ones(shape, bool))
    assert (tmp_path / "o.png").stat().st_size > 1000
    left, right, bar = (ax.get_position() for ax in figures[0].axes)
    fig_w, fig_h = figures[0].get_size_inches()
    assert (left.width, left.height, left.y0) == pytest.approx((right.width, right.height, right.y0))
    assert bar.x0 > right.x1 and (bar.y0, bar.height) == pytest.approx((right.y0, right.height))
    assert (right.width * fig_w) / (right.height * fig_h) == pytest.approx(shape[1] / shape[0])


def test_visualize_category_writes_the_named_pictures(tmp_path, monkeypatch):
    drawn = {}
    monkeypatch.setattr(visualization, "save_overlay", lambda path, *args: drawn.update({path.name: args[2]}))
    kinds = [(0, "good"), (1, "crack"), (0, "good")]
    samples = [
        Sample(
            np.zeros((16, 16, 3), np.uint8),
            label,
            np.zeros((16, 16), bool),
            "bottle",
            kind,
            f"/d/{i:03d}.png",
        )
        for i, (label, kind) in enumerate(kinds)
    ]
    maps = np.zeros((3, 8, 8), np.float16)
    result = CategoryResult(
        {}, maps, np.zeros((3, 8, 8), bool), np.array([0, 1, 0]), np.array([0.2, 0.9, 0.4])
    )
    written = visualization.visualize_category(samples, result, tmp_path / "vis", 3, threshold=0.3)
    assert [p.parent for p in written] == [tmp_path / "vis"] * 3 and (tmp_path / "vis").is_dir()
    assert drawn == {  # file name -> heatmap title
        "lowest_defect01_crack_001.png": "crack  score 0.900 ≥ 0.300: detected",
        "fp01_good_002.png": "good  score 0.400 ≥ 0.300: false alarm",
        "highest_good02_good_000.png": "good  score 0.200 < 0.300: passed",
    }
    assert [p.name for p in written] == list(drawn)


def test_results_title_names_a_partial_run(tmp_path):
    run = {"categories": {"bottle": {"images": 83}}}
    assert results_title("mvtec", {}, run).endswith("83 test images in 1 of 15 categories (%)")
    every = {"categories": {c: {"images": 1} for c in MVTEC_CATEGORIES}}
    assert results_title("mvtec", {}, every).endswith("15 test images in 15 categories (%)")
    assert results_title("folder", {}, run).endswith("83 test images in 1 category (%)")  # no published list


def test_results_json_records_the_prompts_of_each_category(tmp_path):
    prompts = {
        "bottle": prompt_record(["crack", "scratch"], "bottle"),
        "wood": prompt_record(["stain"], None),
    }
    doc = write_results(
        tmp_path, "mvtec", {"bottle": _metrics(0.9), "wood": _metrics(0.8)}, {}, prompts=prompts
    )
    assert (
        json.loads((tmp_path / "results.json").read_text())["prompts"]
        == doc["prompts"]
        == {
            "bottle": {"prompts": ["crack", "scratch"], "object_prompt": "bottle"},
            "wood": {"prompts": ["stain"], "object_prompt": None},
        }
    )


def test_results_json_config_holds_only_what_test_py_uses(tmp_path):
    doc = write_results(tmp_path, "mvtec", {"bottle": _metrics(0.9)}, {"eval_size": 64, "lr": 0.1, "topk": 5})
    assert doc["config"] == {"eval_size": 64, "topk": 5}
