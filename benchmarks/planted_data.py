"""Normal images with planted defects of several sizes, for measuring the visual scores (bench_visual.py).

The normal images are real ones when ``../shared/data/mvtec_sample_hazelnut/train/good`` exists (MVTec AD
hazelnut, 256 x 256), else textured surfaces from `dataset.synthetic`. Every other test image gets one
defect drawn on the object's centre region, the kinds cycling through `DEFECT_SIZES`: a thin stroke (2 px
wide, 30-60 px long) and filled discs of radius 5, 11 and 20 px, either darkening the pixels under them to
half (the texture stays: a stain or a cut's shadow), lightening them by 60 grey levels, or painted one
flat blue. The mask is exactly the drawn pixels. The draw depends only on the seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from dataset.synthetic import textured_background

HAZELNUT_GOOD = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "mvtec_sample_hazelnut" / "train" / "good"
)
SIDE = 256
# name -> disc radius in px of a 256 px image (0: a thin stroke 2 px wide).
DEFECT_SIZES: dict[str, int] = {"stroke": 0, "small": 5, "medium": 11, "large": 20}
BLUE = (60, 90, 170)
CENTRE_RADIUS = 55  # defects are centred within this many px of the image centre (on the hazelnut)


@dataclass
class PlantedSet:
    """K normal references and N test images (RGB uint8 (256, 256, 3)) with (256, 256) bool masks."""

    references: list[np.ndarray]
    images: list[np.ndarray]
    masks: list[np.ndarray]
    kinds: list[str]  # "good" or a key of DEFECT_SIZES, per test image
    source: str  # where the normal images come from

    @property
    def labels(self) -> np.ndarray:
        return np.array([kind != "good" for kind in self.kinds], dtype=int)


def normal_images(count: int, seed: int, folder: Path = HAZELNUT_GOOD) -> tuple[list[np.ndarray], str]:
    """`count` normal 256 x 256 RGB images: the PNGs of `folder` (default: the hazelnut sample's train/good)
    when it has enough, else textured surfaces of one colour."""
    paths = sorted(folder.glob("*.png")) if folder.is_dir() else []
    if len(paths) >= count:
        images = [np.asarray(Image.open(p).convert("RGB").resize((SIDE, SIDE))) for p in paths[:count]]
        return images, f"{folder}"
    rng = np.random.default_rng(seed)
    tint = rng.uniform(80, 170, size=3)  # one product: every image the same colour
    return [textured_background(rng, SIDE, tint) for _ in range(count)], "dataset.synthetic textured surfaces"


def plant(image: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`image` with one defect of `kind` drawn near its centre, and the (H, W) bool mask of its pixels."""
    canvas = np.zeros(image.shape[:2], np.uint8)
    angle = rng.uniform(0, 2 * np.pi)
    distance = rng.uniform(0, CENTRE_RADIUS)
    cx, cy = (int(SIDE / 2 + distance * np.cos(angle)), int(SIDE / 2 + distance * np.sin(angle)))
    radius = DEFECT_SIZES[kind]
    if radius == 0:
        length, turn = rng.uniform(30, 60), rng.uniform(0, np.pi)
        dx, dy = length / 2 * np.cos(turn), length / 2 * np.sin(turn)
        cv2.line(canvas, (int(cx - dx), int(cy - dy)), (int(cx + dx), int(cy + dy)), 1, thickness=2)
    else:
        cv2.circle(canvas, (cx, cy), radius, 1, thickness=-1)
    mask = canvas.astype(bool)
    out = image.astype(np.int16)
    change = int(rng.integers(3))
    if change == 0:
        out[mask] //= 2
    elif change == 1:
        out[mask] += 60
    else:
        out[mask] = BLUE
    return np.clip(out, 0, 255).astype(np.uint8), mask


def planted_set(references: int, tests: int, seed: int = 0, folder: Path = HAZELNUT_GOOD) -> PlantedSet:
    """`references` normal images, then `tests` test images; every other one (1, 3, ...) is planted."""
    normals, source = normal_images(references + tests, seed, folder)
    rng = np.random.default_rng(seed)
    kinds_cycle = list(DEFECT_SIZES)
    images, masks, kinds = [], [], []
    for i, image in enumerate(normals[references:]):
        if i % 2 == 0:
            images.append(image)
            masks.append(np.zeros(image.shape[:2], bool))
            kinds.append("good")
            continue
        kind = kinds_cycle[(i // 2) % len(kinds_cycle)]
        planted, mask = plant(image, kind, rng)
        images.append(planted)
        masks.append(mask)
        kinds.append(kind)
    return PlantedSet(normals[:references], images, masks, kinds, source)
