"""Benchmark compute_metrics (utils/evaluation/metrics.py) against the straightforward path, MVTec AD size.

    python benchmarks/bench_metrics.py [--n 1725 --size 256 --seed 0 --repeat 2 --skip_baseline]
    python benchmarks/bench_metrics.py --native [--n 400 --width 1600 --height 1100]

With --native: a MVTec LOCO category laid out on disk in a temporary folder (n test images of width x height,
a quarter good, the rest logical / structural with 1-3 region masks each, defects_config.json), stored maps
(n, 256, 256) float16, and the whole pixel work of `metrics_resolution: native` timed: the seven metrics and
the LOCO sPRO figures on each map resized to its image's size. Prints the time and the process's peak
resident memory above what it held before (ru_maxrss).

Builds a seeded synthetic test set (default: 1,725 maps of 256x256 like the full MVTec AD test set; ~27 %
good images without regions, defective images with 1-3 elliptic regions covering a few % of the pixels,
maps = noise + partial response inside the regions + some false-positive blobs, stored float16 as the
evaluation store does). Times compute_metrics on the float16 and float32 stacks, the straightforward path
(three scikit-learn calls on the pooled pixels + an argsort-based official AUPRO), and prints the speed
ratio, the largest absolute difference per metric and the peak extra memory (tracemalloc) relative to the
size of the float32 maps.
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from tests.reference_metrics import sklearn_metrics  # noqa: E402
from utils.evaluation.metrics import METRIC_KEYS, compute_metrics  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1725, help="number of maps (1725 = full MVTec AD test set)")
    p.add_argument("--size", type=int, default=256, help="map height and width")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeat", type=int, default=2, help="compute_metrics timings are the best of this many")
    p.add_argument("--skip_baseline", action="store_true", help="time only compute_metrics")
    p.add_argument("--native", action="store_true", help="time metrics_resolution native on a LOCO category")
    p.add_argument("--width", type=int, default=1600, help="--native: image width")
    p.add_argument("--height", type=int, default=1100, help="--native: image height")
    args = p.parse_args(argv)
    if args.native and "--n" not in (argv if argv is not None else sys.argv):
        args.n = 400
    return args


def make_set(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """labels (n,) int, scores (n,) float32, masks (n, size, size) bool, maps (n, size, size) float16."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) > 0.27).astype(int)
    masks = np.zeros((n, size, size), dtype=bool)
    maps = np.empty((n, size, size), dtype=np.float16)
    canvas = np.zeros((size, size), dtype=np.uint8)
    for i in range(n):
        noise = rng.normal(0.25, 0.08, (size, size)).astype(np.float32)
        for _ in range(rng.integers(0, 3)):  # false-positive blobs on good and defective images
            canvas[:] = 0
            centre = tuple(int(c) for c in rng.integers(0, size, 2))
            cv2.circle(canvas, centre, int(rng.integers(2, size // 16)), 1, -1)
            noise += canvas * np.float32(rng.uniform(0.1, 0.4))
        if labels[i]:
            for _ in range(rng.integers(1, 4)):
                canvas[:] = 0
                centre = tuple(int(c) for c in rng.integers(0, size, 2))
                axes = tuple(int(a) for a in rng.integers(3, size // 7, 2))
                cv2.ellipse(canvas, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
                region = canvas.astype(bool)
                masks[i] |= region
                noise[region] += np.float32(rng.uniform(0.0, 0.5))  # some regions barely detected
        maps[i] = np.clip(noise, 0.0, 1.0)
    scores = maps.reshape(n, -1).max(axis=1).astype(np.float32)
    return labels, scores, masks, maps


def sort_based_aupro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = 0.3) -> float:
    """Official AUPRO the direct way: argsort all pixels, cumulative FPR and PRO, one point per score."""
    weights = np.zeros(masks.shape, dtype=np.float64)
    n_regions = 0
    for i in range(len(masks)):
        count, labels, stats, _ = cv2.connectedComponentsWithStats(masks[i].view(np.uint8), connectivity=8)
        inside = labels > 0
        weights[i][inside] = 1.0 / stats[labels[inside], cv2.CC_STAT_AREA]
        n_regions += count - 1
    weights = weights.ravel() / n_regions
    scores = maps.ravel()
    normal = ~masks.ravel()
    order = np.argsort(scores, kind="stable")[::-1]
    fpr = np.cumsum(normal[order]) / normal.sum()
    pro = np.cumsum(weights[order])
    sorted_scores = scores[order]
    last = np.append(np.flatnonzero(sorted_scores[1:] != sorted_scores[:-1]), scores.size - 1)
    fpr, pro = np.append(0.0, fpr[last]), np.append(0.0, pro[last])
    end = int(np.searchsorted(fpr, fpr_limit, side="right"))
    area = np.trapezoid(pro[:end], fpr[:end])
    if end < fpr.size:
        y_at = np.interp(fpr_limit, fpr[end - 1 : end + 1], pro[end - 1 : end + 1])
        area += 0.5 * (pro[end - 1] + y_at) * (fpr_limit - fpr[end - 1])
    return float(area / fpr_limit)


def straightforward(labels, scores, masks, maps) -> dict[str, float]:
    """sklearn's three metrics at both levels and the sort-based AUPRO."""
    return {
        **sklearn_metrics(labels, scores, masks, maps),
        "pixel_aupro": sort_based_aupro(masks, maps.astype(np.float32)),
    }


def timed(fn, *args, repeat: int = 1) -> tuple[dict[str, float], float]:
    """fn(*args) and its best wall time over ``repeat`` runs (the first run also pays for page faults)."""
    best = float("inf")
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - start)
    return out, best


def peak_memory(fn, *args) -> int:
    """Peak bytes allocated (numpy arrays included) while fn runs, above what existed before."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    fn(*args)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak - base


def main(args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    labels, scores, masks, maps16 = make_set(args.n, args.size, args.seed)
    maps32 = maps16.astype(np.float32)
    f32_bytes = maps32.nbytes
    print(
        f"set: {args.n} maps {args.size}x{args.size} = {masks.size / 1e6:.1f} M pixels, "
        f"{labels.sum()} defective images, anomalous pixels {masks.mean() * 100:.2f} %, "
        f"float32 maps {f32_bytes / 2**20:.0f} MiB (built in {time.perf_counter() - t0:.1f} s)"
    )
    fast16, t16 = timed(compute_metrics, labels, scores, masks, maps16, repeat=args.repeat)
    fast32, t32 = timed(compute_metrics, labels, scores, masks, maps32, repeat=args.repeat)
    print(f"compute_metrics (best of {args.repeat}) float16 maps: {t16:.2f} s   float32 maps: {t32:.2f} s")
    for name, maps in (("float16", maps16), ("float32", maps32)):
        peak = peak_memory(compute_metrics, labels, scores, masks, maps)
        ratio = peak / f32_bytes
        print(f"peak extra memory, {name} maps: {peak / 2**20:.0f} MiB = {ratio:.2f}x the float32 maps")
    print("metrics: " + ", ".join(f"{k} {fast16[k]:.4f}" for k in METRIC_KEYS))
    if args.skip_baseline:
        return
    slow, t_slow = timed(straightforward, labels, scores, masks, maps16)
    print(f"straightforward path (sklearn x3 + argsort AUPRO): {t_slow:.2f} s")
    print(f"speed ratio: {t_slow / t16:.1f}x (float16 maps), {t_slow / t32:.1f}x (float32 maps)")
    print("max |difference| per metric (float16 / float32 fast path vs straightforward):")
    for k in METRIC_KEYS:
        print(f"  {k:<13} {abs(fast16[k] - slow[k]):.2e}  {abs(fast32[k] - slow[k]):.2e}")


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.native:
        from benchmarks.bench_native import main as native_main

        native_main(arguments)
    else:
        main(arguments)
