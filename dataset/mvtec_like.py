"""Benchmarks laid out like MVTec AD: MPDD, BTAD (BTech) and MVTec AD 2.

* MPDD: `mpdd/<cat>/{train/good, test/{good,<defect>}, ground_truth/<defect>/<stem>_mask.png}`.
* BTAD: `BTech_Dataset_transformed/<01|02|03>/{train/ok, test/{ok,ko}, ground_truth/ko/<stem>.<ext>}`; the
  normal folder is `ok` (defect type "good"), the anomalous one `ko`. Image and mask extensions differ by
  class (.bmp / .png): masks pair with images by stem whatever the extension, never by sorted position, and
  stray files (`Thumbs.db`, `.DS_Store`) are skipped.
* MVTec AD 2: `mvtec_ad2/<cat>/{train/good, validation/good, test_public/{good,bad},
  test_public/ground_truth/bad/<stem>_mask.png, test_private/*.png, test_private_mixed/*.png}`. Split
  "test" is test_public; "test_private" and "test_private_mixed" are flat and unlabelled (label None).
"""

from __future__ import annotations

import os
from pathlib import Path

from dataset.base import ImageDataset
from dataset.mvtec import build_tree_records, mvtec_like_categories
from dataset.records import (
    DatasetError,
    Record,
    list_images,
    resolve_folder,
    unknown_category,
    warn_shared_stems,
)

MPDD_FOLDER_NAMES: tuple[str, ...] = ("mpdd", "MPDD")
MPDD_LAYOUT = (
    "<root>/mpdd/<category>/{train/good, test/{good,<defect>}, ground_truth/<defect>/<stem>_mask.png}"
)
BTAD_FOLDER_NAMES: tuple[str, ...] = ("btad", "BTech_Dataset_transformed", "BTAD")
BTAD_LAYOUT = "<root>/btad/<01|02|03>/{train/ok, test/{ok,ko}, ground_truth/ko/<stem>.<png|bmp>}"
MVTEC_AD2_FOLDER_NAMES: tuple[str, ...] = ("mvtec_ad2", "mvtec_ad_2", "MVTec_AD_2", "mvtec_ad2_dataset")
MVTEC_AD2_LAYOUT = (
    "<root>/mvtec_ad2/<category>/{train/good, validation/good, test_public/{good,bad,ground_truth/bad/"
    "<stem>_mask.png}, test_private/*.png, test_private_mixed/*.png}"
)
# MVTec AD 2 split names accepted by `load_mvtec_ad2` ("test" is test_public).
MVTEC_AD2_SPLITS: tuple[str, ...] = (
    "train",
    "validation",
    "test",
    "test_public",
    "test_private",
    "test_private_mixed",
)
UNLABELLED_SPLITS: tuple[str, ...] = ("test_private", "test_private_mixed")


def _category_dir(folder: Path, category: str, layout: str) -> Path:
    """`folder/category`, or the unknown-category DatasetError listing the categories found."""
    found = mvtec_like_categories(folder)
    if category not in found:
        raise unknown_category(category, folder, found, layout)
    return folder / category


def _split_dir(category_dir: Path, split: str, allowed: tuple[str, ...], layout: str) -> Path:
    """`category_dir/split` after checking `split` is one of `allowed`."""
    if split not in allowed:
        raise DatasetError(f"unknown split {split!r}: expected one of {', '.join(allowed)} (layout {layout})")
    return category_dir / split


def _load_tree(
    name: str,
    names: tuple[str, ...],
    layout: str,
    normal: str,
    root: str | os.PathLike[str],
    category: str,
    split: str,
) -> ImageDataset:
    """A "train" or "test" split of an MVTec-like set whose normal folder is `normal`."""
    folder = resolve_folder(root, names, layout)
    cat_dir = _category_dir(folder, category, layout)
    split_dir = _split_dir(cat_dir, split, ("train", "test"), layout)
    records = build_tree_records(
        split_dir, cat_dir / "ground_truth", category, layout, normal, split == "test"
    )
    return ImageDataset(records, name, folder, category, split)


def available_mpdd_categories(root: str | os.PathLike[str]) -> list[str]:
    """MPDD categories on disk under `root` (datasets root or the mpdd folder), sorted."""
    return mvtec_like_categories(resolve_folder(root, MPDD_FOLDER_NAMES, MPDD_LAYOUT))


def load_mpdd(root: str | os.PathLike[str], category: str, split: str) -> ImageDataset:
    """Lazy MPDD split ("train" or "test"): the MVTec AD layout under `mpdd/`."""
    return _load_tree("mpdd", MPDD_FOLDER_NAMES, MPDD_LAYOUT, "good", root, category, split)


def available_btad_categories(root: str | os.PathLike[str]) -> list[str]:
    """BTAD classes on disk (`01`, `02`, `03`), sorted."""
    return mvtec_like_categories(resolve_folder(root, BTAD_FOLDER_NAMES, BTAD_LAYOUT))


def load_btad(root: str | os.PathLike[str], category: str, split: str) -> ImageDataset:
    """Lazy BTAD split ("train" or "test"); normal folder `ok`, anomalous `ko`, masks by stem."""
    return _load_tree("btad", BTAD_FOLDER_NAMES, BTAD_LAYOUT, "ok", root, category, split)


def available_mvtec_ad2_categories(root: str | os.PathLike[str]) -> list[str]:
    """MVTec AD 2 categories on disk, sorted (a category folder holds train/ or test_public/)."""
    folder = resolve_folder(root, MVTEC_AD2_FOLDER_NAMES, MVTEC_AD2_LAYOUT)
    return sorted({*mvtec_like_categories(folder), *_ad2_categories(folder)})


def _ad2_categories(folder: Path) -> list[str]:
    return [d.name for d in folder.iterdir() if d.is_dir() and (d / "test_public").is_dir()]


def load_mvtec_ad2(root: str | os.PathLike[str], category: str, split: str) -> ImageDataset:
    """Lazy MVTec AD 2 split, one of `MVTEC_AD2_SPLITS` ("test" = "test_public").

    test_public: labelled, masks `test_public/ground_truth/bad/<stem>_mask.png`. train, validation: normal
    images. test_private, test_private_mixed: every image of the flat folder with label None (no metrics).
    """
    folder = resolve_folder(root, MVTEC_AD2_FOLDER_NAMES, MVTEC_AD2_LAYOUT)
    found = available_mvtec_ad2_categories(folder)
    if category not in found:
        raise unknown_category(category, folder, found, MVTEC_AD2_LAYOUT)
    split_dir = _split_dir(folder / category, split, MVTEC_AD2_SPLITS, MVTEC_AD2_LAYOUT)
    if split == "test":
        split_dir = folder / category / "test_public"
    if split in UNLABELLED_SPLITS:
        images = list_images(split_dir)
        warn_shared_stems(images, split_dir)
        if not images:
            raise DatasetError(f"no images for split {split!r} in {split_dir} (expected {MVTEC_AD2_LAYOUT})")
        records = [Record(str(p), None, None, split, category) for p in images]
    else:
        gt_root = split_dir / "ground_truth"
        records = build_tree_records(
            split_dir, gt_root, category, MVTEC_AD2_LAYOUT, "good", split_dir.name == "test_public"
        )
    return ImageDataset(records, "mvtec_ad2", folder, category, split)
