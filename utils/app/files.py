"""The app's private folder and what it writes there: one download folder per browser session.

Everything the app writes (gradio's copies of the uploads and of the pictures it shows, and the downloads)
lies under one folder made at start (`private_root`: mode 700, files 600 through the process umask), and
the whole folder is removed when the app stops (scripts/app.py: Ctrl-C, SIGTERM, normal exit).

A session id comes from the client (any string, `../victim` included): it is only a key of a server-side
map, never part of a path. A session's folder is a fresh random name under the root, made on first use,
owned by the user who made it (None without a login); `forget` by another user (or by a request without a
login, such as gradio's unauthenticated heartbeat) removes nothing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import cv2
import numpy as np

from utils.evaluation.visualization import save_mask

PRIVATE_FILE = 0o600
UMASK = 0o077  # the app's process: new folders 700, new files 600


def private_root(parent: Path | None = None) -> Path:
    """A new folder `sam3_app_*` (mode 700) under `parent` (default: the system's temporary folder)."""
    root = Path(tempfile.mkdtemp(prefix="sam3_app_", dir=parent))
    root.chmod(0o700)
    return root


class SessionFolders:
    """The download folders of the browser sessions, each made by the server inside one root folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._folders: dict[str, tuple[Path, str | None]] = {}
        self._lock = threading.Lock()  # gradio calls handlers from several threads

    def folder(self, session_id: str | None, user: str | None = None) -> Path:
        """The session's own folder (made at the first call, owned by `user`), inside `root`.

        Raises:
            PermissionError: the session's folder belongs to another login (its files are never given out).
        """
        with self._lock:
            key = str(session_id)
            if key not in self._folders:
                self._folders[key] = (Path(tempfile.mkdtemp(prefix="session_", dir=self.root)), user)
            folder, owner = self._folders[key]
        if owner != user:
            raise PermissionError(f"session {key!r} belongs to another login: reload the page")
        return folder

    def owner(self, session_id: str | None) -> str | None:
        """The user who made the session's folder (None: no login, or no such folder)."""
        entry = self._folders.get(str(session_id))
        return entry[1] if entry else None

    def forget(self, session_id: str | None, user: str | None = None) -> bool:
        """Delete the folder made for `session_id` when `user` owns it; whether it was deleted."""
        with self._lock:
            entry = self._folders.get(str(session_id))
            if entry is None or entry[1] != user:
                return False
            del self._folders[str(session_id)]
        if entry[0].parent == self.root:
            shutil.rmtree(entry[0], ignore_errors=True)
        return True

    def remove(self, session_id: str) -> None:
        """Delete the session's folder whoever owns it (the server dropped the session)."""
        with self._lock:
            entry = self._folders.pop(str(session_id), None)
        if entry is not None and entry[0].parent == self.root:
            shutil.rmtree(entry[0], ignore_errors=True)


def safe_stem(name: str | None) -> str:
    """A file stem from an image's shown name (which the client chose), parent folder kept:
    `crack/000.png` -> `crack_000`, `../../x.png` -> `x`, `a b?.png` -> `a_b_`, "" or ".." -> `image`.
    Only letters, digits, '-', '_' and inner dots: it never leaves the folder it is written in."""
    parts = [p for p in PurePosixPath((name or "").replace("\\", "/")).parts if p not in ("/", ".", "..")]
    parts = parts[-2:]
    if parts:
        parts[-1] = PurePosixPath(parts[-1]).stem
    stem = re.sub(r"[^\w.-]", "_", "_".join(parts)).strip(".")
    return stem[:100] or "image"


def full_size_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The (h, w) bool mask of the scored copy at the uploaded file's (H, W): resized bilinearly as 0/255,
    then >= 128 (smooth edges; 1 s for 81 MP where resizing the float map would take 4 s)."""
    if tuple(mask.shape) == tuple(size):
        return mask
    grey = cv2.resize(mask.astype(np.uint8) * 255, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return grey >= 128


def write_downloads(folder: Path, docs: Sequence[dict[str, Any]], masks: Sequence[np.ndarray]) -> list[Path]:
    """Write results.json ({"images": docs}) and one black/white `<stem>_mask.png` per image into `folder`
    (the session's own; its earlier files are removed first), each mode 600; their paths, JSON first.

    `masks`: (H, W) bool per doc, in order. File names come from `safe_stem` (never leave `folder`).
    """
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        if old.is_file():
            old.unlink()
    paths = [folder / "results.json"]
    paths[0].write_text(json.dumps({"images": list(docs)}, indent=1))
    for doc, mask in zip(docs, masks, strict=True):
        stem, n = safe_stem(doc["image"]), 1
        path = folder / f"{stem}_mask.png"
        while path in paths:
            n += 1
            path = folder / f"{stem}_{n}_mask.png"
        save_mask(path, mask)
        paths.append(path)
    for path in paths:
        os.chmod(path, PRIVATE_FILE)
    return paths
