"""Benchmark one fine-tuning micro-step of the full-size SAM 3 on CPU: seconds and peak memory per row.

    python benchmarks/bench_train_memory.py [--batch_size 1 --num_concepts 1 --train_head
                                             --threads N --meta_dir DIR --seed 0]

The detector is the REAL architecture with RANDOM weights, built by ``benchmarks/bench_full_size.py``
(``detector_config`` of facebook/sam3's ``config.json`` in ``../shared/data/sam3_hf_meta``), in fp32 on the
CPU, wrapped in ``model.engine.Sam3Engine``. A ``ConceptBank`` is seeded from the first ``num_concepts``
``base`` prompts and handed to ``utils.training.trainer.Trainer`` (which unfreezes the semantic head with
``--train_head``), then ONE micro-step runs exactly as ``Trainer.run_epoch`` does it:
``terms = batch_loss(engine, samples, bank, cfg)`` then ``terms["loss"].backward()``, on ``batch_size``
random 1024x1024 RGB images, each labelled anomalous with a random rectangle mask. Losses are meaningless.

Rows = batch_size x num_concepts: the (image, concept) pairs decoded with gradients on. Peak RSS is the
process maximum so far (``ru_maxrss``): "before" is after building the model and the bank, "forward" and
"backward" after each half of the step. The increase over "before" divided by the rows is the figure to size
training memory with. It is CPU resident memory of an fp32 run: it APPROXIMATES, does not equal, GPU memory
(the trainer runs CUDA under bf16 autocast, CUDA has its own allocator and workspaces, and the increase also
holds the frozen vision pass's transient activations, which grow with batch_size, not with num_concepts).

Example output (default run on a 2-core CPU shared with other jobs; numbers vary by machine/load)::

    SAM 3 full-size detector, RANDOM weights (seed 0), fp32 on CPU, 2 threads, torch 2.13.0+cpu; losses ...
    build: 20.9 s; concepts ['defect']; train_head False; 8192 trained parameters; chunk_size 8
    rows: 1 (1 images x 1 concepts); input 1024x1024 RGB uint8 -> 1008x1008
    peak RSS before the step: 3673 MB
    forward (batch_loss): 56.8 s  peak RSS 5765 MB (+2092 MB); loss 1.3754
    backward: 6.9 s  peak RSS 5765 MB (+2092 MB); concept grad norm 0.0023
    step: 63.7 s; peak RSS increase 2092 MB = 2092 MB/row (1 rows), 63.7 s/row

With ``--num_concepts 4`` the same machine gave +7059 MB (1765 MB/row): each extra row adds about
(7059 - 2092) / 3 = 1.66 GB in fp32, so the per-row figure of a many-row run is the one to size with; a
1-row run also carries the fixed per-image part (vision pass, map resizing).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.bench_full_size import (  # noqa: E402
    DEFAULT_META_DIR,
    INPUT_SIDE,
    build_random_model,
    peak_rss_mb,
    real_config_and_tokenizer,
)
from dataset import Sample  # noqa: E402
from model.concepts import ConceptBank  # noqa: E402
from model.engine import Sam3Engine  # noqa: E402
from model.prompts import build_prompts  # noqa: E402
from utils.config.loading import resolve_config  # noqa: E402
from utils.training.trainer import Trainer, batch_loss  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch_size", type=int, default=1, help="images per micro-step")
    p.add_argument("--num_concepts", type=int, default=1, help="learned concepts (first K base prompts)")
    p.add_argument("--train_head", action="store_true", help="also train SAM 3's semantic head")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--meta_dir", type=Path, default=DEFAULT_META_DIR, help="real facebook/sam3 small files")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights, images and masks")
    args = p.parse_args(argv)
    if args.batch_size < 1 or args.num_concepts < 1:
        p.error("--batch_size and --num_concepts must be >= 1")
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be >= 1")
    return args


def random_samples(n: int, rng: np.random.Generator) -> list[Sample]:
    """`n` label-1 samples: random (INPUT_SIDE, INPUT_SIDE, 3) uint8 images, random rectangle masks."""
    samples = []
    for i in range(n):
        image = rng.integers(0, 256, (INPUT_SIDE, INPUT_SIDE, 3), dtype=np.uint8)
        mask = np.zeros((INPUT_SIDE, INPUT_SIDE), dtype=bool)
        y0, x0 = rng.integers(0, INPUT_SIDE // 2, 2)
        h, w = rng.integers(INPUT_SIDE // 16, INPUT_SIDE // 2, 2)
        mask[y0 : y0 + h, x0 : x0 + w] = True
        samples.append(
            Sample(
                image=image,
                label=1,
                mask=mask,
                category="random",
                defect_type="rectangle",
                image_path=f"random_{i}.png",
            )
        )
    return samples


def main(args: argparse.Namespace) -> None:
    config, tokenizer = real_config_and_tokenizer(args.meta_dir, args.threads)
    base = build_prompts(None, "base")
    if args.num_concepts > len(base):
        sys.exit(f"error: --num_concepts {args.num_concepts} > the {len(base)} base prompts")
    flags = {"batch_size": args.batch_size, "num_concepts": args.num_concepts, "train_head": args.train_head}
    cfg = resolve_config(None, {**flags, "seed": args.seed, "device": "cpu", "dtype": "fp32"})
    print(
        f"SAM 3 full-size detector, RANDOM weights (seed {args.seed}), fp32 on CPU, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}; losses meaningless"
    )

    start = time.perf_counter()
    model = build_random_model(config, torch.float32, args.seed)
    engine = Sam3Engine(model, tokenizer, chunk_size=cfg.model.chunk_size)
    seeds = base[: args.num_concepts]
    trainer = Trainer(engine, ConceptBank.from_words(engine, seeds), cfg)
    trained = sum(p.numel() for group in trainer.optimizer.param_groups for p in group["params"])
    print(
        f"build: {time.perf_counter() - start:.1f} s; concepts {seeds}; "
        f"train_head {cfg.training.train_head}; "
        f"{trained} trained parameters; chunk_size {cfg.model.chunk_size}"
    )

    samples = random_samples(args.batch_size, np.random.default_rng(args.seed))
    rows = args.batch_size * args.num_concepts
    side = engine.image_size
    print(
        f"rows: {rows} ({args.batch_size} images x {args.num_concepts} concepts); input "
        f"{INPUT_SIDE}x{INPUT_SIDE} RGB uint8 -> {side}x{side}"
    )
    before = peak_rss_mb()
    print(f"peak RSS before the step: {before:.0f} MB")

    torch.manual_seed(args.seed)
    start = time.perf_counter()
    terms = batch_loss(trainer.engine, samples, trainer.bank, trainer.cfg)
    forward_s = time.perf_counter() - start
    after_forward = peak_rss_mb()
    print(
        f"forward (batch_loss): {forward_s:.1f} s  peak RSS {after_forward:.0f} MB "
        f"(+{after_forward - before:.0f} MB); loss {float(terms['loss'].detach()):.4f}"
    )

    start = time.perf_counter()
    terms["loss"].backward()
    backward_s = time.perf_counter() - start
    after_backward = peak_rss_mb()
    grad = trainer.bank.embeds.grad
    assert grad is not None and grad.shape == trainer.bank.embeds.shape
    print(
        f"backward: {backward_s:.1f} s  peak RSS {after_backward:.0f} MB "
        f"(+{after_backward - before:.0f} MB); concept grad norm {float(grad.norm()):.3g}"
    )
    increase = after_backward - before
    print(
        f"step: {forward_s + backward_s:.1f} s; peak RSS increase {increase:.0f} MB = "
        f"{increase / rows:.0f} MB/row ({rows} rows), {(forward_s + backward_s) / rows:.1f} s/row"
    )


if __name__ == "__main__":
    main(parse_args())
