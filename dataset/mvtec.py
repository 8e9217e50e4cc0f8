"""MVTec AD: `<cat>/train/good`, `<cat>/test/{good,<defect>}`, `<cat>/ground_truth/<defect>/<stem>_mask.png`.

`build_mvtec_records` is the one pairing function for every MVTec-like tree (the converted
`visa_pytorch/1cls` layout of VisA uses it too).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from dataset.base import ImageDataset
from dataset.records import (
    DatasetError,
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

# Folder names under a datasets root that hold the MVTec AD categories.
MVTEC_FOLDER_NAMES: tuple[str, ...] = ("mvtec", "mvtec_anomaly_detection", "MVTec", "mvtec_ad")
MVTEC_LAYOUT = (
    "<root>/[mvtec/]<category>/{train/good/*.png, test/{good,<defect>}/*.png, "
    "ground_truth/<defect>/<stem>_mask.png}"
)


def resolve_mvtec_root(root: str | os.PathLike[str]) -> Path:
    """The folder holding the categories: `root/mvtec` (or another MVTEC_FOLDER_NAMES entry), else `root`."""
    base = as_root(root, MVTEC_LAYOUT)
    for name in MVTEC_FOLDER_NAMES:
        if (base / name).is_dir():
            return base / name
    return base


def mvtec_like_categories(folder: Path) -> list[str]:
    """Sub-folders of `folder` that have a `train/` or `test/` folder, sorted."""
    return [d.name for d in subdirs(folder) if (d / "test").is_dir() or (d / "train").is_dir()]


def mask_key(mask: Path, suffix: str = "_mask") -> str:
    """The image stem a mask belongs to: `000_mask.png` -> `000`; `000.png` (visa_pytorch naming) -> `000`.

    `suffix`: the set's mask suffix (KolektorSDD2: `_GT`)."""
    stem = mask.stem
    return stem[: -len(suffix)] if stem.endswith(suffix) else stem


def paired_masks(
    images: Sequence[Path],
    gt_dir: Path,
    defect_dir: Path,
    hint: str,
    layout: str,
    masks: Sequence[Path] | None = None,
) -> dict[str, Path]:
    """Image stem -> its mask (`<stem>_mask.<ext>` or `<stem>.<ext>`, any image extension).

    `masks`: the candidate files (None: every image file of `gt_dir`). Pairs by stem, never by position.
    An image without a mask, or a mask without an image, raises MaskPairingError listing the files;
    `hint` names the expected mask path in the message.
    """
    by_stem: dict[str, Path] = {}
    for mask in list_images(gt_dir) if masks is None else masks:  # `<stem>_mask` wins over `<stem>`
        key = mask_key(mask)
        if key not in by_stem or mask.stem.endswith("_mask"):
            by_stem[key] = mask
    return check_pairs(images, by_stem, gt_dir, defect_dir, hint, layout)


def check_pairs(
    images: Sequence[Path], masks: dict[str, Path], gt_dir: Path, defect_dir: Path, hint: str, layout: str
) -> dict[str, Path]:
    """`masks` (image stem -> mask) after checking that it pairs one to one with `images`; else a
    MaskPairingError listing the unpaired files (`hint`: the expected mask name)."""
    unpaired = [p for p in images if p.stem not in masks]
    if unpaired:
        raise MaskPairingError(
            f"{len(unpaired)} defective image(s) without a mask in {gt_dir}: {short_list(unpaired)} "
            f"(expected {hint} for each; layout {layout})"
        )
    stems = {p.stem for p in images}
    orphans = [m for k, m in sorted(masks.items()) if k not in stems]
    if orphans:
        raise MaskPairingError(
            f"{len(orphans)} mask(s) without an image in {defect_dir}: {short_list(orphans)} "
            f"(expected an image <stem>.<ext> for each mask; layout {layout})"
        )
    return masks


def build_tree_records(
    split_dir: Path,
    gt_root: Path,
    category: str,
    layout: str,
    normal: str = "good",
    check_lonely: bool = True,
) -> list[Record]:
    """Index an MVTec-like split folder, sorted by defect type then file name.

    `split_dir/<normal>` images get label 0, defect type "good" and no mask; every other folder of
    `split_dir` is a defect type whose images pair by stem with `gt_root/<defect>/<stem>[_mask].<ext>`
    (`paired_masks`). With `check_lonely`, masks of a defect type without an image folder raise
    MaskPairingError; an empty split raises DatasetError.
    """
    records: list[Record] = []
    for defect_dir in subdirs(split_dir):
        defect = defect_dir.name
        if defect_dir == gt_root:  # MVTec AD 2 keeps ground_truth/ inside test_public/
            continue
        images = list_images(defect_dir)
        warn_shared_stems(images, defect_dir)
        if defect == normal:
            records += [Record(str(p), None, 0, "good", category) for p in images]
            continue
        hint = f"{gt_root.name}/{defect}/<stem>_mask.png"
        masks = paired_masks(images, gt_root / defect, defect_dir, hint, layout)
        records += [Record(str(p), str(masks[p.stem]), 1, defect, category) for p in images]
    have = {d.name for d in subdirs(split_dir)}
    lonely = [d for d in subdirs(gt_root) if d.name not in have and list_images(d)] if check_lonely else []
    if lonely:
        raise MaskPairingError(
            f"masks without images: {short_list(lonely)} has no matching folder in {split_dir} "
            f"(layout {layout})"
        )
    if not records:
        raise DatasetError(f"no images for split {split_dir.name!r} in {split_dir} (expected {layout})")
    return records


def build_mvtec_records(
    category_dir: Path, category: str, split: str, layout: str = MVTEC_LAYOUT
) -> list[Record]:
    """Index one split ("train" or "test") of an MVTec-like category folder (`build_tree_records`).

    Masks are read from `category_dir/ground_truth/<defect>/` for the test split only.
    """
    check_split(split)
    gt_root = category_dir / "ground_truth"
    return build_tree_records(category_dir / split, gt_root, category, layout, check_lonely=split == "test")


def available_mvtec_categories(root: str | os.PathLike[str]) -> list[str]:
    """MVTec AD categories found on disk under `root` (datasets root or the mvtec folder), sorted."""
    return mvtec_like_categories(resolve_mvtec_root(root))


def load_mvtec(root: str | os.PathLike[str], category: str, split: str) -> ImageDataset:
    """Lazy MVTec AD split; `root` is the datasets root holding `mvtec/` or the mvtec folder itself."""
    check_split(split)
    folder = resolve_mvtec_root(root)
    found = mvtec_like_categories(folder)
    if category not in found:
        raise unknown_category(category, folder, found, MVTEC_LAYOUT)
    records = build_mvtec_records(folder / category, category, split)
    return ImageDataset(records, "mvtec", folder, category, split)
