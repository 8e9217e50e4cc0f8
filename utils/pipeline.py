"""Build the SAM 3 anomaly detector and the prompts for a category from a resolved config."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from dataset import DatasetError, Sample
from model import Sam3Engine
from model.detector import AnomalyDetector, ScoringSettings
from model.prompts import build_prompts, object_prompt
from utils.evaluation.references import draw_references
from utils.evaluation.store import Scorer
from utils.training.checkpoint import apply_checkpoint, load_checkpoint


def build_detector(cfg: Mapping[str, Any]) -> tuple[AnomalyDetector, list[str]]:
    """Load SAM 3 from cfg["model_path"] (and cfg["checkpoint"] if set) with the scoring settings of `cfg`.

    Returns the detector and the names of the learned concepts it can score (empty when zero-shot). The
    checkpoint is read first, so a bad one fails in seconds, not after loading a 3 GB model.
    """
    ckpt = load_checkpoint(cfg["checkpoint"]) if cfg["checkpoint"] else None
    detector = AnomalyDetector.from_pretrained(
        cfg["model_path"],
        device=cfg["device"],
        dtype=cfg["dtype"],
        settings=ScoringSettings.from_config(cfg),
        chunk_size=cfg["chunk_size"],
    )
    if ckpt is None:
        return detector, []
    bank = apply_checkpoint(ckpt, detector.engine)

    def learned_text(engine: Sam3Engine, features: Any, prompts: Sequence[str]) -> Iterator[Any]:
        return engine.predict_text(features, bank.text_for_prompts(engine, prompts))

    detector.text_override = learned_text
    return detector, bank.names


def prompts_for(
    cfg: Mapping[str, Any], category: str | None, concepts: Sequence[str] = ()
) -> tuple[list[str], str | None]:
    """The defect prompts of `category` and the object noun used for regularisation (None = skip it).

    With learned `concepts` (from a checkpoint), cfg["concept_mode"] "replace" scores only them and "add"
    scores them after the text prompts. Regularisation needs a known object: it is skipped for texture
    categories, for categories without an object noun (own folders) and when cfg["object_regularisation"]
    is off.
    """
    prompts = build_prompts(category, cfg["prompt_strategy"], cfg["extra_prompts"], cfg["prompt_overrides"])
    if concepts:
        prompts = list(concepts) if cfg["concept_mode"] == "replace" else [*prompts, *concepts]
    noun = object_prompt(category, cfg["texture_categories"]) if cfg["object_regularisation"] else None
    return prompts, noun


def make_scorer(detector: AnomalyDetector, cfg: Mapping[str, Any], concepts: Sequence[str] = ()) -> Scorer:
    """A Scorer (see utils.evaluation.store) giving maps at eval_size x eval_size and image scores.

    It calls `AnomalyDetector.detect` with the prompts of `prompts_for` (the object noun follows from the
    category and cfg["texture_categories"] there as in `prompts_for`), without instance masks. With
    cfg["visual"] "fewshot" the detector first gets the category's references (`draw_references`, encoded
    once per category); with "mutual" the scorer must be given every image of the category at once
    (`evaluate_category(..., whole_category=True)`): they are encoded cfg["batch_size"] at a time.
    """
    size = (cfg["eval_size"], cfg["eval_size"])
    referenced: list[str] = []  # the category whose few-shot references the detector holds

    def score(samples: Sequence[Sample], category: str) -> list[tuple[np.ndarray, float]]:
        prompts, noun = prompts_for(cfg, category, concepts)
        if cfg["visual"] == "mutual":
            if len(samples) < 2:
                raise DatasetError(
                    f"--visual mutual compares the test images of {category} with each other but it has "
                    f"{len(samples)}: add test images or use --visual fewshot"
                )
            batches = (
                [s.image for s in samples[i : i + cfg["batch_size"]]]
                for i in range(0, len(samples), cfg["batch_size"])
            )
            results = detector.detect_arrays_mutual(batches, prompts, noun, out_size=size)
            return [(r.anomaly_map, r.image_score) for r in results]
        if cfg["visual"] == "fewshot" and referenced != [category]:
            detector.set_references(draw_references(cfg, category))
            referenced[:] = [category]
        results = detector.detect(
            [s.image for s in samples],
            category,
            prompts,
            texture_categories=cfg["texture_categories"],
            out_size=size,
            instance_masks=False,
        )
        return [(r.anomaly_map, r.image_score) for r in results]

    return score
