"""Benchmark the two-step engine: encoder call counts, images/s and peak memory.

    python benchmarks/bench_engine.py [--n_images 8 --n_prompts 4 --model_path DIR --chunk_size 8]

Without --model_path a tiny random SAM 3 is built into a temporary folder (model/tiny_sam3.py). The run
checks that each image goes through the vision encoder once and each distinct prompt through the text
encoder once, counting real calls by wrapping ``model.get_vision_features`` / ``get_text_features``; then
that few-shot (images + --shots references) and mutual visual scoring add no second vision pass.
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

from model import ModelLoadError, Sam3Engine  # noqa: E402
from model.detector import AnomalyDetector, ScoringSettings  # noqa: E402
from model.mutual import MutualScorer  # noqa: E402
from model.tiny_sam3 import build_tiny_sam3  # noqa: E402
from model.visual import VisualMode  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n_images", type=int, default=8)
    p.add_argument("--n_prompts", type=int, default=4)
    p.add_argument("--model_path", type=Path, default=None, help="facebook/sam3 folder (default: tiny model)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", help="compute (autocast) dtype: auto, fp32, bf16, fp16")
    p.add_argument("--chunk_size", type=int, default=8)
    p.add_argument("--image_batch", type=int, default=4, help="images per encode_images call")
    p.add_argument("--shots", type=int, default=2, help="reference images of the few-shot pass")
    return p.parse_args(argv)


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB (ru_maxrss is KB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def run(args: argparse.Namespace, model_path: Path) -> None:
    engine = Sam3Engine.from_pretrained(
        model_path, device=args.device, dtype=args.dtype, chunk_size=args.chunk_size
    )
    calls = {"vision_images": 0, "vision_calls": 0, "text_prompts": 0, "text_calls": 0}
    real_vision, real_text = engine.model.get_vision_features, engine.model.get_text_features

    def counted_vision(pixel_values, **kwargs):
        calls["vision_calls"] += 1
        calls["vision_images"] += int(pixel_values.shape[0])
        return real_vision(pixel_values=pixel_values, **kwargs)

    def counted_text(input_ids, attention_mask=None, **kwargs):
        calls["text_calls"] += 1
        calls["text_prompts"] += int(input_ids.shape[0])
        return real_text(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    engine.model.get_vision_features, engine.model.get_text_features = counted_vision, counted_text

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (256, 320, 3), dtype=np.uint8) for _ in range(args.n_images)]
    prompts = [f"defect type {k}" for k in range(args.n_prompts)]
    rows = 0
    start = time.perf_counter()
    for b in range(0, len(images), args.image_batch):
        features = engine.encode_images(images[b : b + args.image_batch])
        for chunk in engine.predict(features, prompts):
            rows += len(chunk)
    elapsed = time.perf_counter() - start

    assert rows == args.n_images * args.n_prompts, rows
    assert calls["vision_images"] == engine.vision_calls == args.n_images, (calls, engine.vision_calls)
    assert calls["text_prompts"] == engine.text_calls == args.n_prompts, (calls, engine.text_calls)
    print(
        f"model: {model_path} (input {engine.image_size}px, {engine.device}, weights {engine.dtype}, "
        f"compute {engine.compute_dtype})"
    )
    print(f"images={args.n_images} prompts={args.n_prompts} rows={rows} chunk_size={args.chunk_size}")
    print(
        f"vision encoder: {calls['vision_images']} images in {calls['vision_calls']} calls "
        f"(expected {args.n_images} images: once each) OK"
    )
    print(
        f"text encoder:   {calls['text_prompts']} prompts in {calls['text_calls']} calls "
        f"(expected {args.n_prompts} distinct prompts: once each) OK"
    )
    print(f"time {elapsed:.2f} s  ->  {args.n_images / elapsed:.2f} images/s, {rows / elapsed:.1f} rows/s")
    visual_passes(args, engine, images, prompts, calls)
    print(f"peak RSS {peak_rss_mb():.0f} MB")


def visual_passes(
    args: argparse.Namespace, engine: Sam3Engine, images: list, prompts: list[str], calls: dict[str, int]
) -> None:
    """Few-shot and mutual scoring share the text path's vision pass: images + references, once each."""
    rng = np.random.default_rng(1)
    references = [rng.integers(0, 256, (256, 320, 3), dtype=np.uint8) for _ in range(args.shots)]
    batches = [images[b : b + args.image_batch] for b in range(0, len(images), args.image_batch)]
    for mode in (VisualMode.FEWSHOT, VisualMode.MUTUAL):
        detector = AnomalyDetector(engine, ScoringSettings(visual=mode))
        before = calls["vision_images"]
        start = time.perf_counter()
        if mode is VisualMode.FEWSHOT:
            detector.set_references(references)
            for batch in batches:
                detector.detect_arrays(batch, prompts)
            expected = len(images) + len(references)
        else:
            MutualScorer(detector).score(batches, prompts)
            expected = len(images)
        elapsed = time.perf_counter() - start
        seen = calls["vision_images"] - before
        assert seen == expected, (mode, seen, expected)
        what = "test images + references" if mode is VisualMode.FEWSHOT else "test images"
        print(
            f"visual {mode:7s}: {seen} images through the vision encoder (expected {expected}: {what}, "
            f"once each) OK; {len(images) / elapsed:.2f} images/s"
        )


def main(args: argparse.Namespace) -> None:
    if args.model_path is not None:
        try:
            run(args, args.model_path)
        except ModelLoadError as exc:
            sys.exit(f"error: {exc}")
        return
    with tempfile.TemporaryDirectory(prefix="tiny_sam3_") as tmp:
        run(args, build_tiny_sam3(Path(tmp) / "tiny_sam3"))


if __name__ == "__main__":
    main(parse_args())
