"""benchmarks/bench_full_size.py (gpu_check.sh's first step) runs start to finish: tiny architecture, CPU."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from benchmarks import bench_full_size

REPO = Path(__file__).resolve().parents[1]


def test_bench_full_size_prints_seconds_per_image_and_per_row(
    tiny_sam3_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--meta_dir of a tiny folder builds the tiny architecture; a 1024 px image is resized to its 224."""
    argv = ["--meta_dir", str(tiny_sam3_dir), "--n_images", "1", "--n_prompts", "1", "--chunk_size", "1"]
    bench_full_size.main(bench_full_size.parse_args([*argv, "--warmup", "1"]))
    out = capsys.readouterr().out
    number = r"[0-9]+\.[0-9]+"
    for line in (
        rf"warmup: {number} s \(1 x \(1 image, 1 prompt\)\)",
        rf"encode_images: {number} s \(1 images, {number} s/image\)",
        rf"predict: {number} s \(1 rows \(1 images x 1 prompts, text encoder included\), {number} s/row\)",
        r"first chunk: mask_logits \(1, 20, 64, 64\)  semantic_logits \(1, 64, 64\)",
        rf"detect: {number} s \(1 images x \(1 prompts \+ 'bottle'\) = 2 rows, {number} s/image",
    ):
        assert re.search(f"^{line}", out, re.MULTILINE), (line, out)
    assert "(1, 3, 224, 224)" in out and "peak GPU" not in out  # the CPU has no GPU memory to report


def test_gpu_check_script_is_valid_bash() -> None:
    """gpu_check.sh needs a GPU to run; here bash only parses it."""
    subprocess.run(["bash", "-n", str(REPO / "benchmarks" / "gpu_check.sh")], check=True)
