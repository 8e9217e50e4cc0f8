"""Glue from SAM 3 concept outputs to per-image anomaly maps, image scores and boxes (no I/O, no printing).

Python API (any working directory, once the repository is on ``sys.path``)::

    det = AnomalyDetector.from_pretrained("path/to/sam3", device="auto", dtype="auto")
    result = det.detect("part.png", category="bottle")   # or a PIL image, a numpy array, or a list of them
    result.anomaly_map, result.image_score, result.mask, result.detections, result.prompt_presence

Flow of `AnomalyDetector.detect_arrays` (which `detect` calls) for a batch of N images and P defect prompts:

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

import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from dataset.base import read_image, to_rgb
from dataset.constants import TEXTURE_CATEGORIES
from model.engine import DEFAULT_CHUNK_SIZE, Sam3Engine
from model.map_ops import gaussian_smooth, resize_map
from model.prompts import build_prompts, given_prompts, object_prompt
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
from model.settings import check_settings, setting
from model.visual import DEFAULT_MUTUAL_FRACTION, ReferenceBank, fuse, mutual_map, select_layers

# (engine, features, prompts) -> ConceptOutputs chunks. Later: trained concept embeddings from a fine-tuning
# checkpoint add/replace text features here (e.g. route to `engine.predict_text`).
TextOverride = Callable[[Any, Any, Sequence[str]], Iterator[Any]]

# What `AnomalyDetector.detect` reads as one image: a file path, a PIL image or a numpy array.
ImageInput = str | os.PathLike[str] | Image.Image | np.ndarray

# Binary mask threshold of `detect`: written once, here; the mask_threshold setting (utils/config/schema.py)
# takes it as its declared default.
MASK_THRESHOLD = 0.5
# Visual anomaly signal (model/visual.py): none = text maps only (the zero-shot default until real-weight
# numbers justify another), fewshot = against K normal references, mutual = against the other test images.
VISUAL_MODES: tuple[str, ...] = ("none", "fewshot", "mutual")


@dataclass
class ScoringSettings:
    """How SAM 3 outputs become maps and scores. Each field is declared once, here (see `model.settings`):
    configs/config.yaml, the CLI flags and the resume fingerprint derive from these declarations."""

    map_source: str = setting(
        "both",
        "instance | semantic | both (pixel-wise max of the two)",
        "map",
        choices=MAP_SOURCES,
    )
    prompt_aggregation: str = setting(
        "max",
        "how the maps of the prompts are combined",
        "map",
        choices=AGGREGATIONS,
    )
    object_regularisation: bool = setting(
        True,
        "segment the object noun and use it to suppress false positives",
        "map",
    )
    max_object_fraction: float = setting(
        0.7,
        "drop defect instances covering more than this fraction of the object mask",
        "map",
        minimum=0.0,
        maximum=1.0,
    )
    outside_weight: float = setting(
        0.2,
        "multiply responses outside the dilated object mask by this",
        "map",
        minimum=0.0,
        maximum=1.0,
    )
    object_dilation: float = setting(
        0.05,
        "dilation of the object mask, as a fraction of the map side",
        "map",
        minimum=0.0,
        maximum=1.0,
    )
    object_threshold: float = setting(
        0.5,
        "object mask = object probability map >= this",
        "map",
        minimum=0.0,
        maximum=1.0,
    )
    sigma: float = setting(
        4.0,
        "Gaussian smoothing of the map, in pixels at the output size (0 = none)",
        "evaluation",
        minimum=0.0,
    )
    image_score: str = setting(
        "max",
        "how an image score is read from the map (topk_mean: mean of the topk highest pixels)",
        "evaluation",
        choices=IMAGE_SCORES,
    )
    topk: int = setting(
        100,
        "pixels averaged by image_score=topk_mean",
        "evaluation",
        minimum=1,
    )
    visual: str = setting(
        "none",
        "visual signal from SAM 3's patch features fused with the text map: none | fewshot (K normal "
        "references) | mutual (zero-shot, the other test images of the category)",
        "visual",
        choices=VISUAL_MODES,
    )
    visual_weight: float = setting(
        0.5,
        "final map = (1 - w) * text map + w * calibrated visual map (1 = visual alone; unused with none)",
        "visual",
        minimum=0.0,
        maximum=1.0,
    )
    mutual_fraction: float = setting(
        DEFAULT_MUTUAL_FRACTION,
        "mutual: a patch's score averages its smallest this-fraction of distances to the other images",
        "visual",
        minimum=0.01,
        maximum=1.0,
    )
    box_threshold: float = setting(
        0.3,
        "detections (drawn boxes) = instances with score >= this",
        "demo",
    )
    box_nms_iou: float = setting(
        0.5,
        "one box per defect: drop boxes (of any prompt) overlapping a better one above this IoU",
        "demo",
        minimum=0.0,
        maximum=1.0,
    )

    def __post_init__(self) -> None:
        check_settings(self)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> ScoringSettings:
        """Pick this class's keys from a resolved config (other keys ignored, missing ones default)."""
        return cls(**{f.name: cfg[f.name] for f in fields(cls) if f.name in cfg})


@dataclass
class Detection:
    """One SAM 3 instance of a defect prompt (score >= box_threshold, kept by NMS)."""

    prompt: str
    score: float
    box: tuple[float, float, float, float]  # xyxy in original image pixels
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


@dataclass
class _ImageState:
    """Per-image reductions collected while the chunks stream by."""

    maps: dict[int, torch.Tensor] = field(default_factory=dict)  # prompt index -> (h, w) map
    presence: dict[int, float] = field(default_factory=dict)
    best: dict[int, float] = field(default_factory=dict)
    detections: list[Detection] = field(default_factory=list)
    instance_probs: list[torch.Tensor] = field(default_factory=list)  # (h, w) per detection, or empty
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
        self.references: ReferenceBank | None = None  # few-shot bank, from `set_references`

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
            settings: scoring settings; None = the defaults of configs/config.yaml.
            chunk_size: image x prompt rows per SAM 3 decoder call (memory vs speed; scores unchanged).

        Raises:
            model.loader.ModelLoadError: missing or unreadable weights, bad device or dtype (one line).
        """
        engine = Sam3Engine.from_pretrained(model_path, device=device, dtype=dtype, chunk_size=chunk_size)
        return cls(engine, settings)

    def _predict(self, features: Any, prompts: Sequence[str]) -> Iterator[Any]:
        """The single place the detector asks SAM 3 for concept outputs."""
        if self.text_override is not None:
            return self.text_override(self.engine, features, prompts)
        return self.engine.predict(features, prompts)

    def detect(
        self,
        images: ImageInput | Sequence[ImageInput],
        category: str | None = None,
        prompts: Sequence[str] | None = None,
        *,
        mask_threshold: float = MASK_THRESHOLD,
        prompt_strategy: str = "base",
        texture_categories: Sequence[str] = TEXTURE_CATEGORIES,
        out_size: tuple[int, int] | None = None,
        instance_masks: bool = True,
    ) -> AnomalyResult | list[AnomalyResult]:
        """Anomaly map, score, binary mask, detections and prompt presence for one image or a list.

        Args:
            images: one image or a list; each a file path (decoded by `dataset.base.read_image`), a PIL
                image or a numpy array ((H, W) or (H, W, 1|2|3|4), any bit depth: `dataset.base.to_rgb`).
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
            ValueError: an unknown prompt strategy, no prompt, a blank prompt or a non-finite threshold.
        """
        single = isinstance(images, (str, os.PathLike, Image.Image, np.ndarray))
        inputs: list[ImageInput] = [images] if single else list(images)  # type: ignore[list-item]
        arrays = [_as_array(x) for x in inputs]
        prompts = build_prompts(category, prompt_strategy) if prompts is None else given_prompts(prompts)
        if not math.isfinite(mask_threshold):
            raise ValueError(f"mask_threshold must be a finite number, got {mask_threshold}")
        noun = object_prompt(category, texture_categories)
        results = self.detect_arrays(arrays, prompts, noun, out_size=out_size, instance_masks=instance_masks)
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
            One `AnomalyResult` per image, in order (``mask`` is left None; `detect` sets it).

        With ``settings.visual``: "fewshot" fuses each map with the distances of its patches to the
        references of `set_references`; "mutual" scores the N images against each other
        (`detect_arrays_mutual` with one batch, so N >= 2).
        """
        s = self.settings
        if s.visual == "mutual":
            return self.detect_arrays_mutual([images], prompts, object_noun, out_size, instance_masks)
        results, patches = self._text_pass(images, prompts, object_noun, out_size, instance_masks)
        if s.visual == "fewshot" and results:
            if self.references is None:
                raise ValueError("visual='fewshot' needs normal reference images: call set_references first")
            self._fuse_visual(results, self.references.calibrated(patches))
        return results

    def detect_arrays_mutual(
        self,
        batches: Iterable[Sequence[np.ndarray]],
        prompts: Sequence[str],
        object_noun: str | None = None,
        out_size: tuple[int, int] | None = None,
        instance_masks: bool = False,
    ) -> list[AnomalyResult]:
        """Zero-shot mutual scoring of every image of `batches` against the others (one category).

        Each batch goes through the vision encoder once (text maps and patch features from the same pass);
        the patch features of all N images are kept on the model's device (float16 on CUDA), then
        `model.visual.mutual_map` gives each image's (h, w) visual map, calibrated on the N images
        themselves, which is fused with its text map. Results come in the order of the images.

        Raises:
            ValueError: fewer than two images in all (mutual scoring compares images with each other).
        """
        return self.fuse_mutual(*self.mutual_parts(batches, prompts, object_noun, out_size, instance_masks))

    def mutual_parts(
        self,
        batches: Iterable[Sequence[np.ndarray]],
        prompts: Sequence[str],
        object_noun: str | None = None,
        out_size: tuple[int, int] | None = None,
        instance_masks: bool = False,
    ) -> tuple[list[AnomalyResult], dict[int, torch.Tensor]]:
        """First half of `detect_arrays_mutual`: each batch's text results and patch features (one pass each).

        Returns the text-only results in image order and ``{layer: (N, h, w, C)}`` patch features on the
        model's device. Several processes can each run this on a share of a category; `fuse_mutual` on the
        concatenation (in image order) then gives what one `detect_arrays_mutual` call gives.
        """
        results: list[AnomalyResult] = []
        gathered: dict[int, list[torch.Tensor]] = {}
        for images in batches:
            batch_results, patches = self._text_pass(images, prompts, object_noun, out_size, instance_masks)
            results += batch_results
            for layer, feats in patches.items():
                gathered.setdefault(layer, []).append(feats)
        return results, {layer: torch.cat(parts) for layer, parts in gathered.items()}

    def fuse_mutual(
        self, results: list[AnomalyResult], features: dict[int, torch.Tensor]
    ) -> list[AnomalyResult]:
        """Second half of `detect_arrays_mutual`: mutual visual maps of all N images fused into `results`.

        Args:
            results: the N text-only results of `mutual_parts`, in image order.
            features: ``{layer: (N, h, w, C)}`` patch features of the same images, same order, any device.

        Raises:
            ValueError: fewer than two images (mutual scoring compares images with each other).
        """
        if len(results) < 2:
            raise ValueError(
                f"visual=mutual compares images of one product with each other and got {len(results)}: "
                "give at least two images, or use visual=fewshot with normal reference images"
            )
        device = self.engine.device
        features = {layer: f.to(device) for layer, f in features.items()}
        self._fuse_visual(results, mutual_map(features, self.settings.mutual_fraction))
        return results

    def set_references(self, images: Sequence[ImageInput]) -> None:
        """Encode K >= 1 normal images of the product for ``visual="fewshot"`` (replaces earlier ones).

        Args:
            images: file paths, PIL images or numpy arrays (read like `detect`'s inputs); encoded in one
                batch, so K should be small (the few-shot protocol uses 1, 2 or 4).

        Afterwards `detect` scores each patch by its distance to the nearest reference patch
        (`model.visual.ReferenceBank`, calibrated on the references alone). The bank holds K x h x w x C
        values per ViT layer used (4 layers of 72 x 72 x 1024 per real image) on the model's device.
        """
        if len(images) == 0:
            raise ValueError("set_references needs at least one normal image of the product")
        arrays = [_as_array(x) for x in images]
        features = self.engine.encode_images(arrays, patch_layers=self._patch_layers())
        self.references = ReferenceBank(features.patch_layers)

    def _patch_layers(self) -> list[int]:
        """The ViT blocks whose patch features the visual scores read (`model.visual.select_layers`)."""
        return select_layers(self.engine.num_vit_layers)

    def _text_pass(
        self,
        images: Sequence[np.ndarray],
        prompts: Sequence[str],
        object_noun: str | None,
        out_size: tuple[int, int] | None,
        instance_masks: bool,
    ) -> tuple[list[AnomalyResult], dict[int, torch.Tensor]]:
        """Text-only results for a batch, and the patch features of the same vision pass.

        Returns the results (maps from the text prompts alone) and ``{layer: (B, h, w, C)}`` patch
        features (empty with ``visual="none"``: the engine is then called exactly as before visual scores).
        """
        prompts = list(dict.fromkeys(prompts))
        if not prompts:
            raise ValueError("detect needs at least one defect prompt (see model.prompts)")
        if len(images) == 0:
            return [], {}
        s = self.settings
        regularise = bool(s.object_regularisation and object_noun)
        all_prompts = [object_noun, *prompts] if regularise else prompts
        offset = 1 if regularise else 0  # prompt index of the first defect prompt

        if s.visual == "none":
            features = self.engine.encode_images(images)
        else:
            features = self.engine.encode_images(images, patch_layers=self._patch_layers())
        states = [_ImageState() for _ in images]
        for chunk in self._predict(features, all_prompts):
            self._reduce_chunk(chunk, states, prompts, offset, regularise, instance_masks)

        results = []
        for i, (image, state) in enumerate(zip(images, states, strict=True)):
            missing = [prompts[p] for p in range(len(prompts)) if p not in state.maps]
            if missing:
                raise RuntimeError(f"engine returned no rows for image {i}, prompts {missing}")
            size = tuple(out_size) if out_size is not None else tuple(image.shape[:2])
            result = self._finish_image(image, state, prompts, size, regularise)
            result.object_prompt = object_noun if regularise else None
            results.append(result)
        return results, getattr(features, "patch_layers", {})

    def _fuse_visual(self, results: list[AnomalyResult], visual: torch.Tensor) -> None:
        """Fuse each result's text map with its calibrated visual map, in place, and rescore the image.

        `visual`: (N, h, w) float in [0, 1] on the patch grid. Each map is resized to the result's map size
        and smoothed exactly like the text map, then ``fuse``d with ``settings.visual_weight``; the image
        score is read from the fused map as before.
        """
        s = self.settings
        maps = visual.float().cpu().numpy()
        for result, vmap in zip(results, maps, strict=True):
            out = resize_map(vmap, result.anomaly_map.shape)
            if s.sigma > 0:
                out = gaussian_smooth(out, s.sigma)
            out = np.clip(out, 0.0, 1.0)
            fused = fuse(torch.from_numpy(result.anomaly_map), torch.from_numpy(out), s.visual_weight)
            result.anomaly_map = fused.numpy().astype(np.float32)
            best = max(result.prompt_best_score.values())
            result.image_score = image_score(
                result.anomaly_map, s.image_score, s.topk, best_instance_score=best
            )

    def _reduce_chunk(
        self,
        chunk: Any,
        states: list[_ImageState],
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
        prompt_ids: list[int],
        states: list[_ImageState],
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
        for k, (i, p) in enumerate(zip(images, prompt_ids, strict=True)):
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
        )


def _as_array(image: ImageInput) -> np.ndarray:
    """One `detect` input as (H, W, 3) uint8 RGB: files through `read_image`, arrays and PIL via `to_rgb`."""
    return read_image(image) if isinstance(image, (str, Path, os.PathLike)) else to_rgb(image)


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
