"""Defect-type report: best-covering prompt, its folder, the confusion matrix, and the vocabulary data."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from dataset import load_dataset
from model.detector import Detection
from model.prompts import CATEGORY_DEFECTS, DEFECT_FOLDERS, build_prompts, prompt_defect_folders
from tests.fixtures_benchmarks import make_mpdd
from utils.config.loading import resolve_config
from utils.evaluation.defect_types import (
    NONE,
    TypeReport,
    best_prompt,
    category_type_report,
    predicted_type,
    reports_defect_types,
)


def _det(prompt: str, rows: slice, cols: slice, size: int = 8) -> Detection:
    mask = np.zeros((size, size), dtype=bool)
    mask[rows, cols] = True
    return Detection(prompt, 0.9, (0.0, 0.0, 1.0, 1.0), mask)


GT = np.zeros((8, 8), dtype=bool)
GT[2:4, 2:6] = True  # 8 pixels


def test_best_prompt_is_the_one_covering_most_of_the_ground_truth() -> None:
    dets = [
        _det("scratch", slice(2, 4), slice(2, 4)),  # covers 4 of 8
        _det("hole", slice(0, 8), slice(0, 8)),  # covers 8 of 8, IoU 8/64
        _det("crack", slice(2, 3), slice(2, 6)),  # 4 of 8 ...
        _det("crack", slice(3, 4), slice(2, 6)),  # ... and the other 4: its union covers 8 of 8, IoU 1
    ]
    assert best_prompt(dets, GT) == "crack"  # same coverage as "hole", higher IoU
    assert best_prompt(dets[:2], GT) == "hole"
    assert best_prompt([_det("dent", slice(6, 8), slice(6, 8))], GT) is None  # touches nothing
    assert best_prompt([], GT) is None
    with pytest.raises(ValueError, match="no instance mask: detect with instance_masks=True"):
        best_prompt([Detection("x", 0.5, (0.0, 0.0, 1.0, 1.0))], GT)


def test_predicted_type_maps_the_prompt_to_its_folder() -> None:
    dets = [_det("scratch", slice(2, 4), slice(2, 6))]
    assert predicted_type(dets, GT, {"scratch": "scratches"}) == "scratches"
    assert predicted_type(dets, GT, {}) == NONE  # a prompt naming no folder


def test_confusion_matrix_csv_and_accuracy() -> None:
    report = TypeReport(["hole", "hole", "scratches", "scratches"], ["hole", "scratches", "scratches", NONE])
    rows, cols, counts = report.matrix()
    assert rows == ["hole", "scratches"] and cols == ["hole", "scratches", NONE]
    assert counts.tolist() == [[1, 1, 0], [0, 1, 1]]
    assert report.accuracy == 0.5
    assert report.csv_text() == "true \\ predicted,hole,scratches,none\nhole,1,1,0\nscratches,0,1,1\n"
    assert np.isnan(TypeReport([], []).accuracy)


def test_contextual_prompts_are_read_as_their_phrase() -> None:
    prompts = build_prompts("bracket_black", "contextual")
    named = prompt_defect_folders("bracket_black", prompts)
    assert named == {
        "hole on the black metal bracket": "hole",
        "scratch on the black metal bracket": "scratches",
    }
    assert prompt_defect_folders("bracket_black", ["Hole", "defect"]) == {"Hole": "hole"}
    assert prompt_defect_folders("own_part", ["hole"]) == {}


def test_every_mapped_phrase_is_in_its_vocabulary() -> None:
    for category, folders in DEFECT_FOLDERS.items():
        assert set(folders) <= set(CATEGORY_DEFECTS[category]), category
    assert set(DEFECT_FOLDERS["pushpins"].values()) == {"logical_anomalies", "structural_anomalies"}


def test_reported_only_for_named_folders_and_vocabulary_strategies() -> None:
    assert reports_defect_types("mpdd", "contextual") and reports_defect_types("mvtec_loco", "category")
    assert not reports_defect_types("mpdd", "base") and not reports_defect_types("mvtec_ad2", "mixed")


def test_category_report_detects_anomalous_images_with_instance_masks(tmp_path: Path) -> None:
    """A stand-in detector that finds "hole" exactly on the ground truth of every image."""
    make_mpdd(tmp_path)
    samples = load_dataset("mpdd", tmp_path, "metal_plate", "test")
    calls = []

    def detect(images, category, prompts, texture_categories, instance_masks):
        calls.append((len(images), category, instance_masks))
        return [
            SimpleNamespace(detections=[Detection("hole", 0.9, (0, 0, 1, 1), image[..., 0] > 200)])
            for image in images
        ]

    base = resolve_config(None, {"prompt_strategy": "category", "batch_size": 2, "dataset": "mpdd"})
    cfg = base.replace(prompt_overrides={"metal_plate": ["hole", "rust"]})
    report = category_type_report(SimpleNamespace(detect=detect), cfg, samples, "metal_plate")
    assert calls == [(2, "metal_plate", True), (1, "metal_plate", True)]  # the 3 anomalous images only
    assert report.true == ["hole", "hole", "scratches"]
    assert report.predicted == [NONE, NONE, NONE]  # "hole" names no metal_plate folder
    cfg = base.replace(prompt_overrides={"metal_plate": ["rust spot"]})
    calls.clear()
    detect_rust = lambda images, *a, **k: [  # noqa: E731
        SimpleNamespace(detections=[Detection("rust spot", 0.9, (0, 0, 1, 1), image[..., 0] > 200)])
        for image in images
    ]
    report = category_type_report(SimpleNamespace(detect=detect_rust), cfg, samples, "metal_plate")
    assert report.predicted == ["major_rust"] * 3 and report.accuracy == 0.0
