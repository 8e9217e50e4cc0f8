"""`bench_metrics.py --native`: time and peak memory of `metrics_resolution: native` on a LOCO-sized category.

The category is written to a temporary folder (removed afterwards) in MVTec LOCO's layout; the images are
flat grey (only their size is read), the region masks ellipses. Timed: the seven metrics
(`figures.category_metrics`: `native_view`, `compute_metrics` on its ranking) + the LOCO metrics
(`figures.own_metrics`: sPRO per subset and the per-type image AUROC), i.e. what `evaluate_category` and
`category_extras` compute for one category (and, in a visual run, for each map it was fused from).
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from dataset import load_dataset
from utils.evaluation.figures import Measure, category_metrics, own_metrics
from utils.evaluation.store import CategoryResult

DEFECTS = [
    {"defect_name": "missing", "pixel_value": 255, "saturation_threshold": 0.5, "relative_saturation": True},
    {"defect_name": "extra", "pixel_value": 254, "saturation_threshold": 2000, "relative_saturation": False},
]


def write_category(root: Path, n: int, width: int, height: int, rng: np.random.Generator) -> None:
    """`root/mvtec_loco/bench/`: n test images (a quarter good, then logical, then structural)."""
    cat = root / "mvtec_loco" / "bench"
    (cat / "train" / "good").mkdir(parents=True)
    (cat / "defects_config.json").write_text(json.dumps(DEFECTS))
    grey = Image.fromarray(np.full((height, width, 3), 120, np.uint8))
    grey.save(cat / "train" / "good" / "000.png")
    kinds = ["good"] * (n // 4) + ["logical_anomalies", "structural_anomalies"] * n
    for i, kind in enumerate(kinds[:n]):
        (cat / "test" / kind).mkdir(parents=True, exist_ok=True)
        grey.save(cat / "test" / kind / f"{i:03d}.png")
        if kind == "good":
            continue
        for j in range(int(rng.integers(1, 4))):
            mask = np.zeros((height, width), np.uint8)
            centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            axes = (int(rng.integers(10, width // 6)), int(rng.integers(10, height // 6)))
            cv2.ellipse(
                mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, DEFECTS[j % 2]["pixel_value"], -1
            )
            path = cat / "ground_truth" / kind / f"{i:03d}" / f"{j:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(path)


def peak_rss_bytes() -> int:
    """The process's peak resident set size so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as folder:
        t0 = time.perf_counter()
        write_category(Path(folder), args.n, args.width, args.height, rng)
        data = load_dataset("mvtec_loco", folder, "bench", "test")
        labels = np.array([r.label for r in data.records])
        maps = rng.random((len(data), 256, 256)).astype(np.float16)
        scores = maps.reshape(len(maps), -1).max(axis=1).astype(np.float64)
        result = CategoryResult({}, maps, np.zeros(maps.shape, bool), labels, scores)
        pixels = args.n * args.width * args.height
        print(
            f"category: {args.n} images of {args.width}x{args.height} = {pixels / 1e6:.0f} M pixels "
            f"(written in {time.perf_counter() - t0:.1f} s)"
        )
        before = peak_rss_bytes()
        start, cpu = time.perf_counter(), time.process_time()
        measure = Measure("mvtec_loco", data.records, native=True, category_dir=data.root / "bench")
        seven = category_metrics(result, data.records, native=True, aupro_variant="official")
        middle = time.perf_counter()
        own = own_metrics(result, measure)
        end, cpu = time.perf_counter(), time.process_time() - cpu
    print(
        f"native: seven metrics {middle - start:.1f} s, LOCO metrics {end - middle:.1f} s, "
        f"total {end - start:.1f} s wall, {cpu:.1f} s CPU"
    )
    print(
        f"peak resident memory: {peak_rss_bytes() / 2**30:.2f} GiB "
        f"({(peak_rss_bytes() - before) / 2**30:.2f} GiB above the {before / 2**30:.2f} GiB before)"
    )
    print("pixel_aupro {:.4f}, pixel_spro_0.05 {:.4f}".format(seven["pixel_aupro"], own["pixel_spro_0.05"]))
