"""sPRO, the saturated per-region overlap of MVTec LOCO AD (Bergmann et al., IJCV 2022), and its AUC.

Definition, as the official MVTec LOCO evaluation computes it:

- every ground-truth mask file `ground_truth/<type>/<stem>/NNN.png` is one region (not its connected
  components); its pixel value names the defect in `defects_config.json`, which gives a
  `saturation_threshold`: with `relative_saturation` the saturation area is that fraction of the region's
  area, otherwise that many pixels, capped at the region's area;
- sPRO(t) = mean over regions of min(|{p in region : score(p) >= t}| / saturation area, 1);
- FPR(t) = fraction of the pixels of the defect-free test images with score >= t;
- the (FPR, sPRO) curve, one point per distinct score and starting at (0, 0), is integrated with the
  trapezoid rule up to FPR = limit (sPRO interpolated linearly there) and divided by the limit. The LOCO
  benchmark reports limit 0.05; 0.3 is reported beside it.

Here the curve is computed at the resolution of the stored anomaly maps (eval_size x eval_size): every
region is resized to it (nearest neighbour) and absolute saturation thresholds are scaled by the ratio of
pixel counts, so an absolute threshold covers the same fraction of the image as at full resolution.

The curve is exact: a region's k-th best pixel adds (min(k/sat, 1) - min((k-1)/sat, 1)) / R to sPRO, so
sPRO is a weighted count of pixels above t, and the official-AUPRO machinery of metrics.py (one sort,
weights summed per distinct score) integrates it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from dataset.images import read_mask_values
from dataset.mvtec_loco import DefectConfig, read_defects_config
from utils.evaluation.metrics import _aupro_official, _rank

SPRO_FPR_LIMITS: tuple[float, ...] = (0.05, 0.3)
LOCO_TYPES: tuple[str, ...] = ("logical_anomalies", "structural_anomalies")


@dataclass(frozen=True)
class Region:
    """One defect region on the anomaly map of image `image`: its (H, W) bool `mask` at map resolution and
    the number of its pixels that earn full credit (`saturation`, > 0)."""

    image: int
    mask: np.ndarray
    saturation: float


def saturation_area(config: DefectConfig, area: float) -> float:
    """Pixels of a region of `area` pixels that saturate its overlap (official definition, see above)."""
    if config.relative_saturation:
        return config.saturation_threshold * area
    return min(config.saturation_threshold, area)


def spro_weights(scores: np.ndarray, saturation: float) -> np.ndarray:
    """(n,) float64: what each pixel of one region adds to its saturated overlap once it is above t.

    scores: (n,) the region's pixel scores. The k-th highest pixel adds min(k/s, 1) - min((k-1)/s, 1) for
    saturation s; ties may be ordered either way (their sum is what any threshold sees).
    """
    order = np.argsort(-scores, kind="stable")
    k = np.arange(1, scores.size + 1, dtype=np.float64)
    gain = np.minimum(k / saturation, 1.0) - np.minimum((k - 1) / saturation, 1.0)
    weights = np.empty_like(gain)
    weights[order] = gain
    return weights


def auc_spro(good_maps: np.ndarray, maps: np.ndarray, regions: Sequence[Region], fpr_limit: float) -> float:
    """Area under the (FPR, sPRO) curve up to `fpr_limit`, divided by it (module docstring).

    Args:
        good_maps: (G, H, W) anomaly maps of the defect-free test images (the FPR's pixels).
        maps: (N, H, W) anomaly maps that `Region.image` indexes.
        regions: the regions to average over (at least one; each saturation > 0).
        fpr_limit: in (0, 1].
    Returns:
        A float in [0, 1]; NaN when there are no regions or no defect-free pixels.
    """
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    if not regions or good_maps.size == 0:
        return float("nan")
    parts = [np.asarray(maps[r.image], dtype=np.float64)[r.mask] for r in regions]
    weights = [spro_weights(p, r.saturation) / len(regions) for p, r in zip(parts, regions, strict=True)]
    ranked = _rank(
        np.asarray(good_maps, dtype=np.float64).ravel().copy(), np.concatenate(parts), np.concatenate(weights)
    )
    return _aupro_official(ranked, fpr_limit)


def region_masks(
    paths: Iterable[str], image: int, configs: Mapping[int, DefectConfig], size: tuple[int, int]
) -> list[Region]:
    """The regions of one image from its mask files, resized to the map `size` (H, W) by nearest neighbour.

    A mask's defect is its largest nonzero pixel value; a value missing from `configs` is a ValueError
    naming the file. Absolute saturation thresholds are scaled by (map pixels / mask pixels).
    """
    regions = []
    for path in paths:
        values = read_mask_values(path)
        value = int(values.max(initial=0))
        if value == 0:
            continue  # an empty region file carries no defect
        if value not in configs:
            raise ValueError(f"{path}: pixel value {value} is not in defects_config.json ({sorted(configs)})")
        config = configs[value]
        full = values > 0
        small = cv2.resize(full.view(np.uint8), (size[1], size[0]), interpolation=cv2.INTER_NEAREST) > 0
        if not small.any():  # a region thinner than a map pixel: keep its nearest map pixel
            row, col = np.argwhere(full)[0] * np.array(size) // np.array(full.shape)
            small[row, col] = True
        scale = small.size / full.size
        sat = (
            saturation_area(config, float(small.sum()))
            if config.relative_saturation
            else min(config.saturation_threshold * scale, float(small.sum()))
        )
        regions.append(Region(image, small, max(sat, 1e-12)))
    return regions


def loco_spro_metrics(
    category_dir: Path,
    defect_types: Sequence[str],
    regions_of: Sequence[Sequence[str]],
    maps: np.ndarray,
) -> dict[str, float]:
    """sPRO AUCs of one LOCO category: logical, structural and both, at each of SPRO_FPR_LIMITS.

    Args:
        category_dir: the category folder (holds defects_config.json).
        defect_types: (N,) "good", "logical_anomalies" or "structural_anomalies" per image.
        regions_of: (N,) the region mask files of each image (`Record.regions`; empty for good images).
        maps: (N, S, S) stored anomaly maps in the same order.
    Returns:
        {"pixel_spro_<limit>" (all regions), "logical_pixel_spro_<limit>", "structural_pixel_spro_<limit>"}
        with limit written as in SPRO_FPR_LIMITS ("0.05", "0.3").
    """
    configs = read_defects_config(category_dir)
    size = maps.shape[1:]
    good = np.asarray([t == "good" for t in defect_types])
    good_maps = np.asarray(maps)[good]
    by_type: dict[str, list[Region]] = {t: [] for t in LOCO_TYPES}
    for index, (kind, paths) in enumerate(zip(defect_types, regions_of, strict=True)):
        if kind in by_type:
            by_type[kind] += region_masks(paths, index, configs, size)
    groups = {"": [r for rs in by_type.values() for r in rs]}
    groups.update({f"{kind.split('_')[0]}_": rs for kind, rs in by_type.items()})
    return {
        f"{prefix}pixel_spro_{limit:g}": auc_spro(good_maps, maps, regions, limit)
        for prefix, regions in groups.items()
        for limit in SPRO_FPR_LIMITS
    }
