"""Fixtures that build a tiny random SAM 3 in the real facebook/sam3 folder layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from model import Sam3Engine
from model.tiny_sam3 import build_tiny_sam3


@pytest.fixture(scope="session")
def tiny_sam3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random SAM 3 (224 px input, 20 queries) saved like a facebook/sam3 download, built once.

    Uses the real config/tokenizer files from shared/data/sam3_hf_meta when present, else a byte-level
    fallback tokenizer (see model/tiny_sam3.py).
    """
    return build_tiny_sam3(tmp_path_factory.mktemp("tiny_sam3"), seed=0)


@pytest.fixture(scope="session")
def tiny_engine(tiny_sam3_dir: Path) -> Sam3Engine:
    """Sam3Engine loaded from ``tiny_sam3_dir`` through the user-facing ``from_pretrained`` (CPU, fp32).

    Session-scoped and shared: tests that count encoder calls must look at differences of
    ``vision_calls`` / ``text_calls``, or build their own engine.
    """
    return Sam3Engine.from_pretrained(tiny_sam3_dir, device="cpu", dtype="fp32", chunk_size=8)
