"""The runner's per-category calls for the new sets (utils/evaluation/benchmark_hooks.py), with a stand-in
for the scoring of a split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dataset import load_dataset
from tests.fixtures_benchmarks import make_mpdd, make_mvtec_ad2
from utils.config.loading import ConfigError, resolve_config
from utils.config.schema import Config
from utils.evaluation.benchmark_hooks import (
    category_extras,
    check_benchmark_settings,
    is_unlabelled,
    per_image_csv_unlabelled,
    score_validation,
    split_to_score,
)
from utils.evaluation.store import CategoryResult


def _cfg(tmp_path: Path, **over) -> Config:
    return resolve_config(None, {"dataset_path": str(tmp_path), **over})


def test_settings_that_cannot_apply_are_one_line_errors(tmp_path: Path) -> None:
    check_benchmark_settings(_cfg(tmp_path, dataset="mvtec_ad2", test_split="test_private"))
    with pytest.raises(ConfigError, match="test_split test_private exists only for --dataset mvtec_ad2"):
        check_benchmark_settings(_cfg(tmp_path, dataset="mpdd", test_split="test_private"))
    with pytest.raises(
        ConfigError, match="defect_type_report needs --dataset mvtec | mpdd | mvtec_loco .*got mpdd and base"
    ):
        check_benchmark_settings(_cfg(tmp_path, dataset="mpdd", defect_type_report=True))
    check_benchmark_settings(_cfg(tmp_path, dataset="mpdd", defect_type_report=True, prompt_strategy="mixed"))


def _fake_result(samples, value: float = 0.3) -> CategoryResult:
    """Maps: `value` everywhere, 0.9 on each image's bright patch (its mask on anomalous images)."""
    maps = np.stack([np.where(s.image[..., 0] > 200, 0.9, value) for s in samples]).astype(np.float16)
    masks = np.stack([s.mask for s in samples])
    labels = np.array([-1 if s.label is None else s.label for s in samples])
    return CategoryResult({}, maps, masks, labels, maps.reshape(len(maps), -1).max(axis=1).astype(float))


def test_mvtec_ad2_public_gets_aupro_005_and_segf1_from_validation(tmp_path: Path) -> None:
    make_mvtec_ad2(tmp_path)
    cfg = _cfg(tmp_path, dataset="mvtec_ad2")
    samples = split_to_score(cfg, "can")
    scored = []

    def score(split, cat_dir: Path):
        scored.append((split.split, cat_dir.relative_to(tmp_path / "out").as_posix()))
        return _fake_result(split, value=0.2)

    threshold = score_validation(cfg, "can", tmp_path / "out", score)
    assert score_validation(_cfg(tmp_path, dataset="mpdd"), "tubes", tmp_path / "out", score) != threshold
    extra = category_extras(tmp_path / "out", cfg, "can", samples, _fake_result(samples), threshold)
    assert scored == [("validation", "validation/can")]  # and nothing for mpdd
    assert extra["seg_threshold"] == pytest.approx(0.2, abs=1e-3)  # validation maps are 0.2 everywhere
    # threshold 0.2: every pixel of the test maps (>= 0.3) is called anomalous
    masks = np.stack([s.mask for s in samples])
    assert extra["pixel_seg_f1"] == pytest.approx(2 * masks.sum() / (2 * masks.sum() + (~masks).sum()))
    assert extra["pixel_aupro_0.05"] == pytest.approx(1.0)


def test_mvtec_ad2_private_is_scored_and_exported_without_metrics(tmp_path: Path) -> None:
    make_mvtec_ad2(tmp_path)
    cfg = _cfg(tmp_path, dataset="mvtec_ad2", test_split="test_private", save_maps="tiff")
    samples = split_to_score(cfg, "can")
    assert is_unlabelled(samples.records) and not is_unlabelled(
        load_dataset("mvtec_ad2", tmp_path, "can", "test").records
    )
    out = tmp_path / "out"
    threshold = score_validation(cfg, "can", out, lambda s, cat_dir: _fake_result(s, 0.2))
    extra = category_extras(out, cfg, "can", samples, _fake_result(samples), threshold)
    assert extra == {}
    rows = (out / "categories" / "can" / "per_image.csv").read_text().splitlines()
    assert rows[0] == "path,defect_type,label,image_score"
    assert rows[1].endswith("000.png,test_private,,0.89990234375")
    assert sorted(
        p.relative_to(out).as_posix() for p in out.rglob("*.*") if "anomaly_images" in p.as_posix()
    ) == [
        "anomaly_images/can/test_private/000.tiff",
        "anomaly_images/can/test_private/001.tiff",
        "anomaly_images_thresholded/can/test_private/000.png",
        "anomaly_images_thresholded/can/test_private/001.png",
    ]


def test_defect_type_report_is_written(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from model.detector import Detection

    make_mpdd(tmp_path)
    cfg = _cfg(
        tmp_path,
        dataset="mpdd",
        defect_type_report=True,
        prompt_strategy="category",
        batch_size=4,
        prompt_overrides={"metal_plate": ["scratch"]},
    )
    samples = split_to_score(cfg, "metal_plate")
    detector = SimpleNamespace(
        detect=lambda images, *a, **k: [
            SimpleNamespace(detections=[Detection("scratch", 0.9, (0, 0, 1, 1), im[..., 0] > 200)])
            for im in images
        ]
    )
    extra = category_extras(
        tmp_path / "out", cfg, "metal_plate", samples, _fake_result(samples), None, detector
    )
    assert extra == {"defect_type_accuracy": pytest.approx(1 / 3)}  # "scratch" names scratches: 1 of 3 right
    csv_text = (tmp_path / "out" / "categories" / "metal_plate" / "defect_types.csv").read_text()
    assert csv_text == "true \\ predicted,hole,scratches,none\nhole,0,2,0\nscratches,0,1,0\n"


def test_unlabelled_csv_has_no_label() -> None:
    from dataset import Record

    text = per_image_csv_unlabelled([Record("/a/1.png", None, None, "test_private", "can")], np.array([0.5]))
    assert text == "path,defect_type,label,image_score\n/a/1.png,test_private,,0.5\n"
