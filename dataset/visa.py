"""VisA, in either layout found in the wild (detected automatically).

* raw download: `<visa>/<cat>/Data/Images/{Normal,Anomaly}/*.JPG`, `<visa>/<cat>/Data/Masks/Anomaly/*.png`
  (class ids, binarised with `> 0`), driven by the official split file `<visa>/split_csv/1cls.csv`
  (header `object,split,label,image,mask`, paths relative to `<visa>`, labels normal/anomaly);
* converted `visa_pytorch/1cls/<cat>/{train/good,test/good,test/bad,ground_truth/bad}` (MVTec-like, read by
  `dataset.mvtec.build_mvtec_records`).

Anomalous VisA images have defect type "bad": 1cls.csv carries no per-image defect name.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from dataset.base import (
    DatasetError,
    ImageDataset,
    MaskPairingError,
    Record,
    as_root,
    check_split,
    short_list,
    unknown_category,
)
from dataset.mvtec import build_mvtec_records, mvtec_like_categories

VISA_FOLDER_NAMES: tuple[str, ...] = ("visa", "VisA", "VisA_20220922")
VISA_CONVERTED_NAMES: tuple[str, ...] = ("visa_pytorch",)
SPLIT_CSV = Path("split_csv") / "1cls.csv"
SPLIT_HEADER: tuple[str, ...] = ("object", "split", "label", "image", "mask")
VISA_LAYOUT = (
    "<root>/[visa/]{split_csv/1cls.csv, <category>/Data/Images/{Normal,Anomaly}/*.JPG, "
    "<category>/Data/Masks/Anomaly/*.png} "
    "or <root>/visa_pytorch/1cls/<category>/{train,test,ground_truth}"
)
CONVERTED_LAYOUT = "visa_pytorch/1cls/<category>/{train/good, test/{good,bad}, ground_truth/bad/<stem>.png}"


def locate_visa(root: str | os.PathLike[str]) -> tuple[str, Path]:
    """Find VisA under `root`: ("raw", folder holding split_csv/) or ("converted", folder of categories).

    Looks at `root` itself and at `root/{visa,VisA,VisA_20220922}`, then for a `1cls` folder of categories
    (also under `root/visa_pytorch`). Raises DatasetError naming `root` when neither layout is there.
    """
    base = as_root(root, VISA_LAYOUT)
    folders = [base] + [base / name for name in VISA_FOLDER_NAMES]
    for folder in folders:
        if (folder / SPLIT_CSV).is_file():
            return "raw", folder
    converted = [base, base / "1cls"]
    converted += [base / name / "1cls" for name in VISA_FOLDER_NAMES + VISA_CONVERTED_NAMES]
    converted += [base / name for name in VISA_CONVERTED_NAMES]
    for folder in converted:
        if folder.is_dir() and mvtec_like_categories(folder):
            return "converted", folder
    raise DatasetError(
        f"no VisA dataset under {base}: no {SPLIT_CSV} and no 1cls/<category>/test (expected {VISA_LAYOUT})"
    )


def read_split_csv(csv_path: Path) -> list[dict[str, str]]:
    """Rows of an official VisA split file as dicts keyed by SPLIT_HEADER; a bad header is a DatasetError."""
    with open(csv_path, newline="") as handle:
        reader = csv.reader(handle)
        header = tuple(h.strip() for h in next(reader, ()))
        if header != SPLIT_HEADER:
            got = ",".join(header) or "(empty)"
            raise DatasetError(f"{csv_path} has header {got}; expected {','.join(SPLIT_HEADER)}")
        rows = [dict(zip(SPLIT_HEADER, (c.strip() for c in row), strict=False)) for row in reader if row]
    for row in rows:
        if row.get("label") not in ("normal", "anomaly"):
            label, image = row.get("label"), row.get("image")
            raise DatasetError(f"{csv_path}: label {label!r} for {image}; expected normal or anomaly")
    return rows


def visa_raw_records(visa_dir: Path, category: str, split: str, rows: list[dict[str, str]]) -> list[Record]:
    """Records of one category/split of the raw layout, in 1cls.csv order sorted by label then file name.

    Checks that every listed image exists and that every anomaly has an existing mask (MaskPairingError
    listing the files otherwise); an empty split is a DatasetError.
    """
    csv_path = visa_dir / SPLIT_CSV
    chosen = [r for r in rows if r["object"] == category and r["split"] == split]
    if not chosen:
        raise DatasetError(f"no rows for {category}/{split} in {csv_path} (expected {VISA_LAYOUT})")
    records: list[Record] = []
    missing_images: list[str] = []
    missing_masks: list[str] = []
    for row in chosen:
        image = visa_dir / row["image"]
        if not image.is_file():
            missing_images.append(str(image))
            continue
        if row["label"] == "normal":
            records.append(Record(str(image), None, 0, "good", category))
            continue
        mask = visa_dir / row["mask"] if row.get("mask") else None
        if mask is None or not mask.is_file():
            missing_masks.append(f"{image} (mask {mask or 'not listed'})")
            continue
        records.append(Record(str(image), str(mask), 1, "bad", category))
    if missing_images:
        raise MaskPairingError(
            f"{len(missing_images)} image(s) listed in {csv_path} are missing: {short_list(missing_images)} "
            f"(expected {VISA_LAYOUT})"
        )
    if missing_masks:
        raise MaskPairingError(
            f"{len(missing_masks)} anomalous image(s) without a mask file: {short_list(missing_masks)} "
            f"(expected <category>/Data/Masks/Anomaly/<stem>.png listed in {csv_path})"
        )
    records.sort(key=lambda r: (r.label, os.path.basename(r.image_path)))
    return records


def available_visa_categories(root: str | os.PathLike[str]) -> list[str]:
    """VisA categories found on disk (raw: objects of 1cls.csv whose folder exists), sorted."""
    kind, folder = locate_visa(root)
    if kind == "converted":
        return mvtec_like_categories(folder)
    objects = {r["object"] for r in read_split_csv(folder / SPLIT_CSV)}
    return sorted(o for o in objects if (folder / o).is_dir())


def load_visa(root: str | os.PathLike[str], category: str, split: str) -> ImageDataset:
    """Lazy VisA split in the raw or the converted layout; `root` is the datasets root or the VisA folder."""
    check_split(split)
    kind, folder = locate_visa(root)
    if kind == "converted":
        found = mvtec_like_categories(folder)
        if category not in found:
            raise unknown_category(category, folder, found, CONVERTED_LAYOUT)
        records = build_mvtec_records(folder / category, category, split, CONVERTED_LAYOUT)
        return ImageDataset(records, "visa", folder, category, split)
    rows = read_split_csv(folder / SPLIT_CSV)
    objects = {r["object"] for r in rows}
    found = sorted(o for o in objects if (folder / o).is_dir())
    if category not in found:
        raise unknown_category(category, folder, found, VISA_LAYOUT)
    return ImageDataset(visa_raw_records(folder, category, split, rows), "visa", folder, category, split)
