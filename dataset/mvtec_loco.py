"""MVTec LOCO AD: `<cat>/{train/good, validation/good, test/{good,logical_anomalies,structural_anomalies}}`.

Ground truth: `<cat>/ground_truth/<type>/<stem>/000.png, 001.png, ...`, one mask per defect region whose
pixel value names the defect in `<cat>/defects_config.json` (a list of {"defect_name", "pixel_value",
"saturation_threshold", "relative_saturation"}). The regions are kept apart (`Record.regions`) for sPRO
(utils/evaluation/spro.py); the image's mask is their union, for the usual pixel metrics.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from dataset.base import ImageDataset
from dataset.mvtec import mvtec_like_categories
from dataset.records import (
    DatasetError,
    MaskPairingError,
    Record,
    list_images,
    resolve_folder,
    short_list,
    subdirs,
    unknown_category,
    warn_shared_stems,
)

LOCO_FOLDER_NAMES: tuple[str, ...] = ("mvtec_loco", "mvtec_loco_anomaly_detection", "mvtec_loco_ad")
LOCO_LAYOUT = (
    "<root>/mvtec_loco/<category>/{train/good, validation/good, test/{good,logical_anomalies,"
    "structural_anomalies}, ground_truth/<type>/<stem>/000.png, defects_config.json}"
)
LOCO_SPLITS: tuple[str, ...] = ("train", "validation", "test")
DEFECTS_CONFIG = "defects_config.json"


@dataclass(frozen=True)
class DefectConfig:
    """One entry of defects_config.json: the defect whose mask pixels equal `pixel_value`.

    sPRO saturates a region of this defect once `saturation_threshold` of it is covered: a fraction of the
    region's area when `relative_saturation`, else a number of pixels.
    """

    name: str
    pixel_value: int
    saturation_threshold: float
    relative_saturation: bool


def read_defects_config(category_dir: Path) -> dict[int, DefectConfig]:
    """pixel value -> DefectConfig from `<category>/defects_config.json` (a bad file: one-line error)."""
    path = category_dir / DEFECTS_CONFIG
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"no {DEFECTS_CONFIG} in {category_dir} (expected {LOCO_LAYOUT})") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:  # Recursion: nested too deep
        raise DatasetError(f"{path} is not valid JSON ({err}): re-extract the dataset") from None
    configs: dict[int, DefectConfig] = {}
    try:
        for entry in entries:
            config = DefectConfig(
                str(entry["defect_name"]),
                int(entry["pixel_value"]),
                float(entry["saturation_threshold"]),
                entry["relative_saturation"],
            )
            configs[config.pixel_value] = config
            problem = _config_problem(config)
            if problem:
                raise ValueError(problem)
    except (TypeError, KeyError, ValueError, OverflowError) as err:
        raise DatasetError(
            f"{path}: every entry needs defect_name, pixel_value, saturation_threshold, relative_saturation "
            f"({type(err).__name__}: {err})"
        ) from None
    return configs


def _config_problem(config: DefectConfig) -> str | None:
    """What makes a defects_config.json entry unusable for sPRO (a string "false" would be true), or None."""
    if not isinstance(config.relative_saturation, bool):
        return f"relative_saturation of {config.name} is {config.relative_saturation!r}, not true or false"
    if not 0 <= config.pixel_value <= 255:
        return f"pixel_value of {config.name} is {config.pixel_value}, not a mask value 0..255"
    if not (math.isfinite(config.saturation_threshold) and config.saturation_threshold > 0):
        return f"saturation_threshold of {config.name} is {config.saturation_threshold}, not a number > 0"
    return None


def _regions(gt_dir: Path, images: list[Path], defect_dir: Path) -> dict[str, tuple[str, ...]]:
    """Image stem -> its region mask files `gt_dir/<stem>/*.png`, sorted; unpaired files raise."""
    folders = {d.name: d for d in subdirs(gt_dir)}
    missing = [p for p in images if p.stem not in folders or not list_images(folders[p.stem])]
    if missing:
        raise MaskPairingError(
            f"{len(missing)} defective image(s) without a mask in {gt_dir}: {short_list(missing)} "
            f"(expected ground_truth/{defect_dir.name}/<stem>/000.png for each; layout {LOCO_LAYOUT})"
        )
    stems = {p.stem for p in images}
    orphans = [d for name, d in sorted(folders.items()) if name not in stems and list_images(d)]
    if orphans:
        raise MaskPairingError(
            f"{len(orphans)} mask folder(s) without an image in {defect_dir}: {short_list(orphans)} "
            f"(expected test/{defect_dir.name}/<stem>.png for each; layout {LOCO_LAYOUT})"
        )
    return {stem: tuple(str(m) for m in list_images(folders[stem])) for stem in stems}


def build_loco_records(category_dir: Path, category: str, split: str) -> list[Record]:
    """Index one split; anomalous test images carry their region masks (`Record.regions`)."""
    split_dir = category_dir / split
    records: list[Record] = []
    for defect_dir in subdirs(split_dir):
        images = list_images(defect_dir)
        warn_shared_stems(images, defect_dir)
        if defect_dir.name == "good":
            records += [Record(str(p), None, 0, "good", category) for p in images]
            continue
        gt_dir = category_dir / "ground_truth" / defect_dir.name
        regions = _regions(gt_dir, images, defect_dir)
        for p in images:
            records.append(
                Record(str(p), str(gt_dir / p.stem), 1, defect_dir.name, category, regions[p.stem])
            )
    if not records:
        raise DatasetError(f"no images for split {split!r} in {split_dir} (expected {LOCO_LAYOUT})")
    return records


def available_loco_categories(root: str | os.PathLike[str]) -> list[str]:
    """MVTec LOCO AD categories on disk, sorted."""
    return mvtec_like_categories(resolve_folder(root, LOCO_FOLDER_NAMES, LOCO_LAYOUT))


def load_mvtec_loco(root: str | os.PathLike[str], category: str, split: str) -> ImageDataset:
    """Lazy MVTec LOCO AD split ("train", "validation" or "test"); see the module docstring.

    The test split's defects_config.json is read here, so a category without a valid one is refused when
    it is loaded (DatasetError), not after it was scored."""
    folder = resolve_folder(root, LOCO_FOLDER_NAMES, LOCO_LAYOUT)
    found = mvtec_like_categories(folder)
    if category not in found:
        raise unknown_category(category, folder, found, LOCO_LAYOUT)
    if split not in LOCO_SPLITS:
        raise DatasetError(f"unknown split {split!r}: expected one of {', '.join(LOCO_SPLITS)}")
    if split == "test":  # sPRO needs it: a missing or bad file is an error before any image is scored
        read_defects_config(folder / category)
    records = build_loco_records(folder / category, category, split)
    return ImageDataset(records, "mvtec_loco", folder, category, split)
