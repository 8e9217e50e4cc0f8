"""sPRO (MVTec LOCO AD): hand-solved curves, an independent brute-force implementation, the fixture tree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dataset import load_dataset
from dataset.mvtec_loco import DefectConfig
from tests.fixtures_benchmarks import make_mvtec_loco
from utils.evaluation.spro import Region, auc_spro, loco_spro_metrics, region_masks, saturation_area

GOOD = np.array([[[0.1, 0.2], [0.3, 0.4]]])  # one defect-free image: FPR steps of 1/4
MAPS = np.array([[[0.5, 0.25, 0.35]]])  # one image row: region A = first two pixels, region B = the third
A = np.array([[True, True, False]])
B = np.array([[False, False, True]])


@pytest.mark.parametrize(
    ("regions", "limit", "expected"),
    [
        # A alone, saturating at its full area (2 px): (0,0) -> (0,.5) -> (.5,.5) -> (.5,1) -> (1,1)
        ([Region(0, A, 2.0)], 0.5, 0.5),
        ([Region(0, A, 2.0)], 1.0, 0.75),
        # saturating at 1 px: A is fully credited as soon as its best pixel (0.5) is above t
        ([Region(0, A, 1.0)], 0.5, 1.0),
        # A (sat 2) and B (sat 1): (0,.25) (.25,.25) (.25,.75) (.5,.75) (.5,1) (1,1)
        ([Region(0, A, 2.0), Region(0, B, 1.0)], 1.0, 0.75),
        ([Region(0, A, 2.0), Region(0, B, 1.0)], 0.5, 0.5),
        ([Region(0, A, 2.0), Region(0, B, 1.0)], 0.3, (0.25 * 0.25 + 0.05 * 0.75) / 0.3),
    ],
)
def test_hand_solved(regions: list[Region], limit: float, expected: float) -> None:
    assert auc_spro(GOOD, MAPS, regions, limit) == pytest.approx(expected, abs=1e-12)


def test_saturation_area_relative_absolute_and_capped() -> None:
    assert saturation_area(DefectConfig("a", 255, 0.5, True), 40) == 20
    assert saturation_area(DefectConfig("b", 254, 30, False), 40) == 30
    assert saturation_area(DefectConfig("c", 253, 300, False), 40) == 40  # never more than the region


def brute_force_spro(good: np.ndarray, maps: np.ndarray, regions: list[Region], limit: float) -> float:
    """One (FPR, sPRO) point per distinct score, each counted directly; trapezoid to `limit`."""
    thresholds = np.unique(np.concatenate([good.ravel(), *(maps[r.image][r.mask] for r in regions)]))[::-1]
    points = [(0.0, 0.0)]
    for t in thresholds:
        fpr = float(np.mean(good >= t))
        spro = np.mean([min(np.sum(maps[r.image][r.mask] >= t) / r.saturation, 1.0) for r in regions])
        points.append((fpr, float(spro)))
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        if x0 >= limit:
            break
        if x1 > limit:
            y1 = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
            x1 = limit
        area += 0.5 * (y0 + y1) * (x1 - x0)
    return area / limit


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("limit", [0.05, 0.3])
def test_matches_brute_force_on_random_maps_with_ties(seed: int, limit: float) -> None:
    rng = np.random.default_rng(seed)
    good = np.round(rng.random((3, 12, 12)), 2)  # rounded: ties between good and defect pixels
    maps = np.round(rng.random((4, 12, 12)) + 0.3 * seed / 6, 2)
    regions = []
    for image in range(4):
        for _ in range(rng.integers(1, 3)):
            mask = np.zeros((12, 12), dtype=bool)
            r, c = rng.integers(0, 8, 2)
            mask[r : r + rng.integers(1, 5), c : c + rng.integers(1, 5)] = True
            regions.append(Region(image, mask, float(rng.choice([0.5, 1.0, 3.0, 100.0]))))
    regions = [Region(r.image, r.mask, min(r.saturation, float(r.mask.sum()))) for r in regions]
    got = auc_spro(good, maps, regions, limit)
    assert got == pytest.approx(brute_force_spro(good, maps, regions, limit), abs=1e-12)


def test_undefined_and_bad_limit() -> None:
    assert np.isnan(auc_spro(GOOD, MAPS, [], 0.05))
    with pytest.raises(ValueError, match=r"fpr_limit must be in \(0, 1\]"):
        auc_spro(GOOD, MAPS, [Region(0, A, 1.0)], 0.0)


@pytest.fixture
def loco(tmp_path: Path):
    make_mvtec_loco(tmp_path)
    return load_dataset("mvtec_loco", tmp_path, "pushpins", "test")


def test_regions_read_their_defect_and_saturation(loco) -> None:
    record = next(r for r in loco.records if len(r.regions) == 2)
    configs = {255: DefectConfig("missing", 255, 1.0, True), 254: DefectConfig("extra", 254, 20, False)}
    first, second = region_masks(record.regions, 7, configs, (24, 24))
    assert (first.image, first.saturation, int(first.mask.sum())) == (7, 36.0, 36)
    assert second.saturation == 20.0  # absolute, at the mask's own resolution
    half = region_masks(record.regions, 0, configs, (12, 12))
    assert half[1].saturation == pytest.approx(20 / 4) and int(half[1].mask.sum()) == 9
    with pytest.raises(ValueError, match=r"pixel value 254 is not in defects_config.json \(\[255\]\)"):
        region_masks(record.regions, 0, {255: configs[255]}, (24, 24))


def test_loco_category_metrics_by_type(loco) -> None:
    """Maps that find every logical region and nothing else: logical 1, structural a tie with the good
    pixels (the diagonal, 0.025 at 0.05), both = 3 of 4 regions at FPR 0 then the diagonal."""
    samples = list(loco)
    maps = np.stack(
        [
            s.mask.astype(np.float32)
            if s.defect_type == "logical_anomalies"
            else np.zeros(s.mask.shape, np.float32)
            for s in samples
        ]
    )
    got = loco_spro_metrics(
        Path(loco.root) / "pushpins",
        [r.defect_type for r in loco.records],
        [r.regions for r in loco.records],
        maps,
    )
    assert got["logical_pixel_spro_0.05"] == pytest.approx(1.0)
    assert got["logical_pixel_spro_0.3"] == pytest.approx(1.0)
    assert got["structural_pixel_spro_0.05"] == pytest.approx(0.025)
    assert got["structural_pixel_spro_0.3"] == pytest.approx(0.15)
    assert got["pixel_spro_0.05"] == pytest.approx(0.75 + 0.25 * 0.025)
