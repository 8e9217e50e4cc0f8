"""What results.json records about the run itself: library versions, git commit, device, wall time, speed."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers

from model.loader import resolve_device, resolve_dtype

REPO_ROOT = Path(__file__).resolve().parents[1]


def git_commit(root: Path = REPO_ROOT) -> str | None:
    """`git rev-parse HEAD` of the checkout at `root` (not of a folder above it); None when unknown.

    None when `root` is not a git checkout, git is not installed, or it does not answer within 5 s.
    """
    env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(Path(root).resolve().parent)}
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, env=env, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = proc.stdout.strip()
    return commit if proc.returncode == 0 and commit else None


def device_name(device: str | None) -> str:
    """The GPU's name for a CUDA device (e.g. "NVIDIA H100 80GB HBM3"), else the device type ("cpu").

    An unusable setting (e.g. "cuda" without CUDA) is returned as given: the record never stops a run.
    """
    try:
        resolved = resolve_device(device or "auto")
    except ValueError:
        return str(device)
    return torch.cuda.get_device_name(resolved) if resolved.type == "cuda" else resolved.type


def compute_dtype_name(dtype: str | None, device: str | None) -> str:
    """The compute dtype a run uses ("auto" resolved for `device`: "bfloat16", "float32", ...); an unusable
    setting is returned as given."""
    try:
        return str(resolve_dtype(dtype or "auto", resolve_device(device or "auto"))).removeprefix("torch.")
    except ValueError:
        return str(dtype)


def environment(device: str | None, dtype: str | None = "auto") -> dict[str, Any]:
    """Versions of python, torch and transformers, the repository's git commit, the device's name and the
    compute dtype."""
    return {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "transformers": transformers.__version__,
        "git_commit": git_commit(),
        "device": device_name(device),
        "compute_dtype": compute_dtype_name(dtype, device),
    }


@dataclass
class RunRecord:
    """The "run" section of results.json, filled in category by category.

    Per category: "images" (in the test split), "scored" (scored in this run; the rest came from the
    category's store of an earlier run), "seconds" (time spent scoring those: decoding, model, map resizing,
    store writes; metrics excluded) and "images_per_s" = scored / seconds; both null when nothing was scored
    in this run. "wall_seconds" counts from `started` (a time.perf_counter() value: the script's start, so
    model loading is included) to the last category written.
    """

    device: str | None
    dtype: str | None = "auto"
    started: float = field(default_factory=time.perf_counter)
    categories: dict[str, dict[str, Any]] = field(default_factory=dict)
    environment: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.environment = environment(self.device, self.dtype)

    def add_category(self, category: str, images: int, scored: int, seconds: float) -> dict[str, Any]:
        """Record one category (see the class docstring); return its entry."""
        speed = scored / seconds if scored and seconds > 0 else None
        self.categories[category] = {
            "images": images,
            "scored": scored,
            "seconds": round(seconds, 3) if scored else None,
            "images_per_s": round(speed, 3) if speed is not None else None,
        }
        return self.categories[category]

    def to_json(self) -> dict[str, Any]:
        """The JSON-able "run" section: versions, commit, device, dtype, wall time, the categories so far."""
        return {
            **self.environment,
            "wall_seconds": round(time.perf_counter() - self.started, 3),
            "categories": dict(self.categories),
        }
