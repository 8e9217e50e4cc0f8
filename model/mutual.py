"""Zero-shot mutual scoring of a set of images of one product (MuSc), on an `AnomalyDetector`'s engine.

Every image's patches are compared with the patches of the other images of the set (`model.visual`); the
visual maps are calibrated on the set itself, fused with each image's text map, and with
``settings.mutual_rescore`` each image score is re-scored from the images most like it (MuSc's RsCIN).

The work comes in steps so that several processes can share it::

    scorer = MutualScorer(detector, dataset="mvtec")
    results, features = scorer.parts(batches, prompts, noun)   # SAM 3: one vision pass per image
    raw = scorer.raw_scores(features, images=my_share)          # each process: its share, against all
    scorer.fuse(results, torch.cat(all_shares_in_order), features)   # calibration, fusion, re-scoring

`score` does all three in one process; a split run that gathers every share in image order gives the
same numbers (the partner draw and the calibration depend only on the whole set).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from model.detector import AnomalyDetector, AnomalyResult, ScoringSettings
from model.fusion import fuse_visual
from model.text_scorer import TextScorer
from model.visual import calibrate, mutual_raw, normal_scale, unit_patches

# MuSc's RsCIN window sizes per dataset (its configs); any other dataset gets MVTec AD's.
MUSC_RESCORE_K: dict[str, tuple[int, ...]] = {"mvtec": (1, 2, 3), "visa": (1, 8, 9)}
DEFAULT_RESCORE_K: tuple[int, ...] = MUSC_RESCORE_K["mvtec"]

Features = dict[int, Tensor]  # {layer: (N, h, w, C)} unit patch vectors, in image order


def rescore_window_sizes(rescore_k: Sequence[int] | None, dataset: str | None) -> tuple[int, ...]:
    """The RsCIN window sizes: `rescore_k` when given, else MuSc's for `dataset` (MVTec AD's by default)."""
    if rescore_k is not None:
        return tuple(rescore_k)
    return MUSC_RESCORE_K.get(dataset or "", DEFAULT_RESCORE_K)


class MutualScorer:
    """Mutual (zero-shot) scoring of one category's images with `detector`'s engine and settings.

    Args:
        detector: gives the engine, the text-feature source and the settings (``mutual_fraction``,
            ``visual_degrees``, ``mutual_partners``, ``mutual_rescore``, ``rescore_k``, ``visual_weight``,
            the object prior and smoothing); its ``settings.visual`` is not read.
        dataset: selects MuSc's RsCIN window sizes when ``settings.rescore_k`` is None.
    """

    def __init__(self, detector: AnomalyDetector, dataset: str | None = None) -> None:
        self.detector = detector
        # The same text step as the detector's, on its engine, text source and (current) settings.
        self.text = TextScorer(detector.engine, lambda: self.detector.settings, detector.text_override)
        self.window_sizes = rescore_window_sizes(self.settings.rescore_k, dataset)

    @property
    def settings(self) -> ScoringSettings:
        """The detector's scoring settings, read at each use."""
        return self.detector.settings

    def score(
        self,
        batches: Iterable[Sequence[np.ndarray]],
        prompts: Sequence[str],
        object_noun: str | None = None,
        out_size: tuple[int, int] | None = None,
        instance_masks: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[AnomalyResult]:
        """Results of every image of `batches` (one category), in order: `parts`, `raw_scores`, `fuse`.

        `progress(done, total)`: as in `raw_scores`, the slow N^2 step.

        Raises:
            ValueError: fewer than two images in all (mutual scoring compares images with each other).
        """
        results, features = self.parts(batches, prompts, object_noun, out_size, instance_masks)
        _need_two(len(results))
        return self.fuse(results, self.raw_scores(features, progress=progress), features)

    def parts(
        self,
        batches: Iterable[Sequence[np.ndarray]],
        prompts: Sequence[str],
        object_noun: str | None = None,
        out_size: tuple[int, int] | None = None,
        instance_masks: bool = False,
    ) -> tuple[list[AnomalyResult], Features]:
        """Each batch's text-only results and unit patch features (one vision pass per image).

        The features are kept on the CPU (``{layer: (N, h, w, C)}``, fp16 when computed on CUDA): the
        scoring moves one layer at a time to the model's device (`raw_scores`).
        """
        results: list[AnomalyResult] = []
        gathered: dict[int, list[Tensor]] = {}
        for images in batches:
            batch, patches = self.text.score(images, prompts, object_noun, out_size, instance_masks)
            results += batch
            for layer, feats in patches.items():
                gathered.setdefault(layer, []).append(feats.cpu())
        # One layer's parts freed as it is joined: peak = all features + one layer, not twice them all.
        return results, {layer: torch.cat(gathered.pop(layer)) for layer in list(gathered)}

    def raw_scores(
        self,
        features: Features,
        images: Sequence[int] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Tensor:
        """Uncalibrated mutual scores of `images` (None = all) against every image: (n, h, w) float32 CPU.

        Scored on the model's device one layer at a time (peak: one layer's features + one aggregate).
        `progress(done, total)`: images' worth of the comparisons done (`model.visual.mutual_raw`).
        """
        _need_two(next(iter(features.values())).shape[0] if features else 0)
        s = self.settings
        raw = mutual_raw(
            features,
            s.mutual_fraction,
            s.visual_degrees,
            s.mutual_partners,
            images=images,
            device=self.detector.engine.device,
            progress=progress,
        )
        return raw.cpu()

    def fuse(self, results: list[AnomalyResult], raw: Tensor, features: Features) -> list[AnomalyResult]:
        """Calibrate all N raw maps together, fuse them into `results` and re-score the images (in place).

        Args:
            results: the N text-only results of `parts`, in image order.
            raw: (N, h, w) `raw_scores` of all N images, same order.
            features: the `parts` features (their deepest layer gives the RsCIN image descriptors).
        """
        if raw.shape[0] != len(results):
            raise ValueError(f"{raw.shape[0]} raw visual maps for {len(results)} results")
        centre, spread = normal_scale(raw)
        fuse_visual(results, calibrate(raw, centre, spread), self.settings)
        if self.settings.mutual_rescore:
            descriptors = image_descriptors(features[max(features)])
            scores = torch.tensor([r.image_score for r in results])
            new = rescore_images(scores, descriptors, self.window_sizes)
            for result, value in zip(results, new.tolist(), strict=True):
                result.image_score = float(value)
        return results


def image_descriptors(features: Tensor) -> Tensor:
    """One unit vector per image: the mean of its unit patch vectors. (N, h, w, C) -> (N, C) float32.

    SAM 3's ViT has no class token; the mean patch vector of a layer plays the part of MuSc's CLS token in
    `rescore_images` (which images look alike as a whole).
    """
    return F.normalize(unit_patches(features).mean(dim=(1, 2)), dim=-1)


def rescore_images(scores: Tensor, descriptors: Tensor, ks: Sequence[int]) -> Tensor:
    """MuSc's RsCIN: each image score averaged with those of the images most like it, over window sizes k.

    For each k in `ks`: W = the cosine similarities of the descriptors (the image itself included, its own
    similarity being 1), negative ones set to 0, all but each row's k largest set to 0, rows normalised to
    sum 1; the re-scored vector is ``W @ scores``. The result is the mean over `ks` (k = 1 keeps the score).
    MuSc min-max normalises the scores first; rows summing to 1 make that an affine change of the output
    only, so it is skipped and the scores keep their units.

    Args:
        scores: (N,) image scores.
        descriptors: (N, D) unit vectors (`image_descriptors`).
        ks: neighbourhood sizes, each >= 1 (MuSc: 1, 2, 3 for MVTec AD; 1, 8, 9 for VisA); clipped to N.

    Returns:
        (N,) float32.
    """
    n = scores.shape[0]
    if descriptors.shape[0] != n:
        raise ValueError(f"{n} scores but {descriptors.shape[0]} image descriptors")
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"rescoring window sizes must be >= 1, got {list(ks)}")
    desc = descriptors.float()
    sim = (desc @ desc.T).clamp_(min=0.0)
    sim.fill_diagonal_(1.0)
    out = torch.zeros(n, device=scores.device)
    for k in ks:
        top = sim.topk(min(k, n), dim=1)
        weights = torch.zeros_like(sim).scatter_(1, top.indices, top.values)
        out += (weights / weights.sum(dim=1, keepdim=True)) @ scores.float()
    return out / len(ks)


def _need_two(count: int) -> None:
    if count < 2:
        raise ValueError(
            f"visual=mutual compares images of one product with each other and got {count}: "
            "give at least two images, or use visual=fewshot with normal reference images"
        )
