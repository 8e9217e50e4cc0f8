"""Own data: one folder per category, `good/` for normal images and one folder per defect type.

    root/<category>/good/*.png                normal images (label 0)
    root/<category>/<defect>/*.jpg            anomalous images (label 1), any name but `good` and `masks`
    root/<category>/masks/<defect>/<stem>*.png optional masks, matched by stem

If `root` itself holds `good/`, it is a single category named after the folder. Own data has no official
split: unless `root/<category>/train/` and `root/<category>/test/` exist (each with the layout above inside),
split "test" is every image and split "train" is the same images. Image extensions: png, jpg, jpeg, bmp,
tif, tiff (any case).

A defective image without a mask gets an all-False mask (label still 1): its pixel metrics are then
meaningless, so indexing warns (DatasetWarning counting such images per defect type).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from dataset.base import ImageDataset
from dataset.records import (
    DatasetError,
    DatasetWarning,
    MaskPairingError,
    Record,
    as_root,
    check_split,
    list_images,
    short_list,
    subdirs,
    unknown_category,
    warn_shared_stems,
)

MASKS_DIR = "masks"
FOLDER_LAYOUT = (
    "<root>/<category>/{good/*, <defect>/*, masks/<defect>/<stem>[_mask].png} "
    "(optionally inside <category>/train/ and <category>/test/)"
)


def _is_category(folder: Path) -> bool:
    return (folder / "good").is_dir() or ((folder / "train").is_dir() and (folder / "test").is_dir())


def _categories(base: Path) -> dict[str, Path]:
    """Category name -> folder: `base` itself if it holds good/ (or train/ + test/), else its sub-folders."""
    if _is_category(base):
        return {base.name: base}
    return {d.name: d for d in subdirs(base) if _is_category(d)}


def match_mask(stem: str, candidates: list[Path]) -> Path | None:
    """The mask of image `stem` among `candidates` (sorted).

    Prefers `<stem>.png`, then `<stem>_mask.png`, then the first name that starts with the stem followed by a
    non-alphanumeric character (so image `1` never takes `10.png`). None when nothing matches.
    """
    for wanted in (f"{stem}.png", f"{stem}_mask.png"):
        for cand in candidates:
            if cand.name.lower() == wanted.lower():
                return cand
    for cand in candidates:
        if _belongs_to(stem, cand):
            return cand
    return None


def _belongs_to(stem: str, mask: Path) -> bool:
    """True if the mask's name is the stem followed by a non-alphanumeric character (`.`, `_`, `-`, ...)."""
    rest = mask.name[len(stem) :]
    return mask.name.startswith(stem) and bool(rest) and not rest[0].isalnum()


def build_folder_records(base: Path, category: str) -> list[Record]:
    """Index `base` (a category folder, or its train/ or test/ sub-folder), sorted by defect type then name.

    A mask file whose name starts with no image stem of its defect folder raises MaskPairingError; no
    images at all raises DatasetError.
    """
    records: list[Record] = []
    for defect_dir in subdirs(base):
        defect = defect_dir.name
        if defect == MASKS_DIR:
            continue
        images = list_images(defect_dir)
        warn_shared_stems(images, defect_dir)
        if defect == "good":
            records += [Record(str(p), None, 0, "good", category) for p in images]
            continue
        masks = list_images(base / MASKS_DIR / defect)
        unmasked = []
        for image in images:
            mask = match_mask(image.stem, masks)
            records.append(Record(str(image), str(mask) if mask else None, 1, defect, category))
            unmasked += [] if mask else [image.name]
        if unmasked:
            warnings.warn(
                f"{len(unmasked)} of {len(images)} {defect} image(s) in {defect_dir} have no mask in "
                f"{base / MASKS_DIR / defect} ({short_list(unmasked)}): they count as anomalous images, but "
                "their pixel metrics see no defect pixel; add masks or read only the image metrics",
                DatasetWarning,
                stacklevel=2,
            )
        # a mask that could belong to no image (extra masks of an existing image are tolerated)
        orphans = [m for m in masks if not any(_belongs_to(p.stem, m) for p in images)]
        if orphans:
            raise MaskPairingError(
                f"{len(orphans)} mask(s) without an image in {defect_dir}: {short_list(orphans)} "
                f"(expected an image whose stem starts the mask name; layout {FOLDER_LAYOUT})"
            )
    if not records:
        raise DatasetError(f"no images in {base} (expected {FOLDER_LAYOUT})")
    loose = [p.name for p in list_images(base)]
    if loose:
        warnings.warn(
            f"{len(loose)} image(s) directly in {base} are not read ({short_list(loose)}): put normal "
            "images in good/ and defective ones in <defect>/ beside it",
            DatasetWarning,
            stacklevel=2,
        )
    return records


def available_folder_categories(root: str | os.PathLike[str]) -> list[str]:
    """Categories of own data under `root`, sorted."""
    return sorted(_categories(as_root(root, FOLDER_LAYOUT)))


def load_folder(root: str | os.PathLike[str], category: str, split: str) -> ImageDataset:
    """Lazy split of own data (see the module docstring for the layout and the train/test convention)."""
    check_split(split)
    base = as_root(root, FOLDER_LAYOUT)
    found = _categories(base)
    if category not in found:
        raise unknown_category(category, base, sorted(found), FOLDER_LAYOUT)
    cat_dir = found[category]
    has_split = (cat_dir / "train").is_dir() and (cat_dir / "test").is_dir()
    split_dir = cat_dir / split if has_split else cat_dir
    return ImageDataset(build_folder_records(split_dir, category), "folder", base, category, split)
