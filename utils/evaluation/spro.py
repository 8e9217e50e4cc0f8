"""sPRO, the saturated per-region overlap of MVTec LOCO AD (Bergmann et al., IJCV 2022), and its AUC.

Definition, as the official MVTec LOCO evaluation (`evaluate_experiment.py`, `src/{metrics,image}.py`)
computes it:

- every ground-truth mask file `ground_truth/<type>/<stem>/NNN.png` is one region (not its connected
  components); its pixel value names the defect in `defects_config.json`, which gives a
  `saturation_threshold`: with `relative_saturation` the saturation area is `int(threshold * area)` (the
  official code truncates), otherwise that many pixels, capped at the region's area;
- sPRO(t) = mean over the regions of min(|{p in region : score(p) >= t}| / saturation area, 1);
- the curves are per subset: logical_anomalies and structural_anomalies, each with the good test images
  added. FPR(t) = fraction of the pixels of the subset's images that lie outside every region of their
  image (all pixels of the good images, the normal pixels of the anomalous ones) with score >= t;
- the (FPR, sPRO) curve, one point per distinct score and starting at (0, 0), is integrated with the
  trapezoid rule up to FPR = limit (sPRO interpolated linearly there) and divided by the limit;
- the headline figure is the mean of the logical and the structural AUC, `0.5 * (logical + structural)`.
  The LOCO benchmark reports limit 0.05; 0.3 is reported beside it.

The maps are either the stored ones (eval_size x eval_size: every region is resized to it by nearest
neighbour, absolute saturation thresholds scaled by the ratio of pixel counts) or each image's map at its
ground truth's own size (`metrics_resolution: native`, utils/evaluation/native.py), where the figures equal
the official code's on the `--save_maps tiff` export.

The curve is exact: a region's k-th best pixel adds (min(k/sat, 1) - min((k-1)/sat, 1)) / R to sPRO, so
sPRO is a weighted count of pixels above t, and the official-AUPRO machinery of metrics.py (one sort,
weights summed per distinct score) integrates it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from dataset.images import read_mask_values
from dataset.mvtec_loco import DefectConfig
from model.map_ops import resize_mask
from utils.evaluation.metrics import Ranking, _aupro_official, _rank, _value_dtype

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
        return float(int(config.saturation_threshold * area))
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


def spro_ranking(
    maps: Sequence[np.ndarray], images: Sequence[int], regions: Sequence[Region]
) -> Ranking | None:
    """The subset's pixels ranked once: negatives outside every region of their image, region pixels
    weighted by `spro_weights` / R. None when there are no regions or no negative pixel.

    Args:
        maps: per image, its (H, W) anomaly map (a (N, H, W) stack or a list of differently sized maps);
            each map is read once.
        images: the subset: indices into `maps` (good images and the subset's anomalous ones).
        regions: the subset's regions (each `Region.image` in `images`, each saturation > 0).
    """
    if not regions:
        return None
    by_image: dict[int, list[Region]] = {}
    for region in regions:
        by_image.setdefault(region.image, []).append(region)
    inside = {i: np.logical_or.reduce([r.mask for r in rs]) for i, rs in by_image.items()}
    n_neg = sum(_pixel_count(maps, i) - int(np.count_nonzero(inside.get(i, False))) for i in images)
    if n_neg == 0:
        return None
    neg = None
    parts, weights = [], []
    start = 0
    for index in images:
        image_map = np.asarray(maps[index])
        image_map = image_map.astype(_value_dtype(image_map.dtype), copy=False)
        if neg is None:  # filled in place: the pooled negatives are the only large allocation
            neg = np.empty(n_neg, dtype=image_map.dtype)
        for region in by_image.get(index, []):
            scores = image_map[region.mask]
            parts.append(scores)
            weights.append(spro_weights(scores, region.saturation) / len(regions))
        normal = image_map[~inside[index]] if index in inside else image_map.ravel()
        neg[start : start + normal.size] = normal
        start += normal.size
    return _rank(neg, np.concatenate(parts), np.concatenate(weights))


def _pixel_count(maps: Sequence[np.ndarray], index: int) -> int:
    """Pixels of map `index`: a stack's (H, W) or a `NativeMaps` size (neither makes it), else its shape."""
    sizes = getattr(maps, "sizes", None)
    if sizes is not None:
        height, width = sizes[index]
    elif isinstance(maps, np.ndarray):
        height, width = maps.shape[1:]
    else:
        height, width = np.shape(maps[index])
    return int(height) * int(width)


def auc_spro(
    maps: Sequence[np.ndarray], images: Sequence[int], regions: Sequence[Region], fpr_limit: float
) -> float:
    """Area under the subset's (FPR, sPRO) curve up to `fpr_limit`, divided by it (module docstring).

    Arguments as `spro_ranking`; fpr_limit in (0, 1]. Returns a float in [0, 1]; NaN when there are no
    regions or no negative pixels.
    """
    _check_limit(fpr_limit)
    ranked = spro_ranking(maps, images, regions)
    return math.nan if ranked is None else _aupro_official(ranked, fpr_limit)


def _check_limit(fpr_limit: float) -> None:
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")


def region_masks(
    paths: Iterable[str], image: int, configs: Mapping[int, DefectConfig], size: tuple[int, int] | None
) -> list[Region]:
    """The regions of one image from its mask files, at the map `size` (H, W) (None: the mask's own size).

    A mask's defect is its largest nonzero pixel value; a value missing from `configs` is a ValueError
    naming the file. Resized regions use nearest neighbour (`resize_mask`, as the stored masks) and
    absolute saturation thresholds are scaled by (map pixels / mask pixels).
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
        small = full if size is None or tuple(size) == full.shape else resize_mask(full, tuple(size))
        if not small.any():  # a region thinner than a map pixel: keep its nearest map pixel
            row, col = np.argwhere(full)[0] * np.array(size) // np.array(full.shape)
            small[row, col] = True
        area = float(small.sum())
        if config.relative_saturation:
            sat = saturation_area(config, area)
        else:
            sat = min(config.saturation_threshold * small.size / full.size, area)
        regions.append(Region(image, small, max(sat, 1e-12)))
    return regions


def loco_spro_metrics(
    configs: Mapping[int, DefectConfig],
    defect_types: Sequence[str],
    regions_of: Sequence[Sequence[str]],
    maps: Sequence[np.ndarray],
    native: bool = False,
) -> dict[str, float]:
    """sPRO AUCs of one LOCO category: per subset and their mean, at each of SPRO_FPR_LIMITS.

    Args:
        configs: `read_defects_config` of the category.
        defect_types: (N,) "good", "logical_anomalies" or "structural_anomalies" per image.
        regions_of: (N,) the region mask files of each image (`Record.regions`; empty for good images).
        maps: (N, S, S) stored anomaly maps, or (native) per image its map at its ground truth's size.
        native: regions at their own resolution (the maps must be at it) instead of the maps' S x S.
    Returns:
        {"logical_pixel_spro_<limit>", "structural_pixel_spro_<limit>", "pixel_spro_<limit>" (their mean,
        the official headline figure)} with limit written as in SPRO_FPR_LIMITS ("0.05", "0.3").
    """
    size = None if native else tuple(np.shape(maps)[1:])
    good = [i for i, kind in enumerate(defect_types) if kind == "good"]
    out: dict[str, float] = {}
    for kind in LOCO_TYPES:
        members = [i for i, k in enumerate(defect_types) if k == kind]
        regions = [r for i in members for r in region_masks(regions_of[i], i, configs, size)]
        ranked = spro_ranking(maps, good + members, regions)
        for limit in SPRO_FPR_LIMITS:
            value = math.nan if ranked is None else _aupro_official(ranked, limit)
            out[f"{kind.split('_')[0]}_pixel_spro_{limit:g}"] = value
    for limit in SPRO_FPR_LIMITS:
        out[f"pixel_spro_{limit:g}"] = 0.5 * (
            out[f"logical_pixel_spro_{limit:g}"] + out[f"structural_pixel_spro_{limit:g}"]
        )
    return out
