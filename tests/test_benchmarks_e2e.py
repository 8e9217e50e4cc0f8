"""scripts/test.py end to end, in-process, with the tiny SAM 3 on two new sets laid out as distributed.

(Real-IAD's per-sample metrics take the runner call of LOCO's sPRO: tests/test_benchmark_metrics.py.)
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from scripts import test as test_script
from tests.fixtures_benchmarks import make_mvtec_ad2, make_mvtec_loco
from utils.config.cli import run
from utils.evaluation.metrics import METRIC_KEYS


@pytest.fixture(scope="module")
def bench_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bench_e2e")
    make_mvtec_loco(root)
    make_mvtec_ad2(root)
    return root


def run_test(root: Path, model: Path, out: Path, dataset: str, *extra: str) -> int:
    argv = ["--dataset", dataset, "--dataset_path", str(root), "--model_path", str(model), "--device", "cpu"]
    argv += ["--dtype", "fp32", "--eval_size", "24", "--batch_size", "4", "--output_dir", str(out), *extra]
    return run(test_script.main, test_script.parse_args, argv)


def test_loco_reports_spro_by_type_and_the_defect_types(
    bench_data: Path, tiny_sam3_dir: Path, tmp_path: Path
) -> None:
    extra = ("--prompt_strategy", "category", "--defect_type_report")
    assert run_test(bench_data, tiny_sam3_dir, tmp_path, "mvtec_loco", *extra) == 0
    doc = json.loads((tmp_path / "results.json").read_text())
    assert list(doc["categories"]) == ["pushpins"] and set(doc["mean"]) == set(METRIC_KEYS)
    own = doc["benchmark_metrics"]["categories"]["pushpins"]
    for prefix in ("", "logical_", "structural_"):
        for limit in ("0.05", "0.3"):
            assert 0.0 <= own[f"{prefix}pixel_spro_{limit}"] <= 1.0
    assert {"logical_image_auroc", "structural_image_auroc", "defect_type_accuracy"} <= set(own)
    matrix = list(csv.reader((tmp_path / "categories" / "pushpins" / "defect_types.csv").open()))
    assert [row[0] for row in matrix[1:]] == ["logical_anomalies", "structural_anomalies"]
    assert sum(int(v) for row in matrix[1:] for v in row[1:]) == 3  # the three anomalous test images
    assert "pixel_spro_0.05" in (tmp_path / "results.md").read_text()


def test_mvtec_ad2_private_split_is_exported_without_metrics(
    bench_data: Path, tiny_sam3_dir: Path, tmp_path: Path
) -> None:
    assert (
        run_test(
            bench_data,
            tiny_sam3_dir,
            tmp_path,
            "mvtec_ad2",
            "--test_split",
            "test_private",
            "--save_maps",
            "tiff",
        )
        == 0
    )
    rows = list(csv.DictReader((tmp_path / "categories" / "can" / "per_image.csv").open()))
    assert [(Path(r["path"]).name, r["label"]) for r in rows] == [("000.png", ""), ("001.png", "")]
    assert len(list((tmp_path / "anomaly_images" / "can" / "test_private").glob("*.tiff"))) == 2
    assert len(list((tmp_path / "anomaly_images_thresholded" / "can" / "test_private").glob("*.png"))) == 2
    doc = json.loads((tmp_path / "results.json").read_text())
    assert all(v is None for v in doc["categories"]["can"].values())
    progress = tmp_path / "categories" / "can" / "progress.json"
    before = progress.stat().st_mtime_ns
    argv = ("--test_split", "test_private", "--save_maps", "tiff")
    assert run_test(bench_data, tiny_sam3_dir, tmp_path, "mvtec_ad2", *argv) == 0  # a rerun: resumed whole
    rerun = json.loads((tmp_path / "results.json").read_text())["run"]["categories"]["can"]
    assert (rerun["images"], rerun["scored"]) == (2, 0) and progress.stat().st_mtime_ns == before
