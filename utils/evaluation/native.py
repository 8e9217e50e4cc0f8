"""The maps and masks the pixel metrics read: the stored ones (eval_size) or each image's own size (native).

With `metrics_resolution: native` every pixel figure (pixel AUROC / AP / F1-max, AUPRO, sPRO, AU-PRO@0.05,
SegF1) is computed on each stored map resized bilinearly to its image's ground-truth size — the resize
that the `--save_maps tiff` export writes (`model.map_ops.resize_map`) — against the ground truth read at
that size, so a figure equals what a benchmark's official script computes on the export. The stored maps
stay at eval_size; the native maps are made one at a time when read (`NativeMaps`), never held together.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from dataset import Record
from dataset.images import read_sized_mask
from model.map_ops import resize_map
from utils.evaluation.metrics import Ranking, rank_pixels
from utils.evaluation.store import CategoryResult


class NativeMaps(Sequence[np.ndarray]):
    """Stored maps (N, S, S) read as (H_i, W_i) float32 maps, each resized when it is read (`resize_map`)."""

    def __init__(self, stored: np.ndarray, sizes: Sequence[tuple[int, int]]) -> None:
        self.stored, self.sizes = stored, list(sizes)

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, index: int) -> np.ndarray:  # type: ignore[override]
        return resize_map(np.asarray(self.stored[index], dtype=np.float32), self.sizes[index])


def image_size(path: str) -> tuple[int, int]:
    """(H, W) of an image file, from its header (as the TIFF export reads it)."""
    with Image.open(path) as image:
        return image.size[1], image.size[0]


def native_mask(record: Record, size: tuple[int, int]) -> np.ndarray:
    """(H, W) bool ground truth of `record` at its image's size (the union of its region files).

    A good image's mask is a read-only all-False view that takes no memory.
    """
    paths = record.regions or ((record.mask_path,) if record.mask_path is not None else ())
    if not paths:
        return np.broadcast_to(np.False_, size)
    mask = np.zeros(size, dtype=bool)
    for path in paths:
        mask |= read_sized_mask(path, record.image_path, size)
    return mask


@dataclass
class PixelView:
    """What the pixel metrics of one category read: per image its mask and its map, and their ranking.

    masks, maps: (N, S, S) stacks (eval_size) or sequences of N (H_i, W_i) arrays (native).
    """

    masks: Sequence[np.ndarray]
    maps: Sequence[np.ndarray]
    native: bool = False

    @functools.cached_property
    def ranking(self) -> Ranking:
        """Every pixel pooled and sorted once (`rank_pixels`)."""
        return rank_pixels(self.masks, self.maps)

    def with_maps(self, stored: np.ndarray) -> PixelView:
        """The view of other stored (N, S, S) maps of the same images (a signal): these masks, the maps read
        as this view reads its own (native: resized to the same sizes, one at a time)."""
        if isinstance(self.maps, NativeMaps):
            return PixelView(self.masks, NativeMaps(stored, self.maps.sizes), native=True)
        return PixelView(self.masks, stored, native=self.native)

    def release(self) -> None:
        """Drop the ranking of a native view (GBs for a LOCO category) once the seven metrics have it; a
        later reader (MVTec AD 2's AU-PRO@0.05) ranks again. The stored view shares its ranking: kept."""
        if self.native:
            self.__dict__.pop("ranking", None)


def native_view(records: Sequence[Record], stored_maps: np.ndarray) -> PixelView:
    """The native view of a category: stored maps resized to, and masks read at, each image's size."""
    sizes = [image_size(r.image_path) for r in records]
    masks = [native_mask(r, size) for r, size in zip(records, sizes, strict=True)]
    return PixelView(masks, NativeMaps(stored_maps, sizes), native=True)


def pixel_view(result: CategoryResult, records: Sequence[Record], native: bool) -> PixelView:
    """The view of `result` that its pixel metrics read, made once per result and kept on it (`view`).

    eval_size: the stored masks and maps, ranked by `result.pixels` (shared with curves and thresholds).
    native: `native_view` of the records (in store order).
    """
    if result.view is None or result.view.native != native:
        result.view = native_view(records, result.maps) if native else EvalSizeView(result)
    return result.view


class EvalSizeView(PixelView):
    """The stored (N, S, S) masks and maps; the ranking is the result's own (`CategoryResult.pixels`)."""

    def __init__(self, result: CategoryResult) -> None:
        super().__init__(result.masks, result.maps, native=False)
        self.ranking = result.pixels  # type: ignore[misc]  # fills the cached property
