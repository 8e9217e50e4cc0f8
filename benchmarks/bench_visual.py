"""Speed, memory and accuracy of the visual scores (model/visual.py) on both grid sizes.

    python benchmarks/bench_visual.py [--sections tiny,real,partners,planted --sizes 16,64,256 --shots 4
                                       --device cpu --real_pairs 2 --partners 5 --planted_tests 24,12]

1. `tiny`: tiny SAM 3 (random weights, built in a temporary folder): N synthetic images are encoded once with
   the patch layers captured; then few-shot scoring (K = --shots references) and mutual scoring of the N
   images are timed, with the peak memory (CUDA: max allocated; CPU: growth of the process's peak RSS).
2. `real`: the real grid, for the old scale (72 x 72 patches, r in {1, 3}) and the default one (visual_grid
   36: 36 x 36, r in {1, 3, 5}): random unit features of the real shape (1024 channels: the scoring cost
   depends on shapes only) time one image-vs-image nearest-patch pass, the unit of both modes. From it the
   script projects the scoring time of a category of N images:
   few-shot: N * K * layers * degrees pair passes; mutual: N * (N - 1) * layers * degrees pair passes,
   and the memory mutual scoring holds on the device: one layer's features of the N images plus one
   neighbourhood aggregate, fp16 (the old code held all 4 layers plus one aggregate), and with the
   similarity block and aggregation step (`mutual_transient_gb`) the CUDA peak besides the weights.
   One pair pass is 2 * P^2 * C flops: 55 GFLOP at 72 x 72, 3.4 GFLOP at 36 x 36.
3. `partners`: mutual_partners M on synthetic features (a texture of 4 prototype vectors plus noise,
   N = 60 images of 12 x 12 patches, every fifth with a planted 2 x 2 defect): pixel AUROC and time with
   each image compared with M random others, against all N - 1.
4. `planted`: accuracy at two ViT grid sizes, 16 x 16 (the tiny model, 224 px input) and 72 x 72 (the same
   tiny widths at the real 1008 px input, random weights), on the planted set of benchmarks/planted_data.py
   (real hazelnut images when ../shared/data has them; thin strokes and discs of 3 sizes). Per pooling
   factor and mode (few-shot K = --shots, mutual): pixel AUROC of the fused map, the visual map alone and
   the text map alone, and image AUROC of the fused score for each `visual_image_score` reading; then, for
   the default settings, pixel AUROC per defect kind. The text path and the vision pass run once per grid.
   `--real_arch` also encodes one image with the REAL SAM 3 architecture (random weights, needs
   ../shared/data/sam3_hf_meta) and prints the pooled grid the detector scores on.
"""

from __future__ import annotations

import argparse
import copy
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
from scipy.stats import rankdata  # noqa: E402
from transformers import Sam3Model  # noqa: E402

from benchmarks.bench_full_size import DEFAULT_META_DIR  # noqa: E402
from benchmarks.planted_data import HAZELNUT_GOOD, SIDE, PlantedSet, planted_set  # noqa: E402
from model import Sam3Engine  # noqa: E402
from model.detector import AnomalyDetector, AnomalyResult, ScoringSettings  # noqa: E402
from model.fusion import fuse_visual  # noqa: E402
from model.mutual import MutualScorer  # noqa: E402
from model.prompts import build_prompts  # noqa: E402
from model.text_scorer import TextScorer  # noqa: E402
from model.tiny_sam3 import build_tiny_sam3, tiny_sam3_config  # noqa: E402
from model.visual import (  # noqa: E402
    CHUNK_ELEMENTS,
    DEFAULT_DEGREES,
    DEFAULT_LAYER_FRACTIONS,
    DEFAULT_VISUAL_GRID,
    FP32_CANDIDATES,
    PatchReading,
    ReferenceBank,
    VisualMode,
    _rows_per_block,
    calibrate,
    mutual_raw,
    mutual_scores,
    nearest_distance,
    normal_scale,
    select_layers,
)
from model.vit_layers import patch_features, pool_factor  # noqa: E402
from utils.config.loading import parse_list  # noqa: E402

REAL_GRID, REAL_CHANNELS = 72, 1024
# (name, patch grid side, degrees) of the settings compared at the real grid.
DEFAULT_POOLED = -(-REAL_GRID // pool_factor(REAL_GRID, DEFAULT_VISUAL_GRID))  # 36
REAL_SETTINGS = (
    ("old: 72x72, r 1,3", REAL_GRID, (1, 3)),
    (
        f"new: {DEFAULT_POOLED}x{DEFAULT_POOLED}, r {','.join(map(str, DEFAULT_DEGREES))}",
        DEFAULT_POOLED,
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
    p.add_argument("--sections", default="tiny,real,partners,planted", help="which parts to run (see above)")
    p.add_argument("--planted_tests", default="24,12", help="planted test images at the 16 and 72 grids")
    p.add_argument(
        "--prompts_72", type=int, default=2, help="base prompts scored at the 72 grid (slow on CPU)"
    )
    p.add_argument("--real_arch", action="store_true", help="encode one image with the real architecture")
    p.add_argument("--normal_dir", type=Path, default=HAZELNUT_GOOD, help="normal PNGs to plant defects in")
    p.add_argument("--meta_dir", type=Path, default=DEFAULT_META_DIR, help="facebook/sam3 config + tokenizer")
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
    pool = pool_factor(engine.vit_grid, DEFAULT_VISUAL_GRID)
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
        raw = mutual_raw(stacked)
        calibrate(raw, *normal_scale(raw))
        t_mutual = time.perf_counter() - t0
        print(
            f"  N={n:4d} grid {grid}: few-shot (K={args.shots}) {1e3 * t_few / n:7.2f} ms/image, "
            f"mutual {1e3 * t_mutual / n:8.2f} ms/image ({t_mutual:.2f} s for the category), "
            f"peak {peak_mb(device):.0f} MB"
        )


def mutual_transient_gb(patches: int, channels: int = REAL_CHANNELS, step_images: int = 16) -> float:
    """GB mutual scoring holds on CUDA besides one layer and its aggregate, from model/visual.py's bounds: one
    similarity block (fp16 (J, P, P), J = `_rows_per_block` banks), its fp32 re-scoring candidates (the fp16
    gather, its fp32 copy, renormalised: (J, P, 4, C) each) and one float32 aggregation step of 16 images
    (unit vectors, pooled, renormalised)."""
    banks = _rows_per_block(patches, patches, channels, torch.float16, CHUNK_ELEMENTS)
    block = banks * patches * patches * 2 + banks * patches * FP32_CANDIDATES * channels * (2 + 4 + 4)
    return (block + 3 * step_images * patches * channels * 4) / 1e9


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
            peak = held_new + mutual_transient_gb(p)
            print(
                f"  N={n:4d}: few-shot (K={args.shots}) {few:9.0f} s, mutual {mutual:10.0f} s "
                f"({mutual / 3600:.1f} h); mutual features on the device: all {layers} layers + one "
                f"aggregate {held_old:.1f} GB, one layer + one aggregate {held_new:.1f} GB"
            )
            on_cpu = layers * n * one_set_gb
            print(
                f"          mutual's CUDA peak besides the weights {peak:.1f} GB (+ similarity block and "
                f"aggregation step); the {layers} layers' features in CPU memory {on_cpu:.1f} GB"
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


NOUN = "hazelnut"


def mann_whitney_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """AUROC = P(score of a positive > score of a negative), ties counting half (ranks averaged)."""
    labels, scores = np.asarray(labels).ravel().astype(bool), np.asarray(scores, np.float64).ravel()
    ranks = rankdata(scores)
    pos, neg = int(labels.sum()), int((~labels).sum())
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def engine_at(grid: int, tiny: Sam3Engine) -> Sam3Engine:
    """`tiny` itself for 16 (224 px input); for 72 the same tiny widths at the real 1008 px input (seed 0)."""
    if grid == tiny.vit_grid:
        return tiny
    side = grid * 14
    config = tiny_sam3_config(image_size=side)
    config.vision_config.backbone_feature_sizes = [[4 * grid, 4 * grid], [2 * grid, 2 * grid], [grid, grid]]
    torch.manual_seed(0)
    model = Sam3Model(config).eval().to(tiny.device)
    return Sam3Engine(model, tiny.tokenizer, chunk_size=8, compute_dtype="fp32")


def fused(
    engine: Sam3Engine,
    mode: VisualMode,
    pool: int,
    reading: PatchReading,
    text: list[AnomalyResult],
    visual: dict,
) -> list[AnomalyResult]:
    """Copies of the text results fused with the visual maps as a detector with these settings does."""
    settings = ScoringSettings(visual=mode, patch_pool=pool, visual_image_score=reading)
    results = copy.deepcopy(text)
    if mode is VisualMode.FEWSHOT:
        fuse_visual(results, visual["calibrated"], settings)
    else:
        scorer = MutualScorer(AnomalyDetector(engine, settings), "mvtec")
        scorer.fuse(results, visual["raw"], visual["features"])
    return results


def visual_maps(engine: Sam3Engine, mode: VisualMode, refs: dict, tests: dict) -> dict:
    """Few-shot: the calibrated maps against the references; mutual: the raw maps and the features."""
    detector = AnomalyDetector(engine, ScoringSettings(visual=mode))
    if mode is VisualMode.FEWSHOT:
        return {"calibrated": ReferenceBank(refs, detector.settings.visual_degrees).calibrated(tests)}
    return {"raw": MutualScorer(detector, "mvtec").raw_scores(tests), "features": tests}


def planted_grid(engine: Sam3Engine, data: PlantedSet, prompts: list[str], pools: list[int]) -> None:
    """One markdown table of pixel and image AUROC per pooling factor and mode at this engine's grid."""
    grid = engine.vit_grid
    default = pool_factor(grid, DEFAULT_VISUAL_GRID)
    first = TextScorer(engine, lambda: ScoringSettings(visual=VisualMode.FEWSHOT, patch_pool=1))
    start = time.perf_counter()
    text, tests = first.score(data.images, prompts, NOUN, (SIDE, SIDE), False)
    refs = first.encode(data.references, with_patches=True).patch_layers
    masks, labels = np.stack(data.masks), data.labels
    print(
        f"\n{grid} x {grid} ViT grid: {len(data.images)} test images ({int(labels.sum())} planted), "
        f"K = {len(data.references)}, prompts {prompts}; SAM 3 passes {time.perf_counter() - start:.0f} s"
    )
    readings = list(PatchReading)
    print(
        "| pool -> grid | mode | P-AUROC fused | P visual only | P text only | "
        + " | ".join(f"I-AUROC {r.value}" for r in readings)
        + " | I visual only (max) | I text only |"
    )
    print("|---|---|---|---|---|" + "---|" * len(readings) + "---|---|")
    kinds: dict[str, list[AnomalyResult]] = {}
    for pool in pools:
        pooled = [{k: patch_features(v, pool) for k, v in f.items()} for f in (refs, tests)]
        side = pooled[1][next(iter(pooled[1]))].shape[1]
        for mode in (VisualMode.FEWSHOT, VisualMode.MUTUAL):
            maps = visual_maps(engine, mode, *pooled)
            runs = {r: fused(engine, mode, pool, r, text, maps) for r in readings}
            one = runs[PatchReading.PATCH_MAX]
            pixel = {
                name: mann_whitney_auroc(masks, np.stack([signal(r) for r in one]))
                for name, signal in (
                    ("fused", lambda r: r.anomaly_map),
                    ("visual", lambda r: r.signals["visual"][0]),
                    ("text", lambda r: r.signals["text"][0]),
                )
            }
            image = [
                mann_whitney_auroc(labels, [r.image_score for r in runs[reading]]) for reading in readings
            ]
            alone = [mann_whitney_auroc(labels, [r.signals[s][1] for r in one]) for s in ("visual", "text")]
            mark = " (default)" if pool == default else ""
            print(
                f"| {pool} -> {side} x {side}{mark} | {mode.value} | {pixel['fused']:.4f} | "
                f"{pixel['visual']:.4f} | {pixel['text']:.4f} | "
                + " | ".join(f"{v:.4f}" for v in image)
                + f" | {alone[0]:.4f} | {alone[1]:.4f} |"
            )
            if pool == default:
                kinds[mode.value] = one
    print(f"\npixel AUROC of the fused map per defect kind, defaults ({grid} x {grid} grid):")
    print("| mode | " + " | ".join(sorted(set(data.kinds) - {"good"})) + " |")
    print("|---|" + "---|" * len(set(data.kinds) - {"good"}))
    for mode, results in kinds.items():
        cells = []
        for kind in sorted(set(data.kinds) - {"good"}):
            keep = [i for i, k in enumerate(data.kinds) if k in (kind, "good")]
            cells.append(mann_whitney_auroc(masks[keep], np.stack([results[i].anomaly_map for i in keep])))
        print(f"| {mode} | " + " | ".join(f"{v:.4f}" for v in cells) + " |")


def planted_runs(args: argparse.Namespace, device: torch.device) -> None:
    tiny = Sam3Engine.from_pretrained(
        build_tiny_sam3(Path(tempfile.mkdtemp()) / "tiny", seed=0), device=str(device), dtype="fp32"
    )
    prompts = build_prompts(NOUN, "base")
    counts = [int(v) for v in parse_list(args.planted_tests)]
    for grid, tests, pools, used in (
        (16, counts[0], [1, 2, 4], prompts),
        (72, counts[1], [1, 2, 4], prompts[: args.prompts_72]),
    ):
        if tests < 2:
            continue
        data = planted_set(args.shots, tests, seed=0, folder=args.normal_dir)
        if grid == 16:
            print(f"planted set: normal images from {data.source}")
        planted_grid(engine_at(grid, tiny), data, used, pools)
    if args.real_arch:
        real_architecture_grid(args.meta_dir)


def real_architecture_grid(meta_dir: Path) -> None:
    """Encode one image with the real SAM 3 architecture (random weights) through the detector's path."""
    from benchmarks.bench_full_size import build_random_model, real_config_and_tokenizer

    config, tokenizer = real_config_and_tokenizer(meta_dir, None)
    engine = Sam3Engine(build_random_model(config, torch.float32, 0), tokenizer, compute_dtype="fp32")
    detector = TextScorer(engine, lambda: ScoringSettings(visual=VisualMode.FEWSHOT))
    start = time.perf_counter()
    features = detector.encode([np.zeros((SIDE, SIDE, 3), np.uint8)], with_patches=True).patch_layers
    shapes = {k: tuple(v.shape[1:3]) for k, v in features.items()}
    print(
        f"\nreal SAM 3 architecture (random weights): ViT grid {engine.vit_grid} x {engine.vit_grid}, "
        f"pool {detector.patch_pool()}, scored grid per layer {shapes} ({time.perf_counter() - start:.0f} s)"
    )


def main(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    torch.set_grad_enabled(False)
    sections = set(parse_list(args.sections))
    if "tiny" in sections:
        tiny_runs(args, device)
    if "real" in sections:
        real_grid_runs(args, device)
    if "partners" in sections:
        partner_runs(args)
    if "planted" in sections:
        planted_runs(args, device)


if __name__ == "__main__":
    main(parse_args())
