"""A real `kill -9` in the middle of scripts/test.py, then the same command again: identical results.

Only the run that is killed is a process of its own; the uninterrupted run and the rerun go through the
script's `run(main, parse_args, argv)` in this process (the same computation, batch by batch).
"""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from scripts import test as test_script
from utils.config.cli import run

REPO = Path(__file__).resolve().parents[1]


def _argv(datasets_root, model_dir, out):
    flags = ["--dataset", "mvtec", "--dataset_path", str(datasets_root), "--model_path", str(model_dir)]
    flags += ["--device", "cpu", "--dtype", "fp32", "--eval_size", "32", "--batch_size", "1"]
    return [*flags, "--output_dir", str(out)]


def _run(argv):
    assert run(test_script.main, test_script.parse_args, argv) == 0


def _images_done(progress_path: Path) -> int:
    try:
        return len(json.loads(progress_path.read_text())["scores"])
    except (OSError, ValueError, KeyError):  # not written yet (progress.json is replaced atomically)
        return 0


def _kill_mid_run(argv, out: Path) -> None:
    """Start the run, SIGKILL it once bottle (the first category) has 3 images stored, before it finishes."""
    command = [sys.executable, str(REPO / "scripts" / "test.py"), *argv]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    progress = out / "categories" / "bottle" / "progress.json"
    deadline = time.monotonic() + 300
    while _images_done(progress) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # killed, not finished
    assert not (out / "categories" / "wood" / "metrics.json").exists()
    assert not (out / "results.json").exists() or "wood" not in json.loads((out / "results.json").read_text())


def test_kill_9_then_same_command_gives_the_uninterrupted_results(datasets_root, tiny_sam3_dir, tmp_path):
    fresh, out = tmp_path / "fresh", tmp_path / "out"
    _run(_argv(datasets_root, tiny_sam3_dir, fresh))
    _kill_mid_run(_argv(datasets_root, tiny_sam3_dir, out), out)
    _run(_argv(datasets_root, tiny_sam3_dir, out))  # the same command again

    expected = json.loads((fresh / "results.json").read_text())
    resumed = json.loads((out / "results.json").read_text())
    assert resumed["categories"] == expected["categories"] and resumed["mean"] == expected["mean"]
    for category in ("bottle", "wood"):
        for name in ("maps.npy", "masks.npy"):
            stored = np.load(out / "categories" / category / name)
            assert np.array_equal(stored, np.load(fresh / "categories" / category / name)), (category, name)
