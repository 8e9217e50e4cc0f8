"""Glue from SAM 3 concept outputs to per-image anomaly maps, image scores and boxes (no I/O, no printing).

Flow of `AnomalyDetector.detect` for a batch of N images and P defect prompts:

1. ``engine.encode_images(images)`` once.
2. ``engine.predict(features, [object_noun] + prompts)`` once; the object noun is scored only when object
   regularisation applies. It goes *first* so that, rows being image-major, each image's object mask is
   known before its defect rows arrive and every chunk can be reduced at once.
3. Each chunk of `ConceptOutputs` (rows = image x prompt, (R, Q, h, w) mask logits) is reduced immediately
   to one (h, w) map per row, so memory stays bounded by one chunk plus N x P small maps.
4. Per image: object regularisation (see `model.scoring`: whole-object instances and semantic maps dropped
   per row, responses outside the object down-weighted on the combined map of every source), map-source
   combination, prompt aggregation, resize to the output size, Gaussian smoothing, clipping, image score.

The engine contract (model/engine.py): ``encode_images(images) -> features`` and
``predict(features, prompts) -> Iterator[ConceptOutputs]`` with fields ``image_index (R,)``,
``prompt_index (R,)``, ``mask_logits (R, Q, h, w)``, ``scores (R, Q)``, ``boxes (R, Q, 4)`` (xyxy in
[0, 1]), ``presence (R,)``, ``semantic_logits (R, h, w)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch

from model.map_ops import gaussian_smooth, resize_map
from model.scoring import (
    AGGREGATIONS,
    IMAGE_SCORES,
    MAP_SOURCES,
    aggregate_prompts,
    box_nms,
    combine_sources,
    image_score,
    instance_map,
    object_keep,
    object_mask,
    outside_weights,
    semantic_map,
)

# (engine, features, prompts) -> ConceptOutputs chunks. Later: trained concept embeddings from a fine-tuning
# checkpoint add/replace text features here (e.g. route to `engine.predict_text`).
TextOverride = Callable[[Any, Any, Sequence[str]], Iterator[Any]]


@dataclass
class ScoringSettings:
    """How SAM 3 outputs become maps and scores. Names and defaults are those of configs/config.yaml."""

    map_source: str = "both"  # instance | semantic | both (pixel-wise max)
    prompt_aggregation: str = "max"  # max | mean over prompts
    object_regularisation: bool = True  # use the object noun's mask to suppress false positives
    max_object_fraction: float = 0.7  # drop defect instances covering more than this of the object mask
    outside_weight: float = 0.2  # multiply responses outside the dilated object mask by this
    object_dilation: float = 0.05  # object mask dilation, as a fraction of the map side
    object_threshold: float = 0.5  # object mask = object probability >= this
    sigma: float = 4.0  # Gaussian smoothing in pixels at the output size (0 = none)
    image_score: str = "max"  # max | topk_mean | instance
    topk: int = 100  # pixels averaged by image_score=topk_mean
    box_threshold: float = 0.3  # detections = instances with score >= this
    box_nms_iou: float = 0.5  # across prompts, drop a box overlapping a better one by more than this IoU

    def __post_init__(self) -> None:
        for name, allowed in (
            ("map_source", MAP_SOURCES),
            ("prompt_aggregation", AGGREGATIONS),
            ("image_score", IMAGE_SCORES),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        for name in (
            "max_object_fraction",
            "outside_weight",
            "object_dilation",
            "object_threshold",
            "box_nms_iou",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        if self.sigma < 0 or self.topk < 1:
            raise ValueError(f"need sigma >= 0 and topk >= 1, got sigma={self.sigma!r}, topk={self.topk!r}")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> ScoringSettings:
        """Pick this class's keys from a resolved config (other keys ignored, missing ones default)."""
        return cls(**{f.name: cfg[f.name] for f in fields(cls) if f.name in cfg})


@dataclass
class Detection:
    """One SAM 3 instance of a defect prompt."""

    prompt: str
    score: float
    box: tuple[float, float, float, float]  # xyxy in original image pixels


@dataclass
class AnomalyResult:
    """Everything `AnomalyDetector.detect` says about one image."""

    anomaly_map: np.ndarray  # (H_out, W_out) float32 in [0, 1]
    image_score: float
    prompt_presence: dict[str, float]  # SAM 3 presence probability per defect prompt
    prompt_best_score: dict[str, float]  # best kept instance score per defect prompt (0 if none)
    detections: list[Detection] = field(default_factory=list)  # score >= box_threshold, after NMS, desc
    object_found: bool | None = None  # None: no object regularisation for this image


@dataclass
class _ImageState:
    """Per-image reductions collected while the chunks stream by."""

    maps: dict[int, torch.Tensor] = field(default_factory=dict)  # prompt index -> (h, w) map
    presence: dict[int, float] = field(default_factory=dict)
    best: dict[int, float] = field(default_factory=dict)
    detections: list[Detection] = field(default_factory=list)
    obj_mask: torch.Tensor | None = None  # (h, w) bool, once the object row arrived


class AnomalyDetector:
    """Turns images + defect prompts into anomaly maps with a SAM 3 engine (see the module docstring).

    Args:
        engine: a `model.engine.Sam3Engine` (or anything with the same `encode_images` / `predict`).
        settings: scoring settings; defaults are those of configs/config.yaml.
        text_override: optional hook replacing ``engine.predict`` (e.g. to inject trained concept
            embeddings); called as ``text_override(engine, features, prompts)``.
    """

    def __init__(
        self,
        engine: Any,
        settings: ScoringSettings | None = None,
        text_override: TextOverride | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings if settings is not None else ScoringSettings()
        self.text_override = text_override

    def _predict(self, features: Any, prompts: Sequence[str]) -> Iterator[Any]:
        """The single place the detector asks SAM 3 for concept outputs."""
        if self.text_override is not None:
            return self.text_override(self.engine, features, prompts)
        return self.engine.predict(features, prompts)

    def detect(
        self,
        images: Sequence[np.ndarray],
        prompts: Sequence[str],
        object_noun: str | None = None,
        out_size: tuple[int, int] | None = None,
    ) -> list[AnomalyResult]:
        """Anomaly maps, scores and boxes for a batch of images.

        Args:
            images: N images, each (H, W, 3) uint8 RGB (sizes may differ).
            prompts: defect prompts (duplicates are scored once).
            object_noun: the object's noun for object regularisation (None = skip it, e.g. textures).
                Ignored when ``settings.object_regularisation`` is False.
            out_size: (height, width) of the returned maps; None = each image's own size.

        Returns:
            One `AnomalyResult` per image, in order.
        """
        prompts = list(dict.fromkeys(prompts))
        if not prompts:
            raise ValueError("detect needs at least one defect prompt (see model.prompts)")
        if len(images) == 0:
            return []
        s = self.settings
        regularise = bool(s.object_regularisation and object_noun)
        all_prompts = [object_noun, *prompts] if regularise else prompts
        offset = 1 if regularise else 0  # prompt index of the first defect prompt

        features = self.engine.encode_images(images)
        states = [_ImageState() for _ in images]
        for chunk in self._predict(features, all_prompts):
            self._reduce_chunk(chunk, states, prompts, offset, regularise)

        results = []
        for i, (image, state) in enumerate(zip(images, states, strict=True)):
            missing = [prompts[p] for p in range(len(prompts)) if p not in state.maps]
            if missing:
                raise RuntimeError(f"engine returned no rows for image {i}, prompts {missing}")
            size = tuple(out_size) if out_size is not None else tuple(image.shape[:2])
            results.append(self._finish_image(image, state, prompts, size, regularise))
        return results

    def _reduce_chunk(
        self, chunk: Any, states: list[_ImageState], prompts: list[str], offset: int, regularise: bool
    ) -> None:
        """Reduce one chunk of ConceptOutputs to per-row maps stored in `states`.

        With regularisation, prompt 0 is the object noun; rows are image-major, so each image's object row
        comes before its defect rows (an engine that breaks this order is an error).
        """
        s = self.settings
        image_index = chunk.image_index.tolist()
        prompt_index = chunk.prompt_index.tolist()
        rows = list(range(len(image_index)))
        if regularise:
            obj_rows = [r for r in rows if prompt_index[r] == 0]
            if obj_rows:
                sel = torch.tensor(obj_rows, device=chunk.scores.device)
                prob = combine_sources(
                    instance_map(chunk.mask_logits[sel], chunk.scores[sel]),
                    semantic_map(chunk.semantic_logits[sel], chunk.presence[sel]),
                    s.map_source,
                )
                for mask, r in zip(object_mask(prob, s.object_threshold).cpu(), obj_rows, strict=True):
                    states[image_index[r]].obj_mask = mask
            rows = [r for r in rows if prompt_index[r] > 0]
            if any(states[image_index[r]].obj_mask is None for r in rows):
                raise RuntimeError("engine.predict must yield rows image-major (object-noun row first)")
        if rows:
            self._reduce_rows(
                _slice_rows(chunk, rows),
                [image_index[r] for r in rows],
                [prompt_index[r] - offset for r in rows],
                states,
                prompts,
            )

    def _reduce_rows(
        self,
        rows: Mapping[str, torch.Tensor],
        images: list[int],
        prompt_ids: list[int],
        states: list[_ImageState],
        prompts: list[str],
    ) -> None:
        """Defect rows -> one (h, w) map each, presence, best kept score and detections."""
        s = self.settings
        mask_logits, scores = rows["mask_logits"], rows["scores"].float()
        keep = sem_keep = None
        obj = [states[i].obj_mask for i in images]
        if all(m is not None for m in obj):
            obj_masks = torch.stack(obj).to(mask_logits.device)
            keep = object_keep(mask_logits, obj_masks, s.max_object_fraction)
            # The semantic map is one more "instance" per row: a whole-object answer is dropped there too.
            sem_keep = object_keep(rows["semantic_logits"][:, None], obj_masks, s.max_object_fraction)[:, 0]
        inst = instance_map(mask_logits, scores, keep=keep)
        sem = semantic_map(rows["semantic_logits"], rows["presence"], keep=sem_keep)
        maps = combine_sources(inst, sem, s.map_source).cpu()
        kept_scores = (scores * keep if keep is not None else scores).cpu()
        boxes = rows["boxes"].float().clamp(0, 1).cpu()
        presence = rows["presence"].float().cpu()
        for k, (i, p) in enumerate(zip(images, prompt_ids, strict=True)):
            state = states[i]
            state.maps[p] = maps[k]
            state.presence[p] = float(presence[k])
            state.best[p] = float(kept_scores[k].max()) if kept_scores.shape[1] else 0.0
            for q in torch.nonzero(kept_scores[k] >= s.box_threshold).flatten().tolist():
                state.detections.append(
                    Detection(prompts[p], float(kept_scores[k, q]), tuple(boxes[k, q].tolist()))
                )

    def _finish_image(
        self,
        image: np.ndarray,
        state: _ImageState,
        prompts: list[str],
        size: tuple[int, int],
        regularise: bool,
    ) -> AnomalyResult:
        """Aggregate one image's prompt maps, regularise, resize, smooth, clip, score."""
        s = self.settings
        amap = aggregate_prompts(
            torch.stack([state.maps[p] for p in range(len(prompts))]), s.prompt_aggregation
        )
        object_found = None
        if regularise:
            assert state.obj_mask is not None
            object_found = bool(state.obj_mask.any())
            amap = amap * outside_weights(state.obj_mask, s.object_dilation, s.outside_weight)
        out = resize_map(amap.numpy().astype(np.float32), size)
        if s.sigma > 0:
            out = gaussian_smooth(out, s.sigma)
        out = np.clip(out, 0.0, 1.0).astype(np.float32)

        height, width = image.shape[:2]
        scale = (width, height, width, height)
        found = state.detections
        if found:
            keep = box_nms(
                torch.tensor([d.box for d in found]), torch.tensor([d.score for d in found]), s.box_nms_iou
            )
            found = [found[i] for i in keep]
        detections = [
            Detection(d.prompt, d.score, tuple(float(v * f) for v, f in zip(d.box, scale, strict=True)))
            for d in found
        ]
        best = {prompts[p]: state.best[p] for p in range(len(prompts))}
        score = image_score(out, s.image_score, s.topk, best_instance_score=max(best.values()))
        return AnomalyResult(
            anomaly_map=out,
            image_score=score,
            prompt_presence={prompts[p]: state.presence[p] for p in range(len(prompts))},
            prompt_best_score=best,
            detections=detections,
            object_found=object_found,
        )


def _slice_rows(chunk: Any, rows: list[int]) -> dict[str, torch.Tensor]:
    """The per-row tensors of `chunk` at `rows` (copies, so the chunk itself can be freed)."""
    sel = torch.tensor(rows, device=chunk.scores.device)
    return {
        name: getattr(chunk, name)[sel]
        for name in ("mask_logits", "scores", "boxes", "presence", "semantic_logits")
    }
