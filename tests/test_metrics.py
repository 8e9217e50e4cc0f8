"""Tests for utils/evaluation/metrics.py: hand-solved cases, scikit-learn, plain reference implementations."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import precision_recall_curve, roc_auc_score

from tests.reference_metrics import sklearn_metrics
from utils.evaluation.metrics import (
    AUPRO_VARIANTS,
    METRIC_KEYS,
    UndefinedMetricWarning,
    compute_metrics,
    f1_max_thresholds,
    image_curves,
    pixel_curves,
    rank_pixels,
)

EIGHT = np.ones((3, 3), dtype=int)  # 8-connectivity structuring element


# ---------------------------------------------------------------- plain references (slow, obviously right)
def regions_of(masks: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """[(image index, (H, W) bool region)] over the 8-connected components of each image's mask."""
    out = []
    for i, mask in enumerate(masks):
        labels, count = ndimage.label(mask, structure=EIGHT)
        out += [(i, labels == k) for k in range(1, count + 1)]
    return out


def area_to(x: list[float], y: list[float], x_max: float) -> float:
    """Trapezoid from x[0] to x_max over points in order, y interpolated linearly at x_max."""
    area = 0.0
    for j in range(1, len(x)):
        x0, x1, y0, y1 = x[j - 1], x[j], y[j - 1], y[j]
        if x1 <= x_max:
            area += 0.5 * (y0 + y1) * (x1 - x0)
        else:
            y_at = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0)
            area += 0.5 * (y0 + y_at) * (x_max - x0)
            break
    return area


def reference_aupro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = 0.3) -> float:
    """Official MVTec AD AUPRO, one threshold at a time over every distinct score."""
    maps = maps.astype(np.float64)
    normal = ~masks
    regions = regions_of(masks)
    fprs, pros = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        above = maps >= t
        fprs.append((above & normal).sum() / normal.sum())
        pros.append(np.mean([(above[i] & r).sum() / r.sum() for i, r in regions]))
    return area_to(fprs, pros, fpr_limit) / fpr_limit


def reference_clip_aupro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = 0.3) -> float:
    """CLIP-family AUPRO: 200 linspace thresholds, score > t, FPR < limit, FPR min-max rescaled."""
    regions = regions_of(masks)
    normal = ~masks
    fprs, pros = [], []
    for t in np.linspace(float(maps.min()), float(maps.max()), 200).astype(maps.dtype):
        above = maps > t
        fprs.append((above & normal).sum() / normal.sum())
        pros.append(np.mean([(above[i] & r).sum() / r.sum() for i, r in regions]))
    fprs, pros = np.array(fprs), np.array(pros)
    keep = fprs < fpr_limit
    fprs, pros = fprs[keep], pros[keep]
    fprs = (fprs - fprs.min()) / (fprs.max() - fprs.min())
    order = np.argsort(fprs, kind="stable")
    return float(np.trapezoid(pros[order], fprs[order]))


# ---------------------------------------------------------------- data
def random_set(seed: int, n: int = 10, size: int = 24, levels: int | None = None, dtype=np.float32):
    """Good and defective images with blob regions (some at the border), maps correlated with masks."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), dtype=bool)
    for i in range(n // 2, n):
        for _ in range(rng.integers(1, 4)):
            y, x = rng.integers(-2, size - 2, 2)
            h, w = rng.integers(1, 6, 2)
            masks[i, max(y, 0) : y + h, max(x, 0) : x + w] = True
    maps = rng.random(masks.shape) + 0.6 * masks * rng.random(masks.shape)
    if levels is not None:  # coarse values: many ties within and across classes
        maps = np.round(maps * levels) / levels
    maps = maps.astype(dtype)
    labels = masks.reshape(n, -1).any(axis=1).astype(int)
    scores = maps.reshape(n, -1).max(axis=1).astype(np.float64) + rng.normal(0, 0.1, n)
    return labels, scores, masks, maps


# ---------------------------------------------------------------- against scikit-learn and the references
@pytest.mark.parametrize(
    "seed,levels,dtype",
    [(0, None, np.float32), (1, 10, np.float32), (2, None, np.float16), (3, 4, np.float16)],
)
def test_matches_sklearn_and_reference(seed, levels, dtype):
    labels, scores, masks, maps = random_set(seed, levels=levels, dtype=dtype)
    if levels:
        scores = np.round(scores * 3) / 3  # ties between good and defective images
    got = compute_metrics(labels, scores, masks, maps)
    assert tuple(got) == METRIC_KEYS and all(isinstance(v, float) for v in got.values())
    for key, want in sklearn_metrics(labels, scores, masks, maps).items():
        assert got[key] == pytest.approx(want, abs=1e-6), key
    assert got["pixel_aupro"] == pytest.approx(reference_aupro(masks, maps), abs=1e-4)


@pytest.mark.parametrize("fpr_limit", [0.05, 0.3, 1.0])
def test_aupro_fpr_limits(fpr_limit):
    labels, scores, masks, maps = random_set(4, levels=20)
    got = compute_metrics(labels, scores, masks, maps, fpr_limit=fpr_limit)["pixel_aupro"]
    assert got == pytest.approx(reference_aupro(masks, maps, fpr_limit), abs=1e-4)


def test_clip_variant_matches_its_reference():
    labels, scores, masks, maps = random_set(5)
    official = compute_metrics(labels, scores, masks, maps)
    clip = compute_metrics(labels, scores, masks, maps, aupro_variant="clip")
    assert clip["pixel_aupro"] == pytest.approx(reference_clip_aupro(masks, maps), abs=1e-4)
    assert clip["pixel_aupro"] != pytest.approx(official["pixel_aupro"], abs=1e-3)  # not the same number
    assert {k: v for k, v in clip.items() if k != "pixel_aupro"} == {
        k: v for k, v in official.items() if k != "pixel_aupro"
    }


def test_memmap_float16_input(tmp_path):
    labels, scores, masks, maps = random_set(6, dtype=np.float16)
    np.save(tmp_path / "maps.npy", maps)
    np.save(tmp_path / "masks.npy", masks)
    mm_maps = np.load(tmp_path / "maps.npy", mmap_mode="r")
    mm_masks = np.load(tmp_path / "masks.npy", mmap_mode="r")
    assert compute_metrics(labels, scores, mm_masks, mm_maps) == compute_metrics(labels, scores, masks, maps)


# ---------------------------------------------------------------- hand-solved AUPRO
def one_row(mask: list[int], scores: list[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    masks = np.array([[mask]], dtype=bool)  # (1, 1, W)
    maps = np.array([[scores]], dtype=np.float32)
    return np.array([1]), np.array([1.0]), masks, maps


def aupro(masks, maps, **kw) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)  # image level has one class in these cases
        got = compute_metrics(np.ones(len(masks), int), np.ones(len(masks)), masks, maps, **kw)
    return got["pixel_aupro"]


def test_aupro_by_hand_one_region():
    # Region = pixels 0, 1 (scores 0.4, 0.2); normal pixels score 0.3, 0.1.
    # Thresholds 0.4: (FPR 0, PRO 1/2); 0.3: (1/2, 1/2); 0.2: (1/2, 1); 0.1: (1, 1).
    # Up to FPR 0.3 the curve is flat at 1/2 after the jump at 0: area 0.15 -> 0.5. Up to 1: 0.25 + 0.5.
    _, _, masks, maps = one_row([1, 1, 0, 0], [0.4, 0.2, 0.3, 0.1])
    assert aupro(masks, maps) == pytest.approx(0.5, abs=1e-12)
    assert aupro(masks, maps, fpr_limit=1.0) == pytest.approx(0.75, abs=1e-12)


def test_aupro_by_hand_with_a_tie():
    # Region scores 0.4, 0.3; normal 0.3, 0.1. Threshold 0.3 moves FPR and PRO together: points
    # (0, 0), (0, 1/2), (1/2, 1), (1, 1). PRO at FPR 0.3 on the diagonal = 1/2 + 0.3 = 0.8;
    # area = 0.3 * (0.5 + 0.8) / 2 = 0.195 -> 0.65. Up to FPR 1: 0.5 * 0.75 + 0.5 * 1 = 0.875.
    _, _, masks, maps = one_row([1, 1, 0, 0], [0.4, 0.3, 0.3, 0.1])
    assert aupro(masks, maps) == pytest.approx(0.65, abs=1e-12)
    assert aupro(masks, maps, fpr_limit=1.0) == pytest.approx(0.875, abs=1e-12)


def test_aupro_by_hand_regions_in_several_images_and_a_good_image():
    # Image 0: region A = 1 pixel at the left border (0.9), region B = 2 pixels (0.8, 0.1), normals 0.5, 0.
    # Image 1 (good): normals 0.7, 0.2, 0.0, 0.0.  Normal pixels: 0.5, 0, 0.7, 0.2, 0, 0 -> n0 = 6.
    # Thresholds: 0.9 (0, 1/2); 0.8 (0, 3/4); 0.7 (1/6, 3/4); 0.5 (2/6, 3/4) -> FPR 0.3 is between 1/6 and 2/6
    # on a flat part: area = 0 + (0.3 - 0) * 3/4 = 0.225 -> 0.75.
    masks = np.array([[[1, 0, 1, 1, 0, 0]], [[0, 0, 0, 0, 0, 0]]], dtype=bool)  # A and B not touching
    maps = np.array([[[0.9, 0.5, 0.8, 0.1, 0.0, 0.0]], [[0.7, 0.2, 0.0, 0.0, 0.0, 0.0]]], dtype=np.float32)
    assert aupro(masks, maps) == pytest.approx(0.75, abs=1e-12)
    assert aupro(masks, maps) == pytest.approx(reference_aupro(masks, maps), abs=1e-12)


def test_regions_are_eight_connected_and_per_image():
    # Diagonal neighbours form ONE region (8-connectivity): PRO jumps 1/2 at 0.9, 1/2 at 0.6.
    masks = np.zeros((2, 3, 3), dtype=bool)
    masks[0, 0, 0] = masks[0, 1, 1] = True
    maps = np.zeros((2, 3, 3), dtype=np.float32)
    maps[0, 0, 0], maps[0, 1, 1] = 0.9, 0.6
    maps[0, 2, 2] = 0.7  # one normal pixel above 0.6: FPR 1/16 before the second half is found
    # Points (0,0) (0,1/2) (1/16,1/2) (1/16,1) ... area to 0.3 = 1/16 * 1/2 + (0.3 - 1/16) * 1 -> / 0.3.
    want = (1 / 32 + 0.3 - 1 / 16) / 0.3
    assert aupro(masks, maps) == pytest.approx(want, abs=1e-12)
    # A region on the last row of image 0 and one on the first row of image 1 touch in the stacked array
    # but are different regions: PRO is the mean of their fractions, not the pooled fraction.
    masks = np.zeros((2, 2, 2), dtype=bool)
    masks[0, 1, :] = True  # 2 pixels, both found at 0.9
    masks[1, 0, 0] = True  # 1 pixel, found only at 0.1
    maps = np.array([[[0.0, 0.0], [0.9, 0.9]], [[0.1, 0.5], [0.0, 0.0]]], dtype=np.float32)
    # Points (0,0) (0,1/2) (1/5,1/2) (1/5,1) ... area to 0.3 = 0.1 + 0.1 -> 2/3.
    assert aupro(masks, maps) == pytest.approx(2 / 3, abs=1e-12)
    assert aupro(masks, maps) == pytest.approx(reference_aupro(masks, maps), abs=1e-12)


def test_perfect_and_inverted_maps():
    labels, scores, masks, _ = random_set(7)
    perfect = compute_metrics(labels, labels.astype(float), masks, masks.astype(np.float32))
    assert all(v == pytest.approx(1.0) for v in perfect.values())
    inverted = compute_metrics(labels, -labels.astype(float), masks, (~masks).astype(np.float32))
    assert inverted["pixel_auroc"] == pytest.approx(0.0) and inverted["pixel_aupro"] == pytest.approx(0.0)
    constant = compute_metrics(labels, np.zeros(len(labels)), masks, np.zeros(masks.shape, np.float16))
    assert constant["image_auroc"] == pytest.approx(0.5) and constant["pixel_auroc"] == pytest.approx(0.5)


# ---------------------------------------------------------------- undefined cases and errors
def test_all_good_images_give_nan_and_warn():
    labels, scores, masks, maps = random_set(8)
    masks[:] = False
    labels[:] = 0
    with pytest.warns(UndefinedMetricWarning) as record:
        got = compute_metrics(labels, scores, masks, maps)
    assert all(math.isnan(v) for v in got.values())
    text = " ".join(str(w.message) for w in record)
    assert all(key in text for key in METRIC_KEYS)


def test_only_image_level_undefined():
    labels, scores, masks, maps = random_set(9)
    with pytest.warns(UndefinedMetricWarning, match="image_auroc.*no normal images"):
        got = compute_metrics(np.ones_like(labels), scores, masks, maps)
    assert math.isnan(got["image_auroc"]) and math.isnan(got["image_ap"]) and math.isnan(got["image_f1_max"])
    assert not any(math.isnan(got[k]) for k in METRIC_KEYS[3:])


def test_bad_inputs_raise_one_line_errors():
    labels, scores, masks, maps = random_set(10)
    cases = [
        ((labels[:-1], scores, masks, maps), "1-D of equal length"),
        ((labels, scores, masks[:-1], maps), "same shape"),
        ((labels, scores, masks[:, :-1], maps), "same shape"),
        ((labels[:-1], scores[:-1], masks, maps), "image labels but"),
        ((labels * 2, scores, masks, maps), "0 \\(good\\) or 1"),
        ((labels, scores, masks, maps[0]), "\\(N, H, W\\)"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=message) as info:
            compute_metrics(*args)
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="official.*clip"):
        compute_metrics(labels, scores, masks, maps, aupro_variant="mvtec")
    with pytest.raises(ValueError, match="fpr_limit"):
        compute_metrics(labels, scores, masks, maps, fpr_limit=0.0)
    nan_maps = maps.copy()
    nan_maps[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        compute_metrics(labels, scores, masks, nan_maps)
    assert AUPRO_VARIANTS == ("official", "clip")


# ---------------------------------------------------------------- curves
def test_pixel_curves_match_sklearn_points_and_area():
    labels, scores, masks, maps = random_set(11, levels=15)
    curves = pixel_curves(masks, maps)
    assert set(curves) == {"fpr", "tpr", "precision", "recall"}
    fpr, tpr = curves["fpr"], curves["tpr"]
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-9)
    precision, recall, _ = precision_recall_curve(masks.ravel(), maps.ravel())
    sk_points = set(zip(np.round(recall, 12), np.round(precision, 12), strict=True))
    ours = set(zip(np.round(curves["recall"], 12), np.round(curves["precision"], 12), strict=True))
    assert ours <= sk_points
    short = pixel_curves(masks, maps, max_points=10)
    assert all(len(v) <= 10 for v in short.values()) and short["fpr"][-1] == 1.0


def test_image_curves_and_missing_class():
    labels, scores, _, _ = random_set(12)
    curves = image_curves(labels, scores)
    assert np.trapezoid(curves["tpr"], curves["fpr"]) == pytest.approx(roc_auc_score(labels, scores))
    empty = image_curves(np.zeros(4, int), np.arange(4.0))
    assert all(v.size == 0 for v in empty.values())


# ---------------------------------------------------------------- F1-max thresholds
def test_f1_threshold_by_hand():
    # Image scores: good 0.1, 0.6; anomalous 0.5, 0.9. Thresholds (score >= t): 0.9 -> P 1, R 1/2, F1 2/3;
    # 0.5 -> TP 2, FP 1, F1 4/5. Pixels of one row: anomalous 0.8, 0.4; normal 0.7, 0.2, 0.1.
    # t = 0.8: F1 = 2/(1 + 0 + 2) = 2/3; t = 0.4: TP 2, FP 1 -> 4/5.
    labels, scores = np.array([0, 0, 1, 1]), np.array([0.1, 0.6, 0.5, 0.9])
    masks = np.zeros((4, 1, 5), dtype=bool)
    masks[2, 0, :2] = True
    maps = np.zeros((4, 1, 5), dtype=np.float32)
    maps[2, 0] = [0.8, 0.4, 0.7, 0.2, 0.1]
    got = f1_max_thresholds(labels, scores, masks, maps)
    assert got["image_threshold"] == 0.5 and got["image_f1_max"] == pytest.approx(0.8)
    assert got["pixel_threshold"] == pytest.approx(0.4) and got["pixel_f1_max"] == pytest.approx(0.8)


@pytest.mark.parametrize("seed,levels", [(0, None), (1, 10), (4, 3)])
def test_f1_thresholds_reach_the_reported_f1_max(seed, levels):
    labels, scores, masks, maps = random_set(seed, levels=levels)
    got = f1_max_thresholds(labels, scores, masks, maps)
    metrics = compute_metrics(labels, scores, masks, maps)
    assert got["image_f1_max"] == metrics["image_f1_max"] and got["pixel_f1_max"] == metrics["pixel_f1_max"]

    def f1_at(y: np.ndarray, s: np.ndarray, t: float) -> float:  # plain count at "score >= t"
        tp, fp, fn = np.sum(y & (s >= t)), np.sum(~y & (s >= t)), np.sum(y & (s < t))
        return 2 * tp / (2 * tp + fp + fn)

    image_at = f1_at(labels.astype(bool), scores, got["image_threshold"])
    pixel_at = f1_at(masks.ravel(), maps.ravel(), np.float32(got["pixel_threshold"]))
    assert image_at == pytest.approx(metrics["image_f1_max"], abs=1e-12)
    assert pixel_at == pytest.approx(metrics["pixel_f1_max"], abs=1e-12)


def test_f1_thresholds_nan_when_one_class():
    labels, scores, masks, maps = random_set(0)
    good = labels == 0
    with pytest.warns(UndefinedMetricWarning) as caught:
        got = f1_max_thresholds(labels[good], scores[good], masks[good], maps[good])
    said = " ".join(str(w.message) for w in caught)
    assert "image_threshold" in said and "pixel_threshold" in said
    assert all(math.isnan(v) for v in got.values())


@pytest.mark.parametrize("seed,levels,dtype", [(4, None, np.float32), (5, 6, np.float16)])
def test_one_ranking_shared_gives_the_same_values_as_ranking_each_time(seed, levels, dtype):
    """The pixels are ranked once per category (`rank_pixels`) and shared: bit-identical to separate ranks."""
    labels, scores, masks, maps = random_set(seed, levels=levels, dtype=dtype)
    pixels = rank_pixels(masks, maps)
    for variant in ("official", "clip"):
        alone = compute_metrics(labels, scores, masks, maps, aupro_variant=variant)
        assert compute_metrics(labels, scores, masks, maps, aupro_variant=variant, pixels=pixels) == alone
    assert f1_max_thresholds(labels, scores, masks, maps, pixels=pixels) == f1_max_thresholds(
        labels, scores, masks, maps
    )
    shared, alone = pixel_curves(masks, maps, pixels=pixels), pixel_curves(masks, maps)
    assert all(np.array_equal(shared[key], alone[key]) for key in alone)
