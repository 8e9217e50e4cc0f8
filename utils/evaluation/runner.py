"""Evaluate every category of a dataset with a scorer: per-category store, curves, pictures, results files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dataset import ImageDataset, load_dataset, select_categories
from utils.distributed import SINGLE, Dist
from utils.evaluation.exports import export_category
from utils.evaluation.fingerprint import fingerprint_settings
from utils.evaluation.loop import Scorer, evaluate_category
from utils.evaluation.metrics import image_curves, pixel_curves
from utils.evaluation.references import draw_references
from utils.evaluation.results import write_results
from utils.evaluation.store import CategoryResult
from utils.evaluation.visualization import pick_for_visualization, save_curves, save_overlay
from utils.run_log import get_logger
from utils.run_record import RunRecord

log = get_logger(__name__)


def visualize_category(samples: ImageDataset, result: CategoryResult, vis_dir: Path, count: int) -> None:
    """Overlays for the worst false negatives and false positives of one category."""
    vis_dir.mkdir(parents=True, exist_ok=True)
    for index in pick_for_visualization(result.labels, result.scores, count):
        sample = samples[index]
        name = f"{sample.defect_type}_{Path(sample.image_path).stem}.png"
        title = f"{sample.defect_type}  score {result.scores[index]:.3f}"
        save_overlay(vis_dir / name, sample.image, result.maps[index].astype("float32"), title, sample.mask)


def evaluate(
    cfg: dict[str, Any],
    scorer: Scorer,
    progress: bool = True,
    categories: Sequence[str] | None = None,
    record: RunRecord | None = None,
    dist: Dist = SINGLE,
) -> dict[str, dict[str, float]]:
    """Evaluate every category of cfg with `scorer`, writing results into cfg["output_dir"] as it goes.

    `categories`: as returned by `select_categories` for cfg (None: selected here). `record` collects the
    "run" section of results.json (None: a new one, whose wall time starts now). Returns
    {category: {metric: value}} (NaN for undefined metrics). Under torchrun (`dist`) every rank scores its
    share of each category; only rank 0 writes (store, exports, curves, results) and returns the metrics.
    """
    if categories is None:
        categories = select_categories(cfg["dataset"], cfg["dataset_path"], cfg["categories"])
    record = record if record is not None else RunRecord(cfg["device"])
    out = Path(cfg["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    fingerprint = fingerprint_settings(cfg)
    per_category: dict[str, dict[str, float]] = {}
    visual = visual_section(cfg)
    for category in categories:
        samples = load_dataset(cfg["dataset"], cfg["dataset_path"], category, "test")
        references: list[str] = []
        if cfg["visual"] == "fewshot":  # drawn here once: recorded in results.json and given to the scorer
            references = visual["references"][category] = draw_references(cfg, category)
        result = evaluate_category(
            samples,
            scorer,
            category,
            out / "categories" / category,
            eval_size=cfg["eval_size"],
            batch_size=cfg["batch_size"],
            fingerprint=fingerprint,
            aupro_variant=cfg["aupro_variant"],
            references=references,
            whole_category=cfg["visual"] == "mutual",
            progress=progress,
            dist=dist,
        )
        if result is None:  # not rank 0: rank 0 writes everything
            continue
        per_category[category] = result.metrics
        export_category(out, cfg, category, samples.records, result)  # per_image.csv, thresholds, TIFFs
        log_category(category, record.add_category(category, len(samples), result.scored, result.seconds))
        (out / "curves").mkdir(exist_ok=True)
        curves = {
            "image": image_curves(result.labels, result.scores),
            "pixel": pixel_curves(result.masks, result.maps, pixels=result.pixels),
        }
        save_curves(out / "curves" / category, curves, category)
        if cfg["visualize"]:
            visualize_category(samples, result, out / "vis" / category, cfg["num_visualize"])
        shown = visual if cfg["visual"] != "none" else None
        write_results(out, cfg["dataset"], per_category, cfg, record.to_json(), shown)
    return per_category


def visual_section(cfg: dict[str, Any]) -> dict[str, Any]:
    """results.json's "visual" section: the mode and what it saw (few-shot: shots, seed, reference paths).

    With several seeds (cfg["shot_seeds"]): shots and the seeds; the references are in each seed's folder.
    """
    section: dict[str, Any] = {"mode": cfg["visual"]}
    if cfg["visual"] != "none":
        section["weight"] = cfg["visual_weight"]
    if cfg["visual"] == "fewshot" and cfg.get("shot_seeds"):  # a mean of runs: utils/evaluation/seeds.py
        section.update(shots=cfg["shots"], seeds=list(cfg["shot_seeds"]))
    elif cfg["visual"] == "fewshot":
        section.update(shots=cfg["shots"], seed=cfg["shot_seed"], references={})
    if cfg["visual"] == "mutual":
        section["fraction"] = cfg["mutual_fraction"]
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
