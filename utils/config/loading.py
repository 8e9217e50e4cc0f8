"""One merge path for settings: the declared defaults <- a YAML file (--config) <- CLI flags.

Every key, its type, default and allowed values are declared once in `utils.config.schema`; the defaults
come from those declarations only (configs/config.yaml is generated from them for reading, never read
here). A key that is not declared, a value of the wrong type or out of its declared bounds is a
`ConfigError` that names the key. `resolve_config` gives the typed `utils.config.schema.Config` that every
script builds once and the code below them reads; a per-run change is `cfg.replace(key=value)`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from dataset import set_name
from utils.config.schema import SETTINGS, Config, Setting, defaults

REPO_ROOT = Path(__file__).resolve().parents[2]
DATASET_DIR_FILE = REPO_ROOT / "dataset_dir.txt"


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the key or file."""


class StaleOutputError(ValueError):
    """The output folder holds results made with a different config or dataset (utils/evaluation/store.py)."""


class _DuplicateKeyError(yaml.YAMLError):
    """A key written twice in one YAML mapping (PyYAML itself keeps the last one without a word)."""


class _StrictLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` (plain values only: a `!!python/...` tag never builds an object or runs code) that
    also refuses a key given twice in one mapping, so a second `sigma:` further down cannot silently win."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key, line = self.construct_object(key_node), key_node.start_mark.line + 1
            if key in seen:
                raise _DuplicateKeyError(f"has key {key!r} twice (lines {seen[key]} and {line})")
            seen[key] = line
        return super().construct_mapping(node, deep)


def _yaml_problem(err: yaml.YAMLError) -> str:
    """What is wrong with a YAML file, for the one-line ConfigError: a duplicated key, a tag that is not read,
    or a syntax error (with its line)."""
    if isinstance(err, _DuplicateKeyError):
        return f"{err}: keep one"
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}" if mark is not None else ""
    tag = re.search(r"constructor for the tag '([^']*)'", str(getattr(err, "problem", "")))
    if tag:
        return f"uses the tag {tag.group(1)}{where}, which is not read (plain values only): remove it"
    return f"is not valid YAML{where}: fix the syntax"


def _read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file, a duplicated key, a tag or a non-mapping is a one-line
    ConfigError."""
    if not path.is_file():
        raise ConfigError(
            f"config file not found: {path} (pass an existing YAML file, e.g. configs/mvtec.yaml)"
        )
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader) or {}
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{path} is not UTF-8 text (byte {err.start}): save it as UTF-8 (e.g. `iconv -t utf-8`)"
        ) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} {_yaml_problem(err)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of key: value, not {type(data).__name__}")
    return data


def _check_type(key: str, value: Any, declared: Setting) -> Any:
    """Return `value` (ints widened to float where the key is a float) or raise ConfigError."""
    if value is None:
        if declared.nullable:
            return None
        raise ConfigError(f"config key '{key}' must not be null (default: {declared.default!r})")
    expected = declared.kind
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
    item = declared.item
    if item not in (None, str) and any(isinstance(v, bool) or not isinstance(v, item) for v in value):
        raise ConfigError(f"config key '{key}' must be a list of {item.__name__}, got {value!r}")
    if item is str and key not in PHRASE_LISTS and not all(isinstance(v, str) and v.strip() for v in value):
        bad = next(v for v in value if not isinstance(v, str) or not v.strip())
        raise ConfigError(
            f"config key '{key}' holds {bad!r}: it must be a list of names (text), e.g. [bottle]"
        )
    return value


PHRASE_LISTS = ("extra_prompts",)  # str lists checked with their own message (check_phrases)
FOLDER_KEYS = ("output_dir", "model_path")  # must be named (an empty dataset_path means dataset_dir.txt)


def merge(base: Mapping[str, Any], updates: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Return `base` updated with `updates`, each key checked against `base`'s keys and types.

    Args:
        base: the current settings (every known key present).
        updates: new values; None values mean "not given" only when `source` is the CLI.
        source: where `updates` came from, for error messages (a file path or "command line").
    """
    merged = dict(base)
    for key, value in updates.items():
        if key not in SETTINGS:
            raise ConfigError(
                f"unknown config key '{key}' in {source}: known keys are listed in configs/config.yaml"
            )
        merged[key] = _check_type(key, value, SETTINGS[key])
    return merged


def read_dataset_dir(path: Path = DATASET_DIR_FILE) -> str | None:
    """The datasets root written on the first non-empty line of dataset_dir.txt (`~` kept), or None.

    A relative path is relative to the file's folder (the repository), whatever the current folder is.

    Raises:
        ConfigError: the file is not UTF-8 text (a byte-order mark is fine).
    """
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{path} is not UTF-8 text (byte {err.start}): save it as UTF-8 with the datasets root first"
        ) from None
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            root = line.strip()
            return root if root.startswith("~") or Path(root).is_absolute() else str(path.parent / root)
    return None


def resolve_config(
    config_path: str | None, cli: Mapping[str, Any], output_per_dataset: bool = False
) -> Config:
    """Defaults <- YAML file <- CLI values that are not None; then fill `dataset_path` and expand `~`.

    With `output_per_dataset`, an output_dir set neither by the CLI nor by the file becomes
    `<default output_dir>/<dataset>` (results/mvtec, results/visa; a meta.json set: the name of its folder,
    `dataset.set_name`), so two datasets never share a folder.

    Raises:
        ConfigError: an unknown key, a wrong type, a value out of its declared range or choices, or values
            that do not go together; the message names the key.
    """
    from_file = _read_yaml(Path(config_path).expanduser()) if config_path else {}
    given = {k: v for k, v in cli.items() if v is not None}
    values = merge(defaults(), from_file, str(config_path))
    values = merge(values, given, "command line")
    if not values["dataset_path"]:
        values["dataset_path"] = read_dataset_dir()
    if output_per_dataset and "output_dir" not in from_file and "output_dir" not in given:
        values["output_dir"] = str(
            Path(values["output_dir"]) / set_name(values["dataset"], values["dataset_path"])
        )
    for key in ("dataset_path", "model_path", "output_dir", "checkpoint"):
        if values.get(key):
            values[key] = str(Path(values[key]).expanduser())
    check_values(values)
    try:  # the checks across keys of the sections (e.g. visual_degrees odd window sides)
        return Config.from_dict(values)
    except ValueError as err:
        raise ConfigError(f"config: {err}") from None


def check_values(values: Mapping[str, Any]) -> None:
    """Check every key of the flat `values` against its declared choices or range, and the prompt lists,
    now, not hours into a run.

    Raises:
        ConfigError: naming the key, the value and what is allowed.
    """
    for key, declared in SETTINGS.items():
        problem = declared.info.problem(values[key])
        if problem:
            raise ConfigError(f"config key '{key}' {problem}")
    for key, value in values.items():  # a path with NUL is refused by the OS with a bare ValueError
        if "\0" in str(value):
            raise ConfigError(f"config key '{key}' holds a NUL character: remove it")
    for key in FOLDER_KEYS:  # "" would be the current folder: outputs and a model looked for anywhere
        if not values[key].strip():
            raise ConfigError(f"config key '{key}' is empty: give a folder path (--{key} DIR)")
    check_phrases("extra_prompts", values["extra_prompts"], allow_empty=True)
    for category, phrases in values["prompt_overrides"].items():
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


def parse_int_list(text: str) -> list[int]:
    """Parse a comma-separated CLI list of integers ("0, 1,2") into [0, 1, 2]; ValueError on "a"."""
    return [int(item) for item in parse_list(text)]
