"""The `meta.json` of the CLIP-based zero-shot papers (APRIL-GAN, AnomalyCLIP, AdaCLIP, ...), one per set.

    {"train": {<class>: [item, ...]}, "test": {<class>: [item, ...]}}
    item = {"img_path", "mask_path", "cls_name", "specie_name", "anomaly"}

`anomaly` is 0 or 1; `mask_path` is "" for normal images and for the anomalous images of image-level sets
(their class then has no pixel ground truth); `specie_name` is the defect folder ("good", "ok", "no",
"NORMAL" for normal images; "" in some sets). Every class is a category: its `test` items are scored, the
normal items of its `train` list are the few-shot references (most medical sets have none).

Paths are joined to the folder holding meta.json, as the peers do. A path written on another machine
(`/remote-home/.../CVC-ColonDB/images/1.png`) is found under that folder by its longest tail that exists
there (`images/1.png`); nothing outside the folder is read. Masks are kept paired with their images as the
file says (some generators pair by sorted position): a mask whose name is not its image's stem (optionally
followed by `_mask`, `_Segmentation`, ...) is reported with a warning naming both.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import warnings
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from dataset.base import ImageDataset
from dataset.records import (
    DatasetError,
    DatasetWarning,
    Record,
    check_split,
    plain_name,
    short_list,
    unknown_category,
)

META_JSON = "meta.json"
META_JSON_LAYOUT = (
    "DIR/meta.json = {train: {<class>: [items]}, test: {<class>: [items]}}, item = {img_path, mask_path, "
    "cls_name, specie_name, anomaly}, paths relative to DIR (APRIL-GAN / AnomalyCLIP generate_dataset_json)"
)
# Defect type of an anomalous item whose specie_name is empty (VisA's and the polyp sets' generators): the
# name the VisA loader gives its unnamed defects.
UNNAMED_DEFECT = "bad"
ITEM_KEYS: tuple[str, ...] = ("img_path", "anomaly")

# {split: {class: [item, ...]}} with the split keys lower-cased ("Train"/"Test" in DAGM's generator).
MetaInfo = dict[str, dict[str, list[dict[str, Any]]]]


def locate_meta_json(path: str | os.PathLike[str]) -> Path:
    """The meta.json file: `path` itself, or `path/meta.json`; a one-line DatasetError when neither exists."""
    given = Path(os.path.abspath(Path(path).expanduser()))
    found = given / META_JSON if given.is_dir() else given
    if not found.is_file():
        raise DatasetError(
            f"no {META_JSON} at {given}: pass --dataset_path the folder holding meta.json (or the file "
            "itself), as written by the peers' generate_dataset_json scripts"
        )
    return found


def meta_json_name(path: str | os.PathLike[str]) -> str:
    """The name of a meta.json set: its folder's name (`/data/CVC-ColonDB/meta.json` -> `CVC-ColonDB`)."""
    given = Path(os.path.abspath(Path(path).expanduser()))
    return (given.parent if given.suffix.lower() == ".json" else given).name


def read_meta_json(file: Path) -> MetaInfo:
    """The checked content of a meta.json (cached while the file is unchanged).

    Raises DatasetError (one line naming the file and, for a bad item, its entry `test/<class>[<i>]`): not
    JSON, no "test" section, a class that is not a plain name, an item without img_path or with an anomaly
    other than 0/1.
    """
    stat = file.stat()
    return _read_cached(str(file), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=8)
def _read_cached(file: str, mtime_ns: int, size: int) -> MetaInfo:
    """`read_meta_json` for one version (mtime, size) of the file."""
    try:
        with open(file, encoding="utf-8-sig") as handle:
            doc = json.load(handle)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:  # RecursionError: nested too deep
        raise DatasetError(f"{file} is not a JSON file ({err}): regenerate it") from None
    if not isinstance(doc, dict):
        raise DatasetError(f"{file}: expected an object with 'train' and 'test' (layout {META_JSON_LAYOUT})")
    info: MetaInfo = {}
    for split, classes in doc.items():
        name = str(split).lower()
        if name not in ("train", "test") or name in info:
            continue
        if not isinstance(classes, dict):
            raise DatasetError(f"{file}: {split!r} must map each class to a list of items")
        info[name] = {plain_name(str(c), file, "class"): _items(file, name, c, v) for c, v in classes.items()}
    if "test" not in info:
        raise DatasetError(f"{file} has no 'test' section (layout {META_JSON_LAYOUT})")
    return info


def _items(file: str, split: str, cls: str, items: Any) -> list[dict[str, Any]]:
    """The items of one class, each checked (img_path a non-empty string, anomaly 0 or 1, specie_name a
    plain name)."""
    if not isinstance(items, list):
        raise DatasetError(f"{file}: {split}/{cls} must be a list of items (layout {META_JSON_LAYOUT})")
    for i, item in enumerate(items):
        where = f"{file}: {split}/{cls}[{i}]"
        if not isinstance(item, dict) or any(k not in item for k in ITEM_KEYS):
            raise DatasetError(f"{where} is not an item with {' and '.join(ITEM_KEYS)}: fix the entry")
        if not isinstance(item["img_path"], str) or not item["img_path"].strip():
            raise DatasetError(f"{where}: img_path {item['img_path']!r} is not a path: fix the entry")
        if item["anomaly"] not in (0, 1) or isinstance(item["anomaly"], float):
            raise DatasetError(f"{where}: anomaly {item['anomaly']!r}; expected 0 or 1")
        if not isinstance(item.get("mask_path") or "", str):
            raise DatasetError(f"{where}: mask_path {item['mask_path']!r} is not a path: fix the entry")
        if item.get("specie_name"):  # the defect type: a folder name of --save_maps outputs
            plain_name(str(item["specie_name"]).strip(), where, "specie_name")
    return items


class PathFinder:
    """Finds the files a meta.json names, inside its folder only.

    A path is looked up under `root` as written (relative, or absolute inside `root`); else by its longest
    tail that exists under `root` (a path written on the machine that generated the file). The leading
    components dropped for one path are tried first for the next one, so a file of N items costs about N
    lookups.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dropped: list[tuple[str, ...]] = []  # leading components that led to a file, most recent first

    def find(self, text: str, where: str, what: str) -> Path | None:
        """The existing file `text` names under the root, or None; `..` leaving a path is a DatasetError."""
        parts = self._parts(text, where, what)
        for prefix in self.dropped:
            if parts[: len(prefix)] == prefix and (found := self._file(parts[len(prefix) :])):
                return found
        for start in range(len(parts)):
            if found := self._file(parts[start:]):
                if start:
                    self.dropped.insert(0, parts[:start])
                return found
        return None

    def _parts(self, text: str, where: str, what: str) -> tuple[str, ...]:
        """The path's components (after the root when it is an absolute path inside it)."""
        path = text.strip().replace("\\", "/")
        drive = re.match(r"^[A-Za-z]:", path)
        absolute = path.startswith("/") or drive is not None
        norm = posixpath.normpath(path[2:] if drive else path)
        if not absolute and (norm == ".." or norm.startswith("../")):
            raise DatasetError(
                f"{where}: {what} {text!r} leaves the folder of meta.json: give paths inside that folder"
            )
        parts = tuple(p for p in norm.split("/") if p not in ("", "."))
        root_parts = self.root.parts[1:]
        if absolute and parts[: len(root_parts)] == root_parts:
            parts = parts[len(root_parts) :]
        return parts

    def _file(self, parts: tuple[str, ...]) -> Path | None:
        candidate = self.root.joinpath(*parts) if parts else None
        return candidate if candidate is not None and candidate.is_file() else None


def _defect_type(item: Mapping[str, Any]) -> str:
    """ "good" for a normal item, else its specie_name (UNNAMED_DEFECT when empty)."""
    if item["anomaly"] == 0:
        return "good"
    return str(item.get("specie_name") or "").strip() or UNNAMED_DEFECT


def build_meta_records(file: Path, cls: str, split: str, finder: PathFinder) -> list[Record]:
    """The records of one class and split, in file order (one per image: repeats are dropped with a warning).

    A file that cannot be found is a DatasetError naming the entry; masks are checked by `warn_mask_stems`.
    """
    items = read_meta_json(file).get(split, {}).get(cls, [])
    records: dict[str, Record] = {}
    repeats = []
    for i, item in enumerate(items):
        where = f"{file}: {split}/{cls}[{i}]"
        image = _required(finder, item["img_path"], where, "img_path")
        mask_text = str(item.get("mask_path") or "").strip()
        mask = _required(finder, mask_text, where, "mask_path") if item["anomaly"] and mask_text else None
        if str(image) in records:
            repeats.append(str(i))
            continue
        mask_path = None if mask is None else str(mask)
        records[str(image)] = Record(str(image), mask_path, int(item["anomaly"]), _defect_type(item), cls)
    if repeats:
        warnings.warn(
            f"{file}: {len(repeats)} item(s) of {split}/{cls} repeat an image listed before (entries "
            f"{short_list(repeats)}): each image is scored once; delete the repeats to silence this",
            DatasetWarning,
            stacklevel=3,
        )
    warn_mask_stems(list(records.values()), file, f"{split}/{cls}")
    return list(records.values())


def _required(finder: PathFinder, text: str, where: str, what: str) -> Path:
    found = finder.find(text, where, what)
    if found is None:
        raise DatasetError(
            f"{where}: {what} {text!r} not found under {finder.root} (neither as written nor by a tail of "
            "it): check the path, or that the file is there"
        )
    return found


def stems_match(image: str, mask: str) -> bool:
    """True when the mask is named after its image: the same stem, or the stem followed by a separator
    (`000_mask.png`, `ISIC_0000003_Segmentation.png`, `0002_label.PNG`)."""
    image_stem, mask_stem = Path(image).stem, Path(mask).stem
    rest = mask_stem[len(image_stem) :]
    return mask_stem.startswith(image_stem) and (not rest or not rest[0].isalnum())


def warn_mask_stems(records: list[Record], file: Path, what: str) -> None:
    """Warn about masks named after another image (a pairing by position that may have slipped), and about
    anomalous images without a mask in a class where others have one (their pixels then count as normal)."""
    anomalous = [r for r in records if r.label == 1]
    odd = [
        f"{Path(r.image_path).name} <-> {Path(r.mask_path).name}"
        for r in anomalous
        if r.mask_path is not None and not stems_match(r.image_path, r.mask_path)
    ]
    if odd:
        warnings.warn(
            f"{file}: {len(odd)} mask(s) of {what} are not named after their image ({short_list(odd, 3)}): "
            "kept as meta.json pairs them; check that the pairs are right",
            DatasetWarning,
            stacklevel=3,
        )
    unmasked = [Path(r.image_path).name for r in anomalous if r.mask_path is None]
    if unmasked and len(unmasked) < len(anomalous):
        warnings.warn(
            f"{file}: {len(unmasked)} of {len(anomalous)} anomalous item(s) of {what} have no mask "
            f"({short_list(unmasked)}): their pixels count as normal in the pixel metrics",
            DatasetWarning,
            stacklevel=3,
        )


def available_meta_json_categories(root: str | os.PathLike[str]) -> list[str]:
    """The classes of the meta.json at `root` that have test items, sorted."""
    return sorted(c for c, items in read_meta_json(locate_meta_json(root))["test"].items() if items)


def load_meta_json(root: str | os.PathLike[str], category: str, split: str) -> ImageDataset:
    """Lazy split of one class: "test" is its test items, "train" the normal items of its train list.

    `root`: the folder holding meta.json, or the file. A class without normal train items is a DatasetError
    naming it when "train" is asked for (the few-shot references).
    """
    check_split(split)
    file = locate_meta_json(root)
    found = available_meta_json_categories(file)
    if category not in found:
        raise unknown_category(category, file, found, META_JSON_LAYOUT)
    records = build_meta_records(file, category, split, PathFinder(file.parent))
    if split == "train":
        records = [r for r in records if r.label == 0]
        if not records:
            raise DatasetError(
                f"{file}: class {category!r} has no normal train items, so no few-shot reference images: "
                "use --visual none or mutual, or add normal train items to meta.json"
            )
    return ImageDataset(records, "meta_json", file.parent, category, split)
