"""Tests for model/prompts.py: every category x strategy, extra prompts and overrides."""

from __future__ import annotations

import pytest

from dataset import DATASET_NAMES, categories_of
from dataset.constants import object_noun
from model.prompts import (
    BASE_DEFECTS,
    CATEGORY_DEFECTS,
    STRATEGIES,
    base_defects,
    build_prompts,
)

ALL_CATEGORIES = tuple(dict.fromkeys(c for name in DATASET_NAMES for c in categories_of(name)))


def test_every_benchmark_category_has_a_vocabulary():
    assert set(CATEGORY_DEFECTS) == set(ALL_CATEGORIES)
    assert (
        len(ALL_CATEGORIES) == 15 + 12 + 8 + 5 + 6 + 3 + 1 + 30 - 2 + 2 + 10 + 12 + 12
    )  # toothbrush, zipper: MVTec AD and Real-IAD; meta.json sets: SDD, DAGM, DTD, medical


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("category", [*ALL_CATEGORIES, None, "unknown_part"])
def test_prompts_are_short_non_empty_and_unique(category, strategy):
    prompts = build_prompts(category, strategy)
    assert prompts
    assert all(isinstance(p, str) and p == p.strip() and p for p in prompts)
    assert len({p.lower() for p in prompts}) == len(prompts)
    assert all(len(p.split()) <= 8 for p in prompts), [p for p in prompts if len(p.split()) > 8]


@pytest.mark.parametrize("category", ALL_CATEGORIES)
def test_strategies_contents(category):
    base = build_prompts(category, "base")
    cat = build_prompts(category, "category")
    mixed = build_prompts(category, "mixed")
    contextual = build_prompts(category, "contextual")
    assert base == list(base_defects(category))
    assert cat == list(CATEGORY_DEFECTS[category])
    assert set(mixed) == set(base) | set(cat)
    assert mixed[: len(base)] == base  # base first, order kept
    noun = object_noun(category)
    assert len(contextual) == len(mixed)
    assert all(p.endswith(f" on the {noun}") for p in contextual)
    assert [p[: -len(f" on the {noun}")] for p in contextual] == mixed


def test_mixed_removes_duplicates_keeping_first_position():
    mixed = build_prompts("capsule", "mixed")  # "crack", "dent", "scratch" are in both lists
    assert mixed.count("crack") == 1
    assert mixed.index("crack") == BASE_DEFECTS.index("crack")
    assert mixed[len(BASE_DEFECTS) :] == ["faulty imprint", "squeezed capsule"]


def test_contextual_example():
    assert "crack on the metal nut" in build_prompts("metal_nut", "contextual")
    assert "scratch on the bottle" in build_prompts("bottle", "contextual")


@pytest.mark.parametrize("strategy", ["base", "category", "mixed"])
def test_none_and_unknown_category_give_base(strategy):
    assert build_prompts(None, strategy) == list(BASE_DEFECTS)
    assert build_prompts("my_widget", strategy) == list(BASE_DEFECTS)


def test_contextual_without_known_category():
    assert build_prompts(None, "contextual") == [f"{d} on the object" for d in BASE_DEFECTS]
    assert build_prompts("my_widget", "contextual")[0] == "defect on the my widget"


def test_extra_is_appended_and_deduplicated():
    prompts = build_prompts("bottle", "base", extra=["  bubble  in glass ", "crack", "Bubble in glass"])
    assert prompts == [*BASE_DEFECTS, "bubble in glass"]


def test_overrides_replace_the_built_list_only_for_their_category():
    overrides = {"bottle": ["chipped rim", "chipped rim"], "wood": ["knot"]}
    built = build_prompts("bottle", "mixed", extra=["residue"], overrides=overrides)
    assert built == ["chipped rim", "residue"]
    assert build_prompts("cable", "category", overrides=overrides) == list(CATEGORY_DEFECTS["cable"])
    assert build_prompts(None, "base", overrides=overrides) == list(BASE_DEFECTS)
    assert build_prompts("bottle", "base", overrides={}) == list(BASE_DEFECTS)


def test_unknown_strategy_lists_the_allowed_ones():
    with pytest.raises(ValueError, match="base, category, mixed, contextual"):
        build_prompts("bottle", "fancy")
    with pytest.raises(ValueError):  # also with an override present
        build_prompts("bottle", "fancy", overrides={"bottle": ["x"]})


def test_build_prompts_is_pure():
    first = build_prompts("pill", "mixed")
    first.append("mutated")
    assert "mutated" not in build_prompts("pill", "mixed")


def test_an_override_without_any_phrase_is_refused_not_an_empty_prompt_list():
    with pytest.raises(ValueError, match="no prompts for category 'bottle'"):
        build_prompts("bottle", "base", overrides={"bottle": [" ", ""]})
    assert build_prompts("bottle", "base", extra=["dent"], overrides={"bottle": []}) == ["dent"]
