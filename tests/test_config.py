"""The one merge path defaults <- YAML <- CLI, and its errors."""

import re
from pathlib import Path

import pytest
import yaml

from dataset import DATASET_NAMES
from utils.config.loading import ConfigError, parse_list, read_dataset_dir, resolve_config
from utils.config.schema import defaults

REPO = Path(__file__).resolve().parents[1]


def test_yaml_overrides_defaults_and_cli_overrides_yaml(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("eval_size: 128\nsigma: 2\nprompt_strategy: base\n")
    cfg = resolve_config(str(cfg_file), {"sigma": 1.5, "batch_size": None})
    assert cfg.evaluation.eval_size == 128  # from YAML
    assert cfg.scoring.sigma == 1.5  # CLI wins
    assert cfg.model.batch_size == defaults()["batch_size"]  # None = flag not given
    assert isinstance(
        resolve_config(str(cfg_file), {}).scoring.sigma, float
    )  # int widened to the float default


def test_unknown_key_is_an_error_naming_it(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("eval_sise: 128\n")
    with pytest.raises(ConfigError, match="unknown config key 'eval_sise'"):
        resolve_config(str(cfg_file), {})


@pytest.mark.parametrize(
    ("key", "value"), [("eval_size", "big"), ("visualize", 1), ("sigma", True), ("categories", "bottle")]
)
def test_wrong_type_is_an_error_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=f"config key '{key}' must be"):
        resolve_config(None, {key: value})


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("prompt_strategy", "fancy", "'prompt_strategy' must be one of base"),
        ("map_source", "pixels", "'map_source' must be one of instance"),
        ("aupro_variant", "paper", "'aupro_variant' must be one of official, clip"),
        ("outside_weight", 1.5, "'outside_weight' must be in [0, 1], got 1.5"),
        ("eval_size", 0, "'eval_size' must be in [1, 8192], got 0"),
    ],
)
def test_bad_values_are_caught_when_the_config_is_read(key, value, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        resolve_config(None, {key: value})


def test_missing_and_invalid_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        resolve_config(str(tmp_path / "nope.yaml"), {})
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        resolve_config(str(bad), {})


def test_dataset_dir_file_and_home_expansion(tmp_path):
    f = tmp_path / "dataset_dir.txt"
    f.write_text("# comment\n\n~/data/sets\n")
    assert read_dataset_dir(f) == "~/data/sets"
    assert read_dataset_dir(tmp_path / "missing.txt") is None
    cfg = resolve_config(None, {"dataset_path": "~/x", "model_path": "~/m"})
    assert cfg.data.dataset_path == str(Path.home() / "x") and cfg.model.model_path == str(Path.home() / "m")
    # With no --dataset_path, the repository's dataset_dir.txt gives the root.
    assert resolve_config(None, {}).data.dataset_path == str(Path(read_dataset_dir()).expanduser())


SHIPPED = sorted(p for p in (REPO / "configs").glob("*.yaml") if p.name != "config.yaml")


def repeated_defaults(data: dict) -> list[str]:
    """The keys of a YAML mapping whose value equals the declared default."""
    declared = defaults()
    return sorted(key for key, value in data.items() if key in declared and value == declared[key])


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_configs_hold_only_true_overrides(path):
    """Every configs/<set>.yaml is valid, is for its dataset, and holds no key equal to its declared default
    (a copy of a default goes stale when the declaration changes)."""
    repeated = repeated_defaults(yaml.safe_load(path.read_text()) or {})
    assert not repeated, f"{path.name} repeats the declared default of {repeated}: remove them"
    assert resolve_config(str(path), {}).data.dataset == path.stem


def test_every_benchmark_has_a_shipped_config_and_repeats_are_found():
    assert {p.stem for p in SHIPPED} == set(DATASET_NAMES) - {"folder"}
    assert repeated_defaults({"eval_size": 256, "dataset": "visa", "prompt_strategy": "base"}) == [
        "eval_size",
        "prompt_strategy",
    ]


def test_parse_list():
    assert parse_list("bottle, wood,,") == ["bottle", "wood"]


def test_docs_yaml_example_is_a_valid_config(tmp_path):
    page = (REPO / "docs" / "settings.md").read_text()
    block = re.search(r"```yaml\n(# my\.yaml.*?)```", page, re.S)
    assert block, "docs/settings.md lost its YAML config example"
    example = tmp_path / "my.yaml"
    example.write_text(block.group(1))
    cfg = resolve_config(str(example), {})
    assert cfg.prompts.prompt_overrides == {"screw": ["damaged thread", "bent tip"]}
    assert cfg.scoring.image_score == "topk_mean"


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("prompt_overrides: {bottle: []}", "'prompt_overrides: bottle' is an empty prompt list"),
        ("prompt_overrides: {bottle: ['  ']}", "'prompt_overrides: bottle' holds '  ': every prompt must be"),
        ("prompt_overrides: {bottle: [crack], wood: [null]}", "'prompt_overrides: wood' holds None"),
        (
            "prompt_overrides: {bottle: crack}",
            "'prompt_overrides: bottle' must be a list of phrases, got str",
        ),
        ("prompt_overrides: {1: [crack]}", "'prompt_overrides' has key 1: use a category name"),
        ("extra_prompts: [crack, '']", "'extra_prompts' holds '': every prompt must be a non-empty string"),
        ("extra_prompts: [crack, 3]", "'extra_prompts' holds 3"),
    ],
)
def test_bad_prompt_lists_are_caught_when_the_config_is_read(tmp_path, yaml_text, message):
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text + "\n")
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        resolve_config(str(path), {})
    assert "\n" not in str(info.value)


def test_valid_prompt_lists_are_accepted(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("extra_prompts: []\nprompt_overrides: {bottle: [broken rim, ' crack ']}\n")
    assert resolve_config(str(path), {}).prompts.prompt_overrides == {"bottle": ["broken rim", " crack "]}
