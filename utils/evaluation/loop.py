"""Score one category into its store, then compute its metrics: the evaluation loop of scripts/test.py.

One process is a world of size 1: the same code runs with and without torchrun (utils/distributed.py). The
images still to score are cut into batches of `batch_size`; round r gives rank k batch r * K + k, every rank
scores its batch, and rank 0, the only one that opens the store, appends the gathered batches in batch order,
so the store (and resume with any K) is the one of a single process. Visual mutual scoring, where each map
depends on every image of the category, goes through `score_whole_category` instead.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from dataset import Sample
from model.map_ops import resize_map, resize_mask
from utils.distributed import SINGLE, Dist, broadcast, gather, on_main, round_robin
from utils.evaluation.figures import category_metrics
from utils.evaluation.metrics import METRIC_KEYS
from utils.evaluation.signals import Signals, signal_batch, store_signals
from utils.evaluation.store import UNLABELLED, CategoryResult, CategoryStore
from utils.run_log import bar_progress

# What a scorer returns per image: the anomaly map (H, W) float in [0, 1] and the image score, and with a
# visual mode the text-only and visual-only {signal: (map, score)} (utils/evaluation/signals.py).
Outputs = list[tuple[np.ndarray, float] | tuple[np.ndarray, float, Signals]]


class Scorer(Protocol):
    """What the loop calls to score a category (`utils.pipeline.CategoryScorer` is the real one).

    `__call__` scores one batch; `references` are the few-shot reference image paths of the category, drawn
    once by the runner (empty unless visual is fewshot). `parts`, `share` and `finish` score a whole
    category (visual mutual, `score_whole_category`): `parts` runs the model on some images (what it returns
    travels between processes), `share` scores the images `images` (indices into the category) against the
    parts of every image (calling `progress(done, total)` as it advances by an image's worth), and `finish`
    takes every part and every share, both in image order. Stubs that are only called per batch may leave
    them out.
    """

    def __call__(self, samples: Sequence[Sample], category: str, references: Sequence[str]) -> Outputs: ...

    def parts(self, samples: Sequence[Sample], category: str) -> Any: ...

    def share(
        self,
        parts: Sequence[Any],
        category: str,
        images: Sequence[int],
        progress: Callable[[int, int], None] | None = None,
    ) -> Any: ...

    def finish(self, parts: Sequence[Any], category: str, shares: Sequence[Any]) -> Outputs: ...


@dataclass(frozen=True)
class EvaluationSpec:
    """How test.py scores and measures every split of one category (everything but samples and folder).

    scorer: the `Scorer`; fingerprint: `fingerprint_settings(cfg)`; references: the few-shot reference
    paths (empty unless visual is fewshot); whole_category: visual mutual (`score_whole_category`);
    native: pixel metrics at each image's own size (utils/evaluation/native.py) instead of eval_size.
    """

    scorer: Scorer
    category: str
    eval_size: int
    batch_size: int
    fingerprint: dict[str, Any]
    aupro_variant: str = "official"
    references: Sequence[str] = ()
    whole_category: bool = False
    native: bool = False
    progress: bool = True
    dist: Dist = SINGLE


@dataclass(frozen=True)
class StoreState:
    """What rank 0 found in the store and every rank needs: finished (metrics stored) and images stored."""

    finished: bool
    n_done: int


def evaluate_category(
    samples: Sequence[Sample], spec: EvaluationSpec, cat_dir: Path
) -> CategoryResult | None:
    """Score every sample of `spec.category` (resuming from `cat_dir`), then compute and store the metrics.

    `samples` must offer `.records` (image paths without decoding) as the dataset loaders do; a plain list of
    Sample also works. Maps are resized to eval_size x eval_size with bilinear interpolation, masks with
    nearest neighbour, and stored so; the pixel metrics read them there, or (spec.native) each map resized to
    its image's size. Metrics stored with another `aupro_variant` are recomputed from the stored maps. An
    unlabelled split (MVTec AD 2 test_private) is stored and resumed like the others, with NaN metrics.

    `whole_category` (visual mutual): see `score_whole_category`; an unfinished category is scored again as a
    whole and only the images not stored yet are appended (resume per category, not per batch).

    Every rank calls this (`spec.dist`); returns the result on rank 0 and None on the other ranks.
    """
    dist = spec.dist
    records = getattr(samples, "records", samples)
    paths = [str(s.image_path) for s in records]
    store = on_main(dist, lambda: CategoryStore(cat_dir, paths, spec.eval_size, spec.fingerprint))
    metrics = store.load_metrics(spec.aupro_variant) if store is not None else None
    state = broadcast(
        dist, StoreState(metrics is not None, store.n_done) if store is not None else StoreState(False, 0)
    )
    if state.finished:
        return store.result(metrics) if store is not None else None
    start = time.perf_counter()
    if state.n_done < len(paths) and spec.whole_category:
        score_whole_category(samples, spec.scorer, spec.category, store, spec.batch_size, dist, spec.progress)
    elif state.n_done < len(paths):
        score_batches(samples, spec, store, state.n_done)
    if store is None:
        return None
    result = store.result({})
    result.scored, result.seconds = len(paths) - state.n_done, time.perf_counter() - start
    if (result.labels == UNLABELLED).any():  # MVTec AD 2 test_private: scored, never measured
        result.metrics = dict.fromkeys(METRIC_KEYS, math.nan)
    else:
        result.metrics = category_metrics(result, records, spec.native, spec.aupro_variant)
    store.save_metrics(result.metrics, spec.aupro_variant)
    return result


def score_batches(
    samples: Sequence[Sample], spec: EvaluationSpec, store: CategoryStore | None, n_done: int
) -> None:
    """Score samples[n_done:] batch by batch over the ranks; rank 0 appends every batch in batch order.

    Each rank sends its batch as float16 maps and bool masks at the evaluation size (3 bytes per pixel), the
    values the store takes, so the store is the same for any number of ranks. Each rank decodes its next
    batch in a background thread while it scores the current one; rank 0 shows a progress bar.
    """
    dist, batch_size, category = spec.dist, spec.batch_size, spec.category
    size = (spec.eval_size, spec.eval_size)
    starts = list(range(n_done, len(samples), batch_size))
    my_batches = (rnd[dist.rank] for rnd in round_robin(len(starts), dist))  # a batch index or None per round
    mine = [None if b is None else starts[b] for b in my_batches]
    shown = spec.progress and dist.is_main
    bar = tqdm(total=len(samples), initial=n_done, desc=category, unit="img", disable=not shown)
    for decoding in prefetched_batches(samples, mine, batch_size):

        def work(decoding: Future | None = decoding) -> tuple | None:
            if decoding is None:  # the batches ran out before this rank's turn in the last round
                return None
            batch = decoding.result()
            outputs = spec.scorer(batch, category, spec.references)
            return prepare_batch(batch, outputs, size), signal_batch(outputs, size)

        for part in gather(dist, work):
            if part is not None and store is not None:
                store_signals(
                    store.cat_dir, store.shape, store.n_done, part[1]
                )  # before the store counts them
                store.append(*part[0])
                bar.update(len(part[0][2]))
    bar.close()


def score_whole_category(
    samples: Sequence[Sample],
    scorer: Scorer,
    category: str,
    store: CategoryStore | None,
    batch_size: int,
    dist: Dist,
    progress: bool = True,
) -> None:
    """A whole category (visual mutual), in three gathered steps that one process runs as a world of one.

    1. Rank k runs ``scorer.parts`` on batches k, k + K, ...; every rank gathers every part (image order).
    2. Rank k runs ``scorer.share`` on its contiguous k-th of the images, against every part: the N^2 work
       is split K ways; every rank gathers the shares (rank order = image order).
    3. Rank 0 runs ``scorer.finish`` on all parts and shares and appends the images not stored yet.
    Rank 0 shows a progress bar for its images in steps 1 ("<category>: encode") and 2 ("compare").
    """
    starts = list(range(0, len(samples), batch_size))
    shown = progress and dist.is_main
    batches = [b for rnd in round_robin(len(starts), dist) if (b := rnd[dist.rank]) is not None]
    n_mine = sum(min(batch_size, len(samples) - starts[b]) for b in batches)
    encoded = tqdm(total=n_mine, desc=f"{category}: encode", unit="img", disable=not shown)

    def my_parts() -> list[tuple[int, Any]]:
        parts = []
        for b in batches:
            batch = _batch(samples, starts[b], batch_size)
            parts.append((b, scorer.parts(batch, category)))
            encoded.update(len(batch))
        encoded.close()
        return parts

    everyone = gather(dist, my_parts)
    ordered = [part for _, part in sorted((item for items in everyone for item in items), key=lambda x: x[0])]
    bounds = [len(samples) * k // dist.world_size for k in range(dist.world_size + 1)]
    mine = range(bounds[dist.rank], bounds[dist.rank + 1])
    compared = tqdm(total=len(mine), desc=f"{category}: compare", unit="img", disable=not shown)
    shares = gather(dist, lambda: scorer.share(ordered, category, mine, bar_progress(compared)))
    compared.close()
    outputs = on_main(dist, lambda: scorer.finish(ordered, category, shares))
    if store is None:
        return
    if len(outputs) != len(samples):
        raise RuntimeError(f"the scorer returned {len(outputs)} results for {len(samples)} images")
    for start in range(store.n_done, len(samples), batch_size):
        batch, done = _batch(samples, start, batch_size), outputs[start : start + batch_size]
        store_signals(store.cat_dir, store.shape, start, signal_batch(done, store.shape[1:]))
        store.append(*prepare_batch(batch, done, store.shape[1:]))


def prepare_batch(
    batch: list[Sample], outputs: Outputs, size: tuple[int, int]
) -> tuple[list[np.ndarray], list[np.ndarray], list[int], list[float]]:
    """A batch as the store takes it: (S, S) float16 maps (bilinear), (S, S) bool masks, labels, scores."""
    maps = [
        (resize_map(m, size) if m.shape != size else m.astype(np.float32)).astype(np.float16)
        for m, *_ in outputs
    ]
    masks = [resize_mask(s.mask, size) for s in batch]
    labels = [UNLABELLED if s.label is None else int(s.label) for s in batch]
    return maps, masks, labels, [float(score) for _, score, *_ in outputs]


def prefetched_batches(
    samples: Sequence[Sample], starts: Sequence[int | None], batch_size: int
) -> Iterator[Future | None]:
    """For each start, the decoding of samples[start : start + batch_size] (a Future), or None for None.

    Batch k + 1 is decoded in a background thread while the caller scores batch k: decoding (PIL, which
    releases the GIL) overlaps with scoring on the GPU. The caller takes each batch with `.result()`, where
    a decoding error is raised.
    """
    with ThreadPoolExecutor(max_workers=1) as pool:

        def submit(start: int | None) -> Future | None:
            return None if start is None else pool.submit(_batch, samples, start, batch_size)

        upcoming = submit(starts[0]) if starts else None
        for k in range(len(starts)):
            current, upcoming = upcoming, submit(starts[k + 1]) if k + 1 < len(starts) else None
            yield current


def _batch(samples: Sequence[Sample], start: int, batch_size: int) -> list[Sample]:
    """samples[start : start + batch_size], decoded."""
    return [samples[i] for i in range(start, min(start + batch_size, len(samples)))]
