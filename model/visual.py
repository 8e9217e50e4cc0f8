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

Scale. The patch vectors arrive unit-normalised and average-pooled to about `visual_grid` cells a side
(model/vit_layers.py `pool_factor`: the real 72 x 72 grid -> 36 x 36 at the default 36, MuSc's 37 x 37
scale; the tiny model's 16 x 16 is not pooled). Before the nearest-neighbour search they are averaged
over r x r windows for r in `degrees` (MuSc's local neighbourhood aggregation, default r = 1, 3, 5 cells
of the pooled grid: single patches, then larger defects); the scores of all degrees and layers are
averaged.

Image score (`model.fusion.patch_reading`): MuSc reads an image's score as the max of its patch map,
AnomalyDINO as the mean of its top 1 % of patches; both read the patch grid, before upsampling and smoothing.

Calibration (`calibrate`): a strictly increasing map of raw distances to [0, 1) that keeps the order of
every patch, weak or strong, so that the fusion with the text map can never tie two defects.

Numerics. Similarities run in fp16 on CUDA (tensor cores); the few best candidates of each query are then
re-scored in fp32, so a winning cosine is exact to fp32 rounding (fp16 steps are 4.9e-4 near 1: +-5 % of
a distance of 0.05).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from enum import Enum

import torch
import torch.nn.functional as F
from torch import Tensor


class SettingChoice(str, Enum):
    """A setting value that is an enum and its string at once: ``"mutual" == VisualMode.MUTUAL``, and
    ``str()``, f-strings and JSON give the plain value (a `StrEnum` on Python 3.11+)."""

    def __str__(self) -> str:
        return str(self.value)


class VisualMode(SettingChoice):
    """Which visual signal is fused with the text map (a str: "fewshot" == VisualMode.FEWSHOT)."""

    NONE = "none"  # text maps only
    FEWSHOT = "fewshot"  # each patch against the patches of K normal reference images
    MUTUAL = "mutual"  # zero-shot: each patch against the patches of the other test images (MuSc)


class PatchReading(SettingChoice):
    """How a visual mode reads an image score (`model.fusion.patch_reading`, `fuse_visual`)."""

    PATCH_MAX = "patch_max"  # MuSc: the max of the calibrated patch map
    PATCH_TOP1 = "patch_top1"  # AnomalyDINO: the mean of the top 1 % of patches
    FUSED_MAP = "fused_map"  # `image_score` of the fused, upsampled, smoothed map


DEFAULT_LAYER_FRACTIONS: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
DEFAULT_DEGREES: tuple[int, ...] = (1, 3, 5)  # MuSc's r at the pooled 36 x 36 scale
DEFAULT_VISUAL_GRID = 36  # patch-grid side the ViT grid is pooled to (at least): real 72 x 72 -> 36 x 36
TOP_PATCH_FRACTION = 0.01  # AnomalyDINO's image score: the mean of the top 1 % of patches
DEGREE_GRID_LIMIT = 1 / 3  # a window r wider than this fraction of the pooled grid's side is warned about
DEFAULT_MUTUAL_FRACTION = 0.3  # MuSc's interval: the smallest 30 % of the distances to other images
CHUNK_ELEMENTS = 1 << 26  # similarity-matrix entries per chunk (256 MB in fp32): bounds peak memory
FP32_CANDIDATES = 4  # fp16 similarity winners re-scored in fp32 per query
QUANTILE_SAMPLE = 1 << 24  # torch.quantile's input limit: larger inputs use a seeded uniform sample
CALIBRATION_SHARPNESS = 4.0  # softplus(4 z) / 4: a smooth max(z, 0) (see `calibrate`)


def select_layers(num_layers: int, fractions: Sequence[float] = DEFAULT_LAYER_FRACTIONS) -> list[int]:
    """0-based ViT layer indices at the given fractions of the depth, deduplicated, in increasing order.

    Example: 32 layers, (0.25, 0.5, 0.75, 1.0) -> [7, 15, 23, 31]; 2 layers -> [0, 1].
    """
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    if not fractions or any(not 0.0 < f <= 1.0 for f in fractions):
        raise ValueError(f"layer fractions must be in (0, 1], got {list(fractions)}")
    return sorted({max(0, round(f * num_layers) - 1) for f in fractions})


def check_degrees(degrees: Sequence[int]) -> tuple[int, ...]:
    """`degrees` as a tuple, or ValueError unless it is a non-empty list of odd integers >= 1."""
    if not degrees or any(isinstance(r, bool) or int(r) != r or r < 1 or r % 2 == 0 for r in degrees):
        raise ValueError(f"visual_degrees must be odd window sides >= 1 (e.g. [1, 3, 5]), got {degrees}")
    return tuple(int(r) for r in degrees)


def check_degrees_fit(degrees: Sequence[int], grid: tuple[int, int]) -> None:
    """Warn (one line) when a window r covers more than a third of the pooled patch grid `grid` (h, w).

    Such a window averages most of the image into every patch: a small defect then vanishes.
    """
    side = min(grid)
    wide = [r for r in degrees if r > DEGREE_GRID_LIMIT * side]
    if wide:
        warnings.warn(
            f"visual_degrees {wide} cover more than a third of the {grid[0]} x {grid[1]} patch grid: "
            f"use windows <= {max(1, int(DEGREE_GRID_LIMIT * side))} cells (or a larger visual_grid)",
            stacklevel=3,
        )


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
    """fp16 similarities on CUDA (tensor cores; winners re-scored in fp32), fp32 elsewhere."""
    return torch.float16 if device.type == "cuda" else torch.float32


def _best_cosines(query: Tensor, banks: Tensor, dtype: torch.dtype) -> Tensor:
    """Largest cosine of each query vector in each bank: (Q, C), (J, M, C) unit vectors -> (J, Q) float32.

    In fp32 this is the plain maximum. In half precision the `FP32_CANDIDATES` best similarities of each
    query pick candidates that are then re-scored in fp32, so the winner's cosine carries fp32 rounding
    only (fp16 ranks them; ties within fp16 rounding are resolved exactly).
    """
    sim = torch.einsum("qc,jmc->jqm", query.to(dtype), banks.to(dtype))
    if dtype == torch.float32:
        return sim.amax(dim=2)
    k = min(FP32_CANDIDATES, banks.shape[1])
    idx = sim.topk(k, dim=2).indices  # (J, Q, k)
    rows = torch.arange(banks.shape[0], device=banks.device)[:, None, None]
    # Renormalised in fp32: a unit vector stored in fp16 has a norm of 1 +- 1e-4, as large an error in
    # the cosine as the fp16 similarity step it replaces.
    candidates = F.normalize(banks[rows, idx].float(), dim=-1)  # (J, Q, k, C)
    return torch.einsum("qc,jqkc->jqk", F.normalize(query.float(), dim=-1), candidates).amax(dim=2)


def _distance(cosine: Tensor) -> Tensor:
    """Euclidean distance of unit vectors from their cosine: ``sqrt(max(0, 2 - 2 cos))``, in place."""
    return (2.0 - 2.0 * cosine).clamp_(min=0.0).sqrt_()


def _rows_per_block(query_rows: int, bank_rows: int, channels: int, dtype: torch.dtype, budget: int) -> int:
    """Banks per similarity block: neither the (Q, M) similarities nor the fp32 candidates exceed `budget`."""
    per_bank = query_rows * max(bank_rows, FP32_CANDIDATES * channels if dtype != torch.float32 else 0)
    return max(1, budget // max(1, per_bank))


def nearest_distance(
    query: Tensor, bank: Tensor, chunk_elements: int = CHUNK_ELEMENTS, dtype: torch.dtype | None = None
) -> Tensor:
    """Distance from each query vector to its nearest bank vector, for unit vectors.

    Args:
        query: (N, C) unit vectors.
        bank: (M, C) unit vectors, same device.
        chunk_elements: the largest query-chunk x bank-chunk similarity block computed at once.
        dtype: similarity dtype; None = fp16 on CUDA, fp32 elsewhere (winners always compared in fp32).

    Returns:
        (N,) float32 distances ``sqrt(max(0, 2 - 2 * max_m <q, b_m>))`` in [0, 2].
    """
    if query.ndim != 2 or bank.ndim != 2 or query.shape[1] != bank.shape[1]:
        raise ValueError(f"need (N, C) and (M, C), got {tuple(query.shape)} and {tuple(bank.shape)}")
    if bank.shape[0] == 0:
        raise ValueError("the comparison bank is empty")
    dtype = dtype or _matmul_dtype(query.device)
    query_chunk = max(1, min(query.shape[0], 4096))
    extra = FP32_CANDIDATES * query_chunk * query.shape[1] if dtype != torch.float32 else 0
    bank_chunk = max(1, (chunk_elements - min(extra, chunk_elements // 2)) // query_chunk)
    best = torch.full((query.shape[0],), -1.0, device=query.device)
    for q0 in range(0, query.shape[0], query_chunk):
        part = best[q0 : q0 + query_chunk]
        for b0 in range(0, bank.shape[0], bank_chunk):
            sim = _best_cosines(query[q0 : q0 + query_chunk], bank[None, b0 : b0 + bank_chunk], dtype)[0]
            torch.maximum(part, sim, out=part)
    return _distance(best)


def _distances_to_images(
    query: Tensor, images: Tensor, chunk_elements: int = CHUNK_ELEMENTS, dtype: torch.dtype | None = None
) -> Tensor:
    """Nearest-patch distance of each query patch to each image: (P, C), (N, P', C) -> (N, P) float32."""
    dtype = dtype or _matmul_dtype(query.device)
    n, p_img, channels = images.shape
    per_block = _rows_per_block(query.shape[0], p_img, channels, dtype, chunk_elements)
    out = torch.empty(n, query.shape[0], device=query.device)
    for j0 in range(0, n, per_block):
        out[j0 : j0 + per_block] = _distance(_best_cosines(query, images[j0 : j0 + per_block], dtype))
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

    A whole category is N x h x w x C values per layer (500 x 1296 x 1024 at the pooled real grid: 2.7 GB
    in float32, half in fp16). Aggregating in steps into one preallocated output keeps only that fp16 copy
    (on CUDA) plus a small float32 step (joining the steps with torch.cat would hold the copy twice).
    """
    out = torch.empty(features.shape, dtype=_matmul_dtype(features.device), device=features.device)
    for i in range(0, features.shape[0], images_per_step):
        out[i : i + images_per_step] = aggregate_neighbourhood(features[i : i + images_per_step], degree)
    return out


def mutual_partners(n: int, image: int, partners: int | None, seed: int = 0) -> list[int]:
    """The images image `image` is compared with: every other of the `n`, or `partners` of them at random.

    The draw depends only on (n, image, partners, seed): every process of a split run draws the same.
    """
    others = [j for j in range(n) if j != image]
    if partners is None or partners >= len(others):
        return others
    gen = torch.Generator().manual_seed(seed * 1_000_003 + image)
    pick = torch.randperm(len(others), generator=gen)[:partners].sort().values
    return [others[j] for j in pick.tolist()]


def mutual_scores(
    features: Tensor,
    fraction: float = DEFAULT_MUTUAL_FRACTION,
    degrees: Sequence[int] = DEFAULT_DEGREES,
    partners: int | None = None,
    images: Sequence[int] | None = None,
    step: Callable[[], None] | None = None,
) -> Tensor:
    """Zero-shot mutual scores (MuSc): each image's patches against the patches of the other images.

    Args:
        features: (N, h, w, C) patch features of all N >= 2 unlabeled test images of one category.
        fraction: for each patch, average the smallest ``max(1, floor(fraction * M))`` of its M
            nearest-patch distances to the other images compared.
        degrees: neighbourhood window sides; the scores of all degrees are averaged.
        partners: compare each image with this many seeded random others (`mutual_partners`; cost
            N x partners instead of N x (N - 1)); None = all others.
        images: score only these images (e.g. one process's share), still against all N; None = all.
        step: called after each image at each degree (len(images) * len(degrees) calls), for progress.

    Returns:
        (len(images), h, w) float32 scores in [0, 2], rows in the order of `images`.
    """
    n, h, w, _ = features.shape
    if n < 2:
        raise ValueError("mutual scoring needs at least two images")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"mutual fraction must be in (0, 1], got {fraction}")
    if partners is not None and partners < 1:
        raise ValueError(f"mutual_partners must be >= 1, got {partners}")
    rows = list(range(n)) if images is None else list(images)
    total = torch.zeros(len(rows), h * w, device=features.device)
    for degree in degrees:
        x = _aggregated(features, degree).flatten(1, 2)  # (N, P, C), fp16 on CUDA
        for k, i in enumerate(rows):
            others = mutual_partners(n, i, partners)
            keep = max(1, int(fraction * len(others)))
            if len(others) == n - 1:  # all: against every image, then drop the image itself (no copy of x)
                dist = _distances_to_images(x[i], x)
                dist[i] = float("inf")
            else:
                dist = _distances_to_images(x[i], x[others])  # (M, P): a copy of M rows only
            total[k] += dist.topk(keep, dim=0, largest=False).values.mean(dim=0)
            if step is not None:
                step()
        del x  # one aggregate at a time
    return (total / len(degrees)).view(len(rows), h, w)


def normal_scale(normal_scores: Tensor, quantile: float = 0.99, seed: int = 0) -> tuple[float, float]:
    """Label-free scale of visual scores: (median, quantile - median) of scores believed mostly normal.

    `normal_scores` are, e.g., leave-one-out few-shot scores of the reference images, or the scores of all
    test patches of a category (most patches of a test set are normal). The median uses every value; the
    quantile, beyond ``QUANTILE_SAMPLE`` (2^24) values, a uniform sample of that many drawn with `seed`
    (torch.quantile's input limit). The spread is floored at 1e-6.
    """
    values = normal_scores.flatten().float()
    if values.numel() == 0:
        raise ValueError("normal_scale needs at least one score")
    centre = float(values.median())
    if values.numel() > QUANTILE_SAMPLE:
        gen = torch.Generator().manual_seed(seed)
        values = values[torch.randint(values.numel(), (QUANTILE_SAMPLE,), generator=gen).to(values.device)]
    top = float(torch.quantile(values, quantile))
    return centre, max(top - centre, 1e-6)


def calibrate(scores: Tensor, centre: float, spread: float) -> Tensor:
    """Map raw visual scores to [0, 1), strictly increasing, so fusion keeps the order of every patch.

    With ``z = (s - centre) / spread`` (0 at the normal median, 1 at the normal quantile) and
    ``x = softplus(4 z) / 4`` (a smooth ``max(z, 0)``)::

        v = x^2 / (1 + x^2)

    gives v = 0.029 at the median, 0.5 at the normal quantile, 0.8 at z = 2, 0.96 at z = 5, 0.99 at z = 10
    and reaches 1 in float32 only beyond z ~ 4000: strong defects stay apart instead of tying at 1, and
    patches below the median keep distinct, small values (0.0045 at z = -0.5, 2e-5 at z = -1) instead of
    all becoming 0. (..., h, w) -> (..., h, w) float32.
    """
    z = (scores.float() - centre) / spread
    x = F.softplus(CALIBRATION_SHARPNESS * z) / CALIBRATION_SHARPNESS
    x2 = x * x
    return x2 / (1.0 + x2)


def _split_halves(features: Tensor) -> tuple[Tensor, Tensor]:
    """(1, h, w, C) -> its top and bottom halves as two 'images' (1, h//2, w, C) each (h even, cropped)."""
    half = features.shape[1] // 2
    return features[:, :half], features[:, half : 2 * half]


class ReferenceBank:
    """Few-shot memory bank of K normal reference images, with its label-free calibration.

    Args:
        features: ``{layer: (R, h, w, C)}`` patch features of the R >= 1 bank images (``ImageFeatures.
            patch_layers``), any device.
        degrees: neighbourhood window sides (see `aggregate_neighbourhood`).
        quantile: the normal quantile that calibrates to 0.5 (see `calibrate`).
        sources: (R,) which reference each bank image comes from (e.g. ``[0, 1, 0, 1]`` for two references
            and their rotations, AnomalyDINO's augmentation); None = each is its own, K = R.

    Calibration: with K >= 2 each reference (with its rotations) is scored against the images of the other
    K - 1 (leave one out), which is what a normal test image meets; with K = 1 the top half of the image is
    scored against its bottom half and the reverse, a cruder stand-in that over-estimates normal distances
    for parts that are not symmetric (the visual map then comes out weaker, never stronger).
    """

    def __init__(
        self,
        features: dict[int, Tensor],
        degrees: Sequence[int] = DEFAULT_DEGREES,
        quantile: float = 0.99,
        sources: Sequence[int] | None = None,
    ) -> None:
        if not features:
            raise ValueError("the reference bank needs patch features of at least one layer")
        counts = {int(f.shape[0]) for f in features.values()}
        if len(counts) != 1 or counts == {0}:
            raise ValueError(f"every layer needs the same K >= 1 reference images, got {sorted(counts)}")
        rows = counts.pop()
        self.sources = list(range(rows)) if sources is None else [int(k) for k in sources]
        if len(self.sources) != rows:
            raise ValueError(f"{len(self.sources)} reference sources for {rows} bank images")
        self.features = features
        self.degrees = check_degrees(degrees)
        self.num_references = len(set(self.sources))
        self.centre, self.spread = normal_scale(self._normal_scores(), quantile)

    def _normal_scores(self) -> Tensor:
        """Scores of normal patches for calibration: leave-one-out (K >= 2) or half against half (K = 1)."""
        if self.num_references == 1:
            halves = {layer: _split_halves(f[:1]) for layer, f in self.features.items()}
            top = {layer: h[0] for layer, h in halves.items()}
            bottom = {layer: h[1] for layer, h in halves.items()}
            return torch.cat([self._score_against(top, bottom), self._score_against(bottom, top)])
        scores = []
        for k in dict.fromkeys(self.sources):
            first = self.sources.index(k)  # the reference itself (its rotations follow it in the bank)
            others = [j for j, source in enumerate(self.sources) if source != k]
            test = {layer: f[first : first + 1] for layer, f in self.features.items()}
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
        """Few-shot scores mapped to [0, 1) with the references' own statistics (`calibrate`): (B, h, w)."""
        return calibrate(self.score(features), self.centre, self.spread)


def mutual_raw(
    features: dict[int, Tensor],
    fraction: float = DEFAULT_MUTUAL_FRACTION,
    degrees: Sequence[int] = DEFAULT_DEGREES,
    partners: int | None = None,
    images: Sequence[int] | None = None,
    device: torch.device | str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Tensor:
    """`mutual_scores` of `images` (None = all) averaged over the layers of `features`, one layer on
    `device` at a time: ``{layer: (N, h, w, C)}`` -> (len(images), h, w) float32 on `device`.

    `progress(done, total)`: called as the work advances by one image's worth, total = len(images)
    (every image is compared at every layer and degree, so `done` counts images' worth of that work)."""
    if not features:
        raise ValueError("no patch layers captured: encode the images with patch_layers=...")
    degrees = check_degrees(degrees)
    n_rows = next(iter(features.values())).shape[0] if images is None else len(images)
    step = _image_steps(progress, n_rows, len(features) * len(degrees))
    total: Tensor | None = None
    for feats in features.values():
        layer = feats.to(device) if device is not None else feats
        scores = mutual_scores(layer, fraction, degrees, partners, images, step)
        total = scores if total is None else total + scores
        del layer
    assert total is not None
    return total / len(features)


def _image_steps(
    progress: Callable[[int, int], None] | None, n_rows: int, passes: int
) -> Callable[[], None] | None:
    """A `mutual_scores` step counter that calls progress(images' worth done, n_rows) every `passes` steps
    (each image is scored once per layer and degree: n_rows * passes steps in all); None without progress."""
    if progress is None:
        return None
    done = 0

    def step() -> None:
        nonlocal done
        done += 1
        if done % passes == 0:
            progress(done // passes, n_rows)

    return step
