"""Declaring a setting once: default, allowed values, help and the section it is listed under.

Every setting of the project is a dataclass field made with `setting(...)`. The `SettingInfo` it carries in
the field's metadata is what `utils/config/schema.py` reads to build the CLI flags, validate values and
write the generated configs/config.yaml and settings table. It lives in model/ so that `ScoringSettings`
(below: how SAM 3 outputs become maps and scores) is declared without importing utils/. What the scripts
do with a setting (which take it as a flag, whether it changes stored scores, how train.py --resume treats
it) is their policy, not the model's: utils/config/policy.py.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from numbers import Integral, Real
from typing import Any

import numpy as np

from model.scoring import AGGREGATIONS, DEFAULT_OBJECT_THRESHOLD, DEFAULT_TOPK, IMAGE_SCORES, MAP_SOURCES
from model.visual import (
    DEFAULT_DEGREES,
    DEFAULT_MUTUAL_FRACTION,
    DEFAULT_VISUAL_GRID,
    PatchReading,
    VisualMode,
    check_degrees,
)

METADATA_KEY = "setting"


@dataclass(frozen=True)
class SettingInfo:
    """What is known about one setting besides its name, type and default."""

    help: str
    section: str
    choices: tuple[Any, ...] = ()
    minimum: float | None = None
    maximum: float | None = None

    def problem(self, value: Any) -> str | None:
        """Why `value` (of the right type) is not allowed, e.g. "must be >= 1, got 0"; None when it is."""
        if value is None:
            return None
        if isinstance(value, list):  # a list of numbers (e.g. shot_seeds): every item within the bounds
            return next((f"{p} (an item of {value!r})" for item in value if (p := self.problem(item))), None)
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number, got {value!r}"
        if self.choices and value not in self.choices:
            return f"must be one of {', '.join(map(str, self.choices))}, got {value!r}"
        low, high = self.minimum, self.maximum
        if low is not None and high is not None and not low <= value <= high:
            return f"must be in [{low:g}, {high:g}], got {value!r}"
        if low is not None and value < low:
            return f"must be >= {low:g}, got {value!r}"
        if high is not None and value > high:
            return f"must be <= {high:g}, got {value!r}"
        return None


def setting(
    default: Any,
    help: str,
    section: str,
    *,
    choices: Sequence[Any] = (),
    minimum: float | None = None,
    maximum: float | None = None,
) -> Any:
    """A dataclass field with its `SettingInfo`; list and dict defaults are copied per instance."""
    info = SettingInfo(help=help, section=section, choices=tuple(choices), minimum=minimum, maximum=maximum)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={METADATA_KEY: info})
    return field(default=default, metadata={METADATA_KEY: info})


def setting_info(dataclass_field: Any) -> SettingInfo:
    """The `SettingInfo` of a field made with `setting(...)`."""
    return dataclass_field.metadata[METADATA_KEY]


def check_settings(instance: Any) -> None:
    """Check every declared field of a settings dataclass instance against its type and allowed values.

    A tuple given for a list field is stored as a list (the type the YAML and the flags give).

    Raises:
        TypeError: "<name> must be ..., got ..." for the first field of the wrong type (a string for a
            number, 2.5 for an int, "no" for a bool).
        ValueError: "<name> must be ..., got ..." for the first field out of bounds.
    """
    for f in fields(instance):
        value = getattr(instance, f.name)
        if isinstance(value, tuple) and str(f.type).startswith("list["):
            value = list(value)
            object.__setattr__(instance, f.name, value)
        wrong = type_problem(str(f.type), value)
        if wrong:
            raise TypeError(f"{f.name} {wrong}")
        problem = setting_info(f).problem(value)
        if problem:
            raise ValueError(f"{f.name} {problem}")


def type_problem(annotation: str, value: Any) -> str | None:
    """Why `value` does not have the declared type `annotation` ("int | None", "list[int]", ...), else None.

    int takes any integer but not a bool; float takes any real number but not a bool; an annotation other
    than str, bool, int, float, list[int], list[str] (with "| None") is not checked.
    """
    options = [option.strip() for option in annotation.split("|")]
    words = " or ".join(_TYPE_WORDS.get(option, option) for option in options)
    if value is None:
        return None if "None" in options else f"must be {words}, got None"
    if any(_FITS.get(option, lambda v: True)(value) for option in options if option != "None"):
        return None
    return f"must be {words}, got {value!r}"


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, (bool, np.bool_))


def _is_real(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, (bool, np.bool_))


_TYPE_WORDS = {
    "str": "a string",
    "bool": "True or False",
    "int": "an integer",
    "float": "a number",
    "list[int]": "a list of integers",
    "list[str]": "a list of strings",
}
_FITS: dict[str, Callable[[Any], bool]] = {
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, (bool, np.bool_)),
    "int": _is_int,
    "float": _is_real,
    "list[int]": lambda v: isinstance(v, list) and all(map(_is_int, v)),
    "list[str]": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
}


# Binary mask threshold of `detect`: written once, here; the mask_threshold setting (utils/config/schema.py)
# takes it as its declared default.
MASK_THRESHOLD = 0.5


@dataclass(frozen=True)
class ScoringSettings:
    """How SAM 3 outputs become maps and scores. Each field is declared once, here (see `model.settings`):
    configs/config.yaml, the CLI flags and the resume fingerprint derive from these declarations."""

    map_source: str = setting(
        "both",
        "instance | semantic | both (pixel-wise max of the two)",
        "map",
        choices=MAP_SOURCES,
    )
    prompt_aggregation: str = setting(
        "max",
        "how the maps of the prompts are combined",
        "map",
        choices=AGGREGATIONS,
    )
    object_regularisation: bool = setting(
        True,
        "segment the object noun and use it to suppress false positives",
        "map",
    )
    max_object_fraction: float = setting(
        0.7,
        "drop defect instances covering more than this fraction of the object mask",
        "map",
        minimum=0.0,
        maximum=1.0,
    )
    outside_weight: float = setting(
        0.2,
        "multiply responses outside the dilated object mask by this",
        "map",
        minimum=0.0,
        maximum=1.0,
    )
    object_dilation: float = setting(
        0.05,
        "dilation of the object mask, as a fraction of the map side",
        "map",
        minimum=0.0,
        maximum=1.0,
    )
    object_threshold: float = setting(
        DEFAULT_OBJECT_THRESHOLD,
        "object mask = object probability map >= this",
        "map",
        minimum=0.0,
        maximum=1.0,
    )
    sigma: float = setting(
        4.0,
        "Gaussian smoothing of the map, in pixels at the output size (0 = none)",
        "evaluation",
        minimum=0.0,
    )
    image_score: str = setting(
        "max",
        "how an image score is read from the map (topk_mean: mean of the topk highest pixels)",
        "evaluation",
        choices=IMAGE_SCORES,
    )
    topk: int = setting(
        DEFAULT_TOPK,
        "pixels averaged by image_score=topk_mean",
        "evaluation",
        minimum=1,
    )
    visual: str = setting(
        "none",
        "visual signal from SAM 3's patch features fused with the text map: none | fewshot (K normal "
        "references) | mutual (zero-shot, the other test images of the category)",
        "visual",
        choices=tuple(mode.value for mode in VisualMode),
    )
    visual_weight: float = setting(
        0.5,
        "final map = (1 - w) * text map + w * calibrated visual map (1 = visual alone; unused with none); "
        "image_score=instance becomes (1 - w) * best instance score + w * visual map max",
        "visual",
        minimum=0.0,
        maximum=1.0,
    )
    mutual_fraction: float = setting(
        DEFAULT_MUTUAL_FRACTION,
        "mutual: a patch's score averages its smallest this-fraction of distances to the other images",
        "visual",
        minimum=0.01,
        maximum=1.0,
    )
    box_threshold: float = setting(
        0.3,
        "detections (drawn boxes) = instances with score >= this",
        "demo",
    )
    box_nms_iou: float = setting(
        0.5,
        "one box per defect: drop boxes (of any prompt) overlapping a better one above this IoU",
        "demo",
        minimum=0.0,
        maximum=1.0,
    )

    visual_grid: int = setting(
        DEFAULT_VISUAL_GRID,
        "visual: pool the ViT patch grid to the nearest size at or above this many cells a side (real "
        "72 x 72 -> 36 x 36, MuSc's scale; a grid at or below it, e.g. the tiny 16 x 16, is not pooled)",
        "visual",
        minimum=1,
    )
    patch_pool: int | None = setting(
        None,
        "visual: explicit pooling factor of the ViT grid (1 = its own grid), overriding visual_grid; "
        "null = derived from visual_grid",
        "visual",
        minimum=1,
    )
    visual_degrees: list[int] = setting(
        list(DEFAULT_DEGREES),
        "visual: neighbourhood window sides r (odd) in cells of the pooled grid; the scores of all are "
        "averaged (an r over a third of the grid is warned about)",
        "visual",
    )
    visual_image_score: str = setting(
        PatchReading.PATCH_MAX.value,
        "visual: image score = (1 - visual_weight) * text image score + visual_weight * this reading of the "
        "visual patch map: patch_max (MuSc) | patch_top1 (mean of the top 1 % of patches, AnomalyDINO); "
        "fused_map = image_score of the fused map",
        "visual",
        choices=tuple(reading.value for reading in PatchReading),
    )
    visual_object_prior: bool = setting(
        True,
        "visual: multiply the visual map by outside_weight outside the found object, like the text map "
        "(off for parts that can be missing or misplaced: such a defect lies outside the object)",
        "visual",
    )
    mutual_partners: int | None = setting(
        None,
        "mutual: compare each image with this many seeded random others instead of all N - 1 (cost N x M "
        "instead of N^2, for categories of thousands of images); null = all",
        "visual",
        minimum=1,
    )
    mutual_rescore: bool = setting(
        True,
        "mutual: MuSc's RsCIN image re-scoring (each image score averaged with those of the images most "
        "like it, window sizes rescore_k)",
        "visual",
    )
    rescore_k: list[int] | None = setting(
        None,
        "mutual_rescore window sizes; null = MuSc's per dataset: 1,8,9 for visa, else 1,2,3 (mvtec)",
        "visual",
    )
    reference_rotations: list[int] = setting(
        [],
        "fewshot: also put the references turned by these angles (degrees, counter-clockwise) in the bank: "
        "[90, 180, 270] or AnomalyDINO's 45-degree steps; [] = none (each angle is K more encoder passes)",
        "visual",
    )

    def __post_init__(self) -> None:
        check_settings(self)
        object.__setattr__(self, "visual", VisualMode(self.visual))  # a str enum: "mutual" == MUTUAL
        check_degrees(self.visual_degrees)
        if self.rescore_k is not None and (not self.rescore_k or min(self.rescore_k) < 1):
            raise ValueError(f"rescore_k must be window sizes >= 1 (e.g. [1, 2, 3]), got {self.rescore_k}")
        turns = self.reference_rotations
        if any(a % 360 == 0 for a in turns) or len({a % 360 for a in turns}) != len(turns):
            raise ValueError(
                f"reference_rotations must be distinct angles that turn the image (e.g. [90, 180, 270]), "
                f"got {turns}"
            )
