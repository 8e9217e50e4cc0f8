"""The web app's logic without the UI (scripts/app.py is the gradio layer): encode cache, thresholding, JSON.

SAM 3 runs once per (image, prompts, category): `EncodeCache.result` keeps the detector's raw result (the
anomaly map and every detection down to BOX_FLOOR, each with its instance mask), so moving the mask or box
slider only calls `rethreshold`, which recomputes the binary mask and filters the detections; no SAM 3
forward. Filtering the NMS-kept detections by score equals running NMS on the detections above the
threshold (greedy NMS only lets a higher-scored box suppress a lower one).

Few-shot reference images (issue 10) plug in at `EncodeCache.result`'s `references` argument once the
detector takes them: they become part of the cache key, so new references mean a new SAM 3 pass.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from dataset import DatasetError
from dataset.base import read_image
from model.detector import AnomalyDetector, AnomalyResult, Detection
from utils.evaluation.exports import detections_json
from utils.evaluation.visualization import draw_boxes, heatmap_overlay

BOX_FLOOR = 0.05  # the detector keeps detections down to this score; the box slider starts here
CACHE_SIZE = 8  # images whose raw results a session keeps


@dataclass
class Thresholded:
    """A cached result cut at the slider values. mask: (H, W) bool; detections: score >= box_threshold."""

    mask: np.ndarray
    detections: list[Detection]
    mask_threshold: float
    box_threshold: float


def rethreshold(result: AnomalyResult, mask_threshold: float, box_threshold: float) -> Thresholded:
    """Binary mask = anomaly_map >= mask_threshold; detections with score >= box_threshold (order kept)."""
    kept = [d for d in result.detections if d.score >= box_threshold]
    return Thresholded(result.anomaly_map >= mask_threshold, kept, mask_threshold, box_threshold)


def image_key(image: np.ndarray) -> str:
    """SHA-1 of an (H, W, 3) uint8 image's shape and pixels: the same picture uploaded twice is cached."""
    digest = hashlib.sha1(str(image.shape).encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()


class EncodeCache:
    """Raw detector results per (image, prompts, category), least recently used dropped past `size`."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._results: OrderedDict[tuple[Any, ...], AnomalyResult] = OrderedDict()

    def __len__(self) -> int:
        return len(self._results)

    def result(
        self,
        detector: AnomalyDetector,
        image: np.ndarray,
        prompts: Sequence[str] | None,
        category: str | None,
        references: Sequence[str] = (),
    ) -> AnomalyResult:
        """The detector's result for `image` (H, W, 3) uint8, computed on the first call only.

        `references`: few-shot reference image paths (issue 10; not passed to the detector yet, but part of
        the key so that the hook cannot serve a stale result).
        """
        key = (image_key(image), tuple(prompts or ()), category, tuple(references))
        if key in self._results:
            self._results.move_to_end(key)
            return self._results[key]
        result = detector.detect(image, category, prompts, instance_masks=True)
        self._results[key] = result
        while len(self._results) > self.size:
            self._results.popitem(last=False)
        return result


def read_upload(path: str | Path | None) -> np.ndarray:
    """An uploaded file as (H, W, 3) uint8 RGB.

    Raises:
        DatasetError: no file, or a file that is not a readable image (the message names it).
    """
    if not path:
        raise DatasetError("no image: upload an image file first")
    return read_image(Path(path))


def parse_prompts(text: str) -> list[str] | None:
    """Comma-separated prompts -> list (blank entries dropped); None when empty (the category's prompts)."""
    prompts = [p.strip() for p in (text or "").split(",") if p.strip()]
    return prompts or None


def result_json(
    result: AnomalyResult,
    cut: Thresholded,
    prompts: Sequence[str] | None,
    engine_calls: dict[str, int] | None = None,
) -> dict[str, Any]:
    """The app's JSON: score, thresholds, presence, boxes (with COCO RLE masks), mask pixel count and the
    engine's call counters (what shows that re-thresholding ran no SAM 3 forward)."""
    doc: dict[str, Any] = {
        "image_score": result.image_score,
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


def pictures(image: np.ndarray, result: AnomalyResult, cut: Thresholded) -> tuple[np.ndarray, ...]:
    """(heatmap overlay, binary mask, boxes) as (H, W, 3) uint8 RGB images for display."""
    overlay = heatmap_overlay(image, result.anomaly_map)
    mask = np.repeat((cut.mask.astype(np.uint8) * 255)[..., None], 3, axis=2)
    boxes = draw_boxes(image, [(d.prompt, d.score, d.box) for d in cut.detections])
    return overlay, mask, boxes


def presence_rows(result: AnomalyResult) -> list[list[Any]]:
    """[prompt, presence, best instance score] per prompt, rounded for the table."""
    return [
        [p, round(result.prompt_presence[p], 4), round(result.prompt_best_score.get(p, 0.0), 4)]
        for p in result.prompt_presence
    ]


def missing_model_message(model_path: str | Path) -> str | None:
    """Why the app cannot load SAM 3 from `model_path` and what to download; None when it looks usable."""
    folder = Path(model_path).expanduser()
    if (folder / "config.json").is_file() and any(folder.glob("*.safetensors")):
        return None
    return (
        f"No SAM 3 model in {folder} (config.json + model.safetensors needed): download facebook/sam3 with "
        f"`python scripts/download_weights.py` (or pass --model_path to a folder holding it), then restart."
    )


def with_floor(detector: AnomalyDetector) -> AnomalyDetector:
    """The detector keeping detections down to BOX_FLOOR, so the box slider can go that low from the cache."""
    detector.settings = replace(
        detector.settings, box_threshold=min(BOX_FLOOR, detector.settings.box_threshold)
    )
    return detector
