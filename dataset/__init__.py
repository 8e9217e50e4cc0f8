"""Datasets: every loader yields `Sample`s (see dataset/base.py); `load_dataset` picks the loader by name.

ds = load_dataset("mvtec", "~/autodl-tmp/datasets", "bottle", "test")
len(ds); ds.records[0].image_path    # cheap index, no pixels decoded
sample = ds[0]                        # decodes image (H, W, 3) uint8 RGB and mask (H, W) bool
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dataset.base import BitDepths, ImageDataset
from dataset.constants import (
    BTAD_CATEGORIES,
    KSDD2_CATEGORIES,
    META_JSON_CATEGORIES,
    MPDD_CATEGORIES,
    MVTEC_AD2_CATEGORIES,
    MVTEC_CATEGORIES,
    MVTEC_LOCO_CATEGORIES,
    OBJECT_NOUNS,
    REAL_IAD_CATEGORIES,
    TEXTURE_CATEGORIES,
    VISA_CATEGORIES,
    object_noun,
)
from dataset.folder import FOLDER_LAYOUT, available_folder_categories, load_folder
from dataset.ksdd2 import KSDD2_LAYOUT, available_ksdd2_categories, load_ksdd2
from dataset.meta_json import META_JSON_LAYOUT, available_meta_json_categories, load_meta_json, meta_json_name
from dataset.mvtec import MVTEC_LAYOUT, available_mvtec_categories, load_mvtec
from dataset.mvtec_like import (
    BTAD_LAYOUT,
    MPDD_LAYOUT,
    MVTEC_AD2_LAYOUT,
    available_btad_categories,
    available_mpdd_categories,
    available_mvtec_ad2_categories,
    load_btad,
    load_mpdd,
    load_mvtec_ad2,
)
from dataset.mvtec_loco import LOCO_LAYOUT, available_loco_categories, load_mvtec_loco
from dataset.real_iad import REAL_IAD_LAYOUT, available_real_iad_categories, load_real_iad
from dataset.records import DatasetError, DatasetWarning, MaskPairingError, Record, Sample, short_list
from dataset.visa import VISA_LAYOUT, available_visa_categories, load_visa

Loader = Callable[[str | os.PathLike[str], str, str], ImageDataset]


@dataclass(frozen=True)
class DatasetSpec:
    """How one `--dataset` name is read: its loader, its on-disk category finder, the layout shown in
    errors and the benchmark's published categories (empty for own data).

    fixed: the categories are the whole set (a benchmark); False where a set's classes are whatever its
    files say (meta_json, whose `categories` are only the classes with a vocabulary of their own).
    """

    load: Loader
    find: Callable[[str | os.PathLike[str]], list[str]]
    layout: str
    categories: tuple[str, ...]
    fixed: bool = True


DATASETS: dict[str, DatasetSpec] = {
    "mvtec": DatasetSpec(load_mvtec, available_mvtec_categories, MVTEC_LAYOUT, MVTEC_CATEGORIES),
    "visa": DatasetSpec(load_visa, available_visa_categories, VISA_LAYOUT, VISA_CATEGORIES),
    "mvtec_ad2": DatasetSpec(
        load_mvtec_ad2, available_mvtec_ad2_categories, MVTEC_AD2_LAYOUT, MVTEC_AD2_CATEGORIES
    ),
    "mvtec_loco": DatasetSpec(load_mvtec_loco, available_loco_categories, LOCO_LAYOUT, MVTEC_LOCO_CATEGORIES),
    "mpdd": DatasetSpec(load_mpdd, available_mpdd_categories, MPDD_LAYOUT, MPDD_CATEGORIES),
    "btad": DatasetSpec(load_btad, available_btad_categories, BTAD_LAYOUT, BTAD_CATEGORIES),
    "ksdd2": DatasetSpec(load_ksdd2, available_ksdd2_categories, KSDD2_LAYOUT, KSDD2_CATEGORIES),
    "real_iad": DatasetSpec(
        load_real_iad, available_real_iad_categories, REAL_IAD_LAYOUT, REAL_IAD_CATEGORIES
    ),
    "meta_json": DatasetSpec(
        load_meta_json, available_meta_json_categories, META_JSON_LAYOUT, META_JSON_CATEGORIES, fixed=False
    ),
    "folder": DatasetSpec(load_folder, available_folder_categories, FOLDER_LAYOUT, (), fixed=False),
}
DATASET_NAMES: tuple[str, ...] = tuple(DATASETS)


def _spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}: expected one of {', '.join(DATASET_NAMES)}")
    return DATASETS[name]


def load_dataset(
    name: str,
    root: str | os.PathLike[str],
    category: str,
    split: str,
    resolution: str | None = None,
    bit_depth: int | None = None,
) -> ImageDataset:
    """A lazy sequence of `Sample`s for one category and split ("train" or "test").

    name: one of DATASET_NAMES. root: the datasets root (holding `mvtec/`, `visa/`, ...) or the dataset
    folder itself; `~` is expanded. Some sets have more splits: mvtec_ad2 "validation", "test_private",
    "test_private_mixed" ("test" is test_public); mvtec_loco "validation". `resolution` picks the
    `realiad_<res>` folder of real_iad (ignored by the others). Images of more than 8 bits without sBIT are
    scaled by `bit_depth`, or else by the depth of the category's brightest such image over this split and
    the train (or test) split (`dataset.base.BitDepths`). Nothing is decoded here; `result.records` lists
    paths and labels. Bad input raises DatasetError naming the path and the layout.
    """
    dataset = _load_split(name, root, category, split, resolution)
    other = "train" if split != "train" else "test"
    with warnings.catch_warnings():  # the other split's index is read for its paths only
        warnings.simplefilter("ignore", DatasetWarning)
        try:
            extra = _load_split(name, root, category, other, resolution).records
        except DatasetError:
            extra = []
    dataset.depths = BitDepths(dataset.records + extra, bit_depth)
    return dataset


def _load_split(
    name: str, root: str | os.PathLike[str], category: str, split: str, resolution: str | None
) -> ImageDataset:
    """The index of one split, as the set's loader reads it (real_iad also takes its resolution)."""
    spec = _spec(name)
    if name == "real_iad":
        return load_real_iad(root, category, split, resolution)
    return spec.load(root, category, split)


def available_categories(name: str, root: str | os.PathLike[str]) -> list[str]:
    """Categories of dataset `name` found on disk under `root`, sorted."""
    return _spec(name).find(root)


def categories_of(name: str) -> tuple[str, ...]:
    """The published categories of benchmark `name` (no disk access; () for "folder", own data)."""
    return _spec(name).categories


def fixed_categories(name: str) -> tuple[str, ...]:
    """The categories a set of `name` can hold, when that is fixed (a benchmark's published list); () for
    sets whose classes are their own (meta_json, folder), or for a name that is not a dataset."""
    spec = DATASETS.get(name)
    return spec.categories if spec is not None and spec.fixed else ()


def benchmark_categories() -> tuple[str, ...]:
    """Every published category of every benchmark, in DATASET_NAMES order, each once (the app's list)."""
    return tuple(dict.fromkeys(c for spec in DATASETS.values() for c in spec.categories))


def set_name(name: str, root: str | os.PathLike[str] | None) -> str:
    """The name of one evaluated set: `name`, or for "meta_json" the folder holding its meta.json (each
    meta.json is a set of its own: its output folder and its block in compare.md); a folder named like a
    dataset gets `_meta_json` appended (`mvtec_meta_json`), so it never mixes with that loader's runs."""
    if name != "meta_json" or not root:
        return name
    folder = meta_json_name(root)
    return f"{folder}_meta_json" if folder in DATASETS else folder


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
        raise DatasetError(f"no {name} categories under {root}: expected {_spec(name).layout}")
    missing = [c for c in wanted or () if c not in found]
    if missing:
        raise DatasetError(_missing_categories(name, root, list(wanted or ()), missing, found))
    return list(dict.fromkeys(wanted or found))  # a name given twice is evaluated once


def _missing_categories(
    name: str, root: str | os.PathLike[str], wanted: list[str], missing: list[str], found: list[str]
) -> str:
    """The one-line error for categories asked for but not under `root`; it suggests `--categories` with
    the ones found (those asked for, else every one on disk)."""
    unknown = [c for c in missing if categories_of(name) and c not in categories_of(name)]
    runnable = ",".join([c for c in wanted if c in found] or found)
    if unknown:
        return (
            f"unknown category {', '.join(unknown)} for dataset {name} under {root}: found "
            f"{', '.join(found)}; pass --categories {runnable}"
        )
    return (
        f"{len(missing)} of the {len(wanted)} {name} categories asked for are not under {root} "
        f"({short_list(missing)}): pass --categories {runnable} to run the ones found"
    )


__all__ = [
    "BTAD_CATEGORIES",
    "DATASETS",
    "DATASET_NAMES",
    "KSDD2_CATEGORIES",
    "MPDD_CATEGORIES",
    "MVTEC_AD2_CATEGORIES",
    "MVTEC_CATEGORIES",
    "MVTEC_LOCO_CATEGORIES",
    "REAL_IAD_CATEGORIES",
    "OBJECT_NOUNS",
    "TEXTURE_CATEGORIES",
    "VISA_CATEGORIES",
    "DatasetError",
    "DatasetSpec",
    "DatasetWarning",
    "ImageDataset",
    "MaskPairingError",
    "Record",
    "Sample",
    "available_categories",
    "benchmark_categories",
    "categories_of",
    "fixed_categories",
    "load_dataset",
    "object_noun",
    "select_categories",
    "set_name",
]
