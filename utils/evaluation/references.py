"""Few-shot reference images: K normal images of a category's train split, drawn with a seed."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from dataset import DatasetError, DatasetWarning, load_dataset


class NotEnoughReferencesError(DatasetError):
    """The train split holds fewer normal images than --shots asks for."""


def draw_references(cfg: Mapping[str, Any], category: str) -> list[str]:
    """Paths of cfg["shots"] normal images of `category`'s train split, drawn with cfg["shot_seed"].

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
    dataset, dataset_path, shots, seed = cfg["dataset"], cfg["dataset_path"], cfg["shots"], cfg["shot_seed"]
    train = load_dataset(dataset, dataset_path, category, "train")
    normal = [r.image_path for r in train.records if r.label == 0]
    if len(normal) < shots:
        raise NotEnoughReferencesError(
            f"--shots {shots} but {category} has {len(normal)} normal training image(s) "
            f"(train/good): lower --shots to at most {len(normal)} or add normal images"
        )
    test_paths = {r.image_path for r in load_dataset(dataset, dataset_path, category, "test").records}
    if test_paths.intersection(normal):
        warnings.warn(
            f"{category}: the train split is the test split (own folders without train/ and test/), so the "
            "few-shot references are test images too: add <category>/train/good/ for a fair evaluation",
            DatasetWarning,
            stacklevel=2,
        )
    picked = np.random.default_rng(seed).choice(len(normal), shots, replace=False)
    return [str(normal[i]) for i in sorted(picked.tolist())]
