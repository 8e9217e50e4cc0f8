"""Safe file writing for long runs: atomic replacement, an early output-folder check, one run per folder.

- `atomic_write` / `atomic_write_text`: write to a uniquely named temporary file in the same folder, then
  `os.replace` it over the target, so an interrupted run never leaves half a file and two processes never
  share a temporary name.
- `preallocate`: give a memory-mapped file real disk blocks, so a full disk is an error, not a SIGBUS.
- `check_output_dir`: create the folder and prove it is writable *before* a 3 GB model is loaded.
- `OutputLock`: an exclusive lock per output folder (``fcntl.flock`` on ``.lock``); a second run into the same
  folder stops with a one-line error naming the process that holds it. The kernel releases the lock when the
  holder dies, even by ``kill -9``, so a stale lock file never blocks a rerun.
"""

from __future__ import annotations

import errno
import os
import socket
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

try:  # POSIX only; on other systems the lock is a no-op
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"

# mkstemp creates files with mode 0600; a result file gets the mode an ordinary `open(path, "w")` would give.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
NEW_FILE_MODE = 0o666 & ~_UMASK


class OutputDirError(OSError):
    """An output folder that cannot be created, written, or is in use by another run (one-line message)."""


NAME_MAX_BYTES = 255  # the longest file name most file systems take (ext4, XFS, APFS, NTFS)


def fit_name(text: str, max_bytes: int) -> str:
    """`text`, cut (at a character boundary) to at most `max_bytes` bytes of its file-system encoding, so
    that a file name made from an input's name stays within NAME_MAX_BYTES."""
    encoded = os.fsencode(text)
    return text if len(encoded) <= max_bytes else encoded[:max_bytes].decode("utf-8", "ignore")


def disk_full_message(path: Path | str) -> str:
    """The one-line explanation for ENOSPC while writing under `path`."""
    return f"disk full while writing {path}: free some space, then rerun the same command to resume"


@contextmanager
def disk_full_as_error(path: Path | str) -> Iterator[None]:
    """Turn an ENOSPC `OSError` raised inside the block into `OutputDirError(disk_full_message(path))`."""
    try:
        yield
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise OutputDirError(disk_full_message(path)) from None
        raise


def atomic_write(path: Path | str, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(handle)`` on a fresh temporary file beside `path`, fsync it, then replace `path` with it.

    The temporary name is unique (``.<name>.<random>.tmp``), so concurrent writers never share it; the new
    file gets the usual mode (0666 minus the umask), not mkstemp's 0600.

    Raises:
        OutputDirError: the disk is full (ENOSPC); the old `path`, if any, is left intact.
    """
    path = Path(path)
    with disk_full_as_error(path):
        # the name's head only: a target name near the file system's 255-byte limit still gets a temporary
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:64]}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                if hasattr(os, "fchmod"):  # POSIX (Windows before Python 3.13 has none)
                    os.fchmod(handle.fileno(), NEW_FILE_MODE)
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def atomic_write_text(path: Path | str, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically (see `atomic_write`)."""
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def preallocate(path: Path | str, start: int = 0) -> None:
    """Give every byte of `path` from `start` to its end real disk blocks now.

    A memory-mapped file is created sparse; writing into a hole on a full disk kills the process with SIGBUS
    instead of raising. Allocating up front (``posix_fallocate``, or writing zeros where the filesystem or
    platform has none) turns a full disk into an error here, before any result is computed. Bytes before
    `start` (e.g. a .npy header) are left as they are; the allocated range reads as zeros.

    Raises:
        OutputDirError: the disk is full (ENOSPC).
    """
    with disk_full_as_error(path), open(path, "r+b") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size <= start:
            return
        try:
            os.posix_fallocate(handle.fileno(), start, size - start)
            return
        except AttributeError:  # no posix_fallocate on this platform (macOS, Windows)
            pass
        except OSError as err:
            if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
        _write_zeros(handle, start, size)


def _write_zeros(handle: IO[bytes], start: int, stop: int, block: int = 1 << 20) -> None:
    """Overwrite bytes [start, stop) of `handle` with zeros and fsync, so the blocks exist on disk."""
    handle.seek(start)
    zeros = bytes(block)
    for offset in range(start, stop, block):
        handle.write(zeros[: min(block, stop - offset)])
    handle.flush()
    os.fsync(handle.fileno())


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


def check_outside(out: Path | str, folder: Path | str, what: str) -> None:
    """Refuse an output folder equal to or inside `folder`, where `what` is read from (a category's images):
    the next run would read the outputs written there as `what`.

    Raises:
        OutputDirError: naming both folders.
    """
    out, folder = Path(os.path.realpath(out)), Path(os.path.realpath(folder))
    if out == folder or folder in out.parents:
        raise OutputDirError(
            f"output folder {out} is inside {folder}, which holds {what}: the next run would read the "
            "outputs as inputs; choose another --output_dir"
        )


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
        try:
            handle = open(self.path, "a+")  # noqa: SIM115 - kept open while the lock is held
        except OSError as err:
            raise OutputDirError(
                f"cannot create {self.path} ({err.strerror}): check --output_dir with check_output_dir first"
            ) from None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown pid"
            handle.close()
            raise OutputDirError(
                f"{self.path.parent} is in use by a running process (pid {holder}): "
                "wait for it to finish or use another --output_dir"
            ) from None
        except OSError as err:  # e.g. ENOLCK: a network filesystem without locks
            handle.close()
            warnings.warn(
                f"cannot lock {self.path} ({err.strerror}): a second run into this folder is not detected",
                stacklevel=2,
            )
            return self
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()} on {socket.gethostname()}")
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
