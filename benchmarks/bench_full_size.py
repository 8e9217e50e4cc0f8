"""Benchmark the full-size SAM 3 code path: shapes, seconds and peak memory, without the real weights.

    python benchmarks/bench_full_size.py [--n_images 1 --n_prompts 2 --chunk_size 2 --dtype fp32|bf16|fp16
                                          --device cpu|cuda|cuda:N --warmup N --threads N --meta_dir DIR
                                          --seed 0]

The detector is built with the REAL architecture -- ``detector_config`` of facebook/sam3's ``config.json``
-> ``transformers.Sam3Config`` -> ``Sam3Model(config)`` -- but with RANDOM weights (seeded), and the real
CLIP tokenizer from the same folder. Speed, memory and tensor shapes are those of the real model; every
score, mask and box it outputs is meaningless. ``--meta_dir`` is any folder with facebook/sam3's
``config.json`` and tokenizer files: by default ``../shared/data/sam3_hf_meta`` beside the repository, else
the SAM 3 download at the default model path (``~/autodl-tmp/download/sam3``); the weights are not read.
A folder written by ``scripts/make_tiny_sam3.py`` gives the tiny architecture (a smoke test of the script).

On CUDA, ``--warmup`` (default 1) untimed passes over one image come first, so that the timed steps do not
include CUDA's lazy initialisation and kernel selection; peak GPU memory (``max_memory_allocated`` of the
device) is printed with each step.

It runs the classes users run, ``model.engine.Sam3Engine`` and ``model.detector.AnomalyDetector``, on N
random 1024x1024 RGB images (resized to the config's 1008x1008) and the first K ``base`` defect prompts,
and times each step separately: model build, ``engine.encode_images``, ``engine.predict`` (text encoder
for K prompts + decoders for N x K rows) and a full ``detector.detect`` (its own vision pass, plus one
object-noun row per image; the defect prompts' text features are then already cached by the engine).
Peak RSS is the process maximum so far (``ru_maxrss``), so it never goes down between steps; "growth per
row" is the rise of that peak during ``predict`` divided by the rows of one chunk (it includes the kept
outputs, 66 MB fp32 per row of mask logits). ``--dtype`` is the engine's compute (autocast) dtype; the
weights are float32, as :func:`model.loader.load_sam3` loads them.

Example output (default fp32 run on a 2-core CPU shared with other jobs; numbers vary by machine/load)::

    params: total 840.4 M, vision 454.0 M, text 353.5 M
    build: 23.6 s  peak RSS 3627 MB
    input: 1 x 1024x1024 RGB uint8 -> pixel_values (1, 3, 1008, 1008) fp32; prompts ['defect', 'damage'] ...
    encode_images: 95.7 s (1 images, 95.7 s/image)  peak RSS 4275 MB
    predict: 30.8 s (2 rows (1 images x 2 prompts, text encoder included), 15.38 s/row)  peak RSS 5045 MB
    first chunk: mask_logits (2, 200, 288, 288)  semantic_logits (2, 288, 288)  scores (2, 200)  boxes ...
    detect: 79.1 s (1 images x (2 prompts + 'bottle') = 3 rows, 79.1 s/image, 26.38 s/row incl. vision, ...
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from transformers import CLIPTokenizer, Sam3Config, Sam3Model  # noqa: E402

from model.detector import AnomalyDetector, ScoringSettings  # noqa: E402
from model.engine import ConceptOutputs, Sam3Engine  # noqa: E402
from model.prompts import build_prompts  # noqa: E402
from utils.config.schema import DEFAULT_MODEL_PATH  # noqa: E402

SHARED_META_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "sam3_hf_meta"
# facebook/sam3's small files: the development copy beside the repository, else a user's SAM 3 download.
DEFAULT_META_DIR = SHARED_META_DIR if SHARED_META_DIR.is_dir() else Path(DEFAULT_MODEL_PATH).expanduser()
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
INPUT_SIDE = 1024  # side of the random test images, before the engine resizes them to the model's size
OBJECT_NOUN = "bottle"
OUT_SIZE = (256, 256)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n_images", type=int, default=1)
    p.add_argument("--n_prompts", type=int, default=2, help="first K prompts of build_prompts(None, 'base')")
    p.add_argument("--chunk_size", type=int, default=2, help="(image, prompt) rows per decoder forward")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="fp32")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--meta_dir", type=Path, default=DEFAULT_META_DIR, help="facebook/sam3 config + tokenizer")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and images")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (CUDA: also peak GPU memory)")
    p.add_argument(
        "--warmup", type=int, default=None, help="untimed passes over one image (default: 1 on CUDA)"
    )
    args = p.parse_args(argv)
    if args.n_images < 1 or args.n_prompts < 1 or args.chunk_size < 1:
        p.error("--n_images, --n_prompts and --chunk_size must be >= 1")
    if args.warmup is not None and args.warmup < 0:
        p.error("--warmup must be >= 0")
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be >= 1")
    return args


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB (ru_maxrss is KB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def load_real_config(meta_dir: Path) -> Sam3Config:
    """The real image-detector config: ``detector_config`` of facebook/sam3's (video) ``config.json``."""
    config_file = meta_dir / "config.json"
    if not config_file.is_file():
        sys.exit(f"error: no {config_file}: pass --meta_dir DIR with facebook/sam3's config.json + tokenizer")
    video_config = json.loads(config_file.read_text())
    if "detector_config" not in video_config:
        sys.exit(f"error: {config_file} has no detector_config: it is not facebook/sam3's config.json")
    return Sam3Config.from_dict(video_config["detector_config"])


def build_random_model(config: Sam3Config, dtype: torch.dtype, seed: int) -> Sam3Model:
    """``Sam3Model(config)`` with seeded random weights, created directly in ``dtype``, eval, frozen.

    Creating the parameters in ``dtype`` (default dtype switched for the constructor) keeps a bf16 run from
    ever holding the fp32 copy, so its peak RSS is that of a bf16 model.
    """
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        model = Sam3Model(config)
    finally:
        torch.set_default_dtype(previous)
    model = model.to(dtype).eval()  # no-op unless a buffer was created with an explicit dtype
    model.requires_grad_(False)
    return model


def shapes(chunk: ConceptOutputs) -> str:
    names = ("mask_logits", "semantic_logits", "scores", "boxes")
    return "  ".join(f"{n} {tuple(getattr(chunk, n).shape)}" for n in names)


def report(step: str, seconds: float, device: torch.device, detail: str = "") -> None:
    """One line per step: total seconds, per-unit detail, process peak RSS so far (and, on CUDA, the peak GPU
    memory allocated on `device` so far)."""
    detail = f" ({detail})" if detail else ""
    gpu = ""
    if device.type == "cuda":
        gpu = f"  peak GPU {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MB"
    print(f"{step}: {seconds:.1f} s{detail}  peak RSS {peak_rss_mb():.0f} MB{gpu}")


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work, so a step's time is its own."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def real_config_and_tokenizer(meta_dir: Path, threads: int | None) -> tuple[Sam3Config, CLIPTokenizer]:
    """Set the torch thread count, then read facebook/sam3's detector config and tokenizer from `meta_dir`."""
    if threads is not None:
        torch.set_num_threads(threads)
    meta_dir = meta_dir.expanduser().resolve()
    return load_real_config(meta_dir), CLIPTokenizer.from_pretrained(meta_dir, local_files_only=True)


def time_predict(
    engine: Sam3Engine, features: Any, prompts: list[str], args: argparse.Namespace, device: torch.device
) -> None:
    """Time `engine.predict` over every image x prompt row and print its memory growth per row."""
    rows = args.n_images * args.n_prompts
    peak_before = peak_rss_mb()
    start = time.perf_counter()
    chunks = []
    held_before = 0.0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        held_before = torch.cuda.memory_allocated(device) / 2**20  # weights + image features
    for chunk in engine.predict(features, prompts):
        chunks.append(chunk)
    sync(device)
    predict_s = time.perf_counter() - start
    assert sum(len(c) for c in chunks) == rows, [len(c) for c in chunks]
    report(
        "predict",
        predict_s,
        device,
        f"{rows} rows ({args.n_images} images x {args.n_prompts} prompts, text encoder included), "
        f"{predict_s / rows:.2f} s/row",
    )
    per_row = (peak_rss_mb() - peak_before) / min(args.chunk_size, rows)
    print(f"peak RSS growth during predict per row of the largest chunk: {per_row:.0f} MB/row")
    if device.type == "cuda":
        grow = (torch.cuda.max_memory_allocated(device) / 2**20 - held_before) / min(args.chunk_size, rows)
        print(f"peak GPU memory growth during predict per prompt row: {grow:.0f} MB/row")
    print(f"first chunk: {shapes(chunks[0])}")


def main(args: argparse.Namespace) -> None:
    config, tokenizer = real_config_and_tokenizer(args.meta_dir, args.threads)
    base = build_prompts(None, "base")
    if args.n_prompts > len(base):
        sys.exit(f"error: --n_prompts {args.n_prompts} > the {len(base)} base prompts")
    prompts = base[: args.n_prompts]
    print(
        f"SAM 3 full-size detector, RANDOM weights (seed {args.seed}): timings/memory/shapes real, outputs "
        f"meaningless; {args.dtype}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    )

    start = time.perf_counter()
    device = torch.device(args.device)
    model = build_random_model(config, torch.float32, args.seed).to(device)  # fp32 weights, as load_sam3
    sync(device)
    build_s = time.perf_counter() - start
    total, vision, text = (num_params(m) / 1e6 for m in (model, model.vision_encoder, model.text_encoder))
    print(f"params: total {total:.1f} M, vision {vision:.1f} M, text {text:.1f} M")
    report("build", build_s, device)

    engine = Sam3Engine(model, tokenizer, chunk_size=args.chunk_size, compute_dtype=DTYPES[args.dtype])
    detector = AnomalyDetector(engine, ScoringSettings())
    rng = np.random.default_rng(args.seed)
    images = [rng.integers(0, 256, (INPUT_SIDE, INPUT_SIDE, 3), dtype=np.uint8) for _ in range(args.n_images)]
    side = engine.image_size
    print(
        f"input: {args.n_images} x {INPUT_SIDE}x{INPUT_SIDE} RGB uint8 -> pixel_values "
        f"({args.n_images}, 3, {side}, {side}) fp32, compute {args.dtype}; prompts {prompts}; "
        f"chunk_size {args.chunk_size}"
    )

    warmup = args.warmup if args.warmup is not None else int(device.type == "cuda")
    start = time.perf_counter()
    for _ in range(warmup):  # CUDA context, cuBLAS/cuDNN handles, kernel choice: not part of a step's time
        list(engine.predict(engine.encode_images(images[:1]), prompts[:1]))
    sync(device)
    if warmup:
        report("warmup", time.perf_counter() - start, device, f"{warmup} x (1 image, 1 prompt)")

    start = time.perf_counter()
    features = engine.encode_images(images)
    sync(device)
    encode_s = time.perf_counter() - start
    report(
        "encode_images", encode_s, device, f"{args.n_images} images, {encode_s / args.n_images:.2f} s/image"
    )

    time_predict(engine, features, prompts, args, device)
    del features

    detect_rows = args.n_images * (args.n_prompts + 1)  # + the object-noun row per image
    start = time.perf_counter()
    results = detector.detect_arrays(images, prompts, object_noun=OBJECT_NOUN, out_size=OUT_SIZE)
    sync(device)
    detect_s = time.perf_counter() - start
    assert len(results) == args.n_images and results[0].anomaly_map.shape == OUT_SIZE
    report(
        "detect",
        detect_s,
        device,
        f"{args.n_images} images x ({args.n_prompts} prompts + {OBJECT_NOUN!r}) = {detect_rows} rows, "
        f"{detect_s / args.n_images:.2f} s/image, {detect_s / detect_rows:.2f} s/row incl. vision, "
        f"anomaly_map {results[0].anomaly_map.shape}",
    )


if __name__ == "__main__":
    main(parse_args())
