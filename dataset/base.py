"""The sample type shared by every loader, its errors, the lazy sequence and image/mask decoding.

A loader builds a list of `Record`s (paths and labels only, cheap to make) and wraps it in an
`ImageDataset`; pixels are decoded only when an item is indexed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import overload

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class DatasetError(ValueError):
    """A dataset that cannot be read as asked; the one-line message names the path and the expected layout."""


class MaskPairingError(DatasetError):
    """Images and ground-truth masks that do not pair up (a mask without an image, or the reverse)."""


@dataclass(frozen=True)
class Record:
    """One image of a split, without its pixels.

    `image_path` and `mask_path` are absolute path strings (the mask is None for normal images and for
    defective images of own data that have no mask); `label` is 0 (good) or 1 (anomalous).
    """

    image_path: str
    mask_path: str | None
    label: int
    defect_type: str
    category: str


@dataclass(eq=False)
class Sample:
    """One decoded image with its ground truth.

    image: (H, W, 3) uint8 RGB. mask: (H, W) bool, True = anomalous pixel, all False for good images.
    label: 0 good / 1 anomalous. defect_type: "good" for normal images.
    """

    image: np.ndarray
    label: int
    mask: np.ndarray
    category: str
    defect_type: str
    image_path: str
    mask_path: str | None = None


def is_image_file(path: Path) -> bool:
    """True for a regular file whose extension (any case) is one of IMAGE_EXTENSIONS."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


def list_images(directory: Path) -> list[Path]:
    """Image files directly inside `directory`, sorted by name (empty if the directory is missing)."""
    if not directory.is_dir():
        return []
    return sorted((p for p in directory.iterdir() if is_image_file(p)), key=lambda p: p.name)


def subdirs(directory: Path) -> list[Path]:
    """Sub-directories of `directory`, sorted by name, hidden ones skipped."""
    if not directory.is_dir():
        return []
    return sorted(
        (p for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name
    )


def as_root(root: str | os.PathLike[str], layout: str) -> Path:
    """`root` as an absolute Path (`~` expanded); a missing directory is a DatasetError."""
    path = Path(os.path.abspath(Path(root).expanduser()))
    if not path.is_dir():
        raise DatasetError(f"dataset root not found: {path} (expected {layout})")
    return path


def _open_decoded(path: str | os.PathLike[str], what: str) -> Image.Image:
    """Open and fully decode an image file, turning every decoder failure into a DatasetError."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()
    except FileNotFoundError:
        msg = f"{what} not found: {path} (the file was listed but is gone; re-create the index)"
        raise DatasetError(msg) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DatasetError(
            f"cannot decode {what} {path}: {reason} (file corrupt or truncated: re-download or delete it)"
        ) from None


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode an image file as RGB.

    Returns (H, W, 3) uint8. Grayscale (L, 1, I;16), palette and RGBA images are converted to 3 channels
    (16-bit gray is scaled to 8 bits; alpha is dropped). Corrupt or truncated files raise DatasetError.
    """
    img = _open_decoded(path, "image")
    if img.mode.startswith("I"):  # 16/32-bit gray: keep the high byte so the range stays 0..255
        arr = np.asarray(img, dtype=np.int64)
        arr = (arr >> 8) if arr.max(initial=0) > 255 else arr
        gray = np.clip(arr, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8).copy()


def read_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode a ground-truth mask: any nonzero value (in any channel) is anomalous.

    Handles 1-bit (mode "1", 0/1), 8-bit (0/255), palette and class-id masks (VisA), RGB masks.
    Returns (H, W) bool.
    """
    img = _open_decoded(path, "mask")
    arr = np.asarray(img)  # mode "P" gives the palette indices, i.e. the class ids
    if arr.ndim == 3:
        arr = arr.any(axis=2)
    return arr > 0


def load_sample(record: Record) -> Sample:
    """Decode the image (and mask) of `record`; a mask of another size than its image is a DatasetError."""
    image = read_image(record.image_path)
    height, width = image.shape[:2]
    if record.mask_path is None:
        mask = np.zeros((height, width), dtype=bool)
    else:
        mask = read_mask(record.mask_path)
        if mask.shape != (height, width):
            raise DatasetError(
                f"mask {record.mask_path} is {mask.shape[1]}x{mask.shape[0]} but image {record.image_path} "
                f"is {width}x{height} (expected a mask of the image's size)"
            )
    return Sample(
        image=image,
        label=record.label,
        mask=mask,
        category=record.category,
        defect_type=record.defect_type,
        image_path=record.image_path,
        mask_path=record.mask_path,
    )


class ImageDataset(Sequence[Sample]):
    """A sequence of `Sample`s decoded lazily from `records`.

    Construction reads no pixels; `dataset[i]` decodes image i (and its mask) on every call.
    `records` is the cheap index (paths, labels, defect types) for counting and resuming by path;
    slicing returns a new ImageDataset over the selected records.
    """

    def __init__(self, records: Sequence[Record], name: str, root: Path, category: str, split: str) -> None:
        self.records: list[Record] = list(records)
        self.name = name
        self.root = root
        self.category = category
        self.split = split

    def __len__(self) -> int:
        return len(self.records)

    @overload
    def __getitem__(self, index: int) -> Sample: ...

    @overload
    def __getitem__(self, index: slice) -> ImageDataset: ...

    def __getitem__(self, index: int | slice) -> Sample | ImageDataset:
        if isinstance(index, slice):
            return ImageDataset(self.records[index], self.name, self.root, self.category, self.split)
        return load_sample(self.records[index])

    def __iter__(self) -> Iterator[Sample]:
        for record in self.records:
            yield load_sample(record)

    def __repr__(self) -> str:
        n_bad = sum(r.label for r in self.records)
        return (
            f"ImageDataset({self.name}, category={self.category!r}, split={self.split!r}, "
            f"n={len(self)}, anomalous={n_bad}, root={str(self.root)!r})"
        )


def check_split(split: str) -> None:
    """Raise DatasetError unless split is "train" or "test"."""
    if split not in ("train", "test"):
        raise DatasetError(f"unknown split {split!r}: expected 'train' or 'test'")


def unknown_category(category: str, where: Path, found: Sequence[str], layout: str) -> DatasetError:
    """The error for a category that is not on disk, listing the categories that are."""
    listed = ", ".join(found) if found else "none"
    return DatasetError(f"category {category!r} not found under {where}; found: {listed} (expected {layout})")


def short_list(paths: Sequence[str | Path], limit: int = 5) -> str:
    """`a, b, c (+N more)` for error messages that must stay one line."""
    shown = ", ".join(str(p) for p in paths[:limit])
    return shown + (f" (+{len(paths) - limit} more)" if len(paths) > limit else "")
