"""Evaluate one category: score every test image, store maps as they come, compute the metrics.

Per category, `<output_dir>/categories/<category>/` holds
- `maps.npy`   (N, S, S) float16 anomaly maps at the evaluation size S (memory-mapped, filled as we go),
- `masks.npy`  (N, S, S) bool ground-truth masks resized with nearest neighbour,
- `progress.json` image paths, labels, image scores and how many images are done (written after each batch),
- `metrics.json` the seven metrics (its presence marks the category finished).
A rerun into the same folder skips finished categories and continues an unfinished one at the first image
not yet stored, so an interrupted run loses at most the batch in flight.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.format import open_memmap
from tqdm import tqdm

from dataset import Sample
from utils.files import atomic_write_text
from utils.image_ops import resize_map, resize_mask
from utils.metrics import compute_metrics

# A scorer turns a batch of samples of one category into (anomaly map (H, W) float in [0, 1], image score).
Scorer = Callable[[Sequence[Sample], str], list[tuple[np.ndarray, float]]]

# Config keys that change maps or scores: a stored category is reused only if these match.
SCORING_KEYS = (
    "dataset",
    "model_path",
    "checkpoint",
    "concept_mode",
    "dtype",
    "prompt_strategy",
    "extra_prompts",
    "prompt_overrides",
    "map_source",
    "prompt_aggregation",
    "object_regularisation",
    "max_object_fraction",
    "outside_weight",
    "object_dilation",
    "object_threshold",
    "texture_categories",
    "eval_size",
    "sigma",
    "image_score",
    "topk",
)


def config_fingerprint(cfg: dict[str, Any]) -> str:
    """A short hash of the scoring-relevant config keys (see SCORING_KEYS) and of the checkpoint's bytes."""
    relevant = {key: cfg.get(key) for key in SCORING_KEYS}
    if cfg.get("checkpoint") and Path(cfg["checkpoint"]).is_file():
        relevant["checkpoint_sha1"] = hashlib.sha1(Path(cfg["checkpoint"]).read_bytes()).hexdigest()
    return hashlib.sha1(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class CategoryResult:
    """What evaluating one category produced.

    maps: (N, S, S) float16, masks: (N, S, S) bool, labels: (N,) int, scores: (N,) float.
    """

    metrics: dict[str, float]
    maps: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    scores: np.ndarray


class StaleOutputError(ValueError):
    """The output folder holds results made with a different config or dataset."""


class CategoryStore:
    """The on-disk state of one category's evaluation (see the module docstring)."""

    def __init__(self, cat_dir: Path, image_paths: list[str], eval_size: int, fingerprint: str) -> None:
        self.cat_dir = cat_dir
        self.progress_path = cat_dir / "progress.json"
        self.metrics_path = cat_dir / "metrics.json"
        cat_dir.mkdir(parents=True, exist_ok=True)
        shape = (len(image_paths), eval_size, eval_size)
        self.progress = self._load_progress(image_paths, fingerprint)
        if self.progress is None:
            self.progress = {
                "fingerprint": fingerprint,
                "image_paths": image_paths,
                "labels": [],
                "scores": [],
            }
            self.maps = open_memmap(cat_dir / "maps.npy", mode="w+", dtype=np.float16, shape=shape)
            self.masks = open_memmap(cat_dir / "masks.npy", mode="w+", dtype=bool, shape=shape)
            self._save_progress()
        else:
            self.maps = open_memmap(cat_dir / "maps.npy", mode="r+")
            self.masks = open_memmap(cat_dir / "masks.npy", mode="r+")

    def _load_progress(self, image_paths: list[str], fingerprint: str) -> dict[str, Any] | None:
        if not self.progress_path.is_file():
            return None
        progress = json.loads(self.progress_path.read_text())
        if progress["fingerprint"] != fingerprint or progress["image_paths"] != image_paths:
            raise StaleOutputError(
                f"{self.cat_dir} holds results from a different config or dataset: "
                "use a new --output_dir or delete that folder"
            )
        return progress

    @property
    def n_done(self) -> int:
        return len(self.progress["scores"])

    @property
    def finished(self) -> bool:
        return self.metrics_path.is_file()

    def append(self, maps: list[np.ndarray], masks: list[np.ndarray], labels: list[int], scores: list[float]):
        """Store the next images' maps (S, S), masks (S, S), labels and scores; durable when this returns."""
        start, stop = self.n_done, self.n_done + len(maps)
        self.maps[start:stop] = np.stack(maps).astype(np.float16)
        self.masks[start:stop] = np.stack(masks)
        self.maps.flush()
        self.masks.flush()
        self.progress["labels"] += [int(v) for v in labels]
        self.progress["scores"] += [float(v) for v in scores]
        self._save_progress()

    def _save_progress(self) -> None:
        atomic_write_text(self.progress_path, json.dumps(self.progress))

    def save_metrics(self, metrics: dict[str, float]) -> None:
        """Write metrics.json (NaN as null), which marks the category finished."""
        data = {key: (None if math.isnan(value) else value) for key, value in metrics.items()}
        atomic_write_text(self.metrics_path, json.dumps(data, indent=2))

    def load_metrics(self) -> dict[str, float]:
        data = json.loads(self.metrics_path.read_text())
        return {key: (math.nan if value is None else value) for key, value in data.items()}

    def result(self, metrics: dict[str, float]) -> CategoryResult:
        return CategoryResult(
            metrics=metrics,
            maps=self.maps,
            masks=self.masks,
            labels=np.asarray(self.progress["labels"], dtype=int),
            scores=np.asarray(self.progress["scores"], dtype=np.float64),
        )


def prefetched_batches(samples: Sequence[Sample], start: int, batch_size: int) -> Iterator[list[Sample]]:
    """Batches of samples[start:], decoded one batch ahead in a background thread.

    Decoding (PIL, which releases the GIL) then overlaps with scoring the current batch on the GPU.
    """
    starts = list(range(start, len(samples), batch_size))

    def load(first: int) -> list[Sample]:
        return [samples[i] for i in range(first, min(first + batch_size, len(samples)))]

    with ThreadPoolExecutor(max_workers=1) as pool:
        upcoming = pool.submit(load, starts[0]) if starts else None
        for k in range(len(starts)):
            batch = upcoming.result()
            if k + 1 < len(starts):
                upcoming = pool.submit(load, starts[k + 1])
            yield batch


def evaluate_category(
    samples: Sequence[Sample],
    scorer: Scorer,
    category: str,
    cat_dir: Path,
    eval_size: int,
    batch_size: int,
    fingerprint: str,
    aupro_variant: str = "official",
    progress: bool = True,
) -> CategoryResult:
    """Score every sample of `category` (resuming from `cat_dir`), then compute and store the metrics.

    `samples` must offer `.records` (image paths without decoding) as the dataset loaders do; a plain list of
    Sample also works. Maps are resized to eval_size x eval_size with bilinear interpolation, masks with
    nearest neighbour, so every metric is computed at the evaluation resolution.
    """
    paths = [str(s.image_path) for s in getattr(samples, "records", samples)]
    store = CategoryStore(cat_dir, paths, eval_size, fingerprint)
    if store.finished:
        return store.result(store.load_metrics())
    size = (eval_size, eval_size)
    bar = tqdm(total=len(paths), initial=store.n_done, desc=category, unit="img", disable=not progress)
    for batch in prefetched_batches(samples, store.n_done, batch_size):
        outputs = scorer(batch, category)
        maps = [resize_map(m, size) if m.shape != size else m.astype(np.float32) for m, _ in outputs]
        masks = [resize_mask(s.mask, size) for s in batch]
        store.append(maps, masks, [s.label for s in batch], [score for _, score in outputs])
        bar.update(len(batch))
    bar.close()
    result = store.result({})
    result.metrics = compute_metrics(
        result.labels, result.scores, result.masks, result.maps, fpr_limit=0.3, aupro_variant=aupro_variant
    )
    store.save_metrics(result.metrics)
    return result
