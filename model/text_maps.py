"""From streamed SAM 3 concept outputs to one text anomaly map, score and detections per image (no I/O).

`TextMaps` is the reducing half of `model.text_scorer.TextScorer`: each chunk of `ConceptOutputs` (rows =
image x prompt, (R, Q, h, w) mask logits) is reduced at once to one (h, w) map per row (`reduce_chunk`),
so memory stays bounded by one chunk plus N x P small maps; then per image (`finish_image`): object
regularisation (see `model.scoring`), prompt aggregation, resize, Gaussian smoothing, clipping, image score.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from model.map_ops import gaussian_smooth, resize_map
from model.scoring import (
    aggregate_prompts,
    box_nms,
    combine_sources,
    dilate_mask,
    image_score,
    instance_map,
    object_keep,
    object_mask,
    outside_weights,
    semantic_map,
)


@dataclass
class Detection:
    """One SAM 3 instance of a defect prompt (score >= box_threshold, kept by NMS)."""

    prompt: str
    score: float
    box: tuple[float, float, float, float]  # xyxy in original image pixels (whatever detect's out_size)
    # (H, W) bool at the input image's size: SAM 3's instance probability >= 0.5, bilinearly resized. Only
    # detections carry one (H * W bytes each); None when detect was asked for no instance masks.
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass
class AnomalyResult:
    """Everything `AnomalyDetector.detect` says about one image."""

    anomaly_map: np.ndarray  # (H_out, W_out) float32 in [0, 1]
    image_score: float
    prompt_presence: dict[str, float]  # SAM 3 presence probability per defect prompt
    prompt_best_score: dict[str, float]  # best kept instance score per defect prompt (0 if none)
    detections: list[Detection] = field(default_factory=list)  # score >= box_threshold, after NMS, desc
    object_found: bool | None = None  # None: no object regularisation for this image
    object_prompt: str | None = None  # the object noun used for regularisation (None: none used)
    mask: np.ndarray | None = field(default=None, repr=False)  # (H_out, W_out) bool: map >= mask_threshold
    # (h, w) bool on SAM 3's mask grid: the dilated object mask whose outside is multiplied by outside_weight
    # (the visual map gets the same prior); None when no object regularisation applied or no object found.
    object_region: np.ndarray | None = field(default=None, repr=False, compare=False)
    # With a visual mode: the text-only and the visual-only (map (H_out, W_out), image score) before fusion,
    # keyed "text" and "visual" (results.json's per-signal metrics); empty without one.
    signals: dict[str, tuple[np.ndarray, float]] = field(default_factory=dict, repr=False, compare=False)

    def resize_maps(self, size: tuple[int, int]) -> None:
        """Resize the anomaly map and the signal maps bilinearly to `size` (H, W), in place; drops `mask`.

        How demo.py and the app show a map scored at eval_size on the image itself, as test.py's TIFF export
        does: the image score and the values a thresholds.json was computed on stay those of test.py.
        """
        self.anomaly_map = resize_map(self.anomaly_map, size)
        self.signals = {name: (resize_map(m, size), score) for name, (m, score) in self.signals.items()}
        self.mask = None


@dataclass
class ImageState:
    """Per-image reductions collected while the chunks stream by."""

    maps: dict[int, torch.Tensor] = field(default_factory=dict)  # prompt index -> (h, w) map
    presence: dict[int, float] = field(default_factory=dict)
    best: dict[int, float] = field(default_factory=dict)
    detections: list[Detection] = field(default_factory=list)
    instance_probs: list[torch.Tensor] = field(default_factory=list)  # (h, w) per detection, or empty
    obj_mask: torch.Tensor | None = None  # (h, w) bool, once the object row arrived


class TextMaps:
    """Per-image text maps from streamed concept-output chunks.

    Args:
        settings_of: returns the current `model.settings.ScoringSettings` (typed Any: detector.py imports
            this module); called at each use, so the owner's settings are read, never a stale copy.
    """

    def __init__(self, settings_of: Callable[[], Any]) -> None:
        self._settings_of = settings_of

    @property
    def settings(self) -> Any:
        """The owner's scoring settings, as they are now."""
        return self._settings_of()

    def reduce_chunk(
        self,
        chunk: Any,
        states: list[ImageState],
        prompts: list[str],
        offset: int,
        regularise: bool,
        instance_masks: bool,
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
                instance_masks,
            )

    def _reduce_rows(
        self,
        rows: Mapping[str, torch.Tensor],
        images: list[int],
        prompt_of_row: list[int],
        states: list[ImageState],
        prompts: list[str],
        instance_masks: bool,
    ) -> None:
        """Defect rows -> one (h, w) map each, presence, best kept score and detections.

        With `instance_masks`, each detection's (h, w) instance probability is kept too (only those rows
        and queries, so memory grows with the number of detections, not of queries).
        """
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
        for k, (i, p) in enumerate(zip(images, prompt_of_row, strict=True)):
            state = states[i]
            state.maps[p] = maps[k]
            state.presence[p] = float(presence[k])
            state.best[p] = float(kept_scores[k].max()) if kept_scores.shape[1] else 0.0
            for q in torch.nonzero(kept_scores[k] >= s.box_threshold).flatten().tolist():
                state.detections.append(
                    Detection(prompts[p], float(kept_scores[k, q]), tuple(boxes[k, q].tolist()))
                )
                if instance_masks:
                    state.instance_probs.append(torch.sigmoid(mask_logits[k, q].float()).cpu())

    def finish_image(
        self,
        image: np.ndarray,
        state: ImageState,
        prompts: list[str],
        size: tuple[int, int],
        regularise: bool,
    ) -> AnomalyResult:
        """Aggregate one image's prompt maps, regularise, resize, smooth, clip, score."""
        s = self.settings
        amap = aggregate_prompts(
            torch.stack([state.maps[p] for p in range(len(prompts))]), s.prompt_aggregation
        )
        object_found, region = None, None
        if regularise:
            assert state.obj_mask is not None
            object_found = bool(state.obj_mask.any())
            amap = amap * outside_weights(state.obj_mask, s.object_dilation, s.outside_weight)
            if object_found:
                region = dilate_mask(state.obj_mask, s.object_dilation).numpy()
        out = resize_map(amap.numpy().astype(np.float32), size)
        if s.sigma > 0:
            out = gaussian_smooth(out, s.sigma)
        out = np.clip(out, 0.0, 1.0).astype(np.float32)

        height, width = image.shape[:2]
        scale = (width, height, width, height)
        found = state.detections
        boxes, scores = torch.tensor([d.box for d in found]), torch.tensor([d.score for d in found])
        keep = box_nms(boxes, scores, s.box_nms_iou) if found else []
        detections = [
            Detection(
                found[i].prompt,
                found[i].score,
                tuple(float(v * f) for v, f in zip(found[i].box, scale, strict=True)),
                mask=_instance_mask(state.instance_probs[i], (height, width))
                if state.instance_probs
                else None,
            )
            for i in keep
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
            object_region=region,
        )


def _instance_mask(prob: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """(h, w) instance probability -> (H, W) bool mask: bilinear resize to `size`, then >= 0.5."""
    return resize_map(prob.numpy(), size) >= 0.5


def _slice_rows(chunk: Any, rows: list[int]) -> dict[str, torch.Tensor]:
    """The per-row tensors of `chunk` at `rows` (copies, so the chunk itself can be freed)."""
    sel = torch.tensor(rows, device=chunk.scores.device)
    return {
        name: getattr(chunk, name)[sel]
        for name in ("mask_logits", "scores", "boxes", "presence", "semantic_logits")
    }
