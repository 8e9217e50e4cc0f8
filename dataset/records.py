"""What a loader builds, and its errors: `Record` (paths and labels), `Sample` (decoded pixels), listing image
files and keeping names read from disk inside the dataset root.

A loader builds a list of `Record`s (paths and labels only, cheap to make) and wraps it in a
`dataset.base.ImageDataset`; pixels are decoded (`dataset.images`) only when an item is indexed.
"""

from __future__ import annotations

import os
import posixpath
import re
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class DatasetError(ValueError):
    """A dataset that cannot be read as asked; the one-line message names the path and the expected layout."""


class MaskPairingError(DatasetError):
    """Images and ground-truth masks that do not pair up (a mask without an image, or the reverse)."""


class DatasetWarning(UserWarning):
    """A dataset that can be used but holds something to fix: duplicated entries, all-zero masks."""


@dataclass(frozen=True)
class Record:
    """One image of a split, without its pixels.

    `image_path` and `mask_path` are absolute path strings (the mask is None for normal images and for
    defective images of own data that have no mask); `label` is 0 (good), 1 (anomalous) or None (a split
    published without labels, e.g. MVTec AD 2's test_private: scored, never measured).
    `regions`: one mask file per defect region when a set keeps them apart (MVTec LOCO); the image's mask
    is then their union and `mask_path` names their folder. `sample_id`: the physical sample several
    views belong to (Real-IAD), else None.
    """

    image_path: str
    mask_path: str | None
    label: int | None
    defect_type: str
    category: str
    regions: tuple[str, ...] = ()
    sample_id: str | None = None


@dataclass(eq=False)
class Sample:
    """One decoded image with its ground truth.

    image: (H, W, 3) uint8 RGB. mask: (H, W) bool, True = anomalous pixel, all False for good images.
    label: 0 good / 1 anomalous / None unlabelled (see `Record`). defect_type: "good" for normal images.
    """

    image: np.ndarray
    label: int | None
    mask: np.ndarray
    category: str
    defect_type: str
    image_path: str
    mask_path: str | None = None


def is_image_file(path: Path) -> bool:
    """True for a regular file whose extension (any case) is one of IMAGE_EXTENSIONS.

    Hidden files (`.DS_Store`, macOS `._0001.png` resource forks) are never images.
    """
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


def list_images(directory: Path) -> list[Path]:
    """Image files directly inside `directory`, sorted by name (empty if the directory is missing).

    A symbolic link with an image extension whose target is gone is left out with a DatasetWarning
    counting such links (a dataset copied without the files its links point to). Hidden files with an image
    extension (`..png`, `.x.png`, macOS `._x.png`) are left out with a DatasetWarning naming them.
    """
    if not directory.is_dir():
        return []
    entries = sorted(directory.iterdir(), key=lambda p: p.name)
    dangling = [
        p.name for p in entries if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_symlink() and not p.exists()
    ]
    if dangling:
        warnings.warn(
            f"{len(dangling)} link(s) in {directory} point to missing files and are skipped: "
            f"{short_list(dangling)} (copy the files they point to, or delete the links)",
            DatasetWarning,
            stacklevel=3,
        )
    hidden = [p.name for p in entries if p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS]
    if hidden:
        warnings.warn(
            f"{len(hidden)} hidden file(s) in {directory} are not read as images: {short_list(hidden)} "
            "(rename them without the leading dot to score them)",
            DatasetWarning,
            stacklevel=3,
        )
    return [p for p in entries if is_image_file(p)]


def subdirs(directory: Path) -> list[Path]:
    """Sub-directories of `directory`, sorted by name, hidden ones skipped."""
    if not directory.is_dir():
        return []
    return sorted(
        (p for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name
    )


def plain_name(name: str, where: str, what: str) -> str:
    """`name` when it is a single path component (a folder or file name), else a one-line DatasetError.

    A name read from a file or a folder (a csv cell, a category) becomes a component of dataset and output
    paths, so `..`, `.`, separators and NUL would let it point outside them.
    """
    if name in ("", ".", "..") or any(c in name for c in "/\\\0"):
        raise DatasetError(
            f"{where}: {what} {name!r} is not a plain name (it would leave the dataset root or the output "
            "folder): use a folder name without '/', '\\' or '..'"
        )
    return name


def relative_inside(path: str, where: str, what: str) -> str:
    """`path` (relative to a dataset root, `/` or `\\` separated) normalised, or a one-line DatasetError.

    An absolute path or one that climbs out with `..` leaves the dataset root and is refused by its text,
    before anything is opened; `a/./b` and `a/x/../b` become `a/b`.
    """
    parts = path.replace("\\", "/")
    norm = posixpath.normpath(parts)
    if parts.startswith("/") or re.match(r"^[A-Za-z]:", parts) or norm == ".." or norm.startswith("../"):
        raise DatasetError(
            f"{where}: {what} path {path!r} leaves the dataset root: give a path relative to the dataset "
            "folder, inside it"
        )
    return norm


def as_root(root: str | os.PathLike[str], layout: str) -> Path:
    """`root` as an absolute Path (`~` expanded); a missing directory is a DatasetError."""
    path = Path(os.path.abspath(Path(root).expanduser()))
    if not path.is_dir():
        raise DatasetError(f"dataset root not found: {path} (expected {layout})")
    return path


def resolve_folder(root: str | os.PathLike[str], names: Sequence[str], layout: str) -> Path:
    """The dataset's folder: the first `root/<name>` of `names` that exists (canonical name first, then the
    archive's own), else `root` itself (given as the dataset folder). A missing root is a DatasetError."""
    base = as_root(root, layout)
    for name in names:
        if (base / name).is_dir():
            return base / name
    return base


def check_split(split: str) -> None:
    """Raise DatasetError unless split is "train" or "test"."""
    if split not in ("train", "test"):
        raise DatasetError(f"unknown split {split!r}: expected 'train' or 'test'")


def unknown_category(category: str, where: Path, found: Sequence[str], layout: str) -> DatasetError:
    """The error for a category that is not on disk, listing the categories that are."""
    listed = ", ".join(found) if found else "none"
    return DatasetError(f"category {category!r} not found under {where}; found: {listed} (expected {layout})")


def images_folder(records: Sequence[Record]) -> Path:
    """The deepest folder holding every image of `records` and the folders beside each image's own folder
    (`<cat>/test` for `<cat>/test/good/x.png`): where a loader that lists folders would find a new one."""
    return Path(os.path.commonpath([os.path.dirname(os.path.dirname(r.image_path)) for r in records]))


def short_list(paths: Sequence[str | Path], limit: int = 5) -> str:
    """`a, b, c (+N more)` for error messages that must stay one line."""
    shown = ", ".join(str(p) for p in paths[:limit])
    return shown + (f" (+{len(paths) - limit} more)" if len(paths) > limit else "")


def warn_shared_stems(images: Sequence[Path], folder: Path) -> None:
    """A DatasetWarning with a count when images of `folder` share a stem (`part.png`, `part.jpg`).

    Masks pair with images by stem, so such images get the same mask; they are often copies of one image.
    """
    counts = Counter(p.stem for p in images)
    shared = [p.name for p in images if counts[p.stem] > 1]
    if shared:
        warnings.warn(
            f"{len(shared)} images in {folder} share a stem with another ({short_list(shared)}): they pair "
            "with the same mask and may be copies; keep one file per stem",
            DatasetWarning,
            stacklevel=3,
        )
