"""Fusing a calibrated visual map into a text result: the last step of every visual mode (no model calls).

`fuse_visual` is shared by `model.detector.AnomalyDetector` (few-shot) and `model.mutual.MutualScorer`
(zero-shot mutual): each (h, w) patch map gets the text map's object prior, is resized and smoothed like
the text map, and the two are mixed with ``visual_weight``; the image score mixes the text score with a
reading of the patch map (`patch_reading`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from model.map_ops import gaussian_smooth, resize_map
from model.scoring import image_score
from model.settings import ScoringSettings
from model.text_maps import AnomalyResult
from model.visual import TOP_PATCH_FRACTION, PatchReading


def patch_reading(patch_map: Tensor, reading: str) -> Tensor:
    """Image scores read from patch maps: (B, h, w) -> (B,) float32.

    "patch_max" (MuSc): the largest patch; "patch_top1" (AnomalyDINO): the mean of the
    ``max(1, round(0.01 * h * w))`` largest patches (13 of 1296 at 36 x 36, 3 of 256 at 16 x 16).
    """
    flat = patch_map.float().flatten(1)
    if reading == PatchReading.PATCH_MAX:
        return flat.amax(dim=1)
    if reading == PatchReading.PATCH_TOP1:
        keep = max(1, round(TOP_PATCH_FRACTION * flat.shape[1]))
        return flat.topk(keep, dim=1).values.mean(dim=1)
    raise ValueError(f"no patch reading {reading!r}: use patch_max or patch_top1")


def fuse(text_map: Tensor, visual_map: Tensor, weight: float) -> Tensor:
    """Final map ``(1 - weight) * text + weight * visual``; both in [0, 1], same shape; weight in [0, 1]."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"visual_weight must be in [0, 1], got {weight}")
    if text_map.shape != visual_map.shape:
        raise ValueError(f"text map {tuple(text_map.shape)} and visual map {tuple(visual_map.shape)} differ")
    return (1.0 - weight) * text_map.float() + weight * visual_map.float()


def fuse_visual(results: list[AnomalyResult], visual: Tensor, settings: ScoringSettings) -> None:
    """Fuse each result's text map with its calibrated visual map, in place, and rescore the image.

    Args:
        results: N text-only results (`model.text_scorer.TextScorer.score`).
        visual: (N, h, w) float in [0, 1) on the patch grid, same order.
        settings: the scoring settings of the run (``visual_weight`` w, ``visual_image_score``, the prior,
            ``sigma``, ``image_score``, ``topk``).

    Each map gets, with ``visual_object_prior``, the text map's object prior (multiplied by
    ``outside_weight`` outside the dilated object: the result's ``object_region``), is resized to the
    result's map size and smoothed like the text map, then `fuse`d. The image score is ``(1 - w) * text
    image score + w * visual reading``, the reading taken from the patch map itself (patch_max or
    patch_top1, `patch_reading`); with fused_map it is read from the fused map (``image_score="instance"``:
    ``(1 - w) * best instance score + w * max(visual map)``). ``result.signals`` keeps the text-only and
    visual-only (map, image score).
    """
    s, w = settings, settings.visual_weight
    reading = PatchReading(s.visual_image_score)
    readings = None if reading is PatchReading.FUSED_MAP else patch_reading(visual, reading).tolist()
    for i, (result, vmap) in enumerate(zip(results, visual.float().cpu().numpy(), strict=True)):
        out = _visual_map(result, vmap, s)
        if readings is not None:
            visual_score = float(readings[i])
        elif s.image_score == "instance":
            visual_score = float(out.max())
        else:
            visual_score = image_score(out, s.image_score, s.topk)
        text_map, text_score = result.anomaly_map, result.image_score
        result.signals = {"text": (text_map, text_score), "visual": (out, visual_score)}
        result.anomaly_map = fuse(torch.from_numpy(text_map), torch.from_numpy(out), w).numpy()
        if readings is not None or s.image_score == "instance":
            result.image_score = (1.0 - w) * text_score + w * visual_score
        else:
            result.image_score = image_score(result.anomaly_map, s.image_score, s.topk)


def _visual_map(result: AnomalyResult, patch_map: np.ndarray, s: ScoringSettings) -> np.ndarray:
    """One calibrated (h, w) patch map -> the result's map size: object prior, resize, smoothing, clip."""
    if s.visual_object_prior and result.object_region is not None:
        region = result.object_region
        weights = np.where(region, 1.0, s.outside_weight).astype(np.float32)
        patch_map = resize_map(patch_map, region.shape) * weights
    out = resize_map(patch_map, result.anomaly_map.shape)
    if s.sigma > 0:
        out = gaussian_smooth(out, s.sigma)
    return np.clip(out, 0.0, 1.0).astype(np.float32)
