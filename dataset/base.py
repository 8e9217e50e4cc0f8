"""The lazy dataset every loader returns: `ImageDataset` decodes a `Record` into a `Sample` when indexed.

The record and sample types with their errors live in `dataset.records`, the decoding in `dataset.images`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import overload

import numpy as np

from dataset.images import (
    category_bit_depth,
    read_image,
    read_sized_mask,
)
from dataset.records import (
    DatasetWarning,
    Record,
    Sample,
)


def load_sample(record: Record, bit_depth: int | None = None) -> Sample:
    """Decode the image (and mask) of `record`; a mask of another size than its image is a DatasetError.

    `bit_depth`: see `read_image` (the depth of >8-bit images without sBIT; None = guessed per image).
    """
    image = read_image(record.image_path, bit_depth)
    height, width = image.shape[:2]
    mask = np.zeros((height, width), dtype=bool)
    for path in record.regions or ((record.mask_path,) if record.mask_path is not None else ()):
        mask |= read_sized_mask(path, record.image_path, (height, width))
    return Sample(
        image=image,
        label=record.label,
        mask=mask,
        category=record.category,
        defect_type=record.defect_type,
        image_path=record.image_path,
        mask_path=record.mask_path,
    )


class BitDepths:
    """The depth `read_image` divides >8-bit samples without sBIT by, one per category (or one declared).

    Found once per category from `records` (give it both splits: a reference image and a test image of
    one camera must be scaled alike) by `category_bit_depth`, the first time an image of it is decoded.
    """

    def __init__(self, records: Sequence[Record], declared: int | None = None) -> None:
        self.records = list(records)
        self.declared = declared
        self.found: dict[str, int | None] = {}

    def of(self, category: str) -> int | None:
        """The declared depth, else the category's (None: no image of it needs one)."""
        if self.declared is not None:
            return self.declared
        if category not in self.found:
            paths = [r.image_path for r in self.records if r.category == category]
            self.found[category] = category_bit_depth(paths)
        return self.found[category]


class ImageDataset(Sequence[Sample]):
    """A sequence of `Sample`s decoded lazily from `records`.

    Construction reads no pixels; `dataset[i]` decodes image i (and its mask) on every call.
    `records` is the cheap index (paths, labels, defect types) for counting and resuming by path;
    slicing returns a new ImageDataset over the selected records.

    An anomalous image whose mask is all zero is found when it is decoded (checking at indexing time would
    decode every mask up front): its path joins `empty_masks` (shared with slices of this dataset) and a
    DatasetWarning with the running count is emitted once per image.

    Images of more than 8 bits without sBIT are scaled by their category's depth (`depths`, shared with
    slices; by default found from `records`): one sample value, one brightness, within a category.
    """

    def __init__(
        self,
        records: Sequence[Record],
        name: str,
        root: Path,
        category: str,
        split: str,
        empty_masks: set[str] | None = None,
        depths: BitDepths | None = None,
    ) -> None:
        self.records: list[Record] = list(records)
        self.name = name
        self.root = root
        self.category = category
        self.split = split
        self.empty_masks: set[str] = set() if empty_masks is None else empty_masks
        self.depths = BitDepths(self.records) if depths is None else depths

    def __len__(self) -> int:
        return len(self.records)

    @overload
    def __getitem__(self, index: int) -> Sample: ...

    @overload
    def __getitem__(self, index: slice) -> ImageDataset: ...

    def __getitem__(self, index: int | slice) -> Sample | ImageDataset:
        if isinstance(index, slice):
            records = self.records[index]
            return ImageDataset(
                records, self.name, self.root, self.category, self.split, self.empty_masks, self.depths
            )
        return self._load(self.records[index])

    def __iter__(self) -> Iterator[Sample]:
        for record in self.records:
            yield self._load(record)

    def _load(self, record: Record) -> Sample:
        """`load_sample(record)`, warning the first time an anomalous image shows an all-zero mask."""
        sample = load_sample(record, self.depths.of(record.category))
        empty = sample.label == 1 and sample.mask_path is not None and not sample.mask.any()
        if empty and sample.image_path not in self.empty_masks:
            self.empty_masks.add(sample.image_path)
            warnings.warn(
                f"anomalous image {sample.image_path} has an all-zero mask {sample.mask_path} "
                f"({len(self.empty_masks)} so far in {self.name}/{self.category}/{self.split}): every pixel "
                "counts as normal in the pixel metrics; fix or delete the mask",
                DatasetWarning,
                stacklevel=3,
            )
        return sample

    def __repr__(self) -> str:
        n_bad = sum(r.label or 0 for r in self.records)
        return (
            f"ImageDataset({self.name}, category={self.category!r}, split={self.split!r}, "
            f"n={len(self)}, anomalous={n_bad}, root={str(self.root)!r})"
        )
