"""Capture intermediate ViT layers of SAM 3's vision encoder during the one vision pass (forward hooks).

``Sam3Model.get_vision_features`` returns only the last ViT layer and the FPN built from it; the patch-level
visual scores (model/visual.py) also want intermediate layers. Asking transformers for all hidden states
would keep every layer (32 x 72 x 72 x 1024 values per real image); a forward hook on the chosen
``vision_encoder.backbone.layers[i]`` keeps only those, in the same pass, so no image is encoded twice::

    with capture_vit_layers(model, [7, 15, 23, 31]) as captured:
        vision = model.get_vision_features(pixel_values=pixels)
    captured[15]  # (B, h, w, C) output of ViT layer 15 (0-based), h = w = image_size / patch_size
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn


def vit_layers(model: nn.Module) -> nn.ModuleList:
    """The ViT blocks of a ``Sam3Model`` (``vision_encoder.backbone.layers``)."""
    return model.vision_encoder.backbone.layers


@contextmanager
def capture_vit_layers(
    model: nn.Module, layers: Sequence[int], dtype: torch.dtype | None = None
) -> Iterator[dict[int, Tensor]]:
    """Collect the outputs of ViT blocks `layers` while the context is open.

    Args:
        model: a ``Sam3Model``.
        layers: 0-based block indices (e.g. from ``model.visual.select_layers``); empty captures nothing.
        dtype: store the captured maps in this dtype (e.g. float16 to halve memory); None keeps theirs.

    Yields:
        A dict filled on each forward: ``{layer: (B, h, w, C) tensor}`` (detached; a later forward in the
        same context replaces the entry).

    Raises:
        ValueError: a layer index outside the model's depth.
    """
    blocks = vit_layers(model)
    bad = [i for i in layers if not 0 <= i < len(blocks)]
    if bad:
        raise ValueError(f"ViT layer(s) {bad} out of range: this SAM 3 has {len(blocks)} layers (0-based)")
    captured: dict[int, Tensor] = {}

    def hook_for(index: int):
        def hook(_module: nn.Module, _inputs: tuple, output: Tensor) -> None:
            out = output.detach()
            captured[index] = out.to(dtype) if dtype is not None else out

        return hook

    handles = [blocks[i].register_forward_hook(hook_for(i)) for i in dict.fromkeys(layers)]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()
