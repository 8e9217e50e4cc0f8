"""From SAM 3 concept outputs to anomaly maps and image scores: small pure torch functions.

Shapes: R = rows (image x prompt pairs), Q = queries (instances) per row, (h, w) = SAM 3 mask resolution
(288 x 288 for the real model), P = prompts of one image.

All maps are probabilities in [0, 1]. When SAM 3 finds nothing (all scores / presence ~ 0) the maps are
~0: no mask is ever fabricated.

Object-prompt regularisation (in the spirit of SAA+, but inside one SAM 3 model): the object noun (e.g.
"metal nut") is scored as one more prompt; its map gives an object mask per image, which is used to

1. drop defect responses whose binarised mask covers more than `max_object_fraction` of the object mask
   (SAM 3 answered "defect" with the whole object) - `object_keep`: per instance, applied *before* the
   instance max, and per row for the semantic map (its logit map binarised the same way) - so every map
   source obeys it. A real defect that is the whole object (a flipped or squeezed part) is dropped too;
2. multiply responses outside the dilated object mask by `outside_weight` - `outside_weights`, applied to
   the combined map, i.e. to every source.

An empty object mask (SAM 3 did not find the object) disables both for that image.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

MAP_SOURCES: tuple[str, ...] = ("instance", "semantic", "both")
AGGREGATIONS: tuple[str, ...] = ("max", "mean")
IMAGE_SCORES: tuple[str, ...] = ("max", "topk_mean", "instance")
# The declared defaults of the object_threshold and topk settings (model/settings.py takes them from here).
DEFAULT_OBJECT_THRESHOLD = 0.5
DEFAULT_TOPK = 100


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}: use one of {', '.join(allowed)}")


def instance_map(
    mask_logits: torch.Tensor,
    scores: torch.Tensor,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-row instance map: max over queries of ``score_q * sigmoid(mask_logit_q)``.

    Args:
        mask_logits: (R, Q, h, w) per-query mask logits.
        scores: (R, Q) instance scores in [0, 1] (``sigmoid(pred_logits) * sigmoid(presence_logits)``).
        keep: optional (R, Q) bool; False drops that instance (e.g. `object_keep`).

    Returns:
        (R, h, w) float32 in [0, 1]; zeros for a row without any remaining instance.
    """
    probs = torch.sigmoid(mask_logits.float())
    weights = scores.float()
    if keep is not None:
        weights = weights * keep
    r, _, h, w = mask_logits.shape
    if mask_logits.shape[1] == 0:
        return torch.zeros(r, h, w, dtype=torch.float32, device=mask_logits.device)
    # weights >= 0 and probs > 0, so dropped instances (weight 0) can never win the max over a kept one.
    return (probs * weights[:, :, None, None]).amax(dim=1)


def semantic_map(
    semantic_logits: torch.Tensor, presence: torch.Tensor, keep: torch.Tensor | None = None
) -> torch.Tensor:
    """Presence-weighted semantic map: ``presence * sigmoid(semantic_logits)``.

    Args:
        semantic_logits: (R, h, w) per-pixel logits of the concept.
        presence: (R,) probability that the concept is in the image.
        keep: optional (R,) bool; False zeroes that row's map (e.g. `object_keep` of the semantic logits).

    Returns:
        (R, h, w) float32 in [0, 1].
    """
    weights = presence.float() if keep is None else presence.float() * keep
    return torch.sigmoid(semantic_logits.float()) * weights[:, None, None]


def combine_sources(inst: torch.Tensor, sem: torch.Tensor, source: str) -> torch.Tensor:
    """Choose the map source: "instance", "semantic", or "both" (pixel-wise max). Shapes (..., h, w)."""
    _check_choice("map_source", source, MAP_SOURCES)
    if source == "instance":
        return inst
    if source == "semantic":
        return sem
    return torch.maximum(inst, sem)


def aggregate_prompts(maps: torch.Tensor, how: str = "max") -> torch.Tensor:
    """Reduce the maps of one image's P prompts, (P, h, w) -> (h, w), by pixel-wise "max" or "mean"."""
    _check_choice("prompt_aggregation", how, AGGREGATIONS)
    if maps.shape[0] == 0:
        raise ValueError("aggregate_prompts needs at least one prompt map")
    return maps.amax(dim=0) if how == "max" else maps.mean(dim=0)


def object_mask(object_prob: torch.Tensor, threshold: float = DEFAULT_OBJECT_THRESHOLD) -> torch.Tensor:
    """Object mask = object probability >= threshold. (..., h, w) float -> (..., h, w) bool."""
    return object_prob >= threshold


def object_keep(
    mask_logits: torch.Tensor,
    obj_mask: torch.Tensor,
    max_object_fraction: float,
    mask_threshold: float = 0.0,
) -> torch.Tensor:
    """Which defect instances to keep: drop those covering more than `max_object_fraction` of the object.

    Coverage of instance q = |binarised mask_q AND object mask| / |object mask|, with the instance binarised
    at ``mask_logit > mask_threshold`` (logit 0 = probability 0.5). Rows whose object mask is empty keep all.

    Args:
        mask_logits: (R, Q, h, w) defect instance mask logits.
        obj_mask: (R, h, w) bool object mask of each row's image (or (h, w), shared by all rows).
        max_object_fraction: instances with coverage > this are dropped.
        mask_threshold: logit threshold binarising instance masks.

    Returns:
        (R, Q) bool, True = keep.
    """
    obj = obj_mask.expand(mask_logits.shape[0], *mask_logits.shape[-2:]) if obj_mask.dim() == 2 else obj_mask
    binary = mask_logits > mask_threshold
    area = obj.sum(dim=(-2, -1))  # (R,)
    overlap = (binary & obj[:, None]).sum(dim=(-2, -1))  # (R, Q)
    coverage = overlap.float() / area.clamp(min=1).float()[:, None]
    return (coverage <= max_object_fraction) | (area == 0)[:, None]


def dilate_mask(mask: torch.Tensor, dilation: float) -> torch.Tensor:
    """Dilate a bool mask (h, w) by ``round(dilation * side)`` pixels along each side (square max-pool)."""
    h, w = mask.shape
    rh, rw = round(dilation * h), round(dilation * w)
    if rh <= 0 and rw <= 0:
        return mask
    pooled = F.max_pool2d(
        mask[None, None].float(), kernel_size=(2 * rh + 1, 2 * rw + 1), stride=1, padding=(rh, rw)
    )
    return pooled[0, 0] > 0


def outside_weights(obj_mask: torch.Tensor, dilation: float, outside_weight: float) -> torch.Tensor:
    """Pixel weights: 1 inside the dilated object mask, `outside_weight` outside. (h, w) bool -> (h, w) float.

    An empty object mask (object not found) gives all ones: the map is left unchanged.
    """
    ones = torch.ones(obj_mask.shape, dtype=torch.float32, device=obj_mask.device)
    if not bool(obj_mask.any()):
        return ones
    inside = dilate_mask(obj_mask, dilation)
    return torch.where(inside, ones, torch.full_like(ones, outside_weight))


def image_score(
    anomaly_map: np.ndarray | torch.Tensor,
    how: str = "max",
    topk: int = DEFAULT_TOPK,
    best_instance_score: float | None = None,
) -> float:
    """Image-level anomaly score.

    - "max": the maximum of the map (the usual zero-shot choice).
    - "topk_mean": the mean of the `topk` largest pixels (all pixels if the map is smaller); less sensitive
      to one hot pixel than "max".
    - "instance": `best_instance_score`, the best SAM 3 instance score over the defect prompts (after
      object regularisation); ignores the map.

    Args:
        anomaly_map: (H, W) map in [0, 1], numpy or torch.
    """
    _check_choice("image_score", how, IMAGE_SCORES)
    if how == "instance":
        if best_instance_score is None:
            raise ValueError("image_score='instance' needs best_instance_score (best SAM 3 instance score)")
        return float(best_instance_score)
    values = torch.as_tensor(anomaly_map).reshape(-1).float()
    if values.numel() == 0:
        raise ValueError("image_score got an empty map")
    if how == "max":
        return float(values.max())
    if topk < 1:
        raise ValueError(f"topk must be >= 1, got {topk}")
    return float(values.topk(min(topk, values.numel())).values.mean())


def box_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> list[int]:
    """Greedy non-maximum suppression, class-agnostic (the same defect found by several prompts).

    Args:
        boxes: (N, 4) xyxy boxes (any consistent unit).
        scores: (N,) confidences.
        iou_threshold: a box is dropped when its IoU with a kept, higher-scoring box exceeds this
            (1.0 keeps every box).
    Returns:
        Indices of the kept boxes, by descending score.
    """
    order = torch.argsort(scores, descending=True, stable=True)
    boxes = boxes[order].float()
    area = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    top_left = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    bottom_right = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=2)
    iou = inter / (area[:, None] + area[None, :] - inter).clamp(min=1e-12)
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    kept = []
    for i in range(len(order)):
        if not suppressed[i]:
            kept.append(int(order[i]))
            suppressed |= iou[i] > iou_threshold
    return kept
