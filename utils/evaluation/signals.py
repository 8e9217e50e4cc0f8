"""The text map alone and the visual map alone, beside the fused one: stored per image, measured per category.

With a visual mode every `AnomalyResult` carries, besides its fused map and score, the text-only and the
visual-only (map, image score) it was fused from (`result.signals`). They cost no SAM 3 pass, so the
evaluation stores them beside the category's store (`<category>/signals/`):

- `<signal>_maps.npy` (N, S, S) float16 maps at the evaluation size, one file per signal ("text", "visual"),
- `scores.json` {signal: [image score per image]},
- `metrics.json` {"aupro_variant": ..., "metrics": {signal: {metric: value}}} once the category is done.

Rows are written by image index before the category store records those images (utils/evaluation/loop.py),
so a resumed category finds the signals of every stored image; rows past the store's count are the batch
that was in flight and are overwritten. results.json gets "visual_only" and "text_only" sections
(`utils.evaluation.results.signal_sections`): a GPU user sees at once whether fusion helps.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.format import open_memmap

from model.map_ops import resize_map
from utils.evaluation.metrics import compute_metrics
from utils.files import atomic_write_text

SIGNALS: tuple[str, ...] = ("text", "visual")
# One image's signals as a scorer returns them: {signal: (map (H, W) float, image score)}.
Signals = Mapping[str, tuple[np.ndarray, float]]


def signal_batch(outputs: Sequence[tuple], size: tuple[int, int]) -> dict[str, tuple[list, list]] | None:
    """The signals of a batch of scorer outputs ``(map, score[, signals])`` as stored: {signal: ((S, S)
    float16 maps, scores)}; None when the outputs carry none (visual none)."""
    signals = [output[2] if len(output) > 2 else {} for output in outputs]
    if not signals or not all(signals):
        return None
    batch = {}
    for name in SIGNALS:
        maps = [resize_map(s[name][0], size).astype(np.float16) for s in signals]
        batch[name] = (maps, [float(s[name][1]) for s in signals])
    return batch


def store_signals(cat_dir: Path, shape: tuple[int, int, int], start: int, batch: Any) -> None:
    """Write a `signal_batch` (None: nothing) for images start, ... of the category of shape (N, S, S)."""
    if batch is not None:
        SignalStore(cat_dir, shape[0], shape[1]).append(start, batch)


def category_signal_metrics(
    cat_dir: Path, labels: np.ndarray, masks: np.ndarray, aupro_variant: str
) -> dict[str, dict[str, float]] | None:
    """{signal: metrics} of a scored category, or None when it stored no signals (visual none)."""
    if not (cat_dir / "signals").is_dir():
        return None
    return SignalStore(cat_dir, len(labels), masks.shape[-1]).metrics(labels, masks, aupro_variant)


class SignalStore:
    """The per-image text-only and visual-only maps and scores of one category (see the module docstring)."""

    def __init__(self, cat_dir: Path, images: int, eval_size: int) -> None:
        self.folder = cat_dir / "signals"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.shape = (images, eval_size, eval_size)
        self.scores_path = self.folder / "scores.json"
        self.metrics_path = self.folder / "metrics.json"
        self.maps = {name: self._array(self.folder / f"{name}_maps.npy") for name in SIGNALS}
        self.scores = self._read_scores()

    def _array(self, path: Path) -> np.ndarray:
        """The memory-mapped (N, S, S) float16 array at `path`; new (zeros) if missing or of another shape."""
        if path.is_file():
            try:
                array = open_memmap(path, mode="r+")
                if array.shape == self.shape and array.dtype == np.float16:
                    return array
            except ValueError:
                pass
        return open_memmap(path, mode="w+", dtype=np.float16, shape=self.shape)

    def _read_scores(self) -> dict[str, list[float]]:
        try:
            scores = json.loads(self.scores_path.read_text())
            if all(isinstance(scores.get(name), list) for name in SIGNALS):
                return scores
        except (OSError, ValueError, AttributeError):
            pass
        return {name: [] for name in SIGNALS}

    def append(self, start: int, batch: Mapping[str, tuple[list, list]]) -> None:
        """Write the signals of images start, start + 1, ... (before the category store records them)."""
        self.metrics_path.unlink(missing_ok=True)
        for name, (maps, scores) in batch.items():
            self.maps[name][start : start + len(maps)] = np.stack(maps)
            self.maps[name].flush()
            self.scores[name] = self.scores[name][:start] + list(scores)
        atomic_write_text(self.scores_path, json.dumps(self.scores))

    def complete(self, images: int) -> bool:
        """Whether every one of the first `images` images has its signals stored."""
        return all(len(self.scores[name]) >= images for name in SIGNALS)

    def metrics(
        self, labels: np.ndarray, masks: np.ndarray, aupro_variant: str
    ) -> dict[str, dict[str, float]] | None:
        """{signal: the seven metrics} of the whole category (stored, or computed and stored); None when some
        image has no signals (a category finished before they were stored)."""
        stored = self._load_metrics(aupro_variant)
        if stored is not None:
            return stored
        if not self.complete(len(labels)):
            return None
        metrics = {
            name: compute_metrics(
                labels,
                np.asarray(self.scores[name][: len(labels)]),
                masks,
                self.maps[name],
                fpr_limit=0.3,
                aupro_variant=aupro_variant,
            )
            for name in SIGNALS
        }
        doc = {"aupro_variant": aupro_variant, "metrics": _nan_as_null(metrics)}
        atomic_write_text(self.metrics_path, json.dumps(doc, indent=2))
        return metrics

    def _load_metrics(self, aupro_variant: str) -> dict[str, dict[str, float]] | None:
        try:
            doc = json.loads(self.metrics_path.read_text())
            if doc["aupro_variant"] != aupro_variant:
                return None
            return {
                name: {k: math.nan if v is None else float(v) for k, v in doc["metrics"][name].items()}
                for name in SIGNALS
            }
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None


def _nan_as_null(metrics: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    return {name: {k: None if math.isnan(v) else v for k, v in m.items()} for name, m in metrics.items()}
