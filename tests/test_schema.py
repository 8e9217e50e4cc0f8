"""Each setting is declared once (utils/config/schema.py): config.yaml, flags, checks, fingerprint agree."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
from pathlib import Path

import pytest
import yaml

from dataset import TEXTURE_CATEGORIES
from model.detector import MASK_THRESHOLD, AnomalyDetector, ScoringSettings
from model.engine import Sam3Engine
from model.scoring import image_score, object_mask
from model.settings import SettingInfo, setting_info
from scripts import demo, download_weights, train
from scripts import test as test_script
from utils.config import schema
from utils.config.loading import ConfigError, merge, resolve_config
from utils.config.policy import POLICIES
from utils.config.render import config_yaml, markdown_table
from utils.config.schema import (
    DEFAULT_MODEL_PATH,
    SECTIONS,
    SETTINGS,
    Config,
    defaults,
    fingerprinted,
    flags_of,
)
from utils.evaluation.fingerprint import FINGERPRINT_KEYS, IDENTITY_KEYS, NOT_FINGERPRINTED
from utils.training.trainer import RESUME_CHANGEABLE, RESUME_FIXED

REPO = Path(__file__).resolve().parents[1]
PARSERS = {"test": test_script.parse_args, "demo": demo.parse_args, "train": train.parse_args}
# Flags that are not config keys, per script.
NOT_KEYS = {
    "test": {"config"},
    "demo": {"config", "image_path", "category", "reference_dir"},
    "train": {"config", "resume"},
}
# Flags that existed before the schema: a contract with users' command lines, never to disappear.
CONTRACT = {
    "test": "model_path output_dir device dtype batch_size chunk_size prompt_strategy checkpoint dataset "
    "dataset_path categories eval_size aupro_variant visualize num_visualize",
    "demo": "model_path output_dir device dtype batch_size chunk_size prompt_strategy checkpoint dataset "
    "mask_threshold box_threshold",
    "train": "model_path output_dir device dtype batch_size chunk_size prompt_strategy dataset dataset_path "
    "categories num_epochs lr grad_accum num_concepts train_head seed",
}


def _actions(script: str) -> dict[str, argparse.Action]:
    """The parser's options by destination, read from the parser the script builds."""
    captured: dict[str, argparse.Action] = {}
    original = argparse.ArgumentParser.parse_args

    def capture(parser, args=None, namespace=None):
        captured.update({a.dest: a for a in parser._actions if a.dest != "help"})
        return argparse.Namespace()

    argparse.ArgumentParser.parse_args = capture
    try:
        PARSERS[script]([])
    finally:
        argparse.ArgumentParser.parse_args = original
    return captured


def test_config_yaml_is_generated_from_the_declarations():
    text = (REPO / "configs" / "config.yaml").read_text()
    assert text == config_yaml(), "regenerate: python -m utils.config.render --yaml > configs/config.yaml"
    shipped = yaml.safe_load(text)
    assert list(shipped) == list(SETTINGS)  # same keys, same order (sections as declared)
    assert shipped == defaults()
    for name in SETTINGS:
        line = next(line for line in text.splitlines() if line.startswith(f"{name}:"))
        assert re.search(r"#\s*\S", line), f"config.yaml: give {name} a comment"


def test_defaults_come_from_the_declarations_only(monkeypatch):
    """configs/config.yaml is never read: the resolved defaults are the declarations' (= ScoringSettings)."""
    read_text = Path.read_text

    def refuse_config_yaml(path, *args, **kwargs):
        assert path.name != "config.yaml", "configs/config.yaml was read as a source of defaults"
        return read_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", refuse_config_yaml)
    resolved = resolve_config(None, {"dataset_path": "/data"})
    assert resolved.to_dict() == {
        **defaults(),
        "dataset_path": "/data",
        "model_path": str(Path(DEFAULT_MODEL_PATH).expanduser()),
    }
    assert resolved.scoring == ScoringSettings()


def test_numbers_the_model_keeps_as_parameter_defaults_are_the_declared_ones():
    """model/ cannot import utils/config: the declarations take model's constants, so one number each."""
    assert defaults()["mask_threshold"] == MASK_THRESHOLD
    for function in (Sam3Engine.__init__, Sam3Engine.from_pretrained, AnomalyDetector.from_pretrained):
        assert inspect.signature(function).parameters["chunk_size"].default == defaults()["chunk_size"]
    keeps = [
        (AnomalyDetector.detect, "prompt_strategy", "prompt_strategy"),
        (object_mask, "threshold", "object_threshold"),
        (image_score, "topk", "topk"),
    ]
    for function, parameter, key in keeps:
        assert inspect.signature(function).parameters[parameter].default == defaults()[key], function


def test_config_holds_one_typed_section_each_and_round_trips():
    cfg = resolve_config(None, {"batch_size": 2, "visual": "fewshot", "shots": 3})
    assert cfg.model.batch_size == 2 and cfg.scoring.visual == "fewshot" and cfg.fewshot.shots == 3
    assert Config.from_dict(cfg.to_dict()) == cfg and list(cfg.to_dict()) == list(SETTINGS)
    seed = cfg.replace(shot_seed=5)
    assert seed.fewshot.shot_seed == 5 and cfg.fewshot.shot_seed == 0  # a new Config, the old one unchanged
    assert {type(getattr(cfg, f.name)) for f in dataclasses.fields(Config)} == set(SECTIONS)
    with pytest.raises(KeyError, match="eval_sise"):
        Config.from_dict({"eval_sise": 3})


def test_policy_lives_in_utils_config_with_one_row_per_setting():
    """model/ declares what a setting is; which scripts take it, fingerprint and resume are utils/config's."""
    declared = {f.name for f in dataclasses.fields(SettingInfo)}
    assert declared == {"help", "section", "choices", "minimum", "maximum"}
    assert set(POLICIES) == set(SETTINGS) and all(SETTINGS[n].policy is p for n, p in POLICIES.items())


@pytest.mark.parametrize("script", sorted(PARSERS))
def test_cli_flags_are_the_declared_ones(script):
    actions = _actions(script)
    declared = {s.name: s for s in flags_of(script)}
    assert set(actions) - NOT_KEYS[script] == set(declared)
    assert set(CONTRACT[script].split()) <= set(declared)
    for name, s in declared.items():
        assert list(actions[name].choices or []) == list(s.info.choices), name
        assert actions[name].default is None, name  # None = not given: the config decides


@pytest.mark.parametrize("script", sorted(PARSERS))
def test_every_flag_reaches_the_config(script):
    """Parsing each declared flag with a valid non-default value sets that key in the resolved config."""
    for s in flags_of(script):
        value = _other_value(s)
        if s.kind is bool:
            argv = [f"--{s.name}" if value else f"--no-{s.name}"]
        else:
            argv = [f"--{s.name}", ",".join(map(str, value)) if s.kind is list else str(value)]
        if script == "demo":
            argv += ["--image_path", "x.png"]
        args = PARSERS[script](argv)
        cli = {k: v for k, v in vars(args).items() if k not in NOT_KEYS[script]}
        assert resolve_config(None, cli).to_dict()[s.name] == _expanded(s.name, value), (script, s.name)


def _other_value(s):
    """A valid value different from the default."""
    if s.info.choices:
        return next(c for c in s.info.choices if c != s.default)
    if s.kind is bool:
        return not s.default
    if s.kind is list:
        return [3, 5] if s.item is int else ["bottle", "wood"]
    if s.kind is str:
        return "/tmp/elsewhere"
    if s.info.maximum is not None:
        return type(s.default)((s.info.maximum + (s.info.minimum or 0)) / 3)
    return s.kind(s.default or 0) + 2


def _expanded(name, value):
    return (
        str(Path(value).expanduser())
        if name in ("dataset_path", "model_path", "output_dir", "checkpoint")
        else value
    )


@pytest.mark.parametrize("name", [n for n, s in SETTINGS.items() if s.info.choices])
def test_a_value_outside_the_declared_choices_is_refused(name):
    with pytest.raises(ConfigError, match=f"config key '{name}' must be one of"):
        resolve_config(None, {name: -7 if SETTINGS[name].kind is int else "no_such_choice"})


@pytest.mark.parametrize(
    ("name", "value"),
    [(n, s.info.minimum - 1) for n, s in SETTINGS.items() if s.info.minimum is not None]
    + [(n, s.info.maximum + 1) for n, s in SETTINGS.items() if s.info.maximum is not None],
)
def test_a_value_outside_the_declared_range_is_refused(name, value):
    with pytest.raises(ConfigError, match=re.escape(f"config key '{name}' must be")):
        kind = SETTINGS[name].kind
        resolve_config(None, {name: [value] if kind is list else kind(value)})


@pytest.mark.parametrize("name", list(SETTINGS))
def test_a_value_of_the_wrong_type_is_refused(name):
    wrong = 3 if SETTINGS[name].kind in (str, list, dict, bool) else "three"
    with pytest.raises(ConfigError, match=f"config key '{name}' must be"):
        resolve_config(None, {name: wrong})


def test_null_only_where_declared_nullable():
    for name, s in SETTINGS.items():
        if s.nullable:
            assert resolve_config(None, {name: None}) == resolve_config(None, {})
        else:
            with pytest.raises(ConfigError, match=f"config key '{name}' must not be null"):
                merge(defaults(), {name: None}, "test.yaml")


def test_fingerprint_tables_are_the_declared_ones():
    assert FINGERPRINT_KEYS == fingerprinted("value")
    assert tuple(IDENTITY_KEYS) == fingerprinted("identity") == ("model_path", "checkpoint", "device")
    assert set(NOT_FINGERPRINTED) == {n for n, s in SETTINGS.items() if s.policy.fingerprint is None}
    assert all(NOT_FINGERPRINTED.values())  # every exemption says why
    assert "aupro_variant" in NOT_FINGERPRINTED  # recomputed from the stored maps (tests/test_resume.py)


def test_scoring_settings_are_declared_in_model_and_composed_into_the_schema():
    for f in dataclasses.fields(ScoringSettings):
        assert SETTINGS[f.name].info is setting_info(f)
        assert getattr(ScoringSettings(), f.name) == defaults()[f.name]


def test_scoring_settings_check_their_declared_bounds():
    with pytest.raises(ValueError, match=re.escape("outside_weight must be in [0, 1], got 1.5")):
        ScoringSettings(outside_weight=1.5)
    with pytest.raises(ValueError, match="topk must be >= 1"):
        ScoringSettings(topk=0)


def test_settings_table_in_the_docs_is_generated_from_the_schema():
    page = (REPO / "docs" / "settings.md").read_text()
    assert markdown_table() in page, "regenerate the table in docs/settings.md: python -m utils.config.render"


def test_texture_categories_default_is_the_dataset_constant():
    assert defaults()["texture_categories"] == list(TEXTURE_CATEGORIES)


def test_default_model_path_is_declared_once():
    assert defaults()["model_path"] == DEFAULT_MODEL_PATH
    assert download_weights.DEFAULT_MODEL_DIR == DEFAULT_MODEL_PATH


def test_every_training_flag_declares_how_resume_treats_it():
    """train.py --resume refuses or applies a changed setting as its declaration says (trainer.py)."""
    train_flags = [key for key, s in SETTINGS.items() if "train" in s.policy.scripts]
    assert all(SETTINGS[key].policy.resume for key in train_flags), [
        key for key in train_flags if not SETTINGS[key].policy.resume
    ]
    assert set(RESUME_FIXED) == {key for key, s in SETTINGS.items() if s.policy.resume == "fixed"}
    assert {"map_source", "prompt_aggregation", "num_concepts"} <= set(RESUME_FIXED)  # read by training
    assert {"lr", "num_epochs", "batch_size"} <= set(RESUME_CHANGEABLE)


def test_a_setting_without_its_policy_row_fails_at_import(monkeypatch):
    monkeypatch.delitem(POLICIES, "topk")
    with pytest.raises(ValueError, match=re.escape("add ['topk'], remove none")):
        schema._collect()
