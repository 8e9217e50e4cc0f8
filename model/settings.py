"""Declaring a setting once: default, allowed values, help, section, flags and whether it changes scores.

Every setting of the project is a dataclass field made with `setting(...)`. The `SettingInfo` it carries in
the field's metadata is what `utils/config/schema.py` reads to build the CLI flags, validate values, sort the
keys for the resume fingerprint and write the README's config table. It lives in model/ so that
`model.detector.ScoringSettings` declares its own fields without importing utils/.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

# The scripts a setting can be a flag of.
SCRIPTS: tuple[str, ...] = ("test", "demo", "train")
EVAL_SCRIPTS: tuple[str, ...] = ("test", "demo")  # the scripts that score images
# How a setting enters the resume fingerprint (utils/evaluation/store.py).
FINGERPRINT_MODES: tuple[str, ...] = ("value", "identity")
# How train.py --resume treats a setting training reads: refuse a change, or apply the new value.
RESUME_MODES: tuple[str, ...] = ("fixed", "changeable")
METADATA_KEY = "setting"


@dataclass(frozen=True)
class SettingInfo:
    """What is known about one setting besides its name, type and default.

    fingerprint: "value" (its value changes maps or scores), "identity" (what it names does: a folder, a
    file, a device kind) or None, and then `not_fingerprinted` says why it cannot change a stored result.
    resume: for settings training reads, how `train.py --resume` treats a changed value: "fixed" (it defines
    the trained tensors or their data: refused) or "changeable" (applied from the next epoch); None otherwise.
    """

    help: str
    section: str
    choices: tuple[Any, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    fingerprint: str | None = None
    not_fingerprinted: str = ""
    scripts: tuple[str, ...] = ()
    resume: str | None = None

    def __post_init__(self) -> None:
        if (self.fingerprint is None) == (not self.not_fingerprinted):
            raise ValueError(
                "declare a setting either fingerprint='value'/'identity' or not_fingerprinted=why"
            )
        if self.fingerprint is not None and self.fingerprint not in FINGERPRINT_MODES:
            raise ValueError(f"fingerprint must be one of {', '.join(FINGERPRINT_MODES)}")
        if self.resume is not None and self.resume not in RESUME_MODES:
            raise ValueError(f"resume must be one of {', '.join(RESUME_MODES)}")
        unknown = set(self.scripts) - set(SCRIPTS)
        if unknown:
            raise ValueError(f"unknown scripts {sorted(unknown)}: use {', '.join(SCRIPTS)}")

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
    fingerprint: str | None = None,
    not_fingerprinted: str = "",
    scripts: Sequence[str] = (),
    resume: str | None = None,
) -> Any:
    """A dataclass field with its `SettingInfo`; list and dict defaults are copied per instance."""
    info = SettingInfo(
        help=help,
        section=section,
        choices=tuple(choices),
        minimum=minimum,
        maximum=maximum,
        fingerprint=fingerprint,
        not_fingerprinted=not_fingerprinted,
        scripts=tuple(scripts),
        resume=resume,
    )
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={METADATA_KEY: info})
    return field(default=default, metadata={METADATA_KEY: info})


def setting_info(dataclass_field: Any) -> SettingInfo:
    """The `SettingInfo` of a field made with `setting(...)`."""
    return dataclass_field.metadata[METADATA_KEY]


def check_settings(instance: Any) -> None:
    """Check every declared field of a settings dataclass instance against its allowed values.

    Raises:
        ValueError: "<name> must be ..., got ..." for the first field out of bounds.
    """
    for f in fields(instance):
        problem = setting_info(f).problem(getattr(instance, f.name))
        if problem:
            raise ValueError(f"{f.name} {problem}")
