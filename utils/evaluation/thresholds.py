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


def mask_threshold_from(path: str | Path, category: str | None) -> float:
    """The binary-mask threshold (USED_BY_DEMO) of `category` in a thresholds.json written by test.py.

    Without a category, a file holding exactly one category gives that one.

    Raises:
        ConfigError: unreadable file, no such category (the message lists the file's categories), or a
            null threshold (the category had no good image).
    """
    path = Path(path).expanduser()
    try:
        categories = json.loads(path.read_text())["categories"]
    except FileNotFoundError:
        raise ConfigError(
            f"--thresholds {path}: no such file (test.py writes <output_dir>/thresholds.json)"
        ) from None
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"--thresholds {path}: not a thresholds.json written by test.py ({err})") from None
    if category is None and len(categories) == 1:
        category = next(iter(categories))
    if category not in categories:
        names = ", ".join(sorted(categories)) or "none"
        raise ConfigError(f"--thresholds {path} has no category {category!r}: pass --category one of {names}")
    value = categories[category].get(USED_BY_DEMO)
    if value is None:
        raise ConfigError(
            f"--thresholds {path}: {category} has no {USED_BY_DEMO} (no good test image): "
            "set --mask_threshold instead"
        )
    return float(value)
