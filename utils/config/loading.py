"""One merge path for settings: defaults (configs/config.yaml) <- a YAML file <- CLI flags.

`configs/config.yaml` is the only place defaults live. Its keys are the names the code and the CLI flags use;
the type of each key is the type of its default (keys whose default is null declare their type in
`NULLABLE_TYPES`). A key that is not in the defaults, or a value of the wrong type, is a `ConfigError` that
names the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from dataset import DATASET_NAMES
from model.detector import ScoringSettings
from model.prompts import STRATEGIES
from utils.evaluation.metrics import AUPRO_VARIANTS

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULTS_PATH = REPO_ROOT / "configs" / "config.yaml"
DATASET_DIR_FILE = REPO_ROOT / "dataset_dir.txt"

# Keys whose default is null: the type a non-null value must have.
NULLABLE_TYPES: dict[str, type] = {"dataset_path": str, "categories": list, "checkpoint": str}


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the key or file."""


def _read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or a non-mapping is a one-line ConfigError."""
    if not path.is_file():
        raise ConfigError(
            f"config file not found: {path} (pass an existing YAML file, e.g. configs/mvtec.yaml)"
        )
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        line = getattr(getattr(err, "problem_mark", None), "line", None)
        where = f" at line {line + 1}" if line is not None else ""
        raise ConfigError(f"{path} is not valid YAML{where}: fix the syntax") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of key: value, not {type(data).__name__}")
    return data


def load_defaults() -> dict[str, Any]:
    """The defaults of every key, from configs/config.yaml."""
    return _read_yaml(DEFAULTS_PATH)


def _check_type(key: str, value: Any, default: Any) -> Any:
    """Return `value` (ints widened to float where the default is a float) or raise ConfigError."""
    if value is None:
        if default is None:
            return None
        raise ConfigError(f"config key '{key}' must not be null (default: {default!r})")
    expected = NULLABLE_TYPES.get(key, type(default))
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is list and isinstance(value, tuple):
        return list(value)
    if isinstance(value, bool) and expected is not bool:
        raise ConfigError(f"config key '{key}' must be {expected.__name__}, got bool {value!r}")
    if not isinstance(value, expected):
        raise ConfigError(
            f"config key '{key}' must be {expected.__name__}, got {type(value).__name__} {value!r}"
        )
    return value


def merge(base: Mapping[str, Any], updates: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Return `base` updated with `updates`, each key checked against `base`'s keys and types.

    Args:
        base: the current settings (every known key present).
        updates: new values; None values mean "not given" only when `source` is the CLI.
        source: where `updates` came from, for error messages (a file path or "command line").
    """
    merged = dict(base)
    defaults = load_defaults()
    for key, value in updates.items():
        if key not in defaults:
            raise ConfigError(
                f"unknown config key '{key}' in {source}: known keys are listed in {DEFAULTS_PATH.name}"
            )
        merged[key] = _check_type(key, value, defaults[key])
    return merged


def read_dataset_dir(path: Path = DATASET_DIR_FILE) -> str | None:
    """The datasets root written on the first non-empty line of dataset_dir.txt (`~` kept), or None."""
    if not path.is_file():
        return None
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            return line.strip()
    return None


def resolve_config(config_path: str | None, cli: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults <- YAML file <- CLI values that are not None; then fill `dataset_path` and expand `~`.

    Returns a plain dict with every key of configs/config.yaml.
    """
    cfg = load_defaults()
    if config_path:
        cfg = merge(cfg, _read_yaml(Path(config_path).expanduser()), str(config_path))
    cfg = merge(cfg, {k: v for k, v in cli.items() if v is not None}, "command line")
    if not cfg["dataset_path"]:
        cfg["dataset_path"] = read_dataset_dir()
    for key in ("dataset_path", "model_path", "output_dir", "checkpoint"):
        if cfg.get(key):
            cfg[key] = str(Path(cfg[key]).expanduser())
    check_values(cfg)
    return cfg


def check_values(cfg: Mapping[str, Any]) -> None:
    """Check choice-valued keys and the scoring settings' ranges now, not hours into a run.

    Raises:
        ConfigError: naming the key, the value and what is allowed.
    """

    choices = {
        "dataset": DATASET_NAMES,
        "prompt_strategy": STRATEGIES,
        "aupro_variant": AUPRO_VARIANTS,
        "concept_mode": ("replace", "add"),
    }
    for key, allowed in choices.items():
        if cfg[key] not in allowed:
            raise ConfigError(f"config key '{key}' must be one of {', '.join(allowed)}, got {cfg[key]!r}")
    positive = ("eval_size", "batch_size", "chunk_size", "num_epochs", "grad_accum", "num_concepts")
    for key in positive:
        if cfg[key] < 1:
            raise ConfigError(f"config key '{key}' must be >= 1, got {cfg[key]!r}")
    try:
        ScoringSettings.from_config(cfg)
    except ValueError as err:
        raise ConfigError(f"config: {err}") from None
    check_phrases("extra_prompts", cfg["extra_prompts"], allow_empty=True)
    for category, phrases in cfg["prompt_overrides"].items():
        if not isinstance(category, str):
            raise ConfigError(f"config key 'prompt_overrides' has key {category!r}: use a category name")
        check_phrases(f"prompt_overrides: {category}", phrases, allow_empty=False)


def check_phrases(where: str, phrases: Any, allow_empty: bool) -> None:
    """Check a prompt list from the config: a list of non-blank strings, non-empty unless `allow_empty`.

    Raises:
        ConfigError: naming `where` (the key, and the category for `prompt_overrides`) and the bad value.
    """
    if not isinstance(phrases, list):
        raise ConfigError(
            f"config key '{where}' must be a list of phrases, got {type(phrases).__name__} {phrases!r}"
        )
    for phrase in phrases:
        if not isinstance(phrase, str) or not phrase.strip():
            raise ConfigError(
                f"config key '{where}' holds {phrase!r}: every prompt must be a non-empty string"
            )
    if not phrases and not allow_empty:
        raise ConfigError(
            f"config key '{where}' is an empty prompt list: give at least one phrase or remove the category"
        )


def parse_list(text: str) -> list[str]:
    """Parse a comma-separated CLI list ("bottle, wood") into ["bottle", "wood"]."""
    return [item.strip() for item in text.split(",") if item.strip()]
