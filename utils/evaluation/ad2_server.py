"""MVTec AD 2's evaluation-server layout for the unlabelled splits (test_private, test_private_mixed).

With `--dataset mvtec_ad2 --ad2_submission DIR`, test.py writes DIR holding only (and with
`--test_split test_private --save_maps tiff`, the same under `<output_dir>/`):

    anomaly_images/<category>/<split>/<stem>.tiff              float16 map at the image's own size
    anomaly_images_thresholded/<category>/<split>/<stem>.png   uint8 0/255: map >= the category's threshold

the two folders the benchmark server takes, in the dtypes the official upload checker
(`MVTecAD2_public_code_utils/check_and_prepare_data_for_upload.py`) accepts. The threshold is
`pixel_normal_threshold` of the category's validation/good maps (utils/evaluation/benchmarks.py): no test
label is used. The maps are the stored evaluation maps resized bilinearly to each image's size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from dataset import Record
from dataset.images import displayed_size
from model.map_ops import resize_map
from utils.evaluation.exports import write_tiff

MAPS_DIR = "anomaly_images"
THRESHOLDED_DIR = "anomaly_images_thresholded"


def server_paths(out: Path, category: str, record: Record) -> tuple[Path, Path]:
    """(TIFF path, thresholded PNG path) of one unlabelled record (its defect type is its split)."""
    stem = Path(record.image_path).stem
    split = record.defect_type
    return (
        out / MAPS_DIR / category / split / f"{stem}.tiff",
        out / THRESHOLDED_DIR / category / split / f"{stem}.png",
    )


def save_server_maps(
    out: Path, category: str, records: Sequence[Record], maps: np.ndarray, threshold: float
) -> list[Path]:
    """Write each stored (S, S) map of `maps` (N, S, S) in the server layout (module docstring).

    A NaN threshold (no validation image) is a ValueError: the server needs the thresholded images.
    """
    if math.isnan(threshold):
        raise ValueError(f"{category}: no validation/good maps, so no threshold for the thresholded PNGs")
    written = []
    for record, stored in zip(records, maps, strict=True):
        height, width = displayed_size(record.image_path)  # the map's orientation: upright, as read
        tiff, png = server_paths(out, category, record)
        full = resize_map(np.asarray(stored, dtype=np.float32), (height, width))
        write_tiff(tiff, full, np.float16)
        png.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(((full >= threshold) * 255).astype(np.uint8)).save(png)
        written += [tiff, png]
    return written
