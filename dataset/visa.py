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
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from dataset.base import ImageDataset
from dataset.mvtec import build_mvtec_records, mvtec_like_categories
from dataset.records import (
    DatasetError,
    DatasetWarning,
    MaskPairingError,
    Record,
    as_root,
    check_split,
    plain_name,
    relative_inside,
    short_list,
    unknown_category,
)

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


@dataclass(frozen=True)
class SplitRow:
    """One data row of a VisA split file (cells stripped); `line` is its 1-based line number in the file."""

    object: str
    split: str
    label: str
    image: str
    mask: str
    line: int

    def key(self) -> tuple[str, str, str, str, str]:
        """The row's content without its line number (equal for duplicated rows)."""
        return (self.object, self.split, self.label, self.image, self.mask)


def _trim(cells: list[str]) -> list[str]:
    """`cells` without the empty columns past the header's width that spreadsheet programs append."""
    while len(cells) > len(SPLIT_HEADER) and not cells[-1]:
        cells = cells[:-1]
    return cells


def _parse_row(cells: list[str], csv_path: Path, line: int) -> SplitRow:
    """Check one data row's cells (already stripped) and build its SplitRow; a bad row is a DatasetError."""
    cells = _trim(cells)
    where = f"{csv_path}, line {line}"
    if len(cells) != len(SPLIT_HEADER):
        raise DatasetError(
            f"{where}: {len(cells)} field(s), expected {len(SPLIT_HEADER)} "
            f"({','.join(SPLIT_HEADER)}): fix the row"
        )
    row = SplitRow(*cells, line=line)
    for name in ("object", "split", "label", "image"):
        if not getattr(row, name):
            raise DatasetError(f"{where}: empty {name!r} field: fill it in or delete the row")
    if row.split not in ("train", "test"):
        raise DatasetError(f"{where}: split {row.split!r}; expected train or test")
    if row.label not in ("normal", "anomaly"):
        raise DatasetError(f"{where}: label {row.label!r} for {row.image}; expected normal or anomaly")
    if row.label == "anomaly" and not row.mask:
        raise DatasetError(f"{where}: anomaly {row.image} has an empty 'mask' field: give its mask path")
    # csv cells become paths: the object names a folder of the root and of the output folder, the image and
    # mask are read relative to the root; none may lead outside them
    plain_name(row.object, where, "object")
    image = relative_inside(row.image, where, "image")
    mask = relative_inside(row.mask, where, "mask") if row.mask else ""
    return SplitRow(row.object, row.split, row.label, image, mask, line)


def read_split_csv(csv_path: Path) -> list[SplitRow]:
    """Rows of an official VisA split file, in file order.

    Reads what a spreadsheet program may save: a UTF-8 byte-order mark, spaces around cells, blank lines and
    trailing empty columns. A bad header, or a row with a wrong number of fields, an empty required field or
    an unknown split/label, is a one-line DatasetError naming the file and line; so is an `object` that is not
    a plain folder name, an image or mask path leaving the VisA folder, and an image listed twice with
    different contents (naming both lines; `check_agreement`).
    """
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            return _read_rows(handle, csv_path)
    except UnicodeDecodeError:
        raise DatasetError(f"{csv_path} is not UTF-8 text: save it as CSV (UTF-8)") from None
    except csv.Error as err:  # e.g. a cell over the csv module's field limit (an unclosed quote)
        raise DatasetError(f"{csv_path} is not a readable CSV file ({err}): fix or re-download it") from None


def _read_rows(handle: TextIO, csv_path: Path) -> list[SplitRow]:
    """Check the header of an open split file, then parse its non-blank data rows."""
    reader = csv.reader(handle)
    header = _trim([h.strip() for h in next(reader, [])])
    if tuple(header) != SPLIT_HEADER:
        got = ",".join(header) or "(empty)"
        raise DatasetError(f"{csv_path} has header {got}; expected {','.join(SPLIT_HEADER)}")
    rows = []
    for cells in reader:
        stripped = [c.strip() for c in cells]
        if any(stripped):
            rows.append(_parse_row(stripped, csv_path, reader.line_num))
    check_agreement(rows, csv_path)
    return rows


def check_agreement(rows: list[SplitRow], csv_path: Path) -> None:
    """Raise DatasetError naming both lines when two rows list one image differently.

    Across splits too: an image listed for train and for test could become a few-shot reference of itself.
    """
    first: dict[str, SplitRow] = {}
    for row in rows:
        seen = first.setdefault(row.image, row)
        if seen.key() == row.key():
            continue
        if seen.split != row.split:
            raise DatasetError(
                f"{csv_path}: lines {seen.line} and {row.line} list {row.image} in both {seen.split} and "
                f"{row.split} (a test image must not be a training/reference image): keep one of them"
            )
        raise DatasetError(
            f"{csv_path}: lines {seen.line} and {row.line} disagree about {row.image}: keep one of them"
        )


def unique_rows(rows: list[SplitRow], csv_path: Path, what: str) -> list[SplitRow]:
    """`rows` without repeats (first kept), with a DatasetWarning counting the repeats.

    Rows that disagree were refused when the file was read (`check_agreement`).
    """
    first: dict[str, SplitRow] = {}
    repeats: list[SplitRow] = []
    for row in rows:
        if first.setdefault(row.image, row) is not row:
            repeats.append(row)
    if repeats:
        lines = short_list([str(r.line) for r in repeats])
        warnings.warn(
            f"{what}: {len(repeats)} duplicated row(s) in {csv_path} (lines {lines}) are scored once; "
            "delete them to silence this warning",
            DatasetWarning,
            stacklevel=3,
        )
    return list(first.values())


def visa_raw_records(visa_dir: Path, category: str, split: str, rows: list[SplitRow]) -> list[Record]:
    """Records of one category/split of the raw layout, in 1cls.csv order sorted by label then file name.

    Duplicated rows are scored once (with a DatasetWarning counting them). Checks that every listed image
    exists and that every anomaly has an existing mask (MaskPairingError listing the files otherwise); an
    empty split is a DatasetError.
    """
    csv_path = visa_dir / SPLIT_CSV
    chosen = [r for r in rows if r.object == category and r.split == split]
    if not chosen:
        raise DatasetError(f"no rows for {category}/{split} in {csv_path} (expected {VISA_LAYOUT})")
    chosen = unique_rows(chosen, csv_path, f"{category}/{split}")
    records: list[Record] = []
    missing_images: list[str] = []
    missing_masks: list[str] = []
    for row in chosen:
        image = visa_dir / row.image
        if not image.is_file():
            missing_images.append(str(image))
            continue
        if row.label == "normal":
            records.append(Record(str(image), None, 0, "good", category))
            continue
        mask = visa_dir / row.mask
        if not mask.is_file():
            missing_masks.append(f"{image} (mask {mask})")
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
    objects = {r.object for r in read_split_csv(folder / SPLIT_CSV)}
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
    objects = {r.object for r in rows}
    found = sorted(o for o in objects if (folder / o).is_dir())
    if category not in found:
        raise unknown_category(category, folder, found, VISA_LAYOUT)
    return ImageDataset(visa_raw_records(folder, category, split, rows), "visa", folder, category, split)
