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

1. ``engine.encode_images(images)`` once (with the ViT patch layers when a visual mode is on).
2. ``engine.predict(features, [object_noun] + prompts)`` once; the object noun is scored only when object
   regularisation applies. It goes *first* so that, rows being image-major, each image's object mask is
   known before its defect rows arrive and every chunk can be reduced at once (`model.text_maps`).
3. Per image: object regularisation, prompt aggregation, resize, smoothing, clipping, image score.
4. With a visual mode, the calibrated visual map gets the same object prior and smoothing and is fused:
   ``(1 - visual_weight) * text + visual_weight * visual`` (`fuse_visual`).

The engine contract (model/engine.py): ``encode_images(images, patch_layers=..., patch_pool=...) ->
features`` (with ``.patch_layers``) and ``predict(features, prompts) -> Iterator[ConceptOutputs]`` with
fields ``image_index (R,)``, ``prompt_index (R,)``, ``mask_logits (R, Q, h, w)``, ``scores (R, Q)``,
``boxes (R, Q, 4)`` (xyxy in [0, 1]), ``presence (R,)``, ``semantic_logits (R, h, w)``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from dataset.constants import TEXTURE_CATEGORIES
from dataset.images import read_image, to_rgb
from model.engine import DEFAULT_CHUNK_SIZE, Sam3Engine
from model.map_ops import gaussian_smooth, resize_map
from model.prompts import DEFAULT_STRATEGY, build_prompts, given_prompts, object_prompt
from model.scoring import image_score
from model.settings import MASK_THRESHOLD, VISUAL_MODES, ScoringSettings
from model.text_maps import AnomalyResult, Detection, ImageState, TextMaps
from model.visual import ReferenceBank, fuse, select_layers

# (engine, features, prompts) -> ConceptOutputs chunks. Later: trained concept embeddings from a fine-tuning
# checkpoint add/replace text features here (e.g. route to `engine.predict_text`).
TextOverride = Callable[[Any, Any, Sequence[str]], Iterator[Any]]

# What `AnomalyDetector.detect` reads as one image: a file path, a PIL image or a numpy array.
ImageInput = str | os.PathLike[str] | Image.Image | np.ndarray

# The settings a few-shot reference bank is encoded with: a detector whose values differ re-encodes them.
REFERENCE_KEYS: tuple[str, ...] = ("visual_degrees", "reference_rotations", "patch_pool")


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
        self._text_maps = TextMaps(lambda: self.settings)  # reads this detector's settings at call time

    def with_settings(self, **changes: Any) -> AnomalyDetector:
        """A detector sharing this one's loaded engine and text source, with some settings changed.

        `detector.with_settings(box_threshold=0.1)`; the settings are frozen, so this is the only way to
        change them. The few-shot references are kept when the settings they were encoded with
        (``visual_degrees``, ``reference_rotations``, ``patch_pool``) are unchanged; otherwise call
        `set_references` again.

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
            images: file paths, PIL images or numpy arrays (read like `detect`'s inputs); encoded in one
                batch, so K should be small (the few-shot protocol uses 1, 2 or 4).

        With ``settings.reference_rotations`` each is also encoded turned by 90, 180 and 270 degrees (4K
        vision passes). Afterwards `detect` scores each patch by its distance to the nearest reference patch
        (`model.visual.ReferenceBank`, calibrated on the references alone). The bank holds K x h x w x C
        values per ViT layer used (4 layers of 36 x 36 x 1024 per real image at patch_pool 2) on the
        model's device.
        """
        if len(images) == 0:
            raise ValueError("set_references needs at least one normal image of the product")
        arrays = [_as_array(x) for x in images]
        sources = list(range(len(arrays)))
        if self.settings.reference_rotations:  # AnomalyDINO: the references turned by 90, 180, 270 degrees
            arrays += [np.ascontiguousarray(np.rot90(a, turn)) for turn in (1, 2, 3) for a in arrays]
            sources *= 4
        features = self.encode(arrays, with_patches=True)
        self.references = ReferenceBank(features.patch_layers, self.settings.visual_degrees, sources=sources)

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
            ``settings.visual == "fewshot"`` each map is fused with the distances of its patches to the
            references of `set_references`.
        """
        s = self.settings
        if s.visual == "mutual":
            raise ValueError(
                "visual='mutual' scores a set of images against each other: use "
                "model.mutual.MutualScorer(detector).score(batches, prompts), or visual='none'/'fewshot' here"
            )
        if s.visual == "fewshot" and self.references is None:
            raise ValueError("visual='fewshot' needs normal reference images: call set_references first")
        results, patches = self.text_results(images, prompts, object_noun, out_size, instance_masks)
        if s.visual == "fewshot" and results:
            assert self.references is not None
            self.fuse_visual(results, self.references.calibrated(patches))
        return results

    # ------------------------------------------------------------------ building blocks (MutualScorer)
    def encode(self, images: Sequence[np.ndarray], with_patches: bool) -> Any:
        """One vision pass; with `with_patches`, the ViT patch layers pooled by ``settings.patch_pool``."""
        if not with_patches:
            return self.engine.encode_images(images)
        layers = select_layers(self.engine.num_vit_layers)
        return self.engine.encode_images(images, patch_layers=layers, patch_pool=self.settings.patch_pool)

    def text_results(
        self,
        images: Sequence[np.ndarray],
        prompts: Sequence[str],
        object_noun: str | None,
        out_size: tuple[int, int] | None,
        instance_masks: bool,
    ) -> tuple[list[AnomalyResult], dict[int, torch.Tensor]]:
        """Text-only results for a batch, and the patch features of the same vision pass.

        Returns the results (maps from the text prompts alone) and ``{layer: (B, h, w, C)}`` unit patch
        features (empty with ``visual="none"``: the engine is then called exactly as before visual scores).
        """
        prompts = list(dict.fromkeys(prompts))
        if not prompts:
            raise ValueError("detect needs at least one defect prompt (see model.prompts)")
        if len(images) == 0:
            return [], {}
        regularise = bool(self.settings.object_regularisation and object_noun)
        all_prompts = [object_noun, *prompts] if regularise else prompts
        offset = 1 if regularise else 0  # prompt index of the first defect prompt

        features = self.encode(images, with_patches=self.settings.visual != "none")
        states = [ImageState() for _ in images]
        source = self.text_override or (lambda engine, feats, rows: engine.predict(feats, rows))
        for chunk in source(self.engine, features, all_prompts):
            self._text_maps.reduce_chunk(chunk, states, prompts, offset, regularise, instance_masks)

        results = []
        for i, (image, state) in enumerate(zip(images, states, strict=True)):
            missing = [prompts[p] for p in range(len(prompts)) if p not in state.maps]
            if missing:
                raise RuntimeError(f"engine returned no rows for image {i}, prompts {missing}")
            size = tuple(out_size) if out_size is not None else tuple(image.shape[:2])
            result = self._text_maps.finish_image(image, state, prompts, size, regularise)
            result.object_prompt = object_noun if regularise else None
            results.append(result)
        return results, features.patch_layers

    def fuse_visual(self, results: list[AnomalyResult], visual: torch.Tensor) -> None:
        """Fuse each result's text map with its calibrated visual map, in place, and rescore the image.

        `visual`: (N, h, w) float in [0, 1) on the patch grid. Each map gets the text map's object prior
        (resized to the object mask's grid, multiplied by ``outside_weight`` outside the dilated object:
        the result's ``object_region``), is resized to the result's map size and smoothed like the text
        map, then ``fuse``d with ``settings.visual_weight``. The image score is read from the fused map;
        with ``image_score="instance"`` it is ``(1 - w) * best instance score + w * max(visual map)``.
        """
        s = self.settings
        for result, vmap in zip(results, visual.float().cpu().numpy(), strict=True):
            if result.object_region is not None:
                region = result.object_region
                weights = np.where(region, 1.0, s.outside_weight).astype(np.float32)
                vmap = resize_map(vmap, region.shape) * weights
            out = resize_map(vmap, result.anomaly_map.shape)
            if s.sigma > 0:
                out = gaussian_smooth(out, s.sigma)
            out = np.clip(out, 0.0, 1.0)
            fused = fuse(torch.from_numpy(result.anomaly_map), torch.from_numpy(out), s.visual_weight)
            result.anomaly_map = fused.numpy().astype(np.float32)
            best = max(result.prompt_best_score.values())
            if s.image_score == "instance":
                result.image_score = (1.0 - s.visual_weight) * best + s.visual_weight * float(out.max())
            else:
                result.image_score = image_score(result.anomaly_map, s.image_score, s.topk)


def _as_array(image: ImageInput) -> np.ndarray:
    """One `detect` input as (H, W, 3) uint8 RGB: files through `read_image`, arrays and PIL via `to_rgb`."""
    return read_image(image) if isinstance(image, (str, Path, os.PathLike)) else to_rgb(image)


__all__ = [
    "MASK_THRESHOLD",
    "VISUAL_MODES",
    "AnomalyDetector",
    "AnomalyResult",
    "Detection",
    "ScoringSettings",
]
