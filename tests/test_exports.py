"""Outputs for other tools and thresholds (utils/evaluation/exports.py, thresholds.py): per_image.csv,
thresholds.json, TIFF maps, COCO RLE, and test.py writing them end to end with the tiny SAM 3."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from pycocotools import mask as coco_mask

from dataset import load_dataset
from model.detector import AnomalyDetector, ScoringSettings
from model.map_ops import resize_map
from scripts import demo
from scripts import test as test_script
from utils.config.cli import run
from utils.config.loading import ConfigError
from utils.evaluation.exports import instance_rle, write_tiff
from utils.evaluation.metrics import f1_max_thresholds
from utils.evaluation.thresholds import mask_threshold_from, normal_pixel_threshold, update_thresholds


def test_rle_decodes_back_to_the_mask_exactly():
    rng = np.random.default_rng(0)
    for shape in [(7, 11), (64, 48), (1, 1)]:
        mask = rng.random(shape) > 0.6
        mask[0, 0] = True
        rle = instance_rle(mask)
        assert rle["size"] == list(shape) and isinstance(rle["counts"], str)
        json.dumps(rle)  # JSON-able as it is
        decoded = coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")})
        assert decoded.dtype == np.uint8 and np.array_equal(decoded.astype(bool), mask)
        assert int(coco_mask.area({"size": rle["size"], "counts": rle["counts"].encode()})) == mask.sum()


def test_normal_pixel_threshold_is_the_quantile_of_good_pixels_only():
    maps = np.zeros((3, 10, 20), np.float32)
    maps[0] = np.arange(200).reshape(10, 20) / 199.0  # good: values 0 .. 1 evenly
    maps[1] = 5.0  # anomalous image: must not count
    maps[2] = maps[0]  # good again: same distribution
    got = normal_pixel_threshold(maps, np.array([0, 1, 0]), quantile=0.995)
    # 400 values, each of 0..199 twice; quantile 0.995 at position 0.995 * 399 = 397.005 -> between the two
    # copies of 198 (index 396, 397) and 199 (398): 198/199 + 0.005 * (1/199).
    assert got == pytest.approx((198 + 0.005) / 199.0, abs=1e-7)
    assert math.isnan(normal_pixel_threshold(maps, np.array([1, 1, 1])))


def test_mask_threshold_from_file_picks_the_category_and_explains_errors(tmp_path):
    update_thresholds(
        tmp_path, "bottle", {"pixel_normal_threshold": 0.42, "image_f1_threshold": 0.7}, "mvtec", 64
    )
    path = tmp_path / "thresholds.json"
    assert mask_threshold_from(path, "bottle") == 0.42
    assert mask_threshold_from(path, None) == 0.42  # one category: no --category needed
    update_thresholds(tmp_path, "wood", {"pixel_normal_threshold": float("nan")}, "mvtec", 64)
    doc = json.loads(path.read_text())
    assert doc["split"] == "test" and set(doc["categories"]) == {"bottle", "wood"}
    assert doc["categories"]["wood"]["pixel_normal_threshold"] is None  # NaN -> null
    with pytest.raises(ConfigError, match="has no category 'grid': pass --category one of bottle, wood"):
        mask_threshold_from(path, "grid")
    with pytest.raises(ConfigError, match="wood has no pixel_normal_threshold"):
        mask_threshold_from(path, "wood")
    with pytest.raises(ConfigError, match="no such file"):
        mask_threshold_from(tmp_path / "missing.json", "bottle")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not a thresholds.json"):
        mask_threshold_from(tmp_path / "bad.json", "bottle")


def test_test_script_writes_csv_thresholds_and_tiff_maps(datasets_root, tiny_sam3_dir, tmp_path):
    out = tmp_path / "out"
    argv = ["--dataset", "mvtec", "--dataset_path", str(datasets_root), "--categories", "bottle"]
    argv += ["--model_path", str(tiny_sam3_dir), "--device", "cpu", "--dtype", "fp32", "--eval_size", "32"]
    argv += ["--batch_size", "4", "--output_dir", str(out), "--save_maps", "tiff"]
    argv += ["--visualize", "--num_visualize", "3"]
    assert run(test_script.main, test_script.parse_args, argv) == 0

    # results for a paper table: the title says what was run on what; config holds test.py's settings only
    title = (out / "results.md").read_text().splitlines()[0]
    assert title == "### mvtec · text · prompts base · 7 test images in 1 of 15 categories (%)"
    config = json.loads((out / "results.json").read_text())["config"]
    assert config["eval_size"] == 32 and not {"lr", "num_epochs", "mask_threshold", "thresholds"} & set(
        config
    )
    # three pictures named by what they show (fn/fp only when misclassified: docs/outputs.md)
    kinds = [
        re.match(r"(fn|fp|lowest_defect|highest_good)\d\d_", p.name)
        for p in (out / "vis" / "bottle").iterdir()
    ]
    assert len(kinds) == 3 and all(kinds)

    cat = out / "categories" / "bottle"
    progress = json.loads((cat / "progress.json").read_text())
    maps, masks = np.load(cat / "maps.npy"), np.load(cat / "masks.npy")
    labels, scores = np.array(progress["labels"]), np.array(progress["scores"])
    records = load_dataset("mvtec", str(datasets_root), "bottle", "test").records

    rows = list(csv.DictReader((cat / "per_image.csv").open()))
    assert [r["path"] for r in rows][0] == "mvtec/bottle/test/good/000.png"  # relative to --dataset_path
    assert [str(datasets_root / r["path"]) for r in rows] == progress["image_paths"]
    assert [r["defect_type"] for r in rows] == [r.defect_type for r in records]
    assert [int(r["label"]) for r in rows] == progress["labels"]
    assert [float(r["image_score"]) for r in rows] == progress["scores"]  # repr round-trips exactly

    doc = json.loads((out / "thresholds.json").read_text())
    assert doc["split"] == "test" and doc["dataset"] == "mvtec" and doc["eval_size"] == 32
    entry = doc["categories"]["bottle"]
    want = f1_max_thresholds(labels, scores, masks, maps)
    assert entry["image_f1_threshold"] == want["image_threshold"]
    assert entry["pixel_f1_threshold"] == want["pixel_threshold"]
    metrics = json.loads((cat / "metrics.json").read_text())["metrics"]
    assert (
        entry["image_f1_max"] == metrics["image_f1_max"] and entry["pixel_f1_max"] == metrics["pixel_f1_max"]
    )
    assert entry["pixel_normal_threshold"] == normal_pixel_threshold(maps, labels)
    assert entry["n_images"] == len(records) and entry["n_good"] == int((labels == 0).sum())

    for record, stored in zip(records, maps, strict=True):
        tiff = (
            out
            / "anomaly_maps"
            / "bottle"
            / "test"
            / record.defect_type
            / f"{Path(record.image_path).stem}.tiff"
        )
        got = tifffile.imread(tiff)
        with Image.open(record.image_path) as image:
            width, height = image.size
        assert got.dtype == np.float32 and got.shape == (height, width)
        assert np.array_equal(got, resize_map(stored.astype(np.float32), (height, width)))
    n_tiffs = len(list((out / "anomaly_maps").rglob("*.tiff")))
    assert n_tiffs == len(records)


def test_tiff_map_at_the_evaluation_size_is_the_stored_map(tmp_path):
    stored = np.random.default_rng(1).random((32, 32)).astype(np.float16)
    write_tiff(tmp_path / "a" / "x.tiff", resize_map(stored.astype(np.float32), (32, 32)))
    assert np.array_equal(tifffile.imread(tmp_path / "a" / "x.tiff"), stored.astype(np.float32))


def test_demo_uses_the_category_threshold_and_writes_rle_boxes(tiny_sam3_dir, tmp_path):
    image = Path(__file__).resolve().parents[1] / "assets" / "demo_scratch.png"
    thresholds = tmp_path / "thresholds.json"
    common = ["--image_path", str(image), "--model_path", str(tiny_sam3_dir), "--device", "cpu"]
    common += ["--dtype", "fp32", "--box_threshold", "0.0", "--eval_size", "32"]
    common += ["--thresholds", str(thresholds)]
    masks = {}
    for value in (0.0, 2.0):  # every map value is >= 0 and none is >= 2: all / no pixels, whatever the map
        update_thresholds(tmp_path, "bottle", {"pixel_normal_threshold": value}, "mvtec", 32)
        out = tmp_path / f"out{value}"
        argv = [*common, "--category", "bottle", "--output_dir", str(out), "--mask_threshold", "0.5"]
        assert run(demo.main, demo.parse_args, argv) == 0
        masks[value] = np.asarray(Image.open(out / "demo_scratch_mask.png"))
    assert (masks[0.0] == 255).all() and (masks[2.0] == 0).all()

    record = json.loads((tmp_path / "out2.0" / "demo_scratch.json").read_text())
    assert record["mask_threshold"] == 2.0
    assert record["mask_threshold_source"] == f"pixel_normal_threshold of category bottle in {thresholds}"
    record = json.loads((tmp_path / "out0.0" / "demo_scratch.json").read_text())
    detector = AnomalyDetector.from_pretrained(
        tiny_sam3_dir, device="cpu", dtype="fp32", settings=ScoringSettings(box_threshold=0.0)
    )
    want = detector.detect(str(image), "bottle", record["prompts"], instance_masks=True).detections
    assert len(record["boxes"]) == len(want) > 0
    for box, d in zip(record["boxes"], want, strict=True):
        rle = {"size": box["rle"]["size"], "counts": box["rle"]["counts"].encode("ascii")}
        assert np.array_equal(coco_mask.decode(rle).astype(bool), d.mask)


def test_demo_thresholds_for_an_unknown_category_is_one_line(tiny_sam3_dir, tmp_path, capsys):
    update_thresholds(tmp_path, "bottle", {"pixel_normal_threshold": 0.3}, "mvtec", 32)
    argv = ["--image_path", str(Path(__file__).resolve().parents[1] / "assets" / "demo_scratch.png")]
    argv += ["--model_path", str(tiny_sam3_dir), "--thresholds", str(tmp_path / "thresholds.json")]
    argv += ["--category", "wood", "--output_dir", str(tmp_path / "o"), "--eval_size", "32"]
    assert run(demo.main, demo.parse_args, argv) == 2
    assert "has no category 'wood': pass --category one of bottle" in capsys.readouterr().err
