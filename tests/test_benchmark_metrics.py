"""Per-benchmark metrics (utils/evaluation/benchmarks.py): MVTec AD 2 AU-PRO@0.05 and SegF1, Real-IAD
per-sample metrics, MVTec LOCO per-type AUROC."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dataset import Record, load_dataset
from tests.fixtures_benchmarks import make_mvtec_loco
from tests.test_metrics import reference_aupro
from utils.evaluation.benchmarks import (
    OwnInputs,
    benchmark_of,
    mvtec_ad2_metrics,
    real_iad_metrics,
    sample_scores,
    seg_f1,
    validation_threshold,
)
from utils.evaluation.native import pixel_view
from utils.evaluation.store import CategoryResult


def _result(labels, scores, masks, maps) -> CategoryResult:
    return CategoryResult({}, np.asarray(maps), np.asarray(masks), np.asarray(labels), np.asarray(scores))


def _own(result: CategoryResult, records=(), category_dir=Path("."), threshold=float("nan")) -> OwnInputs:
    return OwnInputs(records, result, pixel_view(result, records, False), category_dir, threshold)


def benchmark_metrics(dataset: str, records, result: CategoryResult, category_dir: Path) -> dict[str, float]:
    return benchmark_of(dataset).metrics(_own(result, records, category_dir))


def test_seg_f1_hand_solved() -> None:
    masks = np.array([[[True, True, False, False]]])
    maps = np.array([[[0.9, 0.4, 0.6, 0.1]]])
    # t = 0.5: TP 1 (0.9), FP 1 (0.6), FN 1 (0.4) -> 2 / (2 + 1 + 1)
    assert seg_f1(masks, maps, 0.5) == pytest.approx(0.5)
    assert seg_f1(masks, maps, 0.05) == pytest.approx(2 * 2 / (2 * 2 + 2))
    assert np.isnan(seg_f1(masks, maps, float("nan")))


def test_mvtec_ad2_aupro_at_005_and_threshold_from_validation_only() -> None:
    rng = np.random.default_rng(0)
    masks = np.zeros((6, 16, 16), dtype=bool)
    masks[3:, 4:9, 5:11] = True
    maps = (rng.random((6, 16, 16)) + 0.8 * masks).astype(np.float32)
    labels = np.array([0, 0, 0, 1, 1, 1])
    validation = np.full((2, 16, 16), 0.25, dtype=np.float32)
    validation[0, 0, 0] = 5.0  # one pixel above the 0.995 quantile of 512 pixels: the quantile stays low
    got = mvtec_ad2_metrics(
        _own(_result(labels, maps.max(axis=(1, 2)), masks, maps), threshold=validation_threshold(validation))
    )
    assert got["pixel_aupro_0.05"] == pytest.approx(reference_aupro(masks, maps, 0.05), abs=1e-6)
    assert got["seg_threshold"] == pytest.approx(np.quantile(validation, 0.995))
    assert got["pixel_seg_f1"] == pytest.approx(seg_f1(masks, maps, got["seg_threshold"]))
    assert np.isnan(
        mvtec_ad2_metrics(_own(_result(labels, labels, masks, maps), threshold=validation_threshold(None)))[
            "pixel_seg_f1"
        ]
    )


def test_sample_scores_take_the_max_over_views() -> None:
    labels, scores = sample_scores(
        ["a", "a", "b", "b"], np.array([0, 1, 0, 0]), np.array([0.2, 0.1, 0.5, 0.3])
    )
    assert labels.tolist() == [1, 0] and scores.tolist() == [0.2, 0.5]


def test_real_iad_sample_metrics_differ_from_view_metrics() -> None:
    ids = ["NG/AK/S1", "NG/AK/S1", "OK/S2", "OK/S2", "OK/S3", "OK/S3"]
    labels = np.array([1, 0, 0, 0, 0, 0])
    scores = np.array([0.9, 0.1, 0.3, 0.4, 0.2, 0.95])
    records = [
        Record(f"/x/{i}.jpg", None, int(lab), "AK" if lab else "good", "toy", (), sid)
        for i, (lab, sid) in enumerate(zip(labels, ids, strict=True))
    ]
    empty = np.zeros((6, 2, 2))
    got = benchmark_metrics(
        "real_iad", records, _result(labels, scores, empty.astype(bool), empty), Path(".")
    )
    assert got["sample_image_auroc"] == pytest.approx(0.5)  # S1 (0.9) beats S2 (0.4), loses to S3 (0.95)
    assert got == real_iad_metrics(_own(_result(labels, scores, empty.astype(bool), empty), records))
    assert set(got) == {"sample_image_auroc", "sample_image_ap", "sample_image_f1_max"}


def test_loco_reports_each_type_and_other_sets_nothing(tmp_path: Path) -> None:
    make_mvtec_loco(tmp_path)
    data = load_dataset("mvtec_loco", tmp_path, "pushpins", "test")
    labels = np.array([r.label for r in data.records])
    types = [r.defect_type for r in data.records]  # good, good, logical, logical, structural
    scores = np.array([0.1, 0.5, 0.6, 0.2, 0.9])
    maps = np.stack([s.mask.astype(np.float32) for s in data])
    got = benchmark_metrics(
        "mvtec_loco", data.records, _result(labels, scores, maps > 0, maps), data.root / "pushpins"
    )
    assert types[2:] == ["logical_anomalies", "logical_anomalies", "structural_anomalies"]
    assert got["logical_image_auroc"] == pytest.approx(0.75)  # 0.6 beats goods 0.1, 0.5; 0.2 beats 0.1
    assert got["structural_image_auroc"] == pytest.approx(1.0)
    assert got["pixel_spro_0.05"] == pytest.approx(1.0)  # perfect maps
    assert benchmark_metrics("mpdd", data.records, _result(labels, scores, maps > 0, maps), tmp_path) == {}


def test_results_carry_the_benchmark_metrics(tmp_path: Path) -> None:
    from utils.evaluation.metrics import METRIC_KEYS
    from utils.evaluation.results import write_results

    usual = {c: dict.fromkeys(METRIC_KEYS, 0.5) for c in ("a", "b")}
    extra = {
        "a": {"pixel_spro_0.05": 0.2, "defect_type_accuracy": 0.5},
        "b": {"pixel_spro_0.05": float("nan")},
    }
    doc = write_results(tmp_path, "mvtec_loco", usual, {}, extra=extra)
    assert doc["benchmark_metrics"] == {
        "categories": {
            "a": {"pixel_spro_0.05": 0.2, "defect_type_accuracy": 0.5},
            "b": {"pixel_spro_0.05": None},
        },
        "mean": {"pixel_spro_0.05": 0.2, "defect_type_accuracy": 0.5},
    }
    md = (tmp_path / "results.md").read_text()
    assert "| Category | pixel_spro_0.05 | defect_type_accuracy |" in md
    assert "| b | – | – |" in md and "| **mean** | **20.0** | **50.0** |" in md
    assert "benchmark_metrics" not in write_results(tmp_path, "mpdd", usual, {})


def test_compare_has_a_block_per_dataset_with_its_own_metrics(tmp_path: Path) -> None:
    import json

    from utils.evaluation.compare import collect_runs, compare_table
    from utils.evaluation.metrics import METRIC_KEYS

    for mode, dataset, extra in (
        ("text", "mvtec", None),
        ("text", "mvtec_loco", 0.4),
        ("mutual", "mvtec_loco", 0.6),
    ):
        folder = tmp_path / mode / dataset
        folder.mkdir(parents=True)
        doc = {"dataset": dataset, "mean": dict.fromkeys(METRIC_KEYS, 0.5)}
        if extra is not None:
            doc["benchmark_metrics"] = {"mean": {"pixel_spro_0.05": extra}}
        (folder / "results.json").write_text(json.dumps(doc))
    table = compare_table(collect_runs(tmp_path))
    blocks = {b.split(":")[0]: b for b in table.split("### ")[1:]}
    assert sorted(blocks) == ["mvtec", "mvtec_loco"]
    mvtec, loco = blocks["mvtec"], blocks["mvtec_loco"]
    assert "| text | mvtec | 1 |" in mvtec and "pixel_spro" not in mvtec
    assert "| mode | dataset | runs | I-AUROC |" in loco and loco.count("| pixel_spro_0.05 |") == 1
    assert "| mutual | mvtec_loco | 1 | 50.0 | 50.0 | 50.0 | 50.0 | 50.0 | 50.0 | 50.0 | 60.0 |" in loco


def test_mvtec_ad2_private_maps_in_the_server_layout(tmp_path: Path) -> None:
    import tifffile
    from PIL import Image

    from tests.fixtures_benchmarks import make_mvtec_ad2
    from utils.evaluation.ad2_server import save_server_maps

    make_mvtec_ad2(tmp_path / "data")
    records = load_dataset("mvtec_ad2", tmp_path / "data", "can", "test_private").records
    maps = np.zeros((2, 8, 8), dtype=np.float16)
    maps[:, :4] = 0.9  # top half anomalous
    written = save_server_maps(tmp_path / "out", "can", records, maps, threshold=0.5)
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in written) == [
        "anomaly_images/can/test_private/000.tiff",
        "anomaly_images/can/test_private/001.tiff",
        "anomaly_images_thresholded/can/test_private/000.png",
        "anomaly_images_thresholded/can/test_private/001.png",
    ]
    tiff = tifffile.imread(tmp_path / "out" / "anomaly_images/can/test_private/000.tiff")
    png = np.asarray(Image.open(tmp_path / "out" / "anomaly_images_thresholded/can/test_private/000.png"))
    assert tiff.shape == png.shape == (24, 24) and tiff.dtype == np.float16  # the image's own size
    assert set(np.unique(png)) == {0, 255} and (png[:10] == 255).all() and (png[14:] == 0).all()
    with pytest.raises(ValueError, match="no validation/good maps"):
        save_server_maps(tmp_path / "out", "can", records, maps, threshold=float("nan"))
