"""Datasets: every loader yields `Sample`s (see dataset/base.py); `load_dataset` picks the loader by name.

ds = load_dataset("mvtec", "~/autodl-tmp/datasets", "bottle", "test")
len(ds); ds.records[0].image_path    # cheap index, no pixels decoded
sample = ds[0]                        # decodes image (H, W, 3) uint8 RGB and mask (H, W) bool
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence

from dataset.base import (
    BitDepths,
    DatasetError,
    DatasetWarning,
    ImageDataset,
    MaskPairingError,
    Record,
    Sample,
)
from dataset.constants import MVTEC_CATEGORIES, OBJECT_NOUNS, TEXTURE_CATEGORIES, VISA_CATEGORIES, object_noun
from dataset.folder import FOLDER_LAYOUT, available_folder_categories, load_folder
from dataset.mvtec import MVTEC_LAYOUT, available_mvtec_categories, load_mvtec
from dataset.visa import VISA_LAYOUT, available_visa_categories, load_visa

DATASET_NAMES: tuple[str, ...] = ("mvtec", "visa", "folder")

_LOADERS: dict[str, Callable[[str | os.PathLike[str], str, str], ImageDataset]] = {
    "mvtec": load_mvtec,
    "visa": load_visa,
    "folder": load_folder,
}
_CATEGORY_FINDERS: dict[str, Callable[[str | os.PathLike[str]], list[str]]] = {
    "mvtec": available_mvtec_categories,
    "visa": available_visa_categories,
    "folder": available_folder_categories,
}
_LAYOUTS: dict[str, str] = {"mvtec": MVTEC_LAYOUT, "visa": VISA_LAYOUT, "folder": FOLDER_LAYOUT}


def _check_name(name: str) -> None:
    if name not in _LOADERS:
        raise DatasetError(f"unknown dataset {name!r}: expected one of {', '.join(DATASET_NAMES)}")


def load_dataset(
    name: str, root: str | os.PathLike[str], category: str, split: str, bit_depth: int | None = None
) -> ImageDataset:
    """A lazy sequence of `Sample`s for one category and split ("train" or "test").

    name: "mvtec", "visa" or "folder". root: the datasets root (holding `mvtec/`, `visa/`) or the dataset
    folder itself; `~` is expanded. Nothing is decoded here; `result.records` lists paths and labels.
    Images of more than 8 bits without sBIT are scaled by `bit_depth`, or else by the depth of the
    category's brightest such image over both splits (`dataset.base.BitDepths`).
    Bad input raises DatasetError naming the path and the expected layout.
    """
    _check_name(name)
    dataset = _LOADERS[name](root, category, split)
    other = "train" if split == "test" else "test"
    with warnings.catch_warnings():  # the other split's index is read for its paths only
        warnings.simplefilter("ignore", DatasetWarning)
        try:
            extra = _LOADERS[name](root, category, other).records
        except DatasetError:
            extra = []
    dataset.depths = BitDepths(dataset.records + extra, bit_depth)
    return dataset


def available_categories(name: str, root: str | os.PathLike[str]) -> list[str]:
    """Categories of dataset `name` found on disk under `root`, sorted."""
    _check_name(name)
    return _CATEGORY_FINDERS[name](root)


def select_categories(
    name: str, root: str | os.PathLike[str] | None, wanted: Sequence[str] | None
) -> list[str]:
    """`wanted` checked against the categories on disk (every category found when `wanted` is empty).

    A missing root, a root without any category, or an unknown category is a one-line DatasetError.
    """
    if not root:
        raise DatasetError(
            "no dataset path: pass --dataset_path DIR or write the datasets root in dataset_dir.txt"
        )
    found = available_categories(name, root)
    if not found:
        raise DatasetError(f"no {name} categories under {root}: expected {_LAYOUTS[name]}")
    missing = [c for c in wanted or () if c not in found]
    if missing:
        raise DatasetError(
            f"unknown category {', '.join(missing)} for dataset {name} under {root}: "
            f"found {', '.join(found) or 'none'}"
        )
    return list(wanted or found)


__all__ = [
    "DATASET_NAMES",
    "MVTEC_CATEGORIES",
    "OBJECT_NOUNS",
    "TEXTURE_CATEGORIES",
    "VISA_CATEGORIES",
    "DatasetError",
    "DatasetWarning",
    "ImageDataset",
    "MaskPairingError",
    "Record",
    "Sample",
    "available_categories",
    "load_dataset",
    "object_noun",
    "select_categories",
]
