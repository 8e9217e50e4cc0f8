"""Real-IAD: 30 categories, each physical sample photographed from 5 camera views.

    Real-IAD/realiad_<res>/<cat>/OK/S0001/<cat>_0001_OK_C1_<time>.jpg
    Real-IAD/realiad_<res>/<cat>/NG/<defect>/S0002/<cat>_0002_NG_C1_<time>.jpg (+ <...>_mask.png)
    Real-IAD/realiad_jsons/<cat>.json    {"meta": ..., "train": [item, ...], "test": [item, ...]}
    item: {"category", "anomaly_class" ("OK" or a defect code), "image_path", "mask_path" (or null)}

Splits and labels come only from the JSON files, as anomalib's Real-IAD loader reads them: a view is
anomalous iff its `anomaly_class` is not "OK", so the views of an NG sample where the defect is not
visible stay normal. `Record.sample_id` is the sample folder (e.g. "NG/AK/S0002"): a sample is anomalous
if any view is, and its score is the max over its views (utils/evaluation/real_iad.py). Paths in the JSON
are relative to `realiad_<res>/<cat>/` (or to `realiad_<res>/`); whichever `realiad_<res>` folder is present
is used, and `resolution` chooses when there are several.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

from dataset.base import ImageDataset
from dataset.records import (
    DatasetError,
    DatasetWarning,
    MaskPairingError,
    Record,
    check_split,
    plain_name,
    resolve_folder,
    short_list,
    unknown_category,
)

REAL_IAD_FOLDER_NAMES: tuple[str, ...] = ("real_iad", "Real-IAD", "realiad", "Real_IAD")
REAL_IAD_LAYOUT = (
    "<root>/real_iad/{realiad_<res>/<category>/{OK,NG/<defect>}/S<sample>/*.jpg, "
    "realiad_jsons/<category>.json}"
)
JSON_DIRS: tuple[str, ...] = ("realiad_jsons", "realiad_jsons/realiad_jsons")
NORMAL_CLASS = "OK"
_RESOLUTION = re.compile(r"^realiad_(\d+|raw)$")


def _locate(root: str | os.PathLike[str]) -> Path:
    return resolve_folder(root, REAL_IAD_FOLDER_NAMES, REAL_IAD_LAYOUT)


def image_folders(folder: Path) -> dict[str, Path]:
    """Resolution ("256", "1024", "raw", ...) -> its `realiad_<res>` folder."""
    found = {}
    for d in sorted(folder.iterdir()) if folder.is_dir() else []:
        match = _RESOLUTION.match(d.name)
        if match and d.is_dir():
            found[match.group(1)] = d
    return found


def pick_image_folder(folder: Path, resolution: str | None) -> Path:
    """The `realiad_<resolution>` folder; None picks the only one present (several: a DatasetError)."""
    found = image_folders(folder)
    if not found:
        raise DatasetError(f"no realiad_<res> image folder in {folder} (expected {REAL_IAD_LAYOUT})")
    if resolution is not None:
        if str(resolution) not in found:
            raise DatasetError(
                f"realiad_resolution {resolution} not found in {folder}: found {', '.join(found)}"
            )
        return found[str(resolution)]
    if len(found) > 1:
        raise DatasetError(
            f"several Real-IAD resolutions in {folder} ({', '.join(found)}): "
            "choose one with --realiad_resolution"
        )
    return next(iter(found.values()))


def json_path(folder: Path, category: str) -> Path | None:
    """`realiad_jsons/<category>.json` (or the nested `realiad_jsons/realiad_jsons/`), None if absent."""
    for sub in JSON_DIRS:
        path = folder / sub / f"{category}.json"
        if path.is_file():
            return path
    return None


def read_split_json(path: Path, split: str) -> list[dict[str, Any]]:
    """The items of `split` in a Real-IAD JSON file; a bad file or item is a one-line DatasetError."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:  # Recursion: nested too deep
        raise DatasetError(f"{path} is not valid JSON ({err}): re-download realiad_jsons") from None
    items = data.get(split) if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise DatasetError(f"{path} has no {split!r} list (expected {{meta, train, test}})")
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not {"anomaly_class", "image_path"} <= item.keys():
            raise DatasetError(
                f"{path}: {split} item {index} needs anomaly_class and image_path (got {str(item)[:80]})"
            )
        if not isinstance(item["anomaly_class"], str):  # a defect type: a folder name of --save_maps outputs
            raise DatasetError(
                f"{path}: {split} item {index} has anomaly_class {item['anomaly_class']!r}, not a name: "
                "fix the item (OK or a defect code)"
            )
        plain_name(item["anomaly_class"], f"{path}: {split} item {index}", "anomaly_class")
    return items


def _inside(base: Path, relative: str) -> Path | None:
    """`base/relative` if it stays inside `base` and is a file, else None (a JSON path never escapes)."""
    path = Path(os.path.abspath(base / relative))
    return path if path.is_relative_to(base) and path.is_file() else None


def _find(images: Path, category: str, relative: str) -> Path | None:
    return _inside(images / category, relative) or _inside(images, relative)


def build_real_iad_records(
    images: Path, category: str, items: list[dict[str, Any]], source: Path
) -> list[Record]:
    """Records of the JSON `items` (file order), each view's label from its anomaly_class."""
    records: list[Record] = []
    missing: list[str] = []
    no_mask: list[str] = []
    repeats: list[str] = []
    seen: set[Path] = set()
    for index, item in enumerate(items):
        image = _find(images, category, str(item["image_path"]))
        if image is None:
            missing.append(str(item["image_path"]))
            continue
        if image in seen:  # scored once: a repeat would count twice in every metric
            repeats.append(str(index))
            continue
        seen.add(image)
        label = int(item["anomaly_class"] != NORMAL_CLASS)
        mask = _find(images, category, str(item["mask_path"])) if item.get("mask_path") else None
        if label and mask is None:
            no_mask.append(str(item["image_path"]))
            continue
        defect = "good" if not label else str(item["anomaly_class"])
        sample = Path(str(item["image_path"])).parent.as_posix()
        records.append(Record(str(image), str(mask) if label else None, label, defect, category, (), sample))
    if missing:
        raise MaskPairingError(
            f"{len(missing)} image(s) listed in {source} are missing under {images}: {short_list(missing)} "
            f"(expected {REAL_IAD_LAYOUT})"
        )
    if no_mask:
        raise MaskPairingError(
            f"{len(no_mask)} anomalous view(s) in {source} without a mask file: {short_list(no_mask)} "
            "(expected <image stem>_mask.png beside each, listed as mask_path)"
        )
    if not records:
        raise DatasetError(f"no items for {category} in {source}")
    if repeats:
        warnings.warn(
            f"{source}: {len(repeats)} item(s) repeat an image listed before (items {short_list(repeats)}): "
            "each image is scored once; delete the repeats to silence this",
            DatasetWarning,
            stacklevel=3,
        )
    return records


def available_real_iad_categories(root: str | os.PathLike[str]) -> list[str]:
    """Categories with a JSON file and an image folder in some `realiad_<res>`, sorted."""
    folder = _locate(root)
    names = {p.stem for sub in JSON_DIRS if (folder / sub).is_dir() for p in (folder / sub).glob("*.json")}
    folders = image_folders(folder).values()
    return sorted(n for n in names if any((f / n).is_dir() for f in folders))


def load_real_iad(
    root: str | os.PathLike[str], category: str, split: str, resolution: str | None = None
) -> ImageDataset:
    """Lazy Real-IAD split ("train" or "test") from `realiad_jsons/<category>.json` (module docstring)."""
    check_split(split)
    folder = _locate(root)
    found = available_real_iad_categories(folder)
    source = json_path(folder, category)
    if category not in found or source is None:
        raise unknown_category(category, folder, found, REAL_IAD_LAYOUT)
    images = pick_image_folder(folder, resolution)
    records = build_real_iad_records(images, category, read_split_json(source, split), source)
    return ImageDataset(records, "real_iad", folder, category, split)
