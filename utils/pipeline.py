"""Build the SAM 3 anomaly detector and the prompts for a category from a resolved config."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from dataset import DatasetError, Sample, available_categories, categories_of
from model import Sam3Engine
from model.detector import AnomalyDetector, AnomalyResult
from model.mutual import Features, MutualScorer
from model.prompts import build_prompts, object_prompt
from model.visual import VisualMode
from utils.config.loading import ConfigError
from utils.config.schema import Config
from utils.evaluation.references import reference_images
from utils.training.checkpoint import apply_checkpoint, load_checkpoint


def build_detector(cfg: Config) -> tuple[AnomalyDetector, list[str]]:
    """Load SAM 3 from cfg.model.model_path (and cfg.model.checkpoint if set) with cfg.scoring.

    Returns the detector and the names of the learned concepts it can score (empty when zero-shot). The
    checkpoint is read first, so a bad one fails in seconds, not after loading a 3 GB model.
    """
    ckpt = load_checkpoint(cfg.model.checkpoint) if cfg.model.checkpoint else None
    model = cfg.model
    engine = Sam3Engine.from_pretrained(
        model.model_path, device=model.device, dtype=model.dtype, chunk_size=model.chunk_size
    )
    if ckpt is None:
        return AnomalyDetector(engine, cfg.scoring), []
    bank = apply_checkpoint(ckpt, engine)

    def learned_text(engine: Sam3Engine, features: Any, prompts: Sequence[str]) -> Iterator[Any]:
        return engine.predict_text(features, bank.text_for_prompts(engine, prompts))

    return AnomalyDetector(engine, cfg.scoring, text_override=learned_text), bank.names


def prompts_for(
    cfg: Config, category: str | None, concepts: Sequence[str] = ()
) -> tuple[list[str], str | None]:
    """The defect prompts of `category` and the object noun used for regularisation (None = skip it).

    With learned `concepts` (from a checkpoint), cfg.model.concept_mode "replace" scores only them and "add"
    scores them after the text prompts. Regularisation needs a known object: it is skipped for texture
    categories, for categories without an object noun (own folders) and when
    cfg.scoring.object_regularisation is off.
    """
    text = cfg.prompts
    prompts = build_prompts(category, text.prompt_strategy, text.extra_prompts, text.prompt_overrides)
    if concepts:
        prompts = list(concepts) if cfg.model.concept_mode == "replace" else [*prompts, *concepts]
    noun = object_prompt(category, cfg.data.texture_categories) if cfg.scoring.object_regularisation else None
    return prompts, noun


def check_prompt_overrides(cfg: Config) -> None:
    """Refuse a `prompt_overrides` category that is neither a category of cfg's dataset on disk nor one of its
    published ones: a misspelt name (`bottel`) would otherwise leave that category on its built prompts.

    Raises:
        ConfigError: naming the unknown keys and the categories there are.
    """
    overrides = cfg.prompts.prompt_overrides
    if not overrides or not cfg.data.dataset_path:
        return
    known = {*available_categories(cfg.data.dataset, cfg.data.dataset_path), *categories_of(cfg.data.dataset)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(
            f"prompt_overrides names {', '.join(unknown)}, not a {cfg.data.dataset} category: fix the name "
            f"(categories: {', '.join(sorted(known))})"
        )


class CategoryScorer:
    """Scores samples of one category with `AnomalyDetector` as cfg says (the `Scorer` of
    utils/evaluation/loop.py; test.py's maps at eval_size x eval_size and image scores).

    It calls `AnomalyDetector.detect` with the prompts of `prompts_for`, without instance masks. With
    cfg.scoring.visual "fewshot" the detector first gets the category's references (drawn once by the runner,
    encoded once per category). With "mutual" it must be given every image of the category
    (`evaluate_category(..., whole_category=True)`), in two halves so that several processes can share the
    work: `parts` runs SAM 3 on some images (text maps + patch features), `finish` takes the parts of all
    images in image order and fuses the mutual visual maps (under torchrun each rank computes the parts of
    its batches and rank 0 finishes).
    """

    def __init__(self, detector: AnomalyDetector, cfg: Config, concepts: Sequence[str] = ()) -> None:
        self.detector, self.cfg, self.concepts = detector, cfg, concepts
        self.size = (cfg.evaluation.eval_size, cfg.evaluation.eval_size)
        self.referenced: tuple[str, ...] = ()  # the few-shot reference paths the detector holds
        self.mutual = MutualScorer(detector, cfg.data.dataset)

    def prompts_of(self, category: str) -> tuple[list[str], str | None]:
        """The defect prompts and object noun (None = no object prior) this scorer uses for `category`."""
        return prompts_for(self.cfg, category, self.concepts)

    def __call__(
        self, samples: Sequence[Sample], category: str, references: Sequence[str] = ()
    ) -> list[tuple[np.ndarray, float, dict]]:
        """(map, image score, text-only and visual-only signals: empty with visual none) per sample."""
        if self.cfg.scoring.visual is VisualMode.MUTUAL:
            return self.finish([self.parts(samples, category)], category)
        prompts, noun = self.prompts_of(category)
        if self.cfg.scoring.visual is VisualMode.FEWSHOT and self.referenced != tuple(references):
            self.detector.set_references(reference_images(self.cfg, category, references))
            self.referenced = tuple(references)
        images = [s.image for s in samples]
        results = self.detector.detect_arrays(images, prompts, noun, out_size=self.size, instance_masks=False)
        return [(r.anomaly_map, r.image_score, r.signals) for r in results]

    def parts(self, samples: Sequence[Sample], category: str) -> tuple[list[AnomalyResult], Features]:
        """Text-only results and ``{layer: (n, h, w, C)}`` patch features of `samples` (mutual scoring),
        the features on the CPU (`MutualScorer.parts`), ready to travel to another process."""
        prompts, noun = self.prompts_of(category)
        step = self.cfg.model.batch_size
        batches = ([s.image for s in samples[i : i + step]] for i in range(0, len(samples), step))
        return self.mutual.parts(batches, prompts, noun, out_size=self.size)

    def share(
        self,
        parts: Sequence[tuple[list[AnomalyResult], Features]],
        category: str,
        images: Sequence[int],
        progress: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """Raw mutual scores (n, h, w) of the images `images` of the category against all of `parts`;
        `progress(done, total)` as the comparisons advance by one image's worth."""
        _need_two(sum(len(results) for results, _ in parts), category)
        return self.mutual.raw_scores(_features(parts), images, progress)

    def finish(
        self,
        parts: Sequence[tuple[list[AnomalyResult], Features]],
        category: str,
        shares: Sequence[torch.Tensor] | None = None,
    ) -> list[tuple[np.ndarray, float, dict]]:
        """(map, image score, signals) of every image of `parts` (concatenated in order) after mutual fusion.

        `shares`: the `share` scores of every image, in image order; None = computed here, all at once.
        """
        results = [r for part_results, _ in parts for r in part_results]
        _need_two(len(results), category)
        features = _features(parts)
        raw = self.mutual.raw_scores(features) if shares is None else torch.cat(list(shares))
        return [(r.anomaly_map, r.image_score, r.signals) for r in self.mutual.fuse(results, raw, features)]


def _features(parts: Sequence[tuple[list[AnomalyResult], Features]]) -> Features:
    """The features of `parts` joined in order: ``{layer: (N, h, w, C)}``."""
    return {k: torch.cat([feats[k] for _, feats in parts]) for k in parts[0][1]}


def _need_two(count: int, category: str) -> None:
    """Mutual scoring compares the images of a category with each other: fewer than two is a DatasetError."""
    if count < 2:
        raise DatasetError(
            f"--visual mutual compares the test images of {category} with each other but it has "
            f"{count}: add test images or use --visual fewshot"
        )
