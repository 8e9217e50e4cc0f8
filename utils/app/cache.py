"""SAM 3 results per (image, prompts, object noun, references), a browser session's state and the bounded
store of sessions.

`EncodeCache.results` keeps the detector's raw result (the anomaly map and every detection down to
BOX_FLOOR, each with its instance mask), so the sliders and the image selector never run SAM 3. Few-shot:
reference good images are encoded once per session (`load_references`, a `ReferenceBank` keyed by their
pixels); `session_detector` then scores with a per-session view of the shared detector (same engine,
visual="fewshot"), so sessions never see each other's references. `SessionStore` keeps at most MAX_SESSIONS
sessions and MAX_SESSION_BYTES of their pictures and results, dropping the least recently used first.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dataset import DatasetError
from model.detector import AnomalyDetector, AnomalyResult
from model.engine import DEFAULT_BATCH_SIZE
from model.visual import ReferenceBank
from utils.app.uploads import Picture, PictureCache, read_upload

BOX_FLOOR = 0.05  # the detector keeps detections down to this score; the box slider starts here
CACHE_SIZE = 16  # images whose raw results a session keeps
MAX_SESSIONS = 8  # browser sessions kept in memory; the least recently used goes first
MAX_SESSION_BYTES = 2 << 30  # pictures and results of all sessions together (2 GiB)


@dataclass
class References:
    """A session's few-shot reference images: `key` (their pixels' hash), display names and encoded bank."""

    key: str
    names: list[str]
    bank: ReferenceBank


@dataclass
class ImageRun:
    """One image of the last Run: its picture, the raw result (maps at picture.scored's size), the prompts."""

    picture: Picture
    result: AnomalyResult
    prompts: list[str]

    @property
    def name(self) -> str:
        return self.picture.name


def image_key(image: np.ndarray) -> str:
    """SHA-1 of an (H, W, 3) uint8 image's shape and pixels: the same picture uploaded twice is cached."""
    digest = hashlib.sha1(str(image.shape).encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()


def result_bytes(result: AnomalyResult) -> int:
    """Memory held by a result's arrays: the anomaly map and the instance masks."""
    masks = sum(d.mask.nbytes for d in result.detections if d.mask is not None)
    return int(result.anomaly_map.nbytes + masks)


def lower_box_threshold_to_floor(detector: AnomalyDetector) -> AnomalyDetector:
    """`detector` keeping detections down to BOX_FLOOR (its box_threshold, when higher, is lowered), so the
    box slider can go that low from the cached results."""
    return detector.with_settings(box_threshold=min(BOX_FLOOR, detector.settings.box_threshold))


def fewshot_view(detector: AnomalyDetector) -> AnomalyDetector:
    """A detector on the same engine and hook with visual="fewshot" (no references yet)."""
    return detector.with_settings(visual="fewshot")


def session_detector(detector: AnomalyDetector, references: References | None) -> AnomalyDetector:
    """The detector that scores a session's images: the shared one without references, else a few-shot view
    on the same engine carrying the session's bank (one session's references never reach another's).

    Raises:
        DatasetError: the app scores few-shot and the session has no references yet.
    """
    if references is None:
        if detector.settings.visual == "fewshot":
            raise DatasetError(
                "this app scores few-shot: upload a few reference good images of the part under "
                "'reference good images', then Run"
            )
        return detector
    view = fewshot_view(detector)
    view.references = references.bank
    return view


def load_references(
    detector: AnomalyDetector, paths: Sequence[str] | None, current: References | None
) -> References | None:
    """The session's references after the upload `paths` (None: no references, zero-shot scoring).

    The same pictures as `current` are not encoded again; others are encoded once with SAM 3's vision
    encoder into a few-shot `ReferenceBank`.

    Raises:
        DatasetError: a reference file is not a readable image (the message names it).
    """
    if not paths:
        return None
    images = [read_upload(p) for p in paths]
    digest = hashlib.sha1()
    for image in images:
        digest.update(image_key(image).encode())
    key = digest.hexdigest()
    if current is not None and current.key == key:
        return current
    view = fewshot_view(detector)
    view.set_references(images)
    if view.references is None:
        raise DatasetError("the reference images gave no reference features: upload other good images")
    names = [p.rsplit("/", 1)[-1] for p in map(str, paths)]
    return References(key, names, view.references)


class EncodeCache:
    """Raw detector results per (image, prompts, object noun, references), least recently used dropped."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._results: OrderedDict[tuple[Any, ...], AnomalyResult] = OrderedDict()

    def __len__(self) -> int:
        return len(self._results)

    @property
    def nbytes(self) -> int:  # a snapshot: another session's Run may add a result meanwhile
        return sum(result_bytes(r) for r in tuple(self._results.values()))

    def results(
        self,
        detector: AnomalyDetector,
        images: Sequence[np.ndarray],
        prompts: Sequence[str],
        object_noun: str | None,
        references: References | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: Callable[[int, int], None] | None = None,
        map_side: int | None = None,
    ) -> list[AnomalyResult]:
        """The detector's results for N (H, W, 3) uint8 images, in order; SAM 3 runs only for images not
        cached, `batch_size` per encoder pass (an image repeated in `images` is scored once).

        `map_side`: maps are scored at map_side x map_side (test.py's eval_size) and resized to each image;
        None: scored at each image's size.

        `references`: the session's few-shot references (part of the key: new references, new pass).
        `progress(done, total)` is called before the first pass and after each, for the images SAM 3 runs on.
        """
        ref_key = references.key if references is not None else None
        keys = [(image_key(im), tuple(prompts), object_noun, ref_key) for im in images]
        todo = {k: im for k, im in zip(keys, images, strict=True) if k not in self._results}
        found = {k: self._results[k] for k in keys if k in self._results}
        if todo:
            scoring = session_detector(detector, references)
            pending = list(todo)
            for start in range(0, len(pending), batch_size):
                if progress is not None:
                    progress(start, len(pending))
                part = pending[start : start + batch_size]
                arrays = [todo[k] for k in part]
                size = (map_side, map_side) if map_side is not None else None
                out = scoring.detect_arrays(arrays, prompts, object_noun, size, instance_masks=True)
                for result, image in zip(out, arrays, strict=True):
                    result.resize_maps(image.shape[:2])
                found.update(zip(part, out, strict=True))
            if progress is not None:
                progress(len(pending), len(pending))
        for key in keys:
            self._results[key] = found[key]
            self._results.move_to_end(key)
        while len(self._results) > self.size:
            self._results.popitem(last=False)
        return [found[k] for k in keys]


@dataclass
class Session:
    """What one browser session keeps: decoded uploads, the encode cache, its references, the last Run's
    images, and the verdict's threshold with where it comes from."""

    cache: EncodeCache = field(default_factory=EncodeCache)
    pictures: PictureCache = field(default_factory=PictureCache)
    references: References | None = None
    runs: list[ImageRun] = field(default_factory=list)
    image_threshold: float | None = None  # the verdict's threshold for the last Run's category
    threshold_source: str = ""  # where image_threshold came from, or why there is none
    file_mask_threshold: tuple[float, str] | None = None  # (value, where from) when a thresholds file set it
    owner: str | None = None  # the logged-in user who made the session (None without a login)
    run_count: int = 0  # Runs pressed in this session (the status names the Run it reports on)
    # held while the session's downloads are rewritten (two overviews of one tab must not interleave)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def nbytes(self) -> int:
        return self.cache.nbytes + self.pictures.nbytes

    def run(self, name: str | None) -> ImageRun | None:
        """The last Run's image called `name` (the first one when `name` is not among them)."""
        for run in self.runs:
            if run.name == name:
                return run
        return self.runs[0] if self.runs else None


class SessionStore:
    """The sessions by id (the browser's session hash: a key, never a path), least recently used first out.

    At most `max_sessions` sessions, and their pictures and results at most `max_bytes` together (the
    session in use is never dropped). `on_drop(session_id)` runs for each dropped session (its downloads).
    """

    def __init__(
        self,
        max_sessions: int = MAX_SESSIONS,
        max_bytes: int = MAX_SESSION_BYTES,
        on_drop: Callable[[str], None] | None = None,
    ) -> None:
        self.max_sessions, self.max_bytes, self.on_drop = max_sessions, max_bytes, on_drop
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()  # gradio calls handlers from several threads

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session_id: str) -> bool:
        return session_id in self._sessions

    def get(self, session_id: str, user: str | None = None) -> Session:
        """The session `session_id` (a new one owned by `user` at first use), now the most recently used.

        A request of another login with that id (a session id is chosen by the client) gets a fresh session
        that is never stored: it neither sees nor changes the owner's images and downloads.
        """
        with self._lock:
            session = self._sessions.setdefault(session_id, Session(owner=user))
            if session.owner != user:
                return Session(owner=user)
            self._sessions.move_to_end(session_id)
        return session

    def owner(self, session_id: str) -> str | None:
        """The user who made the session (None: no login, or no such session)."""
        session = self._sessions.get(session_id)
        return session.owner if session is not None else None

    def trim(self) -> list[str]:
        """Drop the least recently used sessions over the limits; their ids, oldest first."""
        dropped = []
        with self._lock:
            while len(self._sessions) > 1 and (
                len(self._sessions) > self.max_sessions
                or sum(s.nbytes for s in self._sessions.values()) > self.max_bytes
            ):
                dropped.append(self._sessions.popitem(last=False)[0])
        for session_id in dropped:
            if self.on_drop is not None:
                self.on_drop(session_id)
        return dropped

    def drop(self, session_id: str) -> None:
        """Forget `session_id` (nothing happens for an id never served)."""
        with self._lock:
            self._sessions.pop(session_id, None)
