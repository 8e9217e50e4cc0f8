"""SAM 3 anomaly detection shaped like segment-anything's ``SamPredictor``: load, set what is fixed, detect.

Python API (any working directory, once the repository is on ``sys.path``)::

    from model import AnomalyDetector
    det = AnomalyDetector.from_pretrained("path/to/sam3", device="auto", dtype="auto")
    result = det.detect("part.png", category="bottle")   # or a PIL image, a numpy array, or a list of them
    result.anomaly_map, result.image_score, result.mask, result.detections, result.prompt_presence

    det = AnomalyDetector.from_pretrained("path/to/sam3", settings=ScoringSettings(visual="fewshot"))
    det.set_references(["good0.png", "good1.png"])        # few-shot: K normal images, encoded once
    det.detect("part.png", category="bottle")

Zero-shot mutual scoring compares a whole set of images with each other: `model.mutual.MutualScorer`.

Flow of `AnomalyDetector.detect_arrays` for a batch of N images and P defect prompts:

1. `model.text_scorer.TextScorer.score`: one vision pass (with the ViT patch layers when a visual mode is
   on), one ``engine.predict`` over ``[object_noun] + prompts``, and per image object regularisation,
   prompt aggregation, resize, smoothing, clipping, image score (`model.text_maps`).
2. With ``visual="fewshot"``, the patch distances to the references of `set_references`, calibrated, are
   fused: ``(1 - visual_weight) * text + visual_weight * visual`` (`model.fusion.fuse_visual`).

The engine contract (model/engine.py): ``encode_images(images, patch_layers=..., patch_pool=...) ->
features`` (with ``.patch_layers``) and ``predict(features, prompts) -> Iterator[ConceptOutputs]`` with
fields ``image_index (R,)``, ``prompt_index (R,)``, ``mask_logits (R, Q, h, w)``, ``scores (R, Q)``,
``boxes (R, Q, 4)`` (xyxy in [0, 1]), ``presence (R,)``, ``semantic_logits (R, h, w)``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from dataset.constants import TEXTURE_CATEGORIES
from dataset.images import read_image, to_rgb
from model.engine import DEFAULT_BATCH_SIZE, DEFAULT_CHUNK_SIZE, Sam3Engine
from model.fusion import fuse_visual
from model.map_ops import rotate_image
from model.prompts import DEFAULT_STRATEGY, build_prompts, given_prompts, object_prompt
from model.settings import MASK_THRESHOLD, ScoringSettings
from model.text_maps import AnomalyResult, Detection
from model.text_scorer import TextOverride, TextScorer
from model.visual import ReferenceBank, VisualMode

# What `AnomalyDetector.detect` reads as one image: a file path, a PIL image or a numpy array.
ImageInput = str | os.PathLike[str] | Image.Image | np.ndarray

# The settings a few-shot reference bank is encoded with: a detector whose values differ re-encodes them.
REFERENCE_KEYS: tuple[str, ...] = ("visual_degrees", "reference_rotations", "patch_pool", "visual_grid")


class AnomalyDetector:
    """Turns images + defect prompts into anomaly maps with a SAM 3 engine (see the module docstring).

    Args:
        engine: a `model.engine.Sam3Engine` (or anything with the same `encode_images` / `predict`).
        settings: scoring settings; None = the declared defaults.
        text_override: optional source of concept outputs replacing ``engine.predict`` (e.g. trained
            concept embeddings from a checkpoint); called as ``text_override(engine, features, prompts)``.
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
        self.references: ReferenceBank | None = None  # few-shot bank, from `set_references`
        self._text = TextScorer(engine, lambda: self.settings, text_override)  # settings read at call time

    def with_settings(self, **changes: Any) -> AnomalyDetector:
        """A detector sharing this one's loaded engine and text source, with some settings changed.

        `detector.with_settings(box_threshold=0.1)`; the settings are frozen, so this is the only way to
        change them. The few-shot references are kept when the settings they were encoded with
        (`REFERENCE_KEYS`) are unchanged; otherwise call `set_references` again.

        Raises:
            TypeError: a name that is no scoring setting. ValueError: a value out of its allowed range.
        """
        settings = dataclasses.replace(self.settings, **changes)
        other = AnomalyDetector(self.engine, settings, self.text_override)
        if all(getattr(settings, key) == getattr(self.settings, key) for key in REFERENCE_KEYS):
            other.references = self.references
        return other

    @classmethod
    def from_pretrained(
        cls,
        model_path: str | os.PathLike[str],
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        settings: ScoringSettings | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> AnomalyDetector:
        """Load a local facebook/sam3 folder (see `Sam3Engine.from_pretrained`) and wrap it in a detector.

        Args:
            model_path: folder holding config.json, the safetensors weights and the tokenizer files.
            device: "auto" (CUDA if available, else CPU), "cpu", "cuda", "cuda:1", ...
            dtype: compute dtype, "auto" | "float32" | "float16" | "bfloat16" (or a torch dtype).
            settings: scoring settings; None = the declared defaults.
            chunk_size: image x prompt rows per SAM 3 decoder call (memory vs speed; scores unchanged).

        Raises:
            model.loader.ModelLoadError: missing or unreadable weights, bad device or dtype (one line).
        """
        engine = Sam3Engine.from_pretrained(model_path, device=device, dtype=dtype, chunk_size=chunk_size)
        return cls(engine, settings)

    def set_references(self, images: Sequence[ImageInput]) -> None:
        """Encode K >= 1 normal images of the product for ``visual="fewshot"`` (replaces earlier ones).

        Args:
            images: file paths, PIL images or numpy arrays (read like `detect`'s inputs); encoded
                `DEFAULT_BATCH_SIZE` (4) at a time, so the vision pass's memory does not grow with K or the
                rotations (K = 4 with 7 angles is 32 images of 1008 px).

        With ``settings.reference_rotations`` (angles) each is also encoded turned by every angle
        (`model.map_ops.rotate_image`; K more vision passes per angle). Afterwards `detect` scores each patch
        by its distance to the nearest reference patch (`model.visual.ReferenceBank`, calibrated on the
        references alone). The bank holds K x h x w x C values per ViT layer used (4 layers of 36 x 36 x
        1024 per real image at the default visual_grid) on the model's device.
        """
        if len(images) == 0:
            raise ValueError("set_references needs at least one normal image of the product")
        arrays = [_as_array(x) for x in images]
        sources = list(range(len(arrays)))
        angles = self.settings.reference_rotations  # AnomalyDINO's augmentation
        arrays += [rotate_image(a, angle) for angle in angles for a in arrays]
        sources *= 1 + len(angles)
        batches = [
            self._text.encode(arrays[i : i + DEFAULT_BATCH_SIZE], with_patches=True).patch_layers
            for i in range(0, len(arrays), DEFAULT_BATCH_SIZE)
        ]
        patches = {layer: torch.cat([batch[layer] for batch in batches]) for layer in batches[0]}
        self.references = ReferenceBank(patches, self.settings.visual_degrees, sources=sources)

    def detect(
        self,
        images: ImageInput | Sequence[ImageInput],
        category: str | None = None,
        prompts: Sequence[str] | None = None,
        *,
        mask_threshold: float = MASK_THRESHOLD,
        prompt_strategy: str = DEFAULT_STRATEGY,
        texture_categories: Sequence[str] = TEXTURE_CATEGORIES,
        out_size: tuple[int, int] | None = None,
        instance_masks: bool = True,
    ) -> AnomalyResult | list[AnomalyResult]:
        """Anomaly map, score, binary mask, detections and prompt presence for one image or a list.

        Args:
            images: one image or a list; each a file path (decoded by `dataset.images.read_image`), a PIL
                image or a numpy array ((H, W) or (H, W, 1|2|3|4), any bit depth: `dataset.images.to_rgb`).
                A list is encoded in one batch: split long lists into batches that fit in memory.
            category: e.g. "bottle"; gives the defect prompts (with `prompt_strategy`) when `prompts` is
                None, and the object noun for object regularisation (not for `texture_categories`, nor
                for a category without a noun in `dataset.constants.OBJECT_NOUNS`).
            prompts: defect prompts to score (a single string is one prompt); None =
                `model.prompts.build_prompts(category, prompt_strategy)` (no category: the ``base`` words).
            mask_threshold: ``result.mask = result.anomaly_map >= mask_threshold``.
            prompt_strategy: one of `model.prompts.STRATEGIES`; used only when `prompts` is None.
            texture_categories: categories scored without the object noun.
            out_size: (height, width) of the maps and masks; None = each image's own size.
            instance_masks: give each detection its (H, W) bool instance mask (False saves the resizing).

        Returns:
            One `AnomalyResult` for one image (a path, PIL image or array), a list (same order) for a list.

        Raises:
            dataset.DatasetError: an unreadable file or an array that is not an image (one line).
            ValueError: an unknown prompt strategy, no prompt, a blank prompt, a non-finite threshold, or
                ``visual="mutual"`` (use `model.mutual.MutualScorer`: it scores a whole set).
        """
        single = isinstance(images, (str, os.PathLike, Image.Image, np.ndarray))
        inputs: list[ImageInput] = [images] if single else list(images)  # type: ignore[list-item]
        prompts = build_prompts(category, prompt_strategy) if prompts is None else given_prompts(prompts)
        if not math.isfinite(mask_threshold):
            raise ValueError(f"mask_threshold must be a finite number, got {mask_threshold}")
        noun = object_prompt(category, texture_categories)
        results = self.detect_arrays([_as_array(x) for x in inputs], prompts, noun, out_size, instance_masks)
        for result in results:
            result.mask = result.anomaly_map >= mask_threshold
        return results[0] if single else results

    def detect_arrays(
        self,
        images: Sequence[np.ndarray],
        prompts: Sequence[str],
        object_noun: str | None = None,
        out_size: tuple[int, int] | None = None,
        instance_masks: bool = False,
    ) -> list[AnomalyResult]:
        """Anomaly maps, scores and boxes for a batch of decoded images (the step under `detect`).

        Args:
            images: N images, each (H, W, 3) uint8 RGB (sizes may differ).
            prompts: defect prompts (duplicates are scored once).
            object_noun: the object's noun for object regularisation (None = skip it, e.g. textures).
                Ignored when ``settings.object_regularisation`` is False.
            out_size: (height, width) of the returned maps; None = each image's own size.
            instance_masks: give each detection its (H, W) bool instance mask at the image's size.

        Returns:
            One `AnomalyResult` per image, in order (``mask`` is left None; `detect` sets it). With
            ``settings.visual`` fewshot each map is fused with the distances of its patches to the
            references of `set_references`.
        """
        s = self.settings
        if s.visual is VisualMode.MUTUAL:
            raise ValueError(
                "visual='mutual' scores a set of images against each other: use "
                "model.mutual.MutualScorer(detector).score(batches, prompts), or visual='none'/'fewshot' here"
            )
        if s.visual is VisualMode.FEWSHOT and self.references is None:
            raise ValueError("visual='fewshot' needs normal reference images: call set_references first")
        results, patches = self._text.score(images, prompts, object_noun, out_size, instance_masks)
        if s.visual is VisualMode.FEWSHOT and results:
            assert self.references is not None
            fuse_visual(results, self.references.calibrated(patches), s)
        return results


def _as_array(image: ImageInput) -> np.ndarray:
    """One `detect` input as (H, W, 3) uint8 RGB: files through `read_image`, arrays and PIL via `to_rgb`."""
    return read_image(image) if isinstance(image, (str, Path, os.PathLike)) else to_rgb(image)


__all__ = [
    "MASK_THRESHOLD",
    "VisualMode",
    "AnomalyDetector",
    "AnomalyResult",
    "Detection",
    "ScoringSettings",
]
