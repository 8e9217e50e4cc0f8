"""Declaring a setting once: default, allowed values, help and the section it is listed under.

Every setting of the project is a dataclass field made with `setting(...)`. The `SettingInfo` it carries in
the field's metadata is what `utils/config/schema.py` reads to build the CLI flags, validate values and
write the generated configs/config.yaml and settings table. It lives in model/ so that
`model.detector.ScoringSettings` declares its own fields without importing utils/. What the scripts do with
a setting (which take it as a flag, whether it changes stored scores, how train.py --resume treats it) is
their policy, not the model's: utils/config/policy.py.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

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
    """Check every declared field of a settings dataclass instance against its allowed values.

    Raises:
        ValueError: "<name> must be ..., got ..." for the first field out of bounds.
    """
    for f in fields(instance):
        problem = setting_info(f).problem(getattr(instance, f.name))
        if problem:
            raise ValueError(f"{f.name} {problem}")
