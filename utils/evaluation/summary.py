"""demo.py's `summary.csv`: one row per image written, and the line naming what a folder run skipped.

    image,score,verdict,mask_pixels,boxes,verdict_by
    crack_003.png,0.412,anomalous,1834,2,score >= 0.385 (image_f1_threshold of bottle in thresholds.json)

- `image`: the input's file name; `score`: the image score; `mask_pixels`: pixels of the written mask
  (map >= the mask threshold); `boxes`: boxes in the `_boxes.png` picture and the JSON.
- `verdict` (`anomalous` / `normal`) and `verdict_by`, the rule that gave it: with a decided image threshold
  (the category's `image_f1_threshold` in a thresholds.json of test.py, as the app's verdict), score >= it;
  without one, whether the mask has any pixel (the map reaches the mask threshold somewhere).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dataset import short_list
from model.detector import AnomalyResult
from utils.evaluation.thresholds import IMAGE_THRESHOLD, read_thresholds
from utils.files import atomic_write_text

SUMMARY_FILE = "summary.csv"
SUMMARY_COLUMNS: tuple[str, ...] = ("image", "score", "verdict", "mask_pixels", "boxes", "verdict_by")


@dataclass(frozen=True)
class VerdictRule:
    """How an image is called anomalous: score >= `image_threshold` when it is set, else any mask pixel.

    `source`: where the threshold came from (`image_f1_threshold of bottle in FILE`) or the mask threshold's
    description; written in the `verdict_by` column.
    """

    image_threshold: float | None
    source: str

    def verdict(self, score: float, mask_pixels: int) -> str:
        anomalous = score >= self.image_threshold if self.image_threshold is not None else mask_pixels > 0
        return "anomalous" if anomalous else "normal"

    def describe(self) -> str:
        if self.image_threshold is None:
            return f"mask pixels > 0 ({self.source})"
        return f"score >= {self.image_threshold:.4g} ({self.source})"


def verdict_rule(
    thresholds: str | None, category: str | None, mask_threshold: float, mask_source: str
) -> VerdictRule:
    """The rule of this run: the category's image_f1_threshold of `thresholds` (a thresholds.json, read by
    the one reader `read_thresholds`) when it has one, else any mask pixel at `mask_threshold`.

    Raises:
        ConfigError: see `utils.evaluation.thresholds.read_thresholds`.
    """
    if thresholds:
        checked = read_thresholds(thresholds)
        name = checked.category(category)
        value = checked.image_threshold(name)
        if value is not None:
            return VerdictRule(value, f"{IMAGE_THRESHOLD} of {name} in {checked.path}")
    return VerdictRule(None, f"map >= {mask_threshold:.4g}, {mask_source}")


def summary_row(image: str, result: AnomalyResult, rule: VerdictRule) -> dict[str, Any]:
    """One row of summary.csv (SUMMARY_COLUMNS) for an image whose outputs were written."""
    pixels = int(result.mask.sum())
    return {
        "image": image,
        "score": f"{result.image_score:.6g}",
        "verdict": rule.verdict(result.image_score, pixels),
        "mask_pixels": pixels,
        "boxes": len(result.detections),
        "verdict_by": rule.describe(),
    }


def write_summary(out: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Write `out/summary.csv` (header SUMMARY_COLUMNS, one row per image, in input order); return it."""
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path = out / SUMMARY_FILE
    atomic_write_text(path, table.getvalue())
    return path


def skipped_line(folder: Path, images: Sequence[Path], extensions: Sequence[str]) -> str | None:
    """One line naming the entries of `folder` that are not among `images` (not read: other files,
    hidden files, sub-folders with a trailing `/`), or None when there are none."""
    taken = {p.name for p in images}
    others = sorted(f"{p.name}/" if p.is_dir() else p.name for p in folder.iterdir() if p.name not in taken)
    if not others:
        return None
    return (
        f"skipped {len(others)} entr{'y' if len(others) == 1 else 'ies'} of {folder} that "
        f"{'is' if len(others) == 1 else 'are'} not images ({', '.join(sorted(extensions))}, not recursive): "
        f"{short_list(others, 10)}"
    )
