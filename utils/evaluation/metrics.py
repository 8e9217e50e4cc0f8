"""Image- and pixel-level anomaly detection metrics (definitions: docs/metrics.md).

Pure functions: no printing, no file I/O. One pass splits the pooled pixels into normal and anomalous
ones; the normal scores are sorted once (float32 in place, no index arrays) and the few anomalous pixels
are placed among them with ``searchsorted`` (`rank_pixels`: done once per category, its `Ranking` shared by
the metrics, the F1 thresholds and the curves). Every metric is then a sum over the K distinct anomalous
scores u_1 > u_2 > ... > u_K (K <= number of anomalous pixels), because TP, recall and PRO change only
there:

    c_k     number of anomalous samples with score == u_k,  TP_k = c_1 + ... + c_k  (score >= u_k)
    FP_k    number of normal samples with score >= u_k,     FPgt_k the same with score > u_k
    AUROC   = sum_k c_k * (n0 - FP_k + (FP_k - FPgt_k) / 2) / (n0 * n1)   (Mann-Whitney U, ties count 1/2;
              equal to the trapezoid under the ROC curve with one point per distinct score)
    AP      = sum_k (c_k / n1) * TP_k / (TP_k + FP_k)      (scikit-learn: sum (R_n - R_{n-1}) P_n)
    F1-max  = max_k 2 TP_k / (TP_k + FP_k + n1)            (F1 at lower thresholds with equal TP is smaller)

These agree with scikit-learn's roc_auc_score, average_precision_score and the maximum of 2PR/(P+R) over
precision_recall_curve to floating-point rounding.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from utils.config.choices import AUPRO_VARIANTS

METRIC_KEYS = (
    "image_auroc",
    "image_ap",
    "image_f1_max",
    "pixel_auroc",
    "pixel_ap",
    "pixel_f1_max",
    "pixel_aupro",
)
CLIP_AUPRO_THRESHOLDS = 200  # evenly spaced thresholds of the CLIP-family AUPRO


class UndefinedMetricWarning(UserWarning):
    """A metric cannot be computed on these labels (e.g. only one class) and is reported as NaN."""


@dataclass
class Ranking:
    """Two-class scores reduced to what every metric needs (see the module docstring).

    neg_sorted: (n0,) normal scores, ascending.  values: (K,) distinct positive scores, descending.
    counts, fp_ge, fp_gt: (K,) int64.  pro_weights: (K,) float64 summed PRO weight per distinct score
    (1 / (region size * number of regions) per anomalous pixel), or None when there are no regions.
    """

    neg_sorted: np.ndarray
    values: np.ndarray
    counts: np.ndarray
    fp_ge: np.ndarray
    fp_gt: np.ndarray
    pro_weights: np.ndarray | None

    @property
    def n_neg(self) -> int:
        return int(self.neg_sorted.size)

    @property
    def n_pos(self) -> int:
        return int(self.counts.sum())

    @property
    def tp(self) -> np.ndarray:
        """(K,) int64 positives with score >= values[k]."""
        return np.cumsum(self.counts)


def _rank(neg: np.ndarray, pos: np.ndarray, pos_weights: np.ndarray | None = None) -> Ranking:
    """Sort ``neg`` in place and tabulate the distinct values of ``pos``.

    Args:
        neg: (n0,) normal scores; owned by the caller's temporary, sorted in place.
        pos: (n1,) anomalous scores.  pos_weights: (n1,) float64 PRO weight per anomalous pixel, or None.
    """
    neg.sort()
    if (neg.size and np.isnan(neg[-1])) or np.isnan(pos).any():  # NaN sorts last
        raise ValueError("scores contain NaN: fix the anomaly maps / image scores before computing metrics")
    order = np.argsort(pos, kind="stable")
    pos_sorted = pos[order]
    first = np.ones(pos_sorted.size, dtype=bool)  # first occurrence of each distinct value
    first[1:] = pos_sorted[1:] != pos_sorted[:-1]
    starts = np.flatnonzero(first)
    values = pos_sorted[starts]
    counts = np.diff(np.append(starts, pos_sorted.size)).astype(np.int64)
    weights = None
    if pos_weights is not None and pos.size:
        weights = np.add.reduceat(pos_weights[order], starts)[::-1].copy()
    fp_ge = neg.size - np.searchsorted(neg, values, side="left").astype(np.int64)
    fp_gt = neg.size - np.searchsorted(neg, values, side="right").astype(np.int64)
    return Ranking(
        neg, values[::-1].copy(), counts[::-1].copy(), fp_ge[::-1].copy(), fp_gt[::-1].copy(), weights
    )


def _auroc(r: Ranking) -> float:
    below = r.n_neg - r.fp_ge + 0.5 * (r.fp_ge - r.fp_gt)  # normals under each value, ties count half
    return float(np.dot(r.counts.astype(np.float64), below) / (float(r.n_neg) * r.n_pos))


def _ap(r: Ranking) -> float:
    tp = r.tp.astype(np.float64)
    return float(np.sum(r.counts / r.n_pos * tp / (tp + r.fp_ge)))


def _f1_curve(r: Ranking) -> np.ndarray:
    """(K,) F1 when "score >= values[k]" is called anomalous, k over the distinct anomalous scores."""
    tp = r.tp.astype(np.float64)
    return 2.0 * tp / (tp + r.fp_ge + r.n_pos)


def _f1_max(r: Ranking) -> float:
    return float(np.max(_f1_curve(r)))


def _f1_argmax(r: Ranking) -> tuple[float, float]:
    """(threshold, F1-max): the score t at which "score >= t" reaches F1-max (the highest such t on ties)."""
    curve = _f1_curve(r)
    best = int(np.argmax(curve))  # values are descending: the first maximum is the highest threshold
    return float(r.values[best]), float(curve[best])


def _area_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoid area under (x, y) from x[0] = 0 to x_max, y interpolated linearly at x_max.

    x: (M,) non-decreasing with x[0] = 0 (vertical steps, repeated x, are allowed); y: (M,).
    """
    end = int(np.searchsorted(x, x_max, side="right"))  # first point beyond x_max
    area = float(np.trapezoid(y[:end], x[:end]))
    if end < x.size:  # x[end - 1] <= x_max < x[end]
        x0, x1, y0, y1 = x[end - 1], x[end], y[end - 1], y[end]
        y_at = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0)
        area += 0.5 * (y0 + y_at) * (x_max - x0)
    return area


def _pro_curve(r: Ranking) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, PRO) points of the official curve, (0, 0) first, thresholds descending.

    Between distinct anomalous scores PRO is flat, so the points at normal-only scores collapse onto two per
    anomalous score u_k: (FPgt_k / n0, PRO before u_k) and (FP_k / n0, PRO at u_k); the final (1, 1) closes
    the flat tail below the smallest anomalous score. Collinear points do not change the trapezoid area.
    """
    assert r.pro_weights is not None
    pro_ge = np.cumsum(r.pro_weights)
    pro_gt = np.concatenate(([0.0], pro_ge[:-1]))
    fpr = np.empty(2 * r.values.size + 2)
    pro = np.empty_like(fpr)
    fpr[0], pro[0] = 0.0, 0.0
    fpr[1:-1:2], pro[1:-1:2] = r.fp_gt / r.n_neg, pro_gt
    fpr[2:-1:2], pro[2:-1:2] = r.fp_ge / r.n_neg, pro_ge
    fpr[-1], pro[-1] = 1.0, pro_ge[-1]
    return fpr, pro


def _aupro_official(r: Ranking, fpr_limit: float) -> float:
    fpr, pro = _pro_curve(r)
    return float(_area_to(fpr, pro, fpr_limit) / fpr_limit)


def _aupro_clip(r: Ranking, fpr_limit: float) -> float:
    assert r.pro_weights is not None
    neg = r.neg_sorted
    lo = min(neg[0], r.values[-1]) if neg.size else r.values[-1]
    hi = max(neg[-1], r.values[0]) if neg.size else r.values[0]
    # Cast to the score dtype so "score > t" compares like-for-like.
    thresholds = np.linspace(float(lo), float(hi), CLIP_AUPRO_THRESHOLDS).astype(neg.dtype)
    fpr = (neg.size - np.searchsorted(neg, thresholds, side="right")) / neg.size  # normal score > t
    # PRO(score > t) = total weight of the distinct values above t (values are descending).
    n_above = np.searchsorted(-r.values, -thresholds, side="left")  # count of values > t
    pro = np.concatenate(([0.0], np.cumsum(r.pro_weights)))[n_above]
    keep = fpr < fpr_limit
    if np.count_nonzero(keep) < 2 or fpr[keep].max() == fpr[keep].min():
        _warn_undefined(
            ["pixel_aupro"], f"fewer than two distinct FPR values below {fpr_limit} (clip variant)"
        )
        return float("nan")
    fpr, pro = fpr[keep], pro[keep]
    fpr = (fpr - fpr.min()) / (fpr.max() - fpr.min())
    order = np.argsort(fpr, kind="stable")
    return float(np.trapezoid(pro[order], fpr[order]))


def _warn_undefined(names: list[str], why: str) -> None:
    warnings.warn(
        f"{', '.join(names)} undefined, reported as NaN: {why}", UndefinedMetricWarning, stacklevel=4
    )


def _value_dtype(dtype: np.dtype) -> type:
    """float16 and float32 maps are handled in float32 (exact for both), anything else in float64."""
    return np.float32 if dtype in (np.float16, np.float32) else np.float64


def _split_pixels(
    gt_masks: Sequence[np.ndarray], anomaly_maps: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pool the pixels: normal scores, anomalous scores and each anomalous pixel's PRO weight.

    Regions are labelled per image with 8-connectivity (never across images). Works image by image, so
    memmaps, float16 stacks and lazily resized maps are never held whole; the outputs are the only large
    allocations. Images may differ in size (each map matches its own mask).

    Returns:
        neg: (n0,) float32/float64, pos: (n1,) same dtype, weights: (n1,) float64 = 1 / (size * R).
    """
    if isinstance(gt_masks, np.ndarray):  # a (N, H, W) stack (or memmap): counted in one call
        n_pos, n_all = int(np.count_nonzero(gt_masks)), int(gt_masks.size)
    else:
        n_pos = sum(int(np.count_nonzero(m)) for m in gt_masks)
        n_all = sum(int(np.size(m)) for m in gt_masks)
    dtype = np.float32
    neg = pos = None
    region = np.empty(n_pos, dtype=np.int32)  # global region index of each anomalous pixel
    sizes: list[np.ndarray] = []
    n_regions = i_neg = i_pos = 0
    for index in range(len(gt_masks)):
        mask = np.asarray(gt_masks[index]).astype(bool, copy=False)
        image_map = np.asarray(anomaly_maps[index])
        if image_map.shape != mask.shape:
            raise ValueError(f"image {index}: anomaly map {image_map.shape} but mask {mask.shape}")
        if neg is None:  # the first map decides the dtype (float16/32 in float32, others float64)
            dtype = _value_dtype(image_map.dtype)
            neg, pos = np.empty(n_all - n_pos, dtype=dtype), np.empty(n_pos, dtype=dtype)
        normal = image_map[~mask]
        neg[i_neg : i_neg + normal.size] = normal
        i_neg += normal.size
        if n_pos and mask.any():
            m = np.ascontiguousarray(mask)
            count, labels, stats, _ = cv2.connectedComponentsWithStats(m.view(np.uint8), connectivity=8)
            k = int(stats[1:, cv2.CC_STAT_AREA].sum())
            pos[i_pos : i_pos + k] = image_map[m]
            region[i_pos : i_pos + k] = labels[m] - 1 + n_regions
            sizes.append(stats[1:, cv2.CC_STAT_AREA].astype(np.float64))
            n_regions += count - 1
            i_pos += k
    if neg is None:
        neg, pos = np.empty(0, dtype=dtype), np.empty(0, dtype=dtype)
    all_sizes = np.concatenate(sizes) if sizes else np.zeros(0)
    weights = 1.0 / (all_sizes[region] * max(n_regions, 1))
    return neg, pos, weights


def rank_pixels(gt_masks: np.ndarray, anomaly_maps: np.ndarray) -> Ranking:
    """Every pixel of a category pooled and ranked once: what the pixel metrics, thresholds and curves read.

    Pass it as ``pixels=`` to `compute_metrics`, `f1_max_thresholds` and `pixel_curves` (same masks and
    maps) so that a category's pixels are pooled and sorted once, not once per consumer.

    Args:
        gt_masks: (N, H, W) bool; anomaly_maps: (N, H, W) float16/float32 (numpy arrays or memmaps).
    """
    _check_pixels(gt_masks, anomaly_maps)
    return _rank(*_split_pixels(gt_masks, anomaly_maps))


def _check_inputs(
    image_labels: np.ndarray, image_scores: np.ndarray, gt_masks: np.ndarray, anomaly_maps: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    labels, scores = np.asarray(image_labels), np.asarray(image_scores)
    if labels.ndim != 1 or scores.ndim != 1 or labels.shape != scores.shape:
        raise ValueError(
            f"image_labels and image_scores must be 1-D of equal length, got {labels.shape}, {scores.shape}"
        )
    _check_pixels(gt_masks, anomaly_maps)
    if len(anomaly_maps) != labels.size:
        raise ValueError(
            f"{labels.size} image labels but {len(anomaly_maps)} anomaly maps: pass one per image"
        )
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(
            f"image_labels must be 0 (good) or 1 (anomalous), got values {np.unique(labels)[:5]}"
        )
    return labels.astype(bool), scores


def _check_pixels(gt_masks: Sequence[np.ndarray], anomaly_maps: Sequence[np.ndarray]) -> None:
    """A (N, H, W) stack of each, of one shape, or two sequences of N per-image arrays (native sizes)."""
    if isinstance(gt_masks, (list, tuple)) or not isinstance(anomaly_maps, np.ndarray):
        if len(gt_masks) != len(anomaly_maps):
            raise ValueError(
                f"{len(gt_masks)} masks but {len(anomaly_maps)} anomaly maps: pass one per image"
            )
        return
    if getattr(anomaly_maps, "ndim", 0) != 3 or getattr(gt_masks, "shape", None) != anomaly_maps.shape:
        raise ValueError(
            f"gt_masks and anomaly_maps must both be (N, H, W) of the same shape, got "
            f"{getattr(gt_masks, 'shape', None)} and {getattr(anomaly_maps, 'shape', None)}"
        )


def _image_ranked(labels: np.ndarray, scores: np.ndarray) -> Ranking:
    dtype = _value_dtype(scores.dtype)
    return _rank(scores[~labels].astype(dtype), scores[labels].astype(dtype))


def _level_metrics(r: Ranking, names: list[str], what: str) -> dict[str, float] | None:
    """AUROC, AP, F1-max under ``names``; None (after one warning naming them all) if a class is missing."""
    if r.n_neg == 0 or r.n_pos == 0:
        missing = "normal" if r.n_neg == 0 else "anomalous"
        _warn_undefined(names, f"no {missing} {what} (only one class)")
        return None
    return dict(zip(names[:3], (_auroc(r), _ap(r), _f1_max(r)), strict=True))


def compute_metrics(
    image_labels: np.ndarray,
    image_scores: np.ndarray,
    gt_masks: np.ndarray,
    anomaly_maps: np.ndarray,
    fpr_limit: float = 0.3,
    aupro_variant: str = "official",
    pixels: Ranking | None = None,
) -> dict[str, float]:
    """The seven metrics of METRIC_KEYS for one category (pixels of all its images pooled).

    Image level: AUROC, AP (scikit-learn definitions) and F1-max = max over thresholds of 2PR/(P+R) on
    per-image scores. Pixel level: the same over all pixels pooled, plus AUPRO:

    - ``"official"`` (MVTec AD): regions are the 8-connected components of each image's mask; FPR(t) =
      fraction of all normal pixels (good images included) with score >= t; PRO(t) = mean over all regions
      of the fraction of the region's pixels with score >= t; one point per distinct score, curve from
      (0, 0); trapezoid from FPR 0 to ``fpr_limit`` with PRO interpolated linearly at ``fpr_limit``,
      divided by ``fpr_limit``.
    - ``"clip"`` (APRIL-GAN / AnomalyCLIP / MuSc code): 200 evenly spaced thresholds t between the global
      min and max score, a pixel counts when score > t; keep the points with FPR < ``fpr_limit``, rescale
      their FPRs min-max to [0, 1], trapezoid. Its numbers are NOT comparable with the official AUPRO
      (typically higher: the rescaling stretches the low-FPR part over the whole axis).

    A metric that is undefined on these labels (only one class at that level: no anomalous or no normal
    images/pixels) is NaN, with an ``UndefinedMetricWarning`` naming it; it is never replaced by 0.5.

    Args:
        image_labels: (N,) 0 = good, 1 = anomalous (bool or int).
        image_scores: (N,) real image anomaly scores, higher = more anomalous.
        gt_masks: (N, H, W) bool (nonzero = anomalous pixel); numpy arrays or memmaps.
        anomaly_maps: (N, H, W) float16 or float32 (other real dtypes are handled in float64); float16 is
            widened block by block, never as a whole stack.
        fpr_limit: upper FPR integration limit of AUPRO, in (0, 1].
        aupro_variant: one of AUPRO_VARIANTS.
        pixels: `rank_pixels(gt_masks, anomaly_maps)` when already computed (None: ranked here).
    Returns:
        {key: float} for exactly the keys of METRIC_KEYS.
    Raises:
        ValueError: mismatched shapes or lengths, labels other than 0/1, NaN scores, bad fpr_limit or
            unknown aupro_variant.
    """
    if aupro_variant not in AUPRO_VARIANTS:
        raise ValueError(f"aupro_variant must be one of {AUPRO_VARIANTS}, got {aupro_variant!r}")
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    labels, scores = _check_inputs(image_labels, image_scores, gt_masks, anomaly_maps)

    out: dict[str, float] = dict.fromkeys(METRIC_KEYS, float("nan"))
    out.update(_level_metrics(_image_ranked(labels, scores), list(METRIC_KEYS[:3]), "images") or {})
    pixels = pixels if pixels is not None else rank_pixels(gt_masks, anomaly_maps)
    pixel_out = _level_metrics(pixels, list(METRIC_KEYS[3:]), "pixels")
    if pixel_out is not None:
        out.update(pixel_out)
        if aupro_variant == "official":
            out["pixel_aupro"] = _aupro_official(pixels, fpr_limit)
        else:
            out["pixel_aupro"] = _aupro_clip(pixels, fpr_limit)
    return {key: out[key] for key in METRIC_KEYS}


def image_metrics(labels: np.ndarray, scores: np.ndarray, prefix: str = "image") -> dict[str, float]:
    """AUROC, AP and F1-max of (N,) 0/1 `labels` and (N,) `scores`, the definitions of `compute_metrics`,
    as {"<prefix>_auroc", "<prefix>_ap", "<prefix>_f1_max"}; NaN (with a warning) when a class is missing."""
    names = [f"{prefix}_auroc", f"{prefix}_ap", f"{prefix}_f1_max"]
    ranked = _image_ranked(np.asarray(labels).astype(bool), np.asarray(scores))
    return _level_metrics(ranked, names, "images") or dict.fromkeys(names, float("nan"))


def _curves(r: Ranking, max_points: int) -> dict[str, np.ndarray]:
    """ROC and PR points at the distinct positive scores, thresholds descending, subsampled for plotting."""
    if r.n_neg == 0 or r.n_pos == 0:
        return {key: np.zeros(0) for key in ("fpr", "tpr", "precision", "recall")}
    tp = r.tp
    tp_before = tp - r.counts
    # ROC: (0,0), then per value the corner before its ties and after them, then (1,1).
    fpr = np.concatenate(([0], np.column_stack((r.fp_gt, r.fp_ge)).ravel(), [r.n_neg])) / r.n_neg
    tpr = np.concatenate(([0], np.column_stack((tp_before, tp)).ravel(), [r.n_pos])) / r.n_pos
    # PR: (recall 0, precision 1) as scikit-learn's last point, then one point per distinct positive score.
    recall = np.concatenate(([0.0], tp / r.n_pos))
    precision = np.concatenate(([1.0], tp / (tp + r.fp_ge)))
    return {
        "fpr": _subsample(fpr, max_points),
        "tpr": _subsample(tpr, max_points),
        "precision": _subsample(precision, max_points),
        "recall": _subsample(recall, max_points),
    }


def _subsample(curve: np.ndarray, max_points: int) -> np.ndarray:
    if curve.size <= max_points:
        return curve
    return curve[np.unique(np.linspace(0, curve.size - 1, max_points).round().astype(np.int64))]


def pixel_curves(
    gt_masks: np.ndarray, anomaly_maps: np.ndarray, max_points: int = 2000, pixels: Ranking | None = None
) -> dict[str, np.ndarray]:
    """Pooled pixel ROC and PR curves for plotting.

    ROC: (FPR, TPR) = (normal, anomalous) fraction with score >= t, from (0, 0) to (1, 1) with thresholds
    descending; ties make diagonal segments (the curve whose trapezoid area is the AUROC). PR: (recall,
    precision) at each distinct anomalous score t (TP / (TP + FP) with score >= t), preceded by (0, 1);
    other thresholds only lower precision at equal recall. Long curves keep ``max_points`` evenly spaced
    points, first and last included. Empty arrays when a class is missing.

    Args:
        gt_masks: (N, H, W) bool; anomaly_maps: (N, H, W) float16/float32.
        pixels: `rank_pixels(gt_masks, anomaly_maps)` when already computed (None: ranked here).
    Returns:
        {"fpr", "tpr", "precision", "recall"}: 1-D float64 arrays; fpr/tpr and precision/recall pair up.
    """
    _check_pixels(gt_masks, anomaly_maps)
    if max_points < 2:
        raise ValueError(f"max_points must be at least 2, got {max_points}")
    return _curves(pixels if pixels is not None else rank_pixels(gt_masks, anomaly_maps), max_points)


def image_curves(labels: np.ndarray, scores: np.ndarray, max_points: int = 2000) -> dict[str, np.ndarray]:
    """Image-level ROC and PR curves for plotting; the same definitions as ``pixel_curves``.

    Args:
        labels: (N,) 0 = good, 1 = anomalous; scores: (N,) image scores.
    Returns:
        {"fpr", "tpr", "precision", "recall"}: 1-D float64 arrays (empty when a class is missing).
    """
    labels, scores = np.asarray(labels), np.asarray(scores)
    if labels.ndim != 1 or labels.shape != scores.shape:
        raise ValueError(
            f"labels and scores must be 1-D of equal length, got {labels.shape} and {scores.shape}"
        )
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 (good) or 1 (anomalous)")
    return _curves(_image_ranked(labels.astype(bool), scores), max_points)


def f1_max_thresholds(
    image_labels: np.ndarray,
    image_scores: np.ndarray,
    gt_masks: np.ndarray,
    anomaly_maps: np.ndarray,
    pixels: Ranking | None = None,
) -> dict[str, float]:
    """The thresholds at which the image and pixel F1-max of `compute_metrics` are reached.

    Calling "score >= threshold" anomalous gives exactly the F1-max that `compute_metrics` reports (same
    ranking, same F1 curve); the threshold is one of the anomalous scores, the highest one on ties. A level
    with one class only gives NaN for both its numbers (with an ``UndefinedMetricWarning``).

    Args:
        image_labels: (N,) 0 = good, 1 = anomalous.  image_scores: (N,) real.
        gt_masks: (N, H, W) bool.  anomaly_maps: (N, H, W) float16/float32.
        pixels: `rank_pixels(gt_masks, anomaly_maps)` when already computed (None: ranked here).
    Returns:
        {"image_threshold", "image_f1_max", "pixel_threshold", "pixel_f1_max"}: floats.
    """
    labels, scores = _check_inputs(image_labels, image_scores, gt_masks, anomaly_maps)
    pixels = pixels if pixels is not None else rank_pixels(gt_masks, anomaly_maps)
    out: dict[str, float] = {}
    for level, ranked in (("image", _image_ranked(labels, scores)), ("pixel", pixels)):
        names = [f"{level}_threshold", f"{level}_f1_max"]
        if ranked.n_neg == 0 or ranked.n_pos == 0:
            _warn_undefined(names, f"no {'normal' if ranked.n_neg == 0 else 'anomalous'} {level}s")
            out.update(dict.fromkeys(names, float("nan")))
        else:
            out.update(zip(names, _f1_argmax(ranked), strict=True))
    return out
