"""Speed and memory of the visual scores (model/visual.py): few-shot and mutual scoring as a category grows.

    python benchmarks/bench_visual.py [--sizes 16,64,256 --shots 4 --device cpu --real_pairs 2]

1. Tiny SAM 3 (random weights, built in a temporary folder): N synthetic images are encoded once with the
   patch layers captured; then few-shot scoring (K = --shots references) and mutual scoring of the N images
   are timed, with the peak memory (CUDA: max allocated; CPU: growth of the process's peak RSS).
2. The real grid: random unit features of the real shape (72 x 72 patches of 1024 channels per layer: the
   scoring cost depends on shapes only) time one image-vs-image nearest-patch pass, the unit of both modes.
   From it the script projects the scoring time of a category of N images:
   few-shot: N * K * layers * degrees pair passes; mutual: N * (N - 1) * layers * degrees pair passes.
   Cost model of one pair pass: 2 * P^2 * C multiply-adds (P = 5184 patches, C = 1024): 55 GFLOP.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from model import Sam3Engine  # noqa: E402
from model.tiny_sam3 import build_tiny_sam3  # noqa: E402
from model.visual import (  # noqa: E402
    DEFAULT_DEGREES,
    DEFAULT_LAYER_FRACTIONS,
    ReferenceBank,
    mutual_map,
    nearest_distance,
    select_layers,
)

REAL_GRID, REAL_CHANNELS = 72, 1024


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="16,64,256", help="category sizes N for the tiny-model runs")
    p.add_argument("--shots", type=int, default=4, help="few-shot references K")
    p.add_argument("--device", default="cpu")
    p.add_argument("--real_pairs", type=int, default=2, help="image pairs timed at the real grid")
    p.add_argument("--project", default="16,64,256,500", help="category sizes for the real-grid projection")
    return p.parse_args(argv)


def peak_mb(device: torch.device) -> float:
    """CUDA: max allocated since the last reset; CPU: the process's peak RSS (monotonic), in MB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic_images(n: int, seed: int) -> list[np.ndarray]:
    """n textured 96x96 RGB images; every fifth one has a bright square 'defect'."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(n):
        img = (rng.normal(120, 12, (96, 96, 3)) + np.linspace(0, 40, 96)[None, :, None]).clip(0, 255)
        if i % 5 == 0:
            y, x = rng.integers(10, 70, 2)
            img[y : y + 14, x : x + 14] = 250
        images.append(img.astype(np.uint8))
    return images


def tiny_runs(args: argparse.Namespace, device: torch.device) -> None:
    folder = build_tiny_sam3(Path(tempfile.mkdtemp()) / "tiny", seed=0)
    engine = Sam3Engine.from_pretrained(folder, device=str(device), dtype="fp32")
    layers = select_layers(engine.num_vit_layers, DEFAULT_LAYER_FRACTIONS)
    print(f"tiny SAM 3: ViT layers {layers} of {engine.num_vit_layers}, degrees {DEFAULT_DEGREES}")
    refs = engine.encode_images(synthetic_images(args.shots, seed=99), patch_layers=layers).patch_layers
    bank = ReferenceBank(refs)
    for n in (int(v) for v in args.sizes.split(",")):
        calls = engine.vision_calls
        feats: dict[int, list[torch.Tensor]] = {k: [] for k in layers}
        for start in range(0, n, 16):
            batch = synthetic_images(min(16, n - start), seed=start)
            for k, f in engine.encode_images(batch, patch_layers=layers).patch_layers.items():
                feats[k].append(f)
        stacked = {k: torch.cat(v) for k, v in feats.items()}
        assert engine.vision_calls - calls == n, "an image was encoded more than once"
        grid = tuple(stacked[layers[0]].shape[1:])
        t0 = time.perf_counter()
        bank.calibrated(stacked)
        t_few = time.perf_counter() - t0
        t0 = time.perf_counter()
        mutual_map(stacked)
        t_mutual = time.perf_counter() - t0
        print(
            f"  N={n:4d} grid {grid}: few-shot (K={args.shots}) {1e3 * t_few / n:7.2f} ms/image, "
            f"mutual {1e3 * t_mutual / n:8.2f} ms/image ({t_mutual:.2f} s for the category), "
            f"peak {peak_mb(device):.0f} MB"
        )


def real_grid_runs(args: argparse.Namespace, device: torch.device) -> None:
    gen = torch.Generator().manual_seed(0)
    p = REAL_GRID * REAL_GRID
    a = F.normalize(torch.randn(p, REAL_CHANNELS, generator=gen), dim=-1).to(device)
    b = F.normalize(torch.randn(p, REAL_CHANNELS, generator=gen), dim=-1).to(device)
    nearest_distance(a[:256], b)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(args.real_pairs):
        nearest_distance(a, b)
    if device.type == "cuda":
        torch.cuda.synchronize()
    pair = (time.perf_counter() - t0) / args.real_pairs
    gflop = 2 * p * p * REAL_CHANNELS / 1e9
    print(
        f"real grid {REAL_GRID}x{REAL_GRID}x{REAL_CHANNELS}: one image-vs-image pass {pair:.3f} s "
        f"({gflop:.0f} GFLOP, {gflop / pair:.0f} GFLOP/s), peak {peak_mb(device):.0f} MB"
    )
    passes_per_image = len(DEFAULT_LAYER_FRACTIONS) * len(DEFAULT_DEGREES)
    print(f"projection ({len(DEFAULT_LAYER_FRACTIONS)} layers x {len(DEFAULT_DEGREES)} degrees):")
    for n in (int(v) for v in args.project.split(",")):
        few = n * args.shots * passes_per_image * pair
        mutual = n * (n - 1) * passes_per_image * pair
        feats_gb = n * len(DEFAULT_LAYER_FRACTIONS) * p * REAL_CHANNELS * 2 / 1e9
        print(
            f"  N={n:4d}: few-shot {few:9.0f} s, mutual {mutual:10.0f} s, "
            f"features of the category in fp16 {feats_gb:.1f} GB"
        )


def main(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    torch.set_grad_enabled(False)
    tiny_runs(args, device)
    real_grid_runs(args, device)


if __name__ == "__main__":
    main(parse_args())
