"""Safe file writing for long runs: atomic replacement, an early output-folder check, one run per folder.

- `atomic_write` / `atomic_write_text`: write to a uniquely named temporary file in the same folder, then
  `os.replace` it over the target, so an interrupted run never leaves half a file and two processes never
  share a temporary name.
- `check_output_dir`: create the folder and prove it is writable *before* a 3 GB model is loaded.
- `OutputLock`: an exclusive lock per output folder (``fcntl.flock`` on ``.lock``); a second run into the same
  folder stops with a one-line error naming the process that holds it. The kernel releases the lock when the
  holder dies, even by ``kill -9``, so a stale lock file never blocks a rerun.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

try:  # POSIX only; on other systems the lock is a no-op
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"


class OutputDirError(OSError):
    """An output folder that cannot be created, written, or is in use by another run (one-line message)."""


def disk_full_message(path: Path | str) -> str:
    """The one-line explanation for ENOSPC while writing under `path`."""
    return f"disk full while writing {path}: free some space, then rerun the same command to resume"


def atomic_write(path: Path | str, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(handle)`` on a fresh temporary file beside `path`, fsync it, then replace `path` with it.

    Raises:
        OutputDirError: the disk is full (ENOSPC); the old `path`, if any, is left intact.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        if err.errno == errno.ENOSPC:
            raise OutputDirError(disk_full_message(path)) from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path | str, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically (see `atomic_write`)."""
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def check_output_dir(path: Path | str) -> Path:
    """Create `path` (and parents) and check that a file can be written there.

    Returns:
        The folder as a Path (``~`` expanded).

    Raises:
        OutputDirError: the path exists as a file, cannot be created, or is not writable.
    """
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise OutputDirError(f"output folder {folder} is a file: pass a folder path with --output_dir")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write_test.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise OutputDirError(
            f"cannot write to output folder {folder} ({reason}): choose another --output_dir"
        ) from None
    return folder


class OutputLock:
    """Hold an exclusive lock on an output folder for the lifetime of a run (a context manager).

    Example::

        with OutputLock(out_dir):
            ...  # only this process writes into out_dir

    Raises (on enter):
        OutputDirError: another live process holds the lock; the message names its PID.
    """

    def __init__(self, folder: Path | str) -> None:
        self.path = Path(folder) / LOCK_NAME
        self._handle: IO[str] | None = None

    def __enter__(self) -> OutputLock:
        if fcntl is None:  # pragma: no cover
            return self
        handle = open(self.path, "a+")  # noqa: SIM115 - kept open while the lock is held
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise OutputDirError(
                f"{self.path.parent} is in use by a running process (pid {holder}): "
                "wait for it to finish or use another --output_dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
