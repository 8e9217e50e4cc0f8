"""Tiny copies of six benchmarks laid out exactly as distributed (MVTec AD 2, MVTec LOCO AD, MPDD, BTAD,
KolektorSDD2, Real-IAD), with the traps that break other loaders built in:

- BTAD: a stray `Thumbs.db` and `.DS_Store` in the image and mask folders, .bmp images with .png masks
  (class 01) and .bmp masks (class 03), and stems that do not start at 0 or run consecutively;
- MVTec LOCO: an image with two defect regions (two mask files with different pixel values);
- KSDD2: an anomalous image in `train/`;
- Real-IAD: an NG sample with one anomalous view and one normal view.

Each image is a flat gray square with, on anomalous images, a bright patch exactly where its mask is, so
that a mask paired with the wrong image is visible in the tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 24


def _patch(index: int, size: int = SIZE) -> np.ndarray:
    """(size, size) bool: a 6x6 patch whose place depends on `index` (so each image has its own)."""
    mask = np.zeros((size, size), dtype=bool)
    row, col = 2 + (index * 5) % (size - 8), 2 + (index * 3) % (size - 8)
    mask[row : row + 6, col : col + 6] = True
    return mask


def _image(path: Path, mask: np.ndarray | None = None, size: int = SIZE) -> None:
    """Write a gray RGB image (bright where `mask`) at `path`, in the format of its extension."""
    pixels = np.full((size, size, 3), 90, dtype=np.uint8)
    if mask is not None:
        pixels[mask] = 230
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _mask(path: Path, mask: np.ndarray, value: int = 255) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * value).save(path)


def _stray(folder: Path) -> None:
    """Files that are not images, as Windows and macOS leave them."""
    (folder / "Thumbs.db").write_bytes(b"\x00junk")
    (folder / ".DS_Store").write_bytes(b"\x00junk")


def make_mpdd(root: Path) -> Path:
    """`root/mpdd/{metal_plate,tubes}`: 2 train, 2 good + 2 `hole` + 1 `scratches` test images."""
    base = root / "mpdd"
    for category in ("metal_plate", "tubes"):
        cat = base / category
        for i in range(2):
            _image(cat / "train" / "good" / f"{i:03d}.png")
            _image(cat / "test" / "good" / f"{i:03d}.png")
        for defect, count in (("hole", 2), ("scratches", 1)):
            for i in range(count):
                mask = _patch(i + len(defect))
                _image(cat / "test" / defect / f"{i:03d}.png", mask)
                _mask(cat / "ground_truth" / defect / f"{i:03d}_mask.png", mask)
    return base


def make_btad(root: Path) -> Path:
    """`root/BTech_Dataset_transformed/{01,03}` (the archive's name), traps as in the module docstring."""
    base = root / "BTech_Dataset_transformed"
    for category, mask_ext in (("01", ".png"), ("03", ".bmp")):
        cat = base / category
        for i in range(2):
            _image(cat / "train" / "ok" / f"{i:04d}.bmp")
            _image(cat / "test" / "ok" / f"{i:04d}.bmp")
        for stem in (3, 10, 7):  # not consecutive, written out of order
            mask = _patch(stem)
            _image(cat / "test" / "ko" / f"{stem:04d}.bmp", mask)
            _mask(cat / "ground_truth" / "ko" / f"{stem:04d}{mask_ext}", mask)
        _image(cat / "test" / "ko" / "a_extra.png", _patch(1))  # a stem that sorts before the masks'
        _mask(cat / "ground_truth" / "ko" / "a_extra.png", _patch(1))
        _stray(cat / "test" / "ko")
        _stray(cat / "ground_truth" / "ko")
    return base


def make_ksdd2(root: Path) -> Path:
    """`root/KolektorSDD2/{train,test}`: train 2 normal + 1 anomalous, test 2 normal + 2 anomalous."""
    base = root / "KolektorSDD2"
    empty = np.zeros((SIZE, SIZE), dtype=bool)
    layout = {
        "train": (("20000", False), ("20001", True), ("20002", False)),
        "test": (("10000", False), ("10001", True), ("10002", False), ("10003", True)),
    }
    for split, items in layout.items():
        for index, (stem, bad) in enumerate(items):
            mask = _patch(index) if bad else empty
            _image(base / split / f"{stem}.png", mask if bad else None)
            _mask(base / split / f"{stem}_GT.png", mask)
    return base


def make_mvtec_ad2(root: Path) -> Path:
    """`root/mvtec_ad2/can`: 2 train, 2 validation, test_public 2 good + 2 bad, 2 private, 1 private_mixed."""
    cat = root / "mvtec_ad2" / "can"
    for i in range(2):
        _image(cat / "train" / "good" / f"{i:03d}_regular.png")
        _image(cat / "validation" / "good" / f"{i:03d}_regular.png")
        _image(cat / "test_public" / "good" / f"{i:03d}_regular.png")
        mask = _patch(i)
        _image(cat / "test_public" / "bad" / f"{i:03d}_overexposed.png", mask)
        _mask(cat / "test_public" / "ground_truth" / "bad" / f"{i:03d}_overexposed_mask.png", mask)
        _image(cat / "test_private" / f"{i:03d}.png", _patch(i + 3))
    _image(cat / "test_private_mixed" / "000.png")
    return root / "mvtec_ad2"


LOCO_DEFECTS = [
    {
        "defect_name": "missing_pushpin",
        "pixel_value": 255,
        "saturation_threshold": 1.0,
        "relative_saturation": True,
    },
    {
        "defect_name": "additional_pushpin",
        "pixel_value": 254,
        "saturation_threshold": 20,
        "relative_saturation": False,
    },
    {"defect_name": "broken", "pixel_value": 253, "saturation_threshold": 0.5, "relative_saturation": True},
]


def make_mvtec_loco(root: Path) -> Path:
    """`root/mvtec_loco_anomaly_detection/pushpins` (the archive's name).

    test: 2 good; logical_anomalies 000 (two regions: values 255 and 254), 001 (one region, 255);
    structural_anomalies 000 (one region, 253).
    """
    cat = root / "mvtec_loco_anomaly_detection" / "pushpins"
    (cat).mkdir(parents=True)
    (cat / "defects_config.json").write_text(json.dumps(LOCO_DEFECTS))
    for i in range(2):
        _image(cat / "train" / "good" / f"{i:03d}.png")
        _image(cat / "validation" / "good" / f"{i:03d}.png")
        _image(cat / "test" / "good" / f"{i:03d}.png")
    regions = {
        ("logical_anomalies", "000"): ((0, 255), (1, 254)),
        ("logical_anomalies", "001"): ((1, 255),),
        ("structural_anomalies", "000"): ((2, 253),),
    }
    for (kind, stem), parts in regions.items():
        union = np.zeros((SIZE, SIZE), dtype=bool)
        for number, (index, value) in enumerate(parts):
            _mask(cat / "ground_truth" / kind / stem / f"{number:03d}.png", _patch(index), value)
            union |= _patch(index)
        _image(cat / "test" / kind / f"{stem}.png", union)
    return cat.parent


def make_real_iad(root: Path, resolutions: tuple[str, ...] = ("256",)) -> Path:
    """`root/Real-IAD` with category toy: train = 1 OK sample; test = 1 OK sample (2 views) and 1 NG sample
    whose view C1 is anomalous (mask) and view C2 is labelled OK by the JSON."""
    base = root / "Real-IAD"
    views: dict[str, list[dict]] = {"train": [], "test": []}
    samples = (
        ("train", "OK/S0001", "OK", (False, False)),
        ("test", "OK/S0002", "OK", (False, False)),
        ("test", "NG/AK/S0003", "AK", (True, False)),
    )
    for split, folder, cls, bad_views in samples:
        for view, bad in enumerate(bad_views, start=1):
            number = folder.split("S")[-1]
            stem = f"toy_{number}_{'OK' if cls == 'OK' else 'NG'}_C{view}_20230101"
            mask = _patch(view) if bad else None
            for res in resolutions:
                _image(base / f"realiad_{res}" / "toy" / folder / f"{stem}.jpg", mask)
                if bad:
                    _mask(base / f"realiad_{res}" / "toy" / folder / f"{stem}_mask.png", mask)
            views[split].append(
                {
                    "category": "toy",
                    "anomaly_class": cls if bad else "OK",
                    "image_path": f"{folder}/{stem}.jpg",
                    "mask_path": f"{folder}/{stem}_mask.png" if bad else None,
                }
            )
    (base / "realiad_jsons").mkdir(parents=True)
    (base / "realiad_jsons" / "toy.json").write_text(json.dumps({"meta": {"normal_class": "OK"}, **views}))
    return base
