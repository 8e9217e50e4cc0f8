"""Shared pytest fixtures: generated datasets (fixtures_data.py) and a tiny SAM 3 (fixtures_model.py), and the
one config builder of the tests (`build_config`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from utils.config.loading import resolve_config
from utils.config.schema import Config

pytest_plugins = ["tests.fixtures_data", "tests.fixtures_model"]


def build_config(root: Path | str | None = None, out: Path | str | None = None, **values: Any) -> Config:
    """A Config resolved as the scripts resolve it (declared defaults <- `values`), with the datasets root
    `root` and the output folder `out` when given. A test file binds its own values with functools.partial."""
    given = {"dataset_path": root, "output_dir": out, **values}
    return resolve_config(None, {k: str(v) if isinstance(v, Path) else v for k, v in given.items()})
