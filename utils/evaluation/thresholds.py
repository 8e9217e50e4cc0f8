"""Per-category thresholds from an evaluation (thresholds.json) and picking one for the demo and the app.

test.py writes `<output_dir>/thresholds.json`:

    {"dataset": "mvtec", "split": "test", "eval_size": 256, "normal_quantile": 0.995, "used_by_demo": ...,
     "categories": {"bottle": {"image_f1_threshold": ..., "image_f1_max": ..., "pixel_f1_threshold": ...,
                               "pixel_f1_max": ..., "pixel_normal_threshold": ..., "n_images": ...,
                               "n_good": ...}, ...}}

- `*_f1_threshold`: the score t at which "score >= t" reaches the F1-max that metrics.json reports (image
  scores, and pixels of the stored maps); chosen with the defect labels of the evaluated split.
- `pixel_normal_threshold`: the `normal_quantile` quantile of the good images' pixel scores: needs no defect
  label (a fraction 1 - q of normal pixels lies at or above it).
A value that cannot be computed (no good or no defective image) is null. demo.py and app.py use
`pixel_normal_threshold` (USED_BY_DEMO) as the binary-mask threshold of the category.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from utils.config.loading import ConfigError
from utils.evaluation.metrics import f1_max_thresholds
from utils.evaluation.store import CategoryResult
from utils.files import atomic_write_text

NORMAL_QUANTILE = 0.995  # of the good images' pixel scores
USED_BY_DEMO = "pixel_normal_threshold"
THRESHOLDS_FILE = "thresholds.json"


def normal_pixel_threshold(maps: np.ndarray, labels: np.ndarray, quantile: float = NORMAL_QUANTILE) -> float:
    """The `quantile` quantile (linear interpolation) of the pixel scores of the good images; NaN without one.

    Args:
        maps: (N, H, W) float16/float32 anomaly maps (a memmap is read image by image).
        labels: (N,) 0 = good, 1 = anomalous.
    """
    good = np.flatnonzero(np.asarray(labels) == 0)
    if good.size == 0:
        return math.nan
    pixels = np.concatenate([np.asarray(maps[i], dtype=np.float32).ravel() for i in good])
    return float(np.quantile(pixels, quantile))


def category_thresholds(result: CategoryResult, quantile: float = NORMAL_QUANTILE) -> dict[str, Any]:
    """One category's entry of thresholds.json (see the module docstring); NaN where undefined."""
    f1 = f1_max_thresholds(result.labels, result.scores, result.masks, result.maps, pixels=result.pixels)
    return {
        "image_f1_threshold": f1["image_threshold"],
        "image_f1_max": f1["image_f1_max"],
        "pixel_f1_threshold": f1["pixel_threshold"],
        "pixel_f1_max": f1["pixel_f1_max"],
        "pixel_normal_threshold": normal_pixel_threshold(result.maps, result.labels, quantile),
        "n_images": int(result.labels.size),
        "n_good": int(np.count_nonzero(result.labels == 0)),
    }


def update_thresholds(
    out: Path, category: str, entry: dict[str, Any], dataset: str, eval_size: int, split: str = "test"
) -> Path:
    """Add or replace `category` in `<out>/thresholds.json`, keeping the other categories; NaN -> null."""
    path = out / THRESHOLDS_FILE
    doc: dict[str, Any] = {"categories": {}}
    if path.is_file():
        try:
            doc = json.loads(path.read_text())
        except ValueError:
            doc = {"categories": {}}  # unreadable: rebuilt from the categories of this run
    doc.update(
        dataset=dataset,
        split=split,
        eval_size=eval_size,
        normal_quantile=NORMAL_QUANTILE,
        used_by_demo=USED_BY_DEMO,
    )
    clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in entry.items()}
    doc.setdefault("categories", {})[category] = clean
    atomic_write_text(path, json.dumps(doc, indent=2))
    return path


IMAGE_THRESHOLD = "image_f1_threshold"  # what the app's verdict compares an image score with
REWRITE = "rerun test.py to rewrite it (it writes <output_dir>/thresholds.json)"


@dataclass(frozen=True)
class Thresholds:
    """A checked thresholds.json: `categories` maps each category to its entry, every threshold in it a
    finite float or None (null: undefined for that category). Read with `read_thresholds`."""

    path: Path
    categories: dict[str, dict[str, float | None]]
    eval_size: int | None = None  # the side of the maps the thresholds were computed on (None: not said)

    def check_map_size(self, eval_size: int) -> None:
        """Refuse maps of another side than the thresholds were computed on (their values differ).

        Raises:
            ConfigError: the file names another eval_size; the message says which to pass.
        """
        if self.eval_size is not None and self.eval_size != eval_size:
            raise ConfigError(
                f"{self.path} holds thresholds of maps at eval_size {self.eval_size}, but this run scores at "
                f"{eval_size}: pass --eval_size {self.eval_size} (or set the mask threshold by hand)"
            )

    def category(self, category: str | None, how_to_pick: str = "pass --category") -> str:
        """`category`, or the only category of the file when `category` is None and it holds one.

        Raises:
            ConfigError: no such category; the message lists the file's and says `how_to_pick` one.
        """
        if category is None and len(self.categories) == 1:
            return next(iter(self.categories))
        if category is None and self.categories:
            names = ", ".join(sorted(self.categories))
            raise ConfigError(
                f"{self.path} holds {len(self.categories)} categories: {how_to_pick} one of {names}"
            )
        if category not in self.categories:
            names = ", ".join(sorted(self.categories)) or "none"
            raise ConfigError(f"{self.path} has no category {category!r}: {how_to_pick} one of {names}")
        return category

    def mask_threshold(self, category: str, instead: str = "set --mask_threshold instead") -> float:
        """The category's binary-mask threshold (USED_BY_DEMO).

        Raises:
            ConfigError: the category has none (no good test image); the message ends with `instead`.
        """
        value = self.categories[category].get(USED_BY_DEMO)
        if value is None:
            raise ConfigError(
                f"{self.path}: {category} has no {USED_BY_DEMO} (no good test image): {instead}"
            )
        return value

    def image_threshold(self, category: str) -> float | None:
        """The category's image_f1_threshold; None when it has none (no defect test image)."""
        return self.categories[category].get(IMAGE_THRESHOLD)

    def source(self, category: str, key: str = USED_BY_DEMO) -> str:
        """Where a threshold comes from, for a person: "pixel_normal_threshold of category bottle in FILE"."""
        return f"{key} of category {category} in {self.path}"


def read_thresholds(path: str | Path) -> Thresholds:
    """Read and check a thresholds.json written by test.py (the one reader of demo.py and app.py).

    Raises:
        ConfigError: one line naming the file, what is wrong and what to do: no such file, not JSON, no
            "categories" mapping (e.g. a list), an entry that is not a mapping, or a threshold that is
            neither null nor a finite number (NaN, a string, a list, true).
    """
    path = Path(path).expanduser()
    try:
        doc = json.loads(path.read_text(encoding="utf-8-sig"))  # a BOM (some Windows editors) is fine
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (test.py writes <output_dir>/{THRESHOLDS_FILE})") from None
    except (ValueError, OSError, RecursionError) as err:  # RecursionError: nesting deeper than JSON decodes
        raise ConfigError(f"{path}: not a thresholds.json written by test.py ({err}): {REWRITE}") from None
    categories = doc.get("categories") if isinstance(doc, dict) else None
    if not isinstance(categories, dict):
        what = 'no "categories"' if categories is None else f'"categories" is a {type(categories).__name__}'
        raise ConfigError(f"{path}: {what}, not a mapping of category names to thresholds: {REWRITE}")
    checked = {}
    for name, entry in categories.items():
        if not isinstance(entry, dict):
            raise ConfigError(
                f"{path}: the entry of {name} is a {type(entry).__name__}, not a mapping: {REWRITE}"
            )
        checked[name] = {key: _threshold(path, name, key, value) for key, value in entry.items()}
    size = doc.get("eval_size")
    valid = isinstance(size, int) and not isinstance(size, bool) and size > 0
    return Thresholds(path, checked, size if valid else None)


def _threshold(path: Path, category: str, key: str, value: Any) -> Any:
    """A `*_threshold` value as a float (None kept); other keys (counts, F1 values) as they are."""
    if not key.endswith("_threshold") or value is None:
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(
            f"{path}: {category} has {key} {value!r}, not a finite number: {REWRITE}, "
            "or set the threshold by hand instead"
        )
    return float(value)


def mask_threshold_from(path: str | Path, category: str | None) -> float:
    """The binary-mask threshold (USED_BY_DEMO) of `category` in a thresholds.json written by test.py.

    Without a category, a file holding exactly one category gives that one.

    Raises:
        ConfigError: see `read_thresholds`, `Thresholds.category` and `Thresholds.mask_threshold`.
    """
    thresholds = read_thresholds(path)
    return thresholds.mask_threshold(thresholds.category(category))


def chosen_mask_threshold(
    thresholds: str | None, mask_threshold: float, category: str | None, flag_given: bool, eval_size: int
) -> tuple[float, str]:
    """The demo's binary-mask threshold and where it came from (recorded beside the masks it made).

    `thresholds` (a thresholds.json) wins over `mask_threshold`; `flag_given` says whether
    --mask_threshold was on the command line (else the value is the config's). `eval_size`: the side of
    the maps the demo scores, which must be the file's (`Thresholds.check_map_size`).

    Raises:
        ConfigError: see `read_thresholds` and `Thresholds.check_map_size`.
    """
    if thresholds:
        checked = read_thresholds(thresholds)
        checked.check_map_size(eval_size)
        name = checked.category(category)
        which = f"category {category}" if category else "its only category"
        return checked.mask_threshold(name), f"{USED_BY_DEMO} of {which} in {checked.path}"
    return mask_threshold, "--mask_threshold" if flag_given else "mask_threshold of the config"
