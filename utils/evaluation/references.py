"""Few-shot reference images: K normal images of a category's train split, drawn with a seed."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from dataset import DatasetError, DatasetWarning, load_dataset
from dataset.images import read_image
from utils.config.schema import Config


class NotEnoughReferencesError(DatasetError):
    """The train split holds fewer normal images than --shots asks for."""


def draw_references(cfg: Config, category: str) -> list[str]:
    """Paths of cfg.visual.shots normal images of `category`'s train split, drawn with cfg.visual.shot_seed.

    The runner (utils/evaluation/runner.py) draws once per category, records the paths in results.json and
    passes them to the scorer, which encodes them.

    The train split is MVTec AD's `train/good`, VisA's official train split, and for own folders the `good/`
    images (of `<category>/train/` when the category has train/ and test/). The draw is
    ``numpy.random.default_rng(shot_seed).choice(n, shots, replace=False)`` over the normal images in the
    loader's (sorted) order, returned in that order: the same seed gives the same references on every
    machine.

    Raises:
        NotEnoughReferencesError: fewer normal train images than shots (one line naming the fix).
        DatasetError: no train split at all (from the loader).
    """
    dataset, dataset_path = cfg.data.dataset, cfg.data.dataset_path
    shots, seed = cfg.visual.shots, cfg.visual.shot_seed
    train = load_dataset(
        dataset, dataset_path, category, "train", cfg.data.realiad_resolution, cfg.data.bit_depth
    )
    normal = [r.image_path for r in train.records if r.label == 0]
    if len(normal) < shots:
        raise NotEnoughReferencesError(
            f"--shots {shots} but {category} has {len(normal)} normal training image(s) "
            f"(train/good): lower --shots to at most {len(normal)} or add normal images"
        )
    test_paths = {
        r.image_path
        for r in load_dataset(dataset, dataset_path, category, "test", cfg.data.realiad_resolution).records
    }
    if test_paths.intersection(normal):
        warnings.warn(
            f"{category}: the train split is the test split (own folders without train/ and test/), so the "
            "few-shot references are test images too: add <category>/train/good/ for a fair evaluation",
            DatasetWarning,
            stacklevel=2,
        )
    picked = np.random.default_rng(seed).choice(len(normal), shots, replace=False)
    return [str(normal[i]) for i in sorted(picked.tolist())]


def reference_images(cfg: Config, category: str, paths: Sequence[str]) -> list[np.ndarray]:
    """The drawn reference images decoded like the category's test images: (H, W, 3) uint8 RGB each.

    More-than-8-bit images without sBIT are scaled by the category's depth (cfg.data.bit_depth, else the
    one `load_dataset` finds over both splits), so a reference and a test image of one camera match.
    """
    data = cfg.data
    dataset = load_dataset(
        data.dataset, data.dataset_path, category, "train", data.realiad_resolution, data.bit_depth
    )
    depth = dataset.depths.of(category)
    return [read_image(path, depth) for path in paths]
