"""The on-disk store of one category's evaluation: maps, masks, image scores and metrics, resumable.

Per category, `<output_dir>/categories/<category>/` holds
- `maps.npy`   (N, S, S) float16 anomaly maps at the evaluation size S (memory-mapped, filled as we go; its
  disk blocks are allocated when the store is created, so a full disk is an error up front),
- `masks.npy`  (N, S, S) bool ground-truth masks resized with nearest neighbour,
- `progress.json` the settings fingerprint, image paths, labels and image scores of the images done so far
  (written after each batch, after the maps it describes),
- `metrics.json` the seven metrics and the AUPRO variant they were computed with.
A rerun into the same folder reuses a finished category (recomputing only the metrics if the AUPRO variant
changed), continues an unfinished one at the first image not yet stored, so an interrupted run loses at most
the batch in flight, and computes a damaged one again. Other settings are refused with StaleOutputError
(see utils/evaluation/fingerprint.py). Who scores the images: utils/evaluation/loop.py.
"""

from __future__ import annotations

import functools
import json
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npy_format
from numpy.lib.format import open_memmap

from utils.config.loading import StaleOutputError
from utils.evaluation.fingerprint import hash_settings
from utils.evaluation.metrics import Ranking, rank_pixels
from utils.files import atomic_write_text, disk_full_as_error, preallocate

# The stored label of an image of a split published without labels (Record.label None).
UNLABELLED = -1


@dataclass
class CategoryResult:
    """What evaluating one category produced.

    maps: (N, S, S) float16, masks: (N, S, S) bool, labels: (N,) int (0, 1 or UNLABELLED), scores: (N,) float.
    """

    metrics: dict[str, float]
    maps: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    scored: int = 0  # images scored by this call (the others came from the store)
    seconds: float = 0.0  # time spent scoring them (metrics excluded)
    view: Any = None  # the PixelView its pixel metrics read (utils/evaluation/native.py `pixel_view`)

    @functools.cached_property
    def pixels(self) -> Ranking:
        """Every pixel of the category pooled and sorted once: shared by metrics, thresholds and curves."""
        return rank_pixels(self.masks, self.maps)


class DamagedStoreWarning(UserWarning):
    """A category's stored maps or progress were unusable and are computed again."""


def npy_problem(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> str | None:
    """Why `path` is not a complete .npy array of `shape` and `dtype`, or None when it is.

    The size check matters: numpy's memmap silently pads a truncated file with zeros.
    """
    try:
        with open(path, "rb") as handle:
            version = npy_format.read_magic(handle)
            read_header = (
                npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
            )
            found_shape, fortran, found_dtype = read_header(handle)
            offset = handle.tell()
    except FileNotFoundError:
        return f"{path.name} is missing"
    except (OSError, ValueError) as err:
        return f"{path.name} is unreadable ({err})"
    if tuple(found_shape) != shape or np.dtype(found_dtype) != dtype or fortran:
        return f"{path.name} holds {found_dtype} {tuple(found_shape)}, expected {np.dtype(dtype)} {shape}"
    expected = offset + math.prod(shape) * np.dtype(dtype).itemsize
    size = path.stat().st_size
    if size != expected:
        return f"{path.name} has {size} bytes, expected {expected} (truncated or overwritten)"
    return None


def progress_problem(progress: dict[str, Any]) -> str | None:
    """What is wrong with the values of a parsed progress.json (right keys, lists of equal length), or None.

    A damaged file of the right length can still parse: a label byte turned into 7, a score into null.
    Resuming from it would score those images wrongly without a word, so the category is computed again.
    """
    labels, scores, paths = progress["labels"], progress["scores"], progress["image_paths"]
    if not isinstance(labels, list) or not all(type(v) is int and v in (0, 1, UNLABELLED) for v in labels):
        return f"progress.json holds a label that is not 0, 1 or {UNLABELLED} (unlabelled)"
    if not isinstance(scores, list) or not all(_finite_number(v) for v in scores):
        return "progress.json holds a score that is not a finite number"
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        return "progress.json holds an image path that is not text"
    if not isinstance(progress["fingerprint"], str) or not isinstance(progress.get("settings", {}), dict):
        return "progress.json holds a damaged settings fingerprint"
    return None


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class CategoryStore:
    """The on-disk state of one category's evaluation (see the module docstring).

    Opening a store checks it against progress.json: settings or images that differ are a StaleOutputError;
    a damaged store (maps.npy or masks.npy missing, truncated or of the wrong shape, progress.json unreadable)
    is discarded with a DamagedStoreWarning and the category is computed again from its first image.
    """

    ARRAYS = {"maps.npy": np.dtype(np.float16), "masks.npy": np.dtype(bool)}
    PROGRESS_KEYS = ("fingerprint", "image_paths", "labels", "scores")

    def __init__(
        self, cat_dir: Path, image_paths: list[str], eval_size: int, settings: Mapping[str, Any]
    ) -> None:
        self.cat_dir = cat_dir
        self.progress_path = cat_dir / "progress.json"
        self.metrics_path = cat_dir / "metrics.json"
        self.shape = (len(image_paths), eval_size, eval_size)
        cat_dir.mkdir(parents=True, exist_ok=True)
        progress = self._load_progress(image_paths, dict(settings))
        if progress is None:
            progress = self._create(image_paths, dict(settings))
        self.progress = progress
        self.maps = open_memmap(cat_dir / "maps.npy", mode="r+")
        self.masks = open_memmap(cat_dir / "masks.npy", mode="r+")

    def _read_progress(self) -> dict[str, Any] | None:
        """progress.json, or None (with a warning) when it is not valid JSON or its lists do not add up."""
        try:
            progress = json.loads(self.progress_path.read_text())
            missing = [key for key in self.PROGRESS_KEYS if key not in progress]
            if missing:
                problem = f"progress.json lacks {', '.join(missing)}"
            elif not len(progress["labels"]) == len(progress["scores"]) <= self.shape[0]:
                problem = "progress.json holds more scores than images, or unequal labels and scores"
            else:
                problem = progress_problem(progress)
                if problem is None:
                    return progress
        except (ValueError, TypeError) as err:
            problem = f"progress.json is unreadable ({type(err).__name__})"
        self._warn_damaged(problem)
        return None

    def _load_progress(self, image_paths: list[str], settings: dict[str, Any]) -> dict[str, Any] | None:
        """The stored progress if it belongs to these settings and images and the store is intact, else None.

        Raises:
            StaleOutputError: the store was made with other fingerprinted settings or for other images.
        """
        if not self.progress_path.is_file():
            return None
        progress = self._read_progress()
        if progress is None:
            return None
        if progress["fingerprint"] != hash_settings(settings):
            stored = progress.get("settings", {})
            changed = [key for key in settings if stored.get(key, settings[key]) != settings[key]]
            raise StaleOutputError(
                f"{self.cat_dir} holds results from a different config ({', '.join(changed) or 'settings'}): "
                "use a new --output_dir or delete that folder"
            )
        if progress["image_paths"] != image_paths:
            raise StaleOutputError(
                f"{self.cat_dir} holds results for other images (dataset or dataset_path changed): "
                "use a new --output_dir or delete that folder"
            )
        for name, dtype in self.ARRAYS.items():
            problem = npy_problem(self.cat_dir / name, self.shape, dtype)
            if problem:
                self._warn_damaged(problem)
                return None
        return progress

    def _warn_damaged(self, problem: str) -> None:
        warnings.warn(
            f"{self.cat_dir}: {problem}; computing this category again", DamagedStoreWarning, stacklevel=4
        )

    def _create(self, image_paths: list[str], settings: dict[str, Any]) -> dict[str, Any]:
        """A fresh store: the arrays with every disk block allocated, then progress.json (written last).

        Raises:
            OutputDirError: the disk is full (found now, not as a SIGBUS halfway through the category).
        """
        self.metrics_path.unlink(missing_ok=True)
        self.progress_path.unlink(missing_ok=True)
        for name, dtype in self.ARRAYS.items():
            path = self.cat_dir / name
            with disk_full_as_error(path):
                array = open_memmap(path, mode="w+", dtype=dtype, shape=self.shape)
                offset = array.offset
                del array
            preallocate(path, start=offset)
        progress = {
            "fingerprint": hash_settings(settings),
            "settings": settings,
            "image_paths": image_paths,
            "labels": [],
            "scores": [],
        }
        atomic_write_text(self.progress_path, json.dumps(progress))
        return progress

    @property
    def n_done(self) -> int:
        return len(self.progress["scores"])

    def append(self, maps: list[np.ndarray], masks: list[np.ndarray], labels: list[int], scores: list[float]):
        """Store the next images' maps (S, S), masks (S, S), labels and scores; durable when this returns."""
        start, stop = self.n_done, self.n_done + len(maps)
        self.maps[start:stop] = np.stack(maps).astype(np.float16)
        self.masks[start:stop] = np.stack(masks)
        self.maps.flush()
        self.masks.flush()
        self.progress["labels"] += [int(v) for v in labels]
        self.progress["scores"] += [float(v) for v in scores]
        atomic_write_text(self.progress_path, json.dumps(self.progress))

    def save_metrics(self, metrics: Mapping[str, float], aupro_variant: str) -> None:
        """Write metrics.json (NaN as null) with the AUPRO variant they were computed with."""
        values = {key: (None if math.isnan(value) else value) for key, value in metrics.items()}
        doc = {"aupro_variant": aupro_variant, "metrics": values}
        atomic_write_text(self.metrics_path, json.dumps(doc, indent=2))

    def load_metrics(self, aupro_variant: str) -> dict[str, float] | None:
        """The stored metrics if every image is stored and they were computed with `aupro_variant`, else None.

        None means "compute them from the stored maps": the category is not finished, metrics.json is
        unreadable, or it holds another AUPRO variant (or none: written before the variant was recorded).
        """
        if self.n_done < self.shape[0] or not self.metrics_path.is_file():
            return None
        try:
            doc = json.loads(self.metrics_path.read_text())
            if doc["aupro_variant"] != aupro_variant:
                return None
            return {
                key: (math.nan if value is None else float(value)) for key, value in doc["metrics"].items()
            }
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    def result(self, metrics: dict[str, float]) -> CategoryResult:
        return CategoryResult(
            metrics=metrics,
            maps=self.maps,
            masks=self.masks,
            labels=np.asarray(self.progress["labels"], dtype=int),
            scores=np.asarray(self.progress["scores"], dtype=np.float64),
        )
