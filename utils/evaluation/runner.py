"""Evaluate every category of a dataset with a scorer: per-category store, curves, pictures, results files."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dataset import ImageDataset, select_categories
from dataset.records import images_folder
from model.visual import VisualMode
from utils.config.schema import Config
from utils.distributed import SINGLE, Dist
from utils.evaluation.benchmark_hooks import (
    category_extras,
    category_signals,
    is_unlabelled,
    score_submission,
    score_threshold_split,
    scorer_detector,
    split_to_score,
)
from utils.evaluation.exports import export_category
from utils.evaluation.fingerprint import fingerprint_settings
from utils.evaluation.loop import EvaluationSpec, Scorer, evaluate_category
from utils.evaluation.metrics import image_curves, pixel_curves
from utils.evaluation.references import draw_references
from utils.evaluation.results import prompt_record, write_results
from utils.evaluation.visualization import save_curves, visualize_category
from utils.files import check_outside
from utils.run_log import get_logger
from utils.run_record import RunRecord

log = get_logger(__name__)


def evaluate(
    cfg: Config,
    scorer: Scorer,
    progress: bool = True,
    categories: Sequence[str] | None = None,
    record: RunRecord | None = None,
    dist: Dist = SINGLE,
) -> dict[str, dict[str, float]]:
    """Evaluate every category of cfg with `scorer`, writing results into cfg.evaluation.output_dir.

    `categories`: as returned by `select_categories` for cfg (None: selected here). `record` collects the
    "run" section of results.json (None: a new one, whose wall time starts now). Returns
    {category: {metric: value}} (NaN for undefined metrics). Under torchrun (`dist`) every rank scores its
    share of each category; only rank 0 writes (store, exports, curves, results) and returns the metrics.
    """
    if categories is None:
        categories = select_categories(cfg.data.dataset, cfg.data.dataset_path, cfg.data.categories)
    record = record if record is not None else RunRecord(cfg.model.device, cfg.model.dtype)
    out = Path(cfg.evaluation.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    flat = cfg.to_dict()  # what results.json records and the fingerprint compares
    fingerprint = fingerprint_settings(flat)
    per_category: dict[str, dict[str, float]] = {}
    extra: dict[str, dict[str, float]] = {}  # a set's own metrics (utils/evaluation/benchmark_hooks.py)
    signals: dict[str, dict[str, dict[str, float]]] = {}  # {category: {"text"/"visual": metrics}}
    visual = visual_section(cfg)
    prompts: dict[str, dict[str, Any]] = {}  # results.json "prompts": what each category was scored with
    for category in categories:
        samples = split_to_score(cfg, category)
        check_outside(out, images_folder(samples.records), f"the images of {category}")
        references: list[str] = []
        if cfg.scoring.visual is VisualMode.FEWSHOT:  # drawn once: in results.json and given to the scorer
            references = visual["references"][category] = draw_references(cfg, category)
        spec = category_spec(cfg, scorer, category, fingerprint, references, progress, dist)

        def score(split: ImageDataset, cat_dir: Path, native: bool, spec: EvaluationSpec = spec):
            return evaluate_category(split, dataclasses.replace(spec, native=native), cat_dir)

        threshold = score_threshold_split(cfg, category, out, score)  # MVTec AD 2 only; every rank
        result = score(samples, out / "categories" / category, spec.native)
        score_submission(cfg, category, out, score, threshold)  # --ad2_submission only; every rank
        if result is None:  # not rank 0: rank 0 writes everything
            continue
        per_category[category] = result.metrics
        if hasattr(scorer, "prompts_of"):  # utils.pipeline.CategoryScorer; test stubs may have none
            prompts[category] = prompt_record(*scorer.prompts_of(category))
        log_category(category, record.add_category(category, len(samples), result.scored, result.seconds))
        extra[category] = category_extras(
            out, cfg, category, samples, result, threshold, scorer_detector(scorer)
        )
        if is_unlabelled(samples.records):  # no labels: no thresholds, curves or overlays
            write_results(out, cfg.data.dataset, per_category, flat, record.to_json(), None, prompts=prompts)
            continue
        thresholds = export_category(out, cfg, category, samples.records, result)  # per_image.csv, TIFFs
        alone = category_signals(out, cfg, category, samples, result)
        if alone is not None:  # a visual mode: the text map alone and the visual map alone
            signals[category] = alone
        (out / "curves").mkdir(exist_ok=True)
        curves = {
            "image": image_curves(result.labels, result.scores),
            "pixel": pixel_curves(result.masks, result.maps, pixels=result.pixels),
        }
        save_curves(out / "curves" / category, curves, category, result.metrics)
        if cfg.evaluation.visualize:
            decided = thresholds["image_f1_threshold"]  # fn/fp in vis/ names: misclassified at this one
            visualize_category(samples, result, out / "vis" / category, cfg.evaluation.num_visualize, decided)
        shown = visual if cfg.scoring.visual is not VisualMode.NONE else None
        write_results(
            out,
            cfg.data.dataset,
            per_category,
            flat,
            record.to_json(),
            shown,
            extra=extra,
            prompts=prompts,
            signals=signals,
        )
    return per_category


def category_spec(
    cfg: Config,
    scorer: Scorer,
    category: str,
    fingerprint: dict[str, Any],
    references: Sequence[str],
    progress: bool,
    dist: Dist,
) -> EvaluationSpec:
    """How every split of `category` is scored and measured under cfg (utils/evaluation/loop.py)."""
    return EvaluationSpec(
        scorer=scorer,
        category=category,
        eval_size=cfg.evaluation.eval_size,
        batch_size=cfg.model.batch_size,
        fingerprint=fingerprint,
        aupro_variant=cfg.evaluation.aupro_variant,
        references=references,
        whole_category=cfg.scoring.visual == "mutual",
        native=cfg.evaluation.metrics_resolution == "native",
        progress=progress,
        dist=dist,
    )


def visual_section(cfg: Config) -> dict[str, Any]:
    """results.json's "visual" section: the mode and what it saw (few-shot: shots, seed, reference paths).

    With several seeds (cfg.fewshot.shot_seeds): shots and the seeds; each seed's folder has its references.
    """
    section: dict[str, Any] = {"mode": cfg.scoring.visual.value}
    if cfg.scoring.visual is not VisualMode.NONE:
        section["weight"] = cfg.scoring.visual_weight
    fewshot = cfg.scoring.visual is VisualMode.FEWSHOT
    if fewshot and cfg.fewshot.shot_seeds:  # a mean of runs: utils/evaluation/seeds.py
        section.update(shots=cfg.fewshot.shots, seeds=list(cfg.fewshot.shot_seeds))
    elif fewshot:
        section.update(shots=cfg.fewshot.shots, seed=cfg.fewshot.shot_seed, references={})
    if cfg.scoring.visual is VisualMode.MUTUAL:
        section["fraction"] = cfg.scoring.mutual_fraction
    return section


def log_category(category: str, entry: dict[str, Any]) -> None:
    """One progress line per category: how many images were scored now, how fast, and how many were stored."""
    stored = entry["images"] - entry["scored"]
    if not entry["scored"]:
        log.info(f"{category}: all {entry['images']} images from an earlier run")
        return
    speed = f"{entry['images_per_s']:.2f} images/s" if entry["images_per_s"] is not None else "-"
    resumed = f"; {stored} from an earlier run" if stored else ""
    log.info(f"{category}: {entry['scored']} images scored in {entry['seconds']:.1f} s ({speed}){resumed}")
