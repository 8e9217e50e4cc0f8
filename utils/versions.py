"""The torch version this project needs, checked at every script's entry before torch is imported.

GPU images (AutoDL and the like) often carry an older torch; importing transformers on it fails deep inside
with a traceback. `require_torch` reads the installed version from the package metadata (without importing
torch) and stops with one line naming the installed and the required version. The required version is the
`torch>=X.Y` line of requirements.txt, declared there once.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

REQUIREMENTS = Path(__file__).resolve().parents[1] / "requirements.txt"
INSTALL_HINT = (
    "install the CUDA build of torch that matches your driver first (README, installation), "
    "then `pip install -r requirements.txt`"
)


def _version_tuple(text: str) -> tuple[int, ...]:
    """(major, minor) of a version string such as "2.3.1+cu121"; () when it has no leading numbers."""
    match = re.match(r"(\d+)\.(\d+)", text.strip())
    return (int(match[1]), int(match[2])) if match else ()


def required_torch(requirements: Path = REQUIREMENTS) -> str:
    """The X.Y of the `torch>=X.Y` line of requirements.txt."""
    for line in requirements.read_text().splitlines():
        match = re.match(r"\s*torch\s*>=\s*([\d.]+)", line)
        if match:
            return match[1]
    raise ValueError(f"no torch>=X.Y line in {requirements}")


def torch_problem(installed: str | None, required: str) -> str | None:
    """The one-line complaint when `installed` (None: not installed) is older than `required`, else None."""
    if installed is None:
        return f"torch is not installed; this project needs torch >= {required}: {INSTALL_HINT}"
    if _version_tuple(installed) < _version_tuple(required):
        return f"torch {installed} is installed; this project needs torch >= {required}: {INSTALL_HINT}"
    return None


def require_torch() -> None:
    """Exit with `error: <torch_problem>` (status 2) when the installed torch is missing or too old."""
    try:
        installed: str | None = metadata.version("torch")
    except metadata.PackageNotFoundError:
        installed = None
    problem = torch_problem(installed, required_torch())
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
