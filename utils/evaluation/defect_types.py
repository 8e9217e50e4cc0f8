"""Defect-type report: which defect does SAM 3 say it found, against the dataset's defect folder?

SAM 3 answers with the prompt that found each region. With a per-category vocabulary (prompt strategy
category, mixed or contextual), each phrase names a defect folder of the dataset (`model.prompts
.DEFECT_FOLDERS`: MVTec AD, MPDD, MVTec LOCO's two types). For each anomalous test image the predicted type
is the folder named by the prompt whose instances best cover the ground-truth region: the largest fraction
of ground-truth pixels inside the union of that prompt's instance masks, ties broken by the higher IoU, then
by prompt order. A prompt that names no folder, or no instance touching the ground truth, predicts
"none". This uses the vocabularies' prior knowledge of the defect names (model/prompts.py docstring).

Outputs per category: `categories/<category>/defect_types.csv` (confusion matrix: one row per true
folder, one column per predicted folder and "none"), and the accuracy (correct / anomalous images) in
results.json ("defect_types") and results.md.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from dataset import Sample
from model.detector import AnomalyDetector, Detection
from model.prompts import prompt_defect_folders
from utils.config.schema import Config
from utils.pipeline import prompts_for

NONE = "none"
REPORTED_DATASETS: tuple[str, ...] = ("mvtec", "mpdd", "mvtec_loco")
VOCABULARY_STRATEGIES: tuple[str, ...] = ("category", "mixed", "contextual")


def best_prompt(detections: Sequence[Detection], gt: np.ndarray) -> str | None:
    """The prompt whose instances best cover `gt` (module docstring); None when no instance touches it.

    detections: each with an (H, W) bool `mask`; gt: (H, W) bool ground truth of the same size.
    """
    unions: dict[str, np.ndarray] = {}
    for det in detections:
        if det.mask is None:
            raise ValueError(
                f"detection of {det.prompt!r} has no instance mask: detect with instance_masks=True"
            )
        unions[det.prompt] = unions.get(det.prompt, np.zeros_like(gt)) | det.mask
    area = max(int(gt.sum()), 1)
    best, best_key = None, (0.0, 0.0)
    for prompt, union in unions.items():
        hit = int(np.count_nonzero(union & gt))
        key = (hit / area, hit / max(int(np.count_nonzero(union | gt)), 1))
        if hit and key > best_key:
            best, best_key = prompt, key
    return best


def predicted_type(detections: Sequence[Detection], gt: np.ndarray, folders: Mapping[str, str]) -> str:
    """The defect folder named by `best_prompt` (`folders`: prompt -> folder), or NONE."""
    prompt = best_prompt(detections, gt)
    return folders.get(prompt, NONE) if prompt is not None else NONE


@dataclass
class TypeReport:
    """True and predicted defect folders of one category's anomalous images, in evaluation order."""

    true: list[str]
    predicted: list[str]

    @property
    def accuracy(self) -> float:
        """Fraction of images whose predicted folder is the true one (NaN without images)."""
        if not self.true:
            return float("nan")
        return sum(t == p for t, p in zip(self.true, self.predicted, strict=True)) / len(self.true)

    def matrix(self) -> tuple[list[str], list[str], np.ndarray]:
        """(rows: true folders sorted, columns: those plus other predictions and NONE last, counts (R, C))."""
        rows = sorted(set(self.true))
        cols = rows + sorted(set(self.predicted) - set(rows) - {NONE}) + [NONE]
        counts = np.zeros((len(rows), len(cols)), dtype=np.int64)
        for t, p in zip(self.true, self.predicted, strict=True):
            counts[rows.index(t), cols.index(p)] += 1
        return rows, cols, counts

    def csv_text(self) -> str:
        """The confusion matrix as CSV: header `true \\ predicted,<cols...>`, one row per true folder."""
        rows, cols, counts = self.matrix()
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["true \\ predicted", *cols])
        for name, line in zip(rows, counts, strict=True):
            writer.writerow([name, *(int(v) for v in line)])
        return buffer.getvalue()


def reports_defect_types(dataset: str, strategy: str) -> bool:
    """True when `dataset`'s folders name defects and `strategy` has per-category vocabularies."""
    return dataset in REPORTED_DATASETS and strategy in VOCABULARY_STRATEGIES


def category_type_report(
    detector: AnomalyDetector, cfg: Config, samples: Sequence[Sample], category: str
) -> TypeReport:
    """Detect with instance masks on the anomalous `samples` (cfg.model.batch_size at a time, each image at
    its own size) and compare `predicted_type` with each image's defect folder (`Sample.defect_type`)."""
    prompts, _ = prompts_for(cfg, category)
    folders = prompt_defect_folders(category, prompts)
    anomalous = [i for i, record in enumerate(getattr(samples, "records", samples)) if record.label == 1]
    report = TypeReport([], [])
    step = max(1, cfg.model.batch_size)
    for start in range(0, len(anomalous), step):
        batch = [samples[i] for i in anomalous[start : start + step]]
        results = detector.detect(
            [s.image for s in batch],
            category,
            prompts,
            texture_categories=cfg.data.texture_categories,
            instance_masks=True,
        )
        for sample, result in zip(batch, results, strict=True):
            report.true.append(sample.defect_type)
            report.predicted.append(predicted_type(result.detections, sample.mask, folders))
    return report
