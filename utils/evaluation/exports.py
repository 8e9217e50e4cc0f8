"""Outputs that other tools read: per_image.csv, MVTec-layout TIFF maps, COCO RLE instance masks.

- `<output_dir>/categories/<category>/per_image.csv`: path (relative to --dataset_path), defect_type, label,
  image_score per test image.
- with `save_maps: tiff`, `<output_dir>/anomaly_maps/<category>/test/<defect>/<stem>.tiff`: the layout that
  MVTec AD's official `evaluate_experiment.py --anomaly_maps_dir <output_dir>/anomaly_maps` reads. Each map
  is the stored evaluation map (eval_size x eval_size) resized bilinearly to its image's size (the official
  script requires the image size), as float32.
- `instance_rle`: a bool mask as COCO RLE ({"size": [H, W], "counts": str}), decoded by
  `pycocotools.mask.decode`.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from pycocotools import mask as coco_mask

from dataset import Record
from dataset.images import displayed_size
from model.detector import Detection
from model.map_ops import resize_map
from utils.config.schema import Config
from utils.evaluation.store import CategoryResult
from utils.evaluation.thresholds import category_thresholds, update_thresholds
from utils.files import atomic_write, atomic_write_text, disk_full_as_error

PER_IMAGE_COLUMNS: tuple[str, ...] = ("path", "defect_type", "label", "image_score")


def per_image_csv(records: Sequence[Record], result: CategoryResult, root: str | Path) -> str:
    """The text of per_image.csv: one row per image, in evaluation order (PER_IMAGE_COLUMNS).

    "path" is relative to `root` (the --dataset_path), `/`-separated: the same on every machine.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(PER_IMAGE_COLUMNS)
    for record, label, score in zip(records, result.labels, result.scores, strict=True):
        path = Path(os.path.relpath(record.image_path, root)).as_posix()
        writer.writerow([path, record.defect_type, int(label), repr(float(score))])
    return buffer.getvalue()


def tiff_path(root: Path, category: str, record: Record) -> Path:
    """`<root>/<category>/test/<defect_type>/<image stem>.tiff` (MVTec AD's evaluation layout)."""
    return root / category / "test" / record.defect_type / f"{Path(record.image_path).stem}.tiff"


def write_tiff(path: Path, image_map: np.ndarray, dtype: type = np.float32) -> None:
    """Write a (H, W) map as a float32 (or `dtype`) TIFF, atomically (`utils.files.atomic_write`).

    Raises:
        OutputDirError: the disk is full. OSError: the folder cannot be made or written, or the name is
            too long (the scripts show both as one line: `utils.config.cli.user_message`).
    """
    with disk_full_as_error(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda handle: handle.write(_tiff_bytes(image_map, dtype)))


def _tiff_bytes(image_map: np.ndarray, dtype: type) -> bytes:
    """A (H, W) map encoded as a TIFF file of `dtype`."""
    encoded = io.BytesIO()
    tifffile.imwrite(encoded, np.ascontiguousarray(image_map, dtype=dtype))
    return encoded.getvalue()


def save_tiff_maps(root: Path, category: str, records: Sequence[Record], maps: np.ndarray) -> list[Path]:
    """Each stored map (N, S, S) resized to its image's (H, W) (read from the file header) as a TIFF."""
    written = []
    for record, stored in zip(records, maps, strict=True):
        height, width = displayed_size(record.image_path)  # the map's orientation: upright, as read
        path = tiff_path(root, category, record)
        write_tiff(path, resize_map(np.asarray(stored, dtype=np.float32), (height, width)))
        written.append(path)
    return written


def instance_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO RLE of a (H, W) bool mask: {"size": [H, W], "counts": ASCII str} (pycocotools' compressed RLE)."""
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def export_category(
    out: Path, cfg: Config, category: str, records: Sequence[Record], result: CategoryResult
) -> dict[str, Any]:
    """Every per-category export of test.py: per_image.csv, the thresholds.json entry, TIFF maps if asked.

    `records`: the category's test records in evaluation order (`ImageDataset.records`). Returns the
    category's thresholds (`category_thresholds`, NaN where undefined).
    """
    cat_dir = out / "categories" / category
    atomic_write_text(cat_dir / "per_image.csv", per_image_csv(records, result, cfg.data.dataset_path))
    thresholds = category_thresholds(result)
    update_thresholds(out, category, thresholds, cfg.data.dataset, cfg.evaluation.eval_size)
    if cfg.evaluation.save_maps == "tiff":
        save_tiff_maps(out / "anomaly_maps", category, records, result.maps)
    return thresholds


def detections_json(detections: Sequence[Detection]) -> list[dict[str, Any]]:
    """The "boxes" of demo.py / app.py JSON: prompt, score, xyxy box in pixels and, when the detection
    carries its (H, W) bool instance mask, that mask as COCO RLE ("rle", see `instance_rle`)."""
    boxes = []
    for d in detections:
        entry: dict[str, Any] = {"prompt": d.prompt, "score": d.score, "box_xyxy": list(d.box)}
        if d.mask is not None:
            entry["rle"] = instance_rle(d.mask)
        boxes.append(entry)
    return boxes
