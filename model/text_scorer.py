"""One vision pass and the text prompts of a batch -> text-only results: the step every mode shares.

`TextScorer` is what `model.detector.AnomalyDetector` (zero-shot and few-shot) and `model.mutual.MutualScorer`
both run on a batch: ``engine.encode_images`` once (with the ViT patch layers when a visual mode needs
them), ``engine.predict`` (or a checkpoint's trained concepts) for ``[object_noun] + prompts``, and
`model.text_maps.TextMaps` to reduce the streamed chunks to one map, score and detections per image.
The object noun goes *first* so that, rows being image-major, each image's object mask is known before its
defect rows arrive and every chunk can be reduced at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from model.map_ops import map_size
from model.prompts import given_prompts
from model.settings import ScoringSettings
from model.text_maps import AnomalyResult, ImageState, TextMaps
from model.visual import VisualMode, check_degrees_fit, select_layers
from model.vit_layers import pool_factor

# (engine, features, prompts) -> ConceptOutputs chunks: how trained concept embeddings of a fine-tuning
# checkpoint replace or add to the text features (utils/pipeline.py build_detector routes them here).
TextOverride = Callable[[Any, Any, Sequence[str]], Iterator[Any]]


class TextScorer:
    """Text-only results and patch features of a batch, with an engine and its owner's settings.

    Args:
        engine: a `model.engine.Sam3Engine` (or anything with its `encode_images` / `predict`).
        settings_of: returns the owner's current `ScoringSettings` (read at each use, never copied).
        text_override: optional source of concept outputs replacing ``engine.predict``.
    """

    def __init__(
        self,
        engine: Any,
        settings_of: Callable[[], ScoringSettings],
        text_override: TextOverride | None = None,
    ) -> None:
        self.engine = engine
        self._settings_of = settings_of
        self.text_override = text_override
        self._maps = TextMaps(settings_of)

    @property
    def settings(self) -> ScoringSettings:
        """The owner's scoring settings, as they are now."""
        return self._settings_of()

    def patch_pool(self) -> int:
        """The pooling factor of the ViT grid: ``settings.patch_pool``, else derived from ``visual_grid``."""
        s = self.settings
        return s.patch_pool if s.patch_pool is not None else pool_factor(self.engine.vit_grid, s.visual_grid)

    def encode(self, images: Sequence[np.ndarray], with_patches: bool) -> Any:
        """One vision pass over N (H, W, 3) uint8 images; with `with_patches`, the ViT patch layers
        (``features.patch_layers``: {layer: (N, h, w, C)} unit vectors) pooled by `patch_pool`.

        Warns when a ``visual_degrees`` window covers more than a third of the pooled grid.
        """
        if not with_patches:
            return self.engine.encode_images(images)
        layers = select_layers(self.engine.num_vit_layers)
        features = self.engine.encode_images(images, patch_layers=layers, patch_pool=self.patch_pool())
        grid = next(iter(features.patch_layers.values())).shape[1:3]
        check_degrees_fit(self.settings.visual_degrees, (int(grid[0]), int(grid[1])))
        return features

    def score(
        self,
        images: Sequence[np.ndarray],
        prompts: Sequence[str],
        object_noun: str | None = None,
        out_size: tuple[int, int] | None = None,
        instance_masks: bool = False,
        with_patches: bool | None = None,
    ) -> tuple[list[AnomalyResult], dict[int, torch.Tensor]]:
        """Text-only results for a batch, and the patch features of the same vision pass.

        Args:
            images: N images, each (H, W, 3) uint8 RGB (sizes may differ).
            prompts: defect prompts (duplicates are scored once).
            object_noun: the noun for object regularisation (None, or the setting off: skipped).
            out_size: (height, width) of the maps; None = each image's own size.
            instance_masks: give each detection its (H, W) bool instance mask.
            with_patches: compute the patch features; None = when ``settings.visual`` is not none.

        Returns:
            The N results (maps from the text prompts alone; ``mask`` None) and ``{layer: (N, h, w, C)}``
            unit patch features (empty with ``visual="none"``: the engine runs without patch layers).
        """
        prompts = list(dict.fromkeys(given_prompts(prompts)))
        if not prompts:
            raise ValueError("detect needs at least one defect prompt (see model.prompts)")
        if len(images) == 0:
            return [], {}
        regularise = bool(self.settings.object_regularisation and object_noun)
        all_prompts = [object_noun, *prompts] if regularise else prompts
        offset = 1 if regularise else 0  # prompt index of the first defect prompt

        size = None if out_size is None else map_size(out_size)
        if with_patches is None:
            with_patches = self.settings.visual is not VisualMode.NONE
        features = self.encode(images, with_patches=with_patches)
        states = [ImageState() for _ in images]
        source = self.text_override or (lambda engine, feats, rows: engine.predict(feats, rows))
        for chunk in source(self.engine, features, all_prompts):
            self._maps.reduce_chunk(chunk, states, prompts, offset, regularise, instance_masks)

        results = []
        for i, (image, state) in enumerate(zip(images, states, strict=True)):
            missing = [prompts[p] for p in range(len(prompts)) if p not in state.maps]
            if missing:
                raise RuntimeError(f"engine returned no rows for image {i}, prompts {missing}")
            shape = size or (int(image.shape[0]), int(image.shape[1]))
            result = self._maps.finish_image(image, state, prompts, shape, regularise)
            result.object_prompt = object_noun if regularise else None
            results.append(result)
        return results, features.patch_layers
