"""Visual anomaly scores from SAM 3's own patch features: few-shot memory bank and zero-shot mutual scoring.

Pure torch functions on patch features; no model calls, no I/O. Shapes: B images, (h, w) the patch grid
(72 x 72 for the real 1008 px input, 16 x 16 for the tiny test model), C channels, P = h * w patches.

Which features. SAM 3's vision encoder is a 32-layer ViT (1024 channels, a 72 x 72 grid of 14 px patches)
followed by an FPN neck built from its *last* layer only. The neck and the last layer are trained for
detection and segmentation against text, so they describe *what* is in a patch; anomalies are often
low-level (a scratch, a colour change) that an intermediate layer still encodes. Patch-level anomaly
methods therefore read several depths of a ViT and average their scores (MuSc: four evenly spaced layers
of ViT-L; PatchCore: two mid-level CNN stages). We do the same: the layers at fractions
`DEFAULT_LAYER_FRACTIONS` of the depth (layers 8, 16, 24, 32 of the real ViT, which are also its four
global-attention layers), captured during the single vision pass the text path already makes.

Distances. Patch features are L2-normalised; the distance between two patches is the Euclidean distance of
the unit vectors, ``sqrt(2 - 2 cos)``, in [0, 2]. A patch's score is its distance to the nearest patch of
the comparison set:

- few-shot: the memory bank of all patches of K normal reference images (PatchCore / WinCLIP+ style);
- mutual (zero-shot, MuSc's Mutual Scoring Mechanism): for image i and every *other* test image j the
  nearest-patch distance d_ij; the score is the mean of the smallest `fraction` of the d_ij over j, so a
  defect that recurs in a few images still finds no close match in most of them and keeps a high score.

Before the nearest-neighbour search, features may be averaged over r x r patch windows for r in
`degrees` (MuSc's local neighbourhood aggregation: r = 1 sees single patches, r = 3 and 5 larger defects);
the scores of all degrees and layers are averaged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

DEFAULT_LAYER_FRACTIONS: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
DEFAULT_DEGREES: tuple[int, ...] = (1, 3)
DEFAULT_MUTUAL_FRACTION = 0.3  # MuSc's interval: the smallest 30 % of the distances to other images
CHUNK_ELEMENTS = 1 << 26  # similarity-matrix entries per chunk (256 MB in fp32): bounds peak memory


def select_layers(num_layers: int, fractions: Sequence[float] = DEFAULT_LAYER_FRACTIONS) -> list[int]:
    """0-based ViT layer indices at the given fractions of the depth, deduplicated, in increasing order.

    Example: 32 layers, (0.25, 0.5, 0.75, 1.0) -> [7, 15, 23, 31]; 2 layers -> [0, 1].
    """
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    if not fractions or any(not 0.0 < f <= 1.0 for f in fractions):
        raise ValueError(f"layer fractions must be in (0, 1], got {list(fractions)}")
    return sorted({max(0, round(f * num_layers) - 1) for f in fractions})


def unit_patches(features: Tensor) -> Tensor:
    """(B, h, w, C) -> (B, h, w, C) float32 with every patch vector scaled to unit length."""
    if features.ndim != 4:
        raise ValueError(f"patch features must be (B, h, w, C), got shape {tuple(features.shape)}")
    return F.normalize(features.float(), dim=-1)


def aggregate_neighbourhood(features: Tensor, degree: int) -> Tensor:
    """Average every patch with its r x r neighbours (r = `degree`, odd), then renormalise.

    Args:
        features: (B, h, w, C) patch features.
        degree: window side r >= 1, odd; 1 returns the unit-normalised input. Borders average only the
            patches inside the grid.

    Returns:
        (B, h, w, C) float32 unit vectors.
    """
    if degree < 1 or degree % 2 == 0:
        raise ValueError(f"neighbourhood degree must be an odd integer >= 1, got {degree}")
    x = unit_patches(features)
    if degree == 1:
        return x
    pooled = F.avg_pool2d(
        x.permute(0, 3, 1, 2), degree, stride=1, padding=degree // 2, count_include_pad=False
    )
    return unit_patches(pooled.permute(0, 2, 3, 1))


def _matmul_dtype(device: torch.device) -> torch.dtype:
    """fp16 similarities on CUDA (tensor cores; cosine error ~1e-3), fp32 elsewhere."""
    return torch.float16 if device.type == "cuda" else torch.float32


def nearest_distance(query: Tensor, bank: Tensor, chunk_elements: int = CHUNK_ELEMENTS) -> Tensor:
    """Distance from each query vector to its nearest bank vector, for unit vectors.

    Args:
        query: (N, C) unit vectors.
        bank: (M, C) unit vectors, same device.
        chunk_elements: the largest query-chunk x bank-chunk similarity block computed at once.

    Returns:
        (N,) float32 distances ``sqrt(max(0, 2 - 2 * max_m <q, b_m>))`` in [0, 2].
    """
    if query.ndim != 2 or bank.ndim != 2 or query.shape[1] != bank.shape[1]:
        raise ValueError(f"need (N, C) and (M, C), got {tuple(query.shape)} and {tuple(bank.shape)}")
    if bank.shape[0] == 0:
        raise ValueError("the comparison bank is empty")
    dtype = _matmul_dtype(query.device)
    query, bank = query.to(dtype), bank.to(dtype)
    query_chunk = max(1, min(query.shape[0], 4096))
    bank_chunk = max(1, chunk_elements // query_chunk)
    best = torch.full((query.shape[0],), -1.0, device=query.device)
    for q0 in range(0, query.shape[0], query_chunk):
        part = best[q0 : q0 + query_chunk]
        for b0 in range(0, bank.shape[0], bank_chunk):
            sim = (query[q0 : q0 + query_chunk] @ bank[b0 : b0 + bank_chunk].T).amax(dim=1).float()
            torch.maximum(part, sim, out=part)
    return (2.0 - 2.0 * best).clamp_(min=0.0).sqrt_()


def _distances_to_images(query: Tensor, images: Tensor, chunk_elements: int = CHUNK_ELEMENTS) -> Tensor:
    """Nearest-patch distance of each query patch to each image: (P, C), (N, P', C) -> (N, P) float32."""
    dtype = _matmul_dtype(query.device)
    query = query.to(dtype)
    n, p_img, _ = images.shape
    per_block = max(1, chunk_elements // max(1, query.shape[0] * p_img))
    out = torch.empty(n, query.shape[0], device=query.device)
    for j0 in range(0, n, per_block):
        block = images[j0 : j0 + per_block].to(dtype)  # (J, P', C)
        sim = torch.einsum("pc,jqc->jpq", query, block).amax(dim=2).float()  # (J, P)
        out[j0 : j0 + per_block] = (2.0 - 2.0 * sim).clamp_(min=0.0).sqrt_()
    return out


def fewshot_scores(test: Tensor, reference: Tensor, degrees: Sequence[int] = DEFAULT_DEGREES) -> Tensor:
    """Few-shot patch scores: nearest-neighbour distance to the patches of K normal reference images.

    Args:
        test: (B, h, w, C) patch features of the images to score (one layer).
        reference: (K, h, w, C) patch features of the normal references (same layer), K >= 1.
        degrees: neighbourhood window sides; the scores of all degrees are averaged.

    Returns:
        (B, h, w) float32 distances in [0, 2] (0 = the patch also appears in a reference).
    """
    if reference.shape[0] < 1:
        raise ValueError("few-shot scoring needs at least one reference image")
    if test.shape[1:] != reference.shape[1:]:
        raise ValueError(f"test {tuple(test.shape)} and reference {tuple(reference.shape)} grids differ")
    b, h, w, _ = test.shape
    total = torch.zeros(b, h * w, device=test.device)
    for degree in degrees:
        t = aggregate_neighbourhood(test, degree).flatten(1, 2)  # (B, P, C)
        bank = aggregate_neighbourhood(reference, degree).flatten(0, 2)  # (K * P, C)
        total += nearest_distance(t.flatten(0, 1), bank).view(b, h * w)
    return (total / len(degrees)).view(b, h, w)


def _aggregated(features: Tensor, degree: int, images_per_step: int = 16) -> Tensor:
    """`aggregate_neighbourhood` of (N, h, w, C) features a few images at a time, kept in the matmul dtype.

    A whole category at the real grid is 500 x 5184 x 1024 values per layer: 10.6 GB in float32, half in
    fp16. Aggregating in steps keeps only one fp16 copy (on CUDA) plus a small float32 step.
    """
    dtype = _matmul_dtype(features.device)
    parts = [
        aggregate_neighbourhood(features[i : i + images_per_step], degree).to(dtype)
        for i in range(0, features.shape[0], images_per_step)
    ]
    return torch.cat(parts)


def mutual_scores(
    features: Tensor,
    fraction: float = DEFAULT_MUTUAL_FRACTION,
    degrees: Sequence[int] = DEFAULT_DEGREES,
) -> Tensor:
    """Zero-shot mutual scores (MuSc): each image's patches against the patches of every other image.

    Args:
        features: (N, h, w, C) patch features of all N >= 2 unlabeled test images of one category.
        fraction: for each patch, average the smallest ``max(1, floor(fraction * (N - 1)))`` of its
            N - 1 nearest-patch distances to the other images.
        degrees: neighbourhood window sides; the scores of all degrees are averaged.

    Returns:
        (N, h, w) float32 scores in [0, 2].
    """
    n, h, w, _ = features.shape
    if n < 2:
        raise ValueError("mutual scoring needs at least two images of the category")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"mutual fraction must be in (0, 1], got {fraction}")
    keep = max(1, int(fraction * (n - 1)))
    total = torch.zeros(n, h * w, device=features.device)
    for degree in degrees:
        x = _aggregated(features, degree).flatten(1, 2)  # (N, P, C), fp16 on CUDA
        for i in range(n):
            dist = _distances_to_images(x[i], x)  # (N, P); row i is the image itself
            dist[i] = float("inf")
            total[i] += dist.topk(keep, dim=0, largest=False).values.mean(dim=0)
    return (total / len(degrees)).view(n, h, w)


def normal_scale(normal_scores: Tensor, quantile: float = 0.99) -> tuple[float, float]:
    """Label-free scale of visual scores: (median, quantile - median) of scores believed mostly normal.

    `normal_scores` are, e.g., leave-one-out few-shot scores of the reference images, or the scores of all
    test patches of a category (most patches of a test set are normal). The spread is floored at 1e-6.
    """
    values = normal_scores.flatten().float()
    if values.numel() == 0:
        raise ValueError("normal_scale needs at least one score")
    centre = float(values.median())
    top = float(torch.quantile(values[: 1 << 24], quantile))  # torch.quantile's input limit
    return centre, max(top - centre, 1e-6)


def calibrate(scores: Tensor, centre: float, spread: float) -> Tensor:
    """Map visual scores to [0, 1]: 0 up to the normal median, 0.5 at the normal quantile, 1 from 2x beyond.

    (..., h, w) -> (..., h, w) float32, ``clip(0.5 * (s - centre) / spread, 0, 1)``.
    """
    return (0.5 * (scores.float() - centre) / spread).clamp_(0.0, 1.0)


def fuse(text_map: Tensor, visual_map: Tensor, weight: float) -> Tensor:
    """Final map ``(1 - weight) * text + weight * visual``; both in [0, 1], same shape; weight in [0, 1]."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"visual_weight must be in [0, 1], got {weight}")
    if text_map.shape != visual_map.shape:
        raise ValueError(f"text map {tuple(text_map.shape)} and visual map {tuple(visual_map.shape)} differ")
    return (1.0 - weight) * text_map.float() + weight * visual_map.float()


def _per_layer(features: dict[int, Tensor], fn) -> Tensor:
    """Average ``fn(layer_features)`` -> (B, h, w) over the layers of `features` ({layer: (B, h, w, C)})."""
    if not features:
        raise ValueError("no patch layers captured: encode the images with patch_layers=...")
    return torch.stack([fn(feats) for feats in features.values()]).mean(dim=0)


def _split_halves(features: Tensor) -> tuple[Tensor, Tensor]:
    """(1, h, w, C) -> its top and bottom halves as two 'images' (1, h//2, w, C) each (h even, cropped)."""
    half = features.shape[1] // 2
    return features[:, :half], features[:, half : 2 * half]


class ReferenceBank:
    """Few-shot memory bank of K normal reference images, with its label-free calibration.

    Args:
        features: ``{layer: (K, h, w, C)}`` patch features of the K >= 1 references (``ImageFeatures.
            patch_layers``), any device.
        degrees: neighbourhood window sides (see `aggregate_neighbourhood`).
        quantile: the normal quantile that calibrates to 0.5 (see `calibrate`).

    Calibration: with K >= 2 each reference is scored against the other K - 1 (leave one out), which is what
    a normal test image meets; with K = 1 the top half of the image is scored against its bottom half and
    the reverse, a cruder stand-in that over-estimates normal distances for parts that are not symmetric
    (the visual map then comes out weaker, never stronger).
    """

    def __init__(
        self, features: dict[int, Tensor], degrees: Sequence[int] = DEFAULT_DEGREES, quantile: float = 0.99
    ) -> None:
        if not features:
            raise ValueError("the reference bank needs patch features of at least one layer")
        counts = {int(f.shape[0]) for f in features.values()}
        if len(counts) != 1 or counts == {0}:
            raise ValueError(f"every layer needs the same K >= 1 reference images, got {sorted(counts)}")
        self.features = features
        self.degrees = tuple(degrees)
        self.num_references = counts.pop()
        self.centre, self.spread = normal_scale(self._normal_scores(), quantile)

    def _normal_scores(self) -> Tensor:
        """Scores of normal patches for calibration: leave-one-out (K >= 2) or half against half (K = 1)."""
        if self.num_references == 1:
            halves = {layer: _split_halves(f) for layer, f in self.features.items()}
            top = {layer: h[0] for layer, h in halves.items()}
            bottom = {layer: h[1] for layer, h in halves.items()}
            return torch.cat([self._score_against(top, bottom), self._score_against(bottom, top)])
        scores = []
        for k in range(self.num_references):
            others = [j for j in range(self.num_references) if j != k]
            test = {layer: f[k : k + 1] for layer, f in self.features.items()}
            bank = {layer: f[others] for layer, f in self.features.items()}
            scores.append(self._score_against(test, bank))
        return torch.cat(scores)

    def _score_against(self, test: dict[int, Tensor], bank: dict[int, Tensor]) -> Tensor:
        """Scores of `test` against `bank` ({layer: (n, h, w, C)}), averaged over layers: (n, h, w)."""
        return torch.stack(
            [fewshot_scores(test[k], bank[k].to(test[k].device), self.degrees) for k in test]
        ).mean(dim=0)

    def score(self, features: dict[int, Tensor]) -> Tensor:
        """Raw few-shot scores of B test images: ``{layer: (B, h, w, C)}`` -> (B, h, w) float32 in [0, 2]."""
        missing = set(self.features) - set(features)
        if missing:
            raise ValueError(f"test features lack the reference layers {sorted(missing)}")
        return self._score_against({k: features[k] for k in self.features}, self.features)

    def calibrated(self, features: dict[int, Tensor]) -> Tensor:
        """Few-shot scores mapped to [0, 1] with the references' own statistics: (B, h, w) float32."""
        return calibrate(self.score(features), self.centre, self.spread)


def mutual_map(
    features: dict[int, Tensor],
    fraction: float = DEFAULT_MUTUAL_FRACTION,
    degrees: Sequence[int] = DEFAULT_DEGREES,
    quantile: float = 0.99,
) -> Tensor:
    """Zero-shot visual maps of N >= 2 test images of one category, calibrated on the test set itself.

    Args:
        features: ``{layer: (N, h, w, C)}`` patch features of all test images of the category.

    Returns:
        (N, h, w) float32 in [0, 1]: `mutual_scores` averaged over layers, then `calibrate`d with the median
        and quantile of all N * h * w scores (most test patches are normal: MuSc's premise; no labels used).
    """
    raw = _per_layer(features, lambda f: mutual_scores(f, fraction, degrees))
    centre, spread = normal_scale(raw, quantile)
    return calibrate(raw, centre, spread)
