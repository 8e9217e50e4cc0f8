"""A cached result cut at the slider values, and what the page and the downloads say about it.

SAM 3 runs once per image (utils/app/cache.py keeps the raw result: the anomaly map and every detection down
to BOX_FLOOR, each with its instance mask), so moving the mask or box slider only calls `rethreshold`.
Filtering the NMS-kept detections by score equals running NMS on the detections above the threshold
(greedy NMS only lets a higher-scored box suppress a lower one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from model.detector import AnomalyDetector, AnomalyResult, Detection
from utils.evaluation.exports import detections_json


@dataclass
class Thresholded:
    """A cached result cut at the slider values. mask: (h, w) bool; detections: score >= box_threshold."""

    mask: np.ndarray
    detections: list[Detection]
    mask_threshold: float
    box_threshold: float


def rethreshold(result: AnomalyResult, mask_threshold: float, box_threshold: float) -> Thresholded:
    """Binary mask = anomaly_map >= mask_threshold; detections with score >= box_threshold (order kept)."""
    kept = [d for d in result.detections if d.score >= box_threshold]
    return Thresholded(result.anomaly_map >= mask_threshold, kept, mask_threshold, box_threshold)


def result_json(
    result: AnomalyResult,
    cut: Thresholded,
    prompts: Sequence[str] | None,
    engine_calls: dict[str, int] | None = None,
    image: str | None = None,
    references: Sequence[str] = (),
    image_size: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """The app's JSON for one image: score, thresholds, scoring mode ("fewshot" with the reference names, or
    "none"), presence, boxes (with COCO RLE masks), mask pixel count and the engine's call counters (what
    shows that re-thresholding ran no SAM 3 forward).

    `image_size`: (H, W) of the uploaded file. Boxes, instance masks and mask_pixels are at "scored_size",
    the (h, w) of the copy SAM 3 scored (utils/app/uploads.py: the file itself when it is small).
    """
    scored = tuple(int(n) for n in result.anomaly_map.shape)
    doc: dict[str, Any] = {
        "image": image,
        "image_size": list(image_size or scored),
        "scored_size": list(scored),
        "image_score": result.image_score,
        "visual": "fewshot" if references else "none",
        "references": list(references),
        "mask_threshold": cut.mask_threshold,
        "box_threshold": cut.box_threshold,
        "mask_pixels": int(cut.mask.sum()),
        "prompts": list(prompts) if prompts else list(result.prompt_presence),
        "object_prompt": result.object_prompt,
        "object_found": result.object_found,
        "prompt_presence": result.prompt_presence,
        "prompt_best_score": result.prompt_best_score,
        "boxes": detections_json(cut.detections),
    }
    if engine_calls is not None:
        doc["engine_calls"] = engine_calls
    return doc


def engine_calls(detector: AnomalyDetector) -> dict[str, int]:
    """{"vision_calls", "text_calls"} of the detector's engine (0 where the engine has no counter)."""
    return {name: int(getattr(detector.engine, name, 0)) for name in ("vision_calls", "text_calls")}


def presence_rows(result: AnomalyResult) -> list[list[Any]]:
    """[prompt, presence, best instance score] per prompt, rounded for the table."""
    return [
        [p, round(result.prompt_presence[p], 4), round(result.prompt_best_score.get(p, 0.0), 4)]
        for p in result.prompt_presence
    ]


def summary_rows(docs: Sequence[dict[str, Any]]) -> list[list[Any]]:
    """[image, image score, mask pixels, boxes] per image of a Run, for the overview table."""
    return [[d["image"], round(d["image_score"], 4), d["mask_pixels"], len(d["boxes"])] for d in docs]
