"""The resume fingerprint: which settings a stored category must share with this run, and how to compare them.

Derived from the policy table of utils/config/policy.py (each setting says there whether it changes scores,
and if not, why). A stored category is reused only when every fingerprinted value matches; otherwise the run
stops with `StaleOutputError` (utils/config/loading.py) instead of mixing results.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from model.loader import native_bf16, resolve_device
from utils.config.schema import SETTINGS, fingerprinted

# Keys whose value changes the anomaly maps or the image scores:
FINGERPRINT_KEYS: tuple[str, ...] = fingerprinted("value")
# Keys that change neither the maps nor the image scores, and why:
NOT_FINGERPRINTED: dict[str, str] = {
    name: s.policy.not_fingerprinted for name, s in SETTINGS.items() if s.policy.fingerprint is None
}


def _sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_identity(model_path: str | None) -> dict[str, Any] | None:
    """What identifies a SAM 3 folder: config.json's hash and each weights file's size and modification time.

    The weights are several GB, too many to hash at every start; size and mtime change when the file is
    replaced (a new download, another model copied in). None when the folder does not exist.
    """
    folder = Path(model_path).expanduser() if model_path else None
    if folder is None or not folder.is_dir():
        return None
    config = folder / "config.json"
    weights = sorted(folder.glob("*.safetensors"))
    return {
        "config_sha256": _sha256(config) if config.is_file() else None,
        "weights": {p.name: [p.stat().st_size, int(p.stat().st_mtime)] for p in weights},
    }


def file_identity(path: str | None) -> str | None:
    """The SHA-256 of a checkpoint's bytes (whatever its format), or None without one."""
    return _sha256(Path(path)) if path and Path(path).is_file() else None


def device_kind(device: str | None) -> str:
    """ "cpu", "cuda" or "cuda without native bf16" ("auto" resolved): the kind of device, which decides what
    dtype "auto" means (`model.loader.resolve_dtype`: bf16 on the second, fp32 on the others)."""
    try:
        resolved = resolve_device(device or "auto")
    except ValueError:  # "cuda" asked for on a machine without one: still a CUDA run's fingerprint
        return str(device).split(":")[0]
    if resolved.type == "cuda" and not native_bf16(resolved):
        return "cuda without native bf16"
    return resolved.type


_IDENTITIES: dict[str, Callable[[Any], Any]] = {
    "model_path": model_identity,
    "checkpoint": file_identity,
    "device": device_kind,
}
# Keys that name something: what they point at is fingerprinted, not the name (a moved folder still resumes).
# A key with fingerprint="identity" in its policy but no function in _IDENTITIES fails at import.
IDENTITY_KEYS: dict[str, Callable[[Any], Any]] = {key: _IDENTITIES[key] for key in fingerprinted("identity")}


def fingerprint_settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The values the fingerprint compares: FINGERPRINT_KEYS as given, IDENTITY_KEYS resolved (JSON-able)."""
    settings = {key: cfg.get(key) for key in FINGERPRINT_KEYS}
    settings.update({key: identity(cfg.get(key)) for key, identity in IDENTITY_KEYS.items()})
    return settings


def hash_settings(settings: Mapping[str, Any]) -> str:
    """A short hash of `fingerprint_settings(cfg)`: what progress.json stores as "fingerprint"."""
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
