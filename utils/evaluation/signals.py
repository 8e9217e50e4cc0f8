"""The text map alone and the visual map alone, beside the fused one: stored per image, measured per category.

With a visual mode every `AnomalyResult` carries, besides its fused map and score, the text-only and the
visual-only (map, image score) it was fused from (`result.signals`). They cost no SAM 3 pass, so the
evaluation stores them beside the category's store (`<category>/signals/`):

- `<signal>_maps.npy` (N, S, S) float16 maps at the evaluation size, one file per signal ("text", "visual"),
- `scores.json` {signal: [image score per image]},
- `metrics.json` {"aupro_variant": ..., "metrics_resolution": ..., "metrics": {signal: {metric: value}}} once
  the category is done: the seven metrics and the benchmark's own, computed as the fused map's are
  (utils/evaluation/figures.py: same resolution, masks and metric functions).

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
from utils.evaluation.figures import Measure, all_metrics, signal_result
from utils.evaluation.store import CategoryResult
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
    cat_dir: Path, result: CategoryResult, measure: Measure, thresholds: Mapping[str, float] | None = None
) -> dict[str, dict[str, float]] | None:
    """{signal: figures} of a scored category (`figures.all_metrics` of each signal's maps, as the fused
    `result` is measured), or None when it stored no signals (visual none).

    thresholds: SegF1's threshold of each signal (`benchmark_hooks.signal_thresholds`; missing: NaN).
    """
    if not (cat_dir / "signals").is_dir():
        return None
    store = SignalStore(cat_dir, len(result.labels), result.maps.shape[-1])
    return store.metrics(result, measure, thresholds or {})


def stored_signal_maps(cat_dir: Path) -> dict[str, np.ndarray]:
    """{signal: (N, S, S) float16 maps, read-only} of a category folder whose every image has its signals;
    {} when it has none or some image lacks them. Reads without creating anything."""
    folder = cat_dir / "signals"
    try:
        scores = json.loads((folder / "scores.json").read_text())
        maps = {name: np.load(folder / f"{name}_maps.npy", mmap_mode="r") for name in SIGNALS}
    except (OSError, ValueError):
        return {}
    if not isinstance(scores, dict) or any(
        not isinstance(scores.get(name), list) or len(scores[name]) < len(maps[name]) for name in SIGNALS
    ):
        return {}
    return maps


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
        self, result: CategoryResult, measure: Measure, thresholds: Mapping[str, float]
    ) -> dict[str, dict[str, float]] | None:
        """{signal: `all_metrics`} of the whole category (stored, or computed and stored), each signal
        measured as `result` (the fused map) is: same labels, masks and resolution; None when some image has
        no signals (a category finished before they were stored)."""
        key = metrics_key(measure)
        stored = self._load_metrics(key)
        if stored is not None:
            return stored
        images = len(result.labels)
        if not self.complete(images):
            return None
        metrics = {
            name: all_metrics(
                signal_result(result, self.maps[name], self.scores[name][:images]),
                measure,
                thresholds.get(name, math.nan),
            )
            for name in SIGNALS
        }
        doc = {**key, "metrics": _nan_as_null(metrics)}
        atomic_write_text(self.metrics_path, json.dumps(doc, indent=2))
        return metrics

    def _load_metrics(self, key: Mapping[str, str]) -> dict[str, dict[str, float]] | None:
        try:
            doc = json.loads(self.metrics_path.read_text())
            if any(doc[k] != v for k, v in key.items()):
                return None
            return {
                name: {k: math.nan if v is None else float(v) for k, v in doc["metrics"][name].items()}
                for name in SIGNALS
            }
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None


def metrics_key(measure: Measure) -> dict[str, str]:
    """What stored signal metrics must have been computed with to be reused."""
    resolution = "native" if measure.native else "eval_size"
    return {"aupro_variant": measure.aupro_variant, "metrics_resolution": resolution}


def _nan_as_null(metrics: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    return {name: {k: None if math.isnan(v) else v for k, v in m.items()} for name, m in metrics.items()}
