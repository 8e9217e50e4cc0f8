"""Capture intermediate ViT layers of SAM 3's vision encoder during the one vision pass (forward hooks).

``Sam3Model.get_vision_features`` returns only the last ViT layer and the FPN built from it; the patch-level
visual scores (model/visual.py) also want intermediate layers. Asking transformers for all hidden states
would keep every layer (32 x 72 x 72 x 1024 values per real image); a forward hook on the chosen
``vision_encoder.backbone.layers[i]`` keeps only those, in the same pass, so no image is encoded twice::

    with capture_vit_layers(model, [7, 15, 23, 31], pool=2) as captured:
        vision = model.get_vision_features(pixel_values=pixels)
    captured[15]  # (B, h, w, C) unit patch vectors of ViT layer 15 (0-based), h = w = 72 / 2 = 36

The hook turns each block output into what the visual scores compare, before anything is stored:

1. L2-normalised in float32. SAM 3's ViT has no final norm: its residual stream can exceed fp16's range
   (65504), so a raw output cast to fp16 becomes inf and every map NaN; a unit vector fits in any dtype.
2. Average-pooled over ``pool x pool`` patch windows and normalised again. The factor is derived from a
   size in grid cells (`pool_factor`: the real 72 x 72 grid -> 36 x 36 for visual_grid 36, MuSc's scale,
   4x less memory and 16x fewer similarity products; the tiny model's 16 x 16 stays 16 x 16).
3. Cast to the storage dtype (e.g. float16 on CUDA to halve memory).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def vit_layers(model: nn.Module) -> nn.ModuleList:
    """The ViT blocks of a ``Sam3Model`` (``vision_encoder.backbone.layers``)."""
    return model.vision_encoder.backbone.layers


def pool_factor(side: int, visual_grid: int) -> int:
    """The pooling factor that brings a ViT grid of `side` cells to the nearest size >= `visual_grid`.

    The largest p >= 1 with ``ceil(side / p) >= visual_grid``: 72 -> 2 (36 cells) for 36; 16 -> 1 for 36
    (a grid at or below `visual_grid` is not pooled); 100 -> 2 (50 cells; 3 would give 34 < 36).
    """
    if side < 1 or visual_grid < 1:
        raise ValueError(f"grid sides must be >= 1, got side {side} and visual_grid {visual_grid}")
    pool = max(1, side // visual_grid)
    while pool > 1 and math.ceil(side / pool) < visual_grid:
        pool -= 1
    return pool


def patch_features(output: Tensor, pool: int = 1, dtype: torch.dtype | None = None) -> Tensor:
    """One ViT block output -> unit patch vectors, pooled: (B, h, w, C) -> (B, ceil(h/pool), ceil(w/pool), C).

    Normalised in float32 first (so no overflow in any storage dtype), then averaged over ``pool x pool``
    windows (``adaptive_avg_pool2d``: a ragged last window averages what it has) and normalised again,
    then cast to `dtype` (None = float32). A non-finite input stays non-finite (NaN) for the caller to see.
    """
    if pool < 1:
        raise ValueError(f"patch_pool must be >= 1, got {pool}")
    x = F.normalize(output.float(), dim=-1)
    if pool > 1:
        h, w = x.shape[1:3]
        size = (math.ceil(h / pool), math.ceil(w / pool))
        x = F.normalize(F.adaptive_avg_pool2d(x.permute(0, 3, 1, 2), size).permute(0, 2, 3, 1), dim=-1)
    return x if dtype is None else x.to(dtype)


@contextmanager
def capture_vit_layers(
    model: nn.Module, layers: Sequence[int], dtype: torch.dtype | None = None, pool: int = 1
) -> Iterator[dict[int, Tensor]]:
    """Collect the `patch_features` of ViT blocks `layers` while the context is open.

    Args:
        model: a ``Sam3Model``.
        layers: 0-based block indices (e.g. from ``model.visual.select_layers``); empty captures nothing.
        dtype: store the unit vectors in this dtype (e.g. float16 to halve memory); None = float32.
        pool: average ``pool x pool`` patch windows (1 = the ViT's own grid).

    Yields:
        A dict filled on each forward: ``{layer: (B, h, w, C) tensor}`` of unit vectors (detached; a later
        forward in the same context replaces the entry).

    Raises:
        ValueError: a layer index outside the model's depth, or pool < 1.
    """
    blocks = vit_layers(model)
    bad = [i for i in layers if not 0 <= i < len(blocks)]
    if bad:
        raise ValueError(f"ViT layer(s) {bad} out of range: this SAM 3 has {len(blocks)} layers (0-based)")
    if pool < 1:
        raise ValueError(f"patch_pool must be >= 1, got {pool}")
    captured: dict[int, Tensor] = {}

    def hook_for(index: int):
        def hook(_module: nn.Module, _inputs: tuple, output: Tensor) -> None:
            captured[index] = patch_features(output.detach(), pool, dtype)

        return hook

    handles = [blocks[i].register_forward_hook(hook_for(i)) for i in dict.fromkeys(layers)]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()
