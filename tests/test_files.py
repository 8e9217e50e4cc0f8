"""utils/files.py: atomic writes, the early output-folder check, a full disk, the per-folder lock."""

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from utils import files
from utils.files import (
    NEW_FILE_MODE,
    OutputDirError,
    OutputLock,
    atomic_write,
    atomic_write_text,
    check_output_dir,
    preallocate,
)

REPO = Path(__file__).resolve().parents[1]


def _no_temporaries(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_atomic_write_text_replaces_the_file_with_the_usual_mode(tmp_path):
    target = tmp_path / "results.json"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new ✓")
    assert target.read_text(encoding="utf-8") == "new ✓"
    assert target.stat().st_mode & 0o777 == NEW_FILE_MODE  # not mkstemp's 0600
    assert _no_temporaries(tmp_path)


def test_interrupted_write_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "progress.json"
    target.write_text("complete")

    def half_then_interrupt(handle):
        handle.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, half_then_interrupt)
    assert target.read_text() == "complete" and _no_temporaries(tmp_path)


def test_full_disk_is_a_one_line_error_that_keeps_the_old_file(tmp_path):
    target = tmp_path / "results.csv"
    target.write_text("complete")

    def full(handle):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(
        OutputDirError, match=r"disk full while writing .*results.csv.*rerun the same command"
    ):
        atomic_write(target, full)
    assert target.read_text() == "complete" and _no_temporaries(tmp_path)


def test_other_os_errors_pass_through(tmp_path):
    def denied(handle):
        raise PermissionError(errno.EACCES, "Permission denied")

    with pytest.raises(PermissionError):
        atomic_write(tmp_path / "x", denied)


def test_overlapping_writers_use_different_temporary_names(tmp_path):
    """A second writer starting while the first is mid-write (another run, same folder) must not collide."""
    target = tmp_path / "results.md"
    seen = []

    def outer(handle):
        seen.append(handle.name)
        handle.write(b"outer")
        atomic_write(target, lambda inner: (seen.append(inner.name), inner.write(b"inner")))

    atomic_write(target, outer)
    assert len(set(seen)) == 2 and target.read_text() == "outer" and _no_temporaries(tmp_path)


def test_check_output_dir_creates_nested_folders(tmp_path):
    folder = check_output_dir(tmp_path / "a" / "b")
    assert folder.is_dir() and list(folder.iterdir()) == []  # the write probe is removed


@pytest.mark.parametrize(
    ("below", "message"),
    [
        ("", "is a file"),
        ("sub", "cannot write to output folder"),
    ],
)
def test_check_output_dir_refuses_a_file(below, message, tmp_path):
    """The path itself, or a folder above it, is a file."""
    (tmp_path / "taken").write_text("x")
    with pytest.raises(OutputDirError, match=message):
        check_output_dir(tmp_path / "taken" / below)


def test_check_output_dir_refuses_an_unwritable_folder(tmp_path, monkeypatch):
    """Simulated: the tests may run as root, for whom chmod does not make a folder unwritable."""

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(files.tempfile, "mkstemp", denied)
    with pytest.raises(
        OutputDirError, match=r"cannot write to output folder .*Permission denied.*--output_dir"
    ):
        check_output_dir(tmp_path)


def _sparse_file(path: Path, size: int, header: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(header)
        handle.seek(size - 1)
        handle.write(b"\0")


@pytest.mark.parametrize("fallocate", ["native", "unsupported"])
def test_preallocate_gives_a_sparse_file_real_blocks(fallocate, tmp_path, monkeypatch):
    size, header = 4 << 20, b"HEADER"
    path = tmp_path / "maps.npy"
    _sparse_file(path, size, header)
    if os.stat(path).st_blocks * 512 >= size:
        pytest.fail("this filesystem does not create sparse files: the test cannot tell allocation apart")
    if fallocate == "unsupported":  # e.g. a filesystem without fallocate: zeros are written instead

        def unsupported(fd, offset, length):
            raise OSError(errno.EOPNOTSUPP, "Operation not supported")

        monkeypatch.setattr(files.os, "posix_fallocate", unsupported)
    preallocate(path, start=len(header))
    assert os.stat(path).st_blocks * 512 >= size - len(header)
    data = path.read_bytes()
    assert data[: len(header)] == header and data[len(header) :] == bytes(size - len(header))


def test_preallocate_on_a_full_disk_is_a_one_line_error(tmp_path, monkeypatch):
    path = tmp_path / "maps.npy"
    _sparse_file(path, 1 << 20, b"")

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "posix_fallocate", full)
    with pytest.raises(OutputDirError, match="disk full while writing .*maps.npy"):
        preallocate(path)


def _hold_lock(folder: Path) -> subprocess.Popen:
    """Another process that takes the folder's lock and sleeps; returns once it holds the lock."""
    code = "import sys, time; from utils.files import OutputLock\n"
    code += "with OutputLock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(120)\n"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(folder)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_run_is_refused_naming_the_holder_and_a_killed_holder_frees_the_folder(tmp_path):
    holder = _hold_lock(tmp_path)
    try:
        with pytest.raises(
            OutputDirError, match=rf"{tmp_path} is in use by a running process \(pid {holder.pid} "
        ):
            with OutputLock(tmp_path):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with OutputLock(tmp_path):  # the kernel dropped the dead holder's lock; the stale .lock file is harmless
        assert (tmp_path / ".lock").read_text().startswith(f"{os.getpid()} on ")


def test_lock_is_exclusive_within_one_process_and_released_on_exit(tmp_path):
    with OutputLock(tmp_path):
        with pytest.raises(OutputDirError, match=f"pid {os.getpid()} "):
            OutputLock(tmp_path).__enter__()
    with OutputLock(tmp_path):
        pass


def test_lock_in_a_missing_folder_is_a_one_line_error(tmp_path):
    with pytest.raises(OutputDirError, match="cannot create"):
        OutputLock(tmp_path / "missing").__enter__()
