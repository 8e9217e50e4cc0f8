"""scripts/test.py under torchrun (gloo on CPU, K = 2): results identical to one process, resume across K.

Every rank runs with one thread (OMP_NUM_THREADS=1); the one-process runs go through the script's
`run(main, parse_args, argv)` in this process with one thread too, so both do the same computation batch by
batch and are compared bit for bit.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from scripts import test as test_script
from utils.config.cli import run
from utils.files import OutputDirError, OutputLock

REPO = Path(__file__).resolve().parents[1]
CATEGORIES = ("bottle", "wood")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _argv(datasets_root: Path, model_dir: Path, out: Path, *extra: str) -> list[str]:
    flags = ["--dataset", "mvtec", "--dataset_path", str(datasets_root), "--model_path", str(model_dir)]
    flags += ["--categories", ",".join(CATEGORIES), "--device", "cpu", "--dtype", "fp32"]
    return [*flags, "--eval_size", "32", "--batch_size", "2", "--output_dir", str(out), *extra]


def _command(nproc: int, datasets_root: Path, model_dir: Path, out: Path, *extra: str) -> list[str]:
    script = [str(REPO / "scripts" / "test.py"), *_argv(datasets_root, model_dir, out, *extra)]
    if nproc == 1:
        return [sys.executable, *script]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc)]
    launcher += ["--master_addr", "127.0.0.1", "--master_port", str(_port())]
    return [*launcher, *script]


def _one_process(datasets_root: Path, model_dir: Path, out: Path, *extra: str) -> None:
    """scripts/test.py in this process with one thread, like each torchrun rank."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        argv = _argv(datasets_root, model_dir, out, *extra)
        assert run(test_script.main, test_script.parse_args, argv) == 0
    finally:
        torch.set_num_threads(threads)


def _run(command: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)


def _ok(command: list[str]) -> None:
    proc = _run(command)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _assert_same_results(a: Path, b: Path) -> None:
    doc_a, doc_b = (json.loads((p / "results.json").read_text()) for p in (a, b))
    assert doc_a["categories"] == doc_b["categories"] and doc_a["mean"] == doc_b["mean"]
    for category in CATEGORIES:
        for name in ("maps.npy", "masks.npy"):
            left, right = (np.load(p / "categories" / category / name) for p in (a, b))
            assert np.array_equal(left, right), (category, name)
        progress = [json.loads((p / "categories" / category / "progress.json").read_text()) for p in (a, b)]
        assert (
            progress[0]["scores"] == progress[1]["scores"] and progress[0]["labels"] == progress[1]["labels"]
        )


@pytest.fixture(scope="module")
def one_process(datasets_root, tiny_sam3_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("k1") / "out"
    _one_process(datasets_root, tiny_sam3_dir, out)
    return out


def _images_done(path: Path) -> int:
    try:
        return len(json.loads(path.read_text())["scores"])
    except (OSError, ValueError, KeyError):
        return 0


def _kill_after(command: list[str], out: Path, images: int) -> None:
    """Start `command` in its own process group and SIGKILL the group once bottle has `images` stored."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        command,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    progress = out / "categories" / "bottle" / "progress.json"
    deadline = time.monotonic() + 300
    while _images_done(progress) < images and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    for pid in [proc.pid, *_descendants(proc.pid)]:  # the ranks may run in sessions of their own
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()
    _wait_for_lock_release(out)
    assert not (out / "categories" / "wood" / "metrics.json").exists(), "the run finished before the kill"


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, grandchildren, ...), read from /proc."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def _wait_for_lock_release(out: Path) -> None:
    """The launcher is reaped at once; its ranks exit (and free the folder's lock) a moment later."""
    deadline = time.monotonic() + 60
    while True:
        try:
            with OutputLock(out):
                return
        except OutputDirError:
            assert time.monotonic() < deadline, "the killed ranks still hold the output folder"
            time.sleep(0.05)


def test_killed_two_rank_run_resumes_in_one_process(datasets_root, tiny_sam3_dir, tmp_path, one_process):
    """Two ranks killed mid-category leave a store one process finishes to the one-process results, bit for
    bit (a full two-rank run against one process: the mutual test below)."""
    out = tmp_path / "k2_then_k1"
    _kill_after(_command(2, datasets_root, tiny_sam3_dir, out), out, images=2)
    assert 2 <= _images_done(out / "categories" / "bottle" / "progress.json")
    _one_process(datasets_root, tiny_sam3_dir, out)
    _assert_same_results(one_process, out)
    assert (out / "run.log").read_text().count("run started") == 2  # rank 0 of the killed run + the resume


def test_a_failing_rank_ends_every_rank_with_its_one_line_message(datasets_root, tmp_path):
    proc = _run(_command(2, datasets_root, tmp_path / "no_model", tmp_path / "out"))
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors and all("SAM 3 model folder" in line and "does not exist" in line for line in errors)
    assert "Traceback (most recent call last)" not in "\n".join(errors)


def test_mutual_scoring_is_shared_and_identical(datasets_root, tiny_sam3_dir, tmp_path):
    """Mutual scoring needs every image's features: the ranks gather them and rank 0 gives the K = 1 maps."""
    mutual = ("--visual", "mutual", "--visual_weight", "1")
    single, shared = tmp_path / "k1", tmp_path / "k2"
    _one_process(datasets_root, tiny_sam3_dir, single, *mutual)
    _ok(_command(2, datasets_root, tiny_sam3_dir, shared, *mutual))
    _assert_same_results(single, shared)
