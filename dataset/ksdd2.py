"""KolektorSDD2: flat `KolektorSDD2/{train,test}/` holding `<id>.png` and its ground truth `<id>_GT.png`.

An image is anomalous iff its GT has a nonzero pixel (there are no defect folders). `train/` also holds
anomalous images: split "train" (the few-shot reference pool) is the *normal* images of `train/` only, and
split "test" is every image of `test/`. Nothing of `train/` is evaluated. The whole set is one category,
"ksdd2". Labels need each GT decoded once, when the split is indexed (small images).
"""

from __future__ import annotations

import os
from pathlib import Path

from dataset.base import ImageDataset
from dataset.constants import KSDD2_CATEGORIES
from dataset.images import read_mask
from dataset.mvtec import check_pairs, mask_key
from dataset.records import DatasetError, Record, check_split, list_images, resolve_folder, unknown_category

KSDD2_FOLDER_NAMES: tuple[str, ...] = ("ksdd2", "KolektorSDD2", "kolektorsdd2")
KSDD2_LAYOUT = "<root>/ksdd2/{train,test}/{<id>.png, <id>_GT.png}"
GT_SUFFIX = "_GT"


def _locate(root: str | os.PathLike[str]) -> Path:
    return resolve_folder(root, KSDD2_FOLDER_NAMES, KSDD2_LAYOUT)


def ksdd2_pairs(split_dir: Path) -> list[tuple[Path, Path]]:
    """(image, GT) pairs of one flat folder, by stem (`<id>` with `<id>_GT`), sorted by image name."""
    files = list_images(split_dir)
    gts = {mask_key(p, GT_SUFFIX): p for p in files if p.stem.endswith(GT_SUFFIX)}
    images = [p for p in files if not p.stem.endswith(GT_SUFFIX)]
    hint = f"<id>{GT_SUFFIX}.png beside each <id>.png"
    check_pairs(images, gts, split_dir, split_dir, hint, KSDD2_LAYOUT)
    if not images:
        raise DatasetError(f"no images in {split_dir} (expected {KSDD2_LAYOUT})")
    return [(p, gts[p.stem]) for p in images]


def build_ksdd2_records(folder: Path, split: str) -> list[Record]:
    """Records of split "train" (normal train/ images) or "test" (all of test/, label from the GT)."""
    category = KSDD2_CATEGORIES[0]
    records = []
    for image, gt in ksdd2_pairs(folder / split):
        anomalous = bool(read_mask(gt).any())
        if anomalous:
            records.append(Record(str(image), str(gt), 1, "defect", category))
        else:
            records.append(Record(str(image), None, 0, "good", category))
    if split == "train":
        records = [r for r in records if r.label == 0]
    return sorted(records, key=lambda r: (r.label, os.path.basename(r.image_path)))


def available_ksdd2_categories(root: str | os.PathLike[str]) -> list[str]:
    """["ksdd2"] when `test/` is there, else []."""
    return list(KSDD2_CATEGORIES) if (_locate(root) / "test").is_dir() else []


def load_ksdd2(root: str | os.PathLike[str], category: str, split: str) -> ImageDataset:
    """Lazy KolektorSDD2 split; see the module docstring for the protocol."""
    check_split(split)
    folder = _locate(root)
    found = available_ksdd2_categories(folder)
    if category not in found:
        raise unknown_category(category, folder, found, KSDD2_LAYOUT)
    return ImageDataset(build_ksdd2_records(folder, split), "ksdd2", folder, category, split)
