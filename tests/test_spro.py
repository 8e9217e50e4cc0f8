"""sPRO (MVTec LOCO AD) as the official code defines it: hand-solved curves (two of them change under the
earlier good-only FPR and float saturation), a brute force, the fixture tree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dataset import load_dataset
from dataset.mvtec_loco import DefectConfig, read_defects_config
from tests.fixtures_benchmarks import make_mvtec_loco
from utils.evaluation.spro import Region, auc_spro, loco_spro_metrics, region_masks, saturation_area

GOOD = np.array([[0.1, 0.2], [0.3, 0.4]])  # one defect-free image: FPR steps of 1/4
ROW = np.array([[0.5, 0.25, 0.35]])  # one anomalous image, all region: A = first two pixels, B = the third
MAPS = [GOOD, ROW]
A = np.array([[True, True, False]])
B = np.array([[False, False, True]])


@pytest.mark.parametrize(
    ("regions", "limit", "expected"),
    [
        # A alone, saturating at its full area (2 px); B's pixel 0.35 is a negative too (outside A):
        # (0,0) (0,.5) (.2,.5) [0.4] (.4,.5) [0.35] (.6,.5) [0.3] (.6,1) [0.25] then to (1,1)
        ([Region(1, A, 2.0)], 0.6, 0.5),
        ([Region(1, A, 2.0)], 1.0, 0.3 + 0.4),
        # saturating at 1 px: A is fully credited as soon as its best pixel (0.5) is above t
        ([Region(1, A, 1.0)], 0.5, 1.0),
        # A (sat 2) and B (sat 1), the row all regions: negatives = GOOD only
        # (0,.25) (.25,.25) (.25,.75) (.5,.75) (.5,1) (1,1)
        ([Region(1, A, 2.0), Region(1, B, 1.0)], 1.0, 0.75),
        ([Region(1, A, 2.0), Region(1, B, 1.0)], 0.5, 0.5),
        ([Region(1, A, 2.0), Region(1, B, 1.0)], 0.3, (0.25 * 0.25 + 0.05 * 0.75) / 0.3),
    ],
)
def test_hand_solved(regions: list[Region], limit: float, expected: float) -> None:
    assert auc_spro(MAPS, [0, 1], regions, limit) == pytest.approx(expected, abs=1e-12)


def test_fpr_counts_the_normal_pixels_of_anomalous_images() -> None:
    """Official FPR: pixels outside every region of the good AND the anomalous images. The anomalous
    image's normal pixel 0.9 is a false positive before the region (0.3) is found: (0,0) (1/3,0) (1/3,1);
    AUC to 0.5 = (0.5 - 1/3) / 0.5 = 1/3. Counting the good image only would give 1."""
    maps = [np.array([[0.1, 0.2]]), np.array([[0.9, 0.3]])]
    region = Region(1, np.array([[False, True]]), 1.0)
    assert auc_spro(maps, [0, 1], [region], 0.5) == pytest.approx(1 / 3, abs=1e-12)


def test_relative_saturation_is_truncated() -> None:
    """int(0.5 * 3) = 1 pixel saturates the 3-pixel region: its best pixel (0.9, above every good pixel)
    gives sPRO 1 at FPR 0, AUC 1. The float 1.5 would give 2/3 there and 0.5 * 2/3 + 0.5 = 5/6."""
    config = DefectConfig("a", 255, 0.5, True)
    assert saturation_area(config, 3) == 1.0
    maps = [np.array([[0.5, 0.4, 0.3, 0.2]]), np.array([[0.9, 0.35, 0.05]])]
    region = Region(1, np.ones((1, 3), dtype=bool), saturation_area(config, 3))
    assert auc_spro(maps, [0, 1], [region], 1.0) == pytest.approx(1.0, abs=1e-12)
    untruncated = Region(1, region.mask, 1.5)
    assert auc_spro(maps, [0, 1], [untruncated], 1.0) == pytest.approx(5 / 6, abs=1e-12)


def test_saturation_area_relative_absolute_and_capped() -> None:
    assert saturation_area(DefectConfig("a", 255, 0.5, True), 40) == 20
    assert saturation_area(DefectConfig("a", 255, 0.5, True), 41) == 20  # int(20.5)
    assert saturation_area(DefectConfig("b", 254, 30, False), 40) == 30
    assert saturation_area(DefectConfig("c", 253, 300, False), 40) == 40  # never more than the region


def brute_force_spro(maps: np.ndarray, images: list[int], regions: list[Region], limit: float) -> float:
    """One (FPR, sPRO) point per distinct score, each counted directly; trapezoid to `limit`. Negatives:
    the pixels of `images` outside every region of their image."""
    inside = np.zeros(maps.shape, dtype=bool)
    for r in regions:
        inside[r.image] |= r.mask
    negatives = np.concatenate([maps[i][~inside[i]] for i in images])
    thresholds = np.unique(np.concatenate([negatives, *(maps[r.image][r.mask] for r in regions)]))[::-1]
    points = [(0.0, 0.0)]
    for t in thresholds:
        fpr = float(np.mean(negatives >= t))
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
    maps = np.round(rng.random((7, 12, 12)), 2)  # rounded: ties between normal and defect pixels
    maps[3:] += 0.3 * seed / 6  # images 0-2 good, 3-6 anomalous
    regions = []
    for image in range(3, 7):
        for _ in range(rng.integers(1, 3)):
            mask = np.zeros((12, 12), dtype=bool)
            r, c = rng.integers(0, 8, 2)
            mask[r : r + rng.integers(1, 5), c : c + rng.integers(1, 5)] = True
            regions.append(Region(image, mask, float(rng.choice([0.5, 1.0, 3.0, 100.0]))))
    regions = [Region(r.image, r.mask, min(r.saturation, float(r.mask.sum()))) for r in regions]
    subset = [0, 1, 2, 4, 5, 6]  # image 3 is left out of this subset with its regions
    regions = [r for r in regions if r.image in subset]
    got = auc_spro(maps, subset, regions, limit)
    assert got == pytest.approx(brute_force_spro(maps, subset, regions, limit), abs=1e-12)


def test_undefined_and_bad_limit() -> None:
    assert np.isnan(auc_spro(MAPS, [0, 1], [], 0.05))
    with pytest.raises(ValueError, match=r"fpr_limit must be in \(0, 1\]"):
        auc_spro(MAPS, [0, 1], [Region(1, A, 1.0)], 0.0)


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
        read_defects_config(Path(loco.root) / "pushpins"),
        [r.defect_type for r in loco.records],
        [r.regions for r in loco.records],
        maps,
    )
    assert got["logical_pixel_spro_0.05"] == pytest.approx(1.0)
    assert got["logical_pixel_spro_0.3"] == pytest.approx(1.0)
    assert got["structural_pixel_spro_0.05"] == pytest.approx(0.025)
    assert got["structural_pixel_spro_0.3"] == pytest.approx(0.15)
    assert got["pixel_spro_0.05"] == pytest.approx(0.5 * (1.0 + 0.025))  # the official mean of the two
    assert got["pixel_spro_0.3"] == pytest.approx(0.5 * (1.0 + 0.15))
    assert set(got) == {
        f"{p}pixel_spro_{limit}" for p in ("", "logical_", "structural_") for limit in (0.05, 0.3)
    }
