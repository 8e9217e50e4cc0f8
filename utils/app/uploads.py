"""Uploaded files -> named pictures: decoded once, scored from a copy near SAM 3's input size, shown from a
copy whose long side is at most DISPLAY_SIDE.

A camera image (9000 x 9000) would otherwise cost a full-size decode, a full-size anomaly map (324 MB) and
full-size pictures sent to a 250-px panel at every Run, image switch and slider step. SAM 3 sees a square of
`engine.image_size` pixels (1008) whatever the input, so the scored copy keeps every side at least that long
(the engine's own resize then starts from nearly the same pixels) and the long side at least DISPLAY_SIDE.
Only the downloads go back to the file's size (utils/app/files.py).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from dataset import DatasetError
from dataset.images import read_image
from dataset.records import IMAGE_EXTENSIONS

DISPLAY_SIDE = 1024  # px: the long side of every picture sent to the browser
# What the app decodes: the datasets' image files, and the web formats a browser user has (first frame).
UPLOAD_EXTENSIONS: tuple[str, ...] = (*IMAGE_EXTENSIONS, ".gif", ".webp")
PICTURES_KEPT = 32  # decoded uploads a session keeps (a rerun or a switch decodes nothing)


@dataclass
class Picture:
    """One uploaded image: `name` as shown (parent folder kept: "crack/000.png"), `size` (H, W) of the file,
    `scored` (h, w, 3) uint8 the copy SAM 3 scores, `display` (h', w', 3) uint8, long side <= DISPLAY_SIDE."""

    name: str
    size: tuple[int, int]
    scored: np.ndarray
    display: np.ndarray

    @property
    def nbytes(self) -> int:
        return int(self.scored.nbytes + self.display.nbytes)


def shrunk(image: np.ndarray, scale: float) -> np.ndarray:
    """`image` (H, W, C) resized by `scale` <= 1 with area averaging (itself when scale is 1)."""
    if scale >= 1.0:
        return image
    h, w = image.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    step = int(1.0 / scale)  # first an integer factor (OpenCV's fast path: 3x faster on 81 MP), then the rest
    if step >= 2:
        image = cv2.resize(
            image, (max(size[0], w // step), max(size[1], h // step)), interpolation=cv2.INTER_AREA
        )
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def make_picture(name: str, image: np.ndarray, engine_side: int) -> Picture:
    """The scored and display copies of a decoded (H, W, 3) uint8 image.

    Scored copy: scale min(1, max(engine_side / min(H, W), DISPLAY_SIDE / max(H, W))): no side drops below
    SAM 3's input side, the long side not below DISPLAY_SIDE. Display copy: long side <= DISPLAY_SIDE.
    """
    h, w = image.shape[:2]
    scored = shrunk(image, min(1.0, max(engine_side / min(h, w), DISPLAY_SIDE / max(h, w))))
    display = shrunk(scored, min(1.0, DISPLAY_SIDE / max(scored.shape[:2])))
    return Picture(name, (h, w), np.ascontiguousarray(scored), np.ascontiguousarray(display))


def read_upload(path: str | Path | None, name: str | None = None) -> np.ndarray:
    """An uploaded file as (H, W, 3) uint8 RGB; `name`: what the user called it (default: the file's name).

    Raises:
        DatasetError: no file, a file without an image extension (what to upload instead), or an image file
            that cannot be decoded; the message names the file by `name` once (never gradio's temp path).
    """
    if not path:
        raise DatasetError("no image: upload an image file first")
    path = Path(path)
    name = name or path.name
    if path.suffix.lower() not in UPLOAD_EXTENSIONS:
        kind = f"a {path.suffix} file" if path.suffix else "a file without extension"
        raise DatasetError(f"{name} is {kind}, not an image: upload {', '.join(UPLOAD_EXTENSIONS)} files")
    try:
        return read_image(path)
    except DatasetError as err:
        if "cannot decode" not in str(err):  # read, but its samples are unusable: read_image says why
            raise DatasetError(str(err).replace(str(path), name)) from None
        raise DatasetError(
            f"{name} cannot be decoded as a {path.suffix.lstrip('.').upper()} image (damaged, truncated, or "
            "another kind of file renamed): open it in an image viewer and save it again as PNG or JPEG"
        ) from None


def as_list(upload: Sequence[str] | str | None) -> list[str]:
    """A gradio File value (None, one path or a list of paths) as a list of paths."""
    if upload is None:
        return []
    return [str(upload)] if isinstance(upload, (str, Path)) else [str(p) for p in upload]


def upload_paths(
    files: Sequence[str] | str | None, folder: Sequence[str] | str | None, folder_names: Sequence[str] = ()
) -> list[tuple[Path, str]]:
    """(file, name as shown) of each image of one Run: every uploaded file (so an unreadable one gets its
    message), then the folder's files with an image extension (other files of a dropped folder are left
    out), each once. `folder_names`: the folder's files as the browser names them ("parts/crack/000.png").

    Raises:
        DatasetError: nothing to score (no upload, or a folder without images).
    """
    chosen = [Path(p) for p in as_list(files)]
    dropped = [Path(p) for p in as_list(folder)]
    names = [p.name for p in chosen] + with_parent(dropped, folder_names)
    pairs = list(zip(chosen + dropped, names, strict=True))
    pairs = [pairs[i] for i in range(len(chosen))] + sorted(
        (p for p in pairs[len(chosen) :] if p[0].suffix.lower() in UPLOAD_EXTENSIONS), key=lambda p: p[1]
    )
    pairs = list(dict(pairs).items())  # a file once
    if not pairs:
        extra = " (the folder has no image files)" if dropped else ""
        raise DatasetError(f"no image: upload one or more image files or a folder first{extra}")
    return unique_names(pairs)


def with_parent(paths: Sequence[Path], browser_names: Sequence[str]) -> list[str]:
    """Each file's name with its parent folder ("crack/000.png"), from the browser's relative names.

    The server keeps only file names; the browser's names come in the upload's order. A file takes the
    first unused browser name with its file name; one without a match keeps its own name. The names are
    text for the page, never a path on this machine.
    """
    unused = [PurePosixPath(n.replace("\\", "/")) for n in browser_names]
    names = []
    for path in paths:
        match = next((n for n in unused if n.name == path.name), None)
        if match is None:
            names.append(path.name)
            continue
        unused.remove(match)
        names.append("/".join(match.parts[-2:]))
    return names


def unique_names(pairs: Sequence[tuple[Path, str]]) -> list[tuple[Path, str]]:
    """The pairs with repeated names made unique: " (2)", " (3)" ... after the second, third, ..."""
    seen: list[str] = []
    out = []
    for path, name in pairs:
        shown, n = name, 1
        while shown in seen:
            n += 1
            shown = f"{name} ({n})"
        seen.append(shown)
        out.append((path, shown))
    return out


class PictureCache:
    """Decoded uploads by (file, size, modification time): a rerun or a new category decodes nothing."""

    def __init__(self, size: int = PICTURES_KEPT) -> None:
        self.size = size
        self._pictures: OrderedDict[tuple[str, int, int, str, int], Picture] = OrderedDict()

    @property
    def nbytes(self) -> int:  # a snapshot: another session's Run may add a picture meanwhile
        return sum(p.nbytes for p in tuple(self._pictures.values()))

    def read(
        self,
        pairs: Sequence[tuple[Path, str]],
        engine_side: int,
        progress: Callable[[int, int], None] | None = None,
    ) -> tuple[list[Picture], list[str]]:
        """The readable pictures of (file, name) pairs in order, and one message per unreadable file;
        `progress(done, total)` before each file.

        Raises:
            DatasetError: no file is a readable image (the messages of all of them).
        """
        pictures, errors = [], []
        for done, (path, name) in enumerate(pairs):
            if progress is not None:
                progress(done, len(pairs))
            try:
                pictures.append(self._picture(path, name, engine_side))
            except DatasetError as err:
                errors.append(str(err))
        if not pictures:
            raise DatasetError("; ".join(errors))
        return pictures, errors

    def _picture(self, path: Path, name: str, engine_side: int) -> Picture:
        stat = os.stat(path) if path.is_file() else None
        key = (str(path), stat.st_size if stat else -1, stat.st_mtime_ns if stat else -1, name, engine_side)
        if key not in self._pictures:
            self._pictures[key] = make_picture(name, read_upload(path, name), engine_side)
        self._pictures.move_to_end(key)
        while len(self._pictures) > self.size:
            self._pictures.popitem(last=False)
        return self._pictures[key]
