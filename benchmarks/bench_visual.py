"""Speed and memory of the visual scores (model/visual.py): few-shot and mutual scoring as a category grows.

    python benchmarks/bench_visual.py [--sizes 16,64,256 --shots 4 --device cpu --real_pairs 2 --partners 5]

1. Tiny SAM 3 (random weights, built in a temporary folder): N synthetic images are encoded once with the
   patch layers captured; then few-shot scoring (K = --shots references) and mutual scoring of the N images
   are timed, with the peak memory (CUDA: max allocated; CPU: growth of the process's peak RSS).
2. The real grid, for the old default (72 x 72 patches, r in {1, 3}) and the new one (patch_pool 2: 36 x 36,
   r in {1, 3, 5}): random unit features of the real shape (1024 channels: the scoring cost depends on
   shapes only) time one image-vs-image nearest-patch pass, the unit of both modes. From it the script
   projects the scoring time of a category of N images:
   few-shot: N * K * layers * degrees pair passes; mutual: N * (N - 1) * layers * degrees pair passes,
   and the memory mutual scoring holds on the device: one layer's features of the N images plus one
   neighbourhood aggregate, fp16 (the old code held all 4 layers plus one aggregate).
   One pair pass is 2 * P^2 * C flops: 55 GFLOP at 72 x 72, 3.4 GFLOP at 36 x 36.
3. `--partners`: mutual_partners M on synthetic features (a texture of 4 prototype vectors plus noise,
   N = 60 images of 12 x 12 patches, every fifth with a planted 2 x 2 defect): pixel AUROC and time with
   each image compared with M random others, against all N - 1.
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
    DEFAULT_PATCH_POOL,
    ReferenceBank,
    mutual_map,
    mutual_scores,
    nearest_distance,
    select_layers,
)

REAL_GRID, REAL_CHANNELS = 72, 1024
# (name, patch grid side, degrees) of the settings compared at the real grid.
REAL_SETTINGS = (
    ("old: 72x72, r 1,3", REAL_GRID, (1, 3)),
    (
        f"new: 36x36, r {','.join(map(str, DEFAULT_DEGREES))}",
        REAL_GRID // DEFAULT_PATCH_POOL,
        DEFAULT_DEGREES,
    ),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="16,64,256", help="category sizes N for the tiny-model runs")
    p.add_argument("--shots", type=int, default=4, help="few-shot references K")
    p.add_argument("--device", default="cpu")
    p.add_argument("--real_pairs", type=int, default=2, help="image pairs timed at the real grid")
    p.add_argument("--project", default="100,500", help="category sizes for the real-grid projection")
    p.add_argument("--partners", default="5,10,20", help="mutual_partners M to compare on synthetic features")
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
    pool = DEFAULT_PATCH_POOL
    refs = engine.encode_images(synthetic_images(args.shots, seed=99), patch_layers=layers, patch_pool=pool)
    refs = refs.patch_layers
    bank = ReferenceBank(refs)
    for n in (int(v) for v in args.sizes.split(",")):
        calls = engine.vision_calls
        feats: dict[int, list[torch.Tensor]] = {k: [] for k in layers}
        for start in range(0, n, 16):
            batch = synthetic_images(min(16, n - start), seed=start)
            for k, f in engine.encode_images(
                batch, patch_layers=layers, patch_pool=pool
            ).patch_layers.items():
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
    layers = len(DEFAULT_LAYER_FRACTIONS)
    for name, grid, degrees in REAL_SETTINGS:
        gen = torch.Generator().manual_seed(0)
        p = grid * grid
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        a = F.normalize(torch.randn(p, REAL_CHANNELS, generator=gen), dim=-1).to(device, dtype)
        b = F.normalize(torch.randn(p, REAL_CHANNELS, generator=gen), dim=-1).to(device, dtype)
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
            f"{name}: one image-vs-image pass {pair:.3f} s ({gflop:.1f} GFLOP, {gflop / pair:.0f} GFLOP/s), "
            f"peak {peak_mb(device):.0f} MB"
        )
        passes = layers * len(degrees)
        one_set_gb = p * REAL_CHANNELS * 2 / 1e9  # one image, one layer, fp16
        for n in (int(v) for v in args.project.split(",")):
            few = n * args.shots * passes * pair
            mutual = n * (n - 1) * passes * pair
            held_old = (layers + 1) * n * one_set_gb  # every layer + one aggregate (before: all on device)
            held_new = 2 * n * one_set_gb  # one layer + one aggregate
            print(
                f"  N={n:4d}: few-shot (K={args.shots}) {few:9.0f} s, mutual {mutual:10.0f} s "
                f"({mutual / 3600:.1f} h); mutual features on the device: all {layers} layers + one "
                f"aggregate {held_old:.1f} GB, one layer + one aggregate {held_new:.1f} GB"
            )


def planted_features(
    n: int, grid: int = 12, channels: int = 64, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, grid, grid, C) texture features, every fifth image with a 2 x 2 defect, and their labels."""
    gen = torch.Generator().manual_seed(seed)
    protos = F.normalize(torch.randn(4, channels, generator=gen), dim=-1)
    layout = torch.arange(grid * grid).remainder(4).view(grid, grid)
    feats = protos[layout][None].repeat(n, 1, 1, 1) + 0.3 * torch.randn(
        n, grid, grid, channels, generator=gen
    )
    labels = torch.zeros(n, grid, grid, dtype=torch.bool)
    for i in range(0, n, 5):
        y, x = torch.randint(0, grid - 1, (2,), generator=gen).tolist()
        feats[i, y : y + 2, x : x + 2] = F.normalize(torch.randn(channels, generator=gen), dim=0) * 1.5
        labels[i, y : y + 2, x : x + 2] = True
    return feats, labels


def auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve from the ranks (ties averaged): (M,) scores, (M,) bool labels."""
    s, y = scores.flatten().double(), labels.flatten()
    order = s.argsort()
    ranks = torch.empty_like(s)
    ranks[order] = torch.arange(1, len(s) + 1, dtype=torch.float64)
    for value in s.unique()[s.unique(return_counts=True)[1] > 1]:  # average tied ranks
        ranks[s == value] = ranks[s == value].mean()
    pos, neg = int(y.sum()), int((~y).sum())
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def partner_runs(args: argparse.Namespace) -> None:
    feats, labels = planted_features(60)
    n = feats.shape[0]
    print(f"mutual_partners on synthetic features: N={n} images of {tuple(feats.shape[1:3])} patches, r 1,3")
    for partners in [None, *(int(v) for v in args.partners.split(","))]:
        t0 = time.perf_counter()
        scores = mutual_scores(feats, degrees=(1, 3), partners=partners)
        took = time.perf_counter() - t0
        name = f"M={partners}" if partners is not None else f"all N-1={n - 1}"
        print(f"  {name:>12}: pixel AUROC {auroc(scores, labels):.4f}, {took:.2f} s")


def main(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    torch.set_grad_enabled(False)
    tiny_runs(args, device)
    real_grid_runs(args, device)
    partner_runs(args)


if __name__ == "__main__":
    main(parse_args())
