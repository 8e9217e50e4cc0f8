"""Evaluate one category: score every test image, store maps as they come, compute the metrics.

Per category, `<output_dir>/categories/<category>/` holds
- `maps.npy`   (N, S, S) float16 anomaly maps at the evaluation size S (memory-mapped, filled as we go; its
  disk blocks are allocated when the store is created, so a full disk is an error up front),
- `masks.npy`  (N, S, S) bool ground-truth masks resized with nearest neighbour,
- `progress.json` the settings fingerprint, image paths, labels and image scores of the images done so far
  (written after each batch, after the maps it describes),
- `metrics.json` the seven metrics and the AUPRO variant they were computed with.
A rerun into the same folder reuses a finished category (recomputing only the metrics if the AUPRO variant
changed), continues an unfinished one at the first image not yet stored, so an interrupted run loses at most
the batch in flight, and computes a damaged one again. Other settings are refused (see FINGERPRINT_KEYS).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npy_format
from numpy.lib.format import open_memmap
from tqdm import tqdm

from dataset import Sample
from model.loader import resolve_device
from model.map_ops import resize_map, resize_mask
from utils.config.schema import SETTINGS, fingerprinted
from utils.distributed import SINGLE, Dist, broadcast, gather, on_main, round_robin
from utils.evaluation.metrics import compute_metrics
from utils.files import atomic_write_text, disk_full_as_error, preallocate

# A scorer turns a batch of samples of one category into (anomaly map (H, W) float in [0, 1], image score).
Scorer = Callable[[Sequence[Sample], str], list[tuple[np.ndarray, float]]]

# The resume fingerprint, derived from the declarations in utils/config/schema.py (each setting says there
# whether it changes scores, and if not, why). A stored category is reused only when every fingerprinted
# value matches; otherwise the run stops with StaleOutputError instead of mixing results.
#
# Keys whose value changes the anomaly maps or the image scores:
FINGERPRINT_KEYS: tuple[str, ...] = fingerprinted("value")
# Keys that name something: what they point at is fingerprinted, not the name (a moved folder still resumes).
IDENTITY_KEYS: dict[str, Callable[[Any], Any]] = {}  # filled below the identity functions
# Keys that change neither the maps nor the image scores, and why:
NOT_FINGERPRINTED: dict[str, str] = {
    name: s.info.not_fingerprinted for name, s in SETTINGS.items() if s.info.fingerprint is None
}


def _sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_identity(model_path: str | None) -> dict[str, Any] | None:
    """What identifies a SAM 3 folder: config.json's hash and each weights file's size and modification time.

    The weights are several GB, too many to hash at every start; size and mtime change when the file is
    replaced (a new download, another model copied in). None when the folder does not exist.
    """
    folder = Path(model_path).expanduser() if model_path else None
    if folder is None or not folder.is_dir():
        return None
    config = folder / "config.json"
    weights = sorted(folder.glob("*.safetensors"))
    return {
        "config_sha256": _sha256(config) if config.is_file() else None,
        "weights": {p.name: [p.stat().st_size, int(p.stat().st_mtime)] for p in weights},
    }


def file_identity(path: str | None) -> str | None:
    """The SHA-256 of a checkpoint's bytes (whatever its format), or None without one."""
    return _sha256(Path(path)) if path and Path(path).is_file() else None


def device_kind(device: str | None) -> str:
    """ "cpu" or "cuda" ("auto" resolved): the kind of device, which decides what dtype "auto" means."""
    try:
        return resolve_device(device or "auto").type
    except ValueError:  # "cuda" asked for on a machine without one: still a CUDA run's fingerprint
        return str(device).split(":")[0]


_IDENTITIES: dict[str, Callable[[Any], Any]] = {
    "model_path": model_identity,
    "checkpoint": file_identity,
    "device": device_kind,
}
# A key declared fingerprint="identity" without a function here fails at import, not silently.
IDENTITY_KEYS.update({key: _IDENTITIES[key] for key in fingerprinted("identity")})


def fingerprint_settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The values the fingerprint compares: FINGERPRINT_KEYS as given, IDENTITY_KEYS resolved (JSON-able)."""
    settings = {key: cfg.get(key) for key in FINGERPRINT_KEYS}
    settings.update({key: identity(cfg.get(key)) for key, identity in IDENTITY_KEYS.items()})
    return settings


def config_fingerprint(cfg: Mapping[str, Any]) -> str:
    """A short hash of `fingerprint_settings(cfg)`."""
    return _hash_settings(fingerprint_settings(cfg))


def _hash_settings(settings: Mapping[str, Any]) -> str:
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


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
    scored: int = 0  # images scored by this call (the others came from the store)
    seconds: float = 0.0  # time spent scoring them (metrics excluded)


class StaleOutputError(ValueError):
    """The output folder holds results made with a different config or dataset."""


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
        if progress["fingerprint"] != _hash_settings(settings):
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
            "fingerprint": _hash_settings(settings),
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


def prefetched_batches(samples: Sequence[Sample], start: int, batch_size: int) -> Iterator[list[Sample]]:
    """Batches of samples[start:], decoded one batch ahead in a background thread.

    Decoding (PIL, which releases the GIL) then overlaps with scoring the current batch on the GPU.
    """
    starts = list(range(start, len(samples), batch_size))

    with ThreadPoolExecutor(max_workers=1) as pool:
        upcoming = pool.submit(_batch, samples, starts[0], batch_size) if starts else None
        for k in range(len(starts)):
            batch = upcoming.result()
            if k + 1 < len(starts):
                upcoming = pool.submit(_batch, samples, starts[k + 1], batch_size)
            yield batch


def evaluate_category(
    samples: Sequence[Sample],
    scorer: Scorer,
    category: str,
    cat_dir: Path,
    eval_size: int,
    batch_size: int,
    settings: Mapping[str, Any],
    aupro_variant: str = "official",
    progress: bool = True,
    whole_category: bool = False,
    dist: Dist = SINGLE,
) -> CategoryResult | None:
    """Score every sample of `category` (resuming from `cat_dir`), then compute and store the metrics.

    `samples` must offer `.records` (image paths without decoding) as the dataset loaders do; a plain list of
    Sample also works. `settings` is `fingerprint_settings(cfg)`. Maps are resized to eval_size x eval_size
    with bilinear interpolation, masks with nearest neighbour, so every metric is computed at the evaluation
    resolution. Metrics stored with another `aupro_variant` are recomputed from the stored maps.

    `whole_category` (visual mutual scoring, where each map depends on every image of the category): the
    scorer is called once with all samples; an unfinished category is scored again as a whole and only the
    images not stored yet are appended (resume per category, not per batch).

    `dist` (torchrun, see utils/distributed.py): every rank calls this; the batches still to score are dealt
    round-robin and rank 0, the only one that opens the store, appends them in batch order. Returns the result
    on rank 0 and None on the other ranks. A whole category (mutual) is shared the same way: each rank runs
    ``scorer.parts`` on its batches (text maps and patch features), rank 0 gathers them all and calls
    ``scorer.finish`` (see `utils.pipeline.CategoryScorer`).
    """
    paths = [str(s.image_path) for s in getattr(samples, "records", samples)]
    store = on_main(dist, lambda: CategoryStore(cat_dir, paths, eval_size, settings))  # None off rank 0
    metrics = store.load_metrics(aupro_variant) if store is not None else None
    n_done = broadcast(dist, -1 if metrics is not None else store.n_done if store is not None else 0)
    if n_done < 0:
        return store.result(metrics) if store is not None else None
    scored, start = len(paths) - n_done, time.perf_counter()
    if scored and whole_category and dist.enabled:
        _score_whole_shared(samples, scorer, category, store, batch_size, dist)
    elif scored and whole_category:
        _score_whole(samples, scorer, category, store, batch_size)
    elif scored and dist.enabled:
        _score_shared(samples, scorer, category, store, n_done, (eval_size, eval_size), batch_size, dist)
    elif scored:
        _score_remaining(samples, scorer, category, store, batch_size, progress)
    if store is None:
        return None
    result = store.result({})
    result.scored, result.seconds = scored, time.perf_counter() - start
    result.metrics = compute_metrics(
        result.labels, result.scores, result.masks, result.maps, fpr_limit=0.3, aupro_variant=aupro_variant
    )
    store.save_metrics(result.metrics, aupro_variant)
    return result


def _score_shared(
    samples: Sequence[Sample],
    scorer: Scorer,
    category: str,
    store: CategoryStore | None,
    n_done: int,
    size: tuple[int, int],
    batch_size: int,
    dist: Dist,
) -> None:
    """Score samples[n_done:] over the ranks, batch r * K + k on rank k in round r; rank 0 appends in order.

    Each rank sends its batch as float16 maps and bool masks at the evaluation size (3 bytes per pixel), the
    same values `_append` would store: the store ends up identical to a one-process run's.
    """
    starts = list(range(n_done, len(samples), batch_size))
    for rnd in round_robin(len(starts), dist):
        mine = rnd[dist.rank]

        def work(mine: int | None = mine) -> tuple | None:
            if mine is None:
                return None
            batch = _batch(samples, starts[mine], batch_size)
            return prepare_batch(batch, scorer(batch, category), size)

        for part in gather(dist, work):
            if store is not None and part is not None:
                store.append(*part)


def prepare_batch(
    batch: list[Sample], outputs: list[tuple[np.ndarray, float]], size: tuple[int, int]
) -> tuple[list[np.ndarray], list[np.ndarray], list[int], list[float]]:
    """A batch as the store takes it: (S, S) float16 maps (bilinear), (S, S) bool masks, labels, scores."""
    maps = [
        (resize_map(m, size) if m.shape != size else m.astype(np.float32)).astype(np.float16)
        for m, _ in outputs
    ]
    masks = [resize_mask(s.mask, size) for s in batch]
    return maps, masks, [int(s.label) for s in batch], [float(score) for _, score in outputs]


def _score_whole(
    samples: Sequence[Sample], scorer: Scorer, category: str, store: CategoryStore, batch_size: int
) -> None:
    """Score all samples in one scorer call, then append those not stored yet, batch_size at a time."""
    _append_unstored(store, samples, scorer(samples, category), batch_size)


def _batch(samples: Sequence[Sample], start: int, batch_size: int) -> list[Sample]:
    """samples[start : start + batch_size], decoded."""
    return [samples[i] for i in range(start, min(start + batch_size, len(samples)))]


def _append_unstored(
    store: CategoryStore, samples: Sequence[Sample], outputs: list[tuple[np.ndarray, float]], batch_size: int
) -> None:
    """Append the outputs of the images not stored yet (whole-category scoring), batch_size at a time."""
    if len(outputs) != len(samples):
        raise RuntimeError(f"the scorer returned {len(outputs)} results for {len(samples)} images")
    for start in range(store.n_done, len(samples), batch_size):
        batch = _batch(samples, start, batch_size)
        _append(store, batch, outputs[start : start + len(batch)])


def _score_whole_shared(
    samples: Sequence[Sample],
    scorer: Any,
    category: str,
    store: CategoryStore | None,
    batch_size: int,
    dist: Dist,
) -> None:
    """A whole category over the ranks: rank k runs ``scorer.parts`` on batches k, k + K, ...; rank 0 gathers
    every part (features on the CPU), finishes in image order and appends the images not stored yet."""
    starts = list(range(0, len(samples), batch_size))

    def my_parts() -> list[tuple[int, Any]]:
        mine = [b for rnd in round_robin(len(starts), dist) if (b := rnd[dist.rank]) is not None]
        parts = []
        for b in mine:
            parts.append((b, scorer.parts(_batch(samples, starts[b], batch_size), category, portable=True)))
        return parts

    everyone = gather(dist, my_parts)
    ordered = [part for _, part in sorted((item for items in everyone for item in items), key=lambda x: x[0])]
    outputs = on_main(dist, lambda: scorer.finish(ordered, category))
    if store is not None:
        _append_unstored(store, samples, outputs, batch_size)


def _append(store: CategoryStore, batch: list[Sample], outputs: list[tuple[np.ndarray, float]]) -> None:
    """Store a batch's maps (resized to the store's size), masks (nearest), labels and image scores."""
    store.append(*prepare_batch(batch, outputs, store.shape[1:]))


def _score_remaining(
    samples: Sequence[Sample],
    scorer: Scorer,
    category: str,
    store: CategoryStore,
    batch_size: int,
    progress: bool,
) -> None:
    """Score the samples not stored yet, batch by batch, appending each batch to `store`."""
    bar = tqdm(total=len(samples), initial=store.n_done, desc=category, unit="img", disable=not progress)
    for batch in prefetched_batches(samples, store.n_done, batch_size):
        _append(store, batch, scorer(batch, category))
        bar.update(len(batch))
    bar.close()
