"""Generate small datasets in the real on-disk layouts, for tests and for trying the pipeline offline.

Images are textured surfaces (noise + stripes) with drawn defects (scratch lines, holes, stains). Every
mask is exactly the set of pixels drawn: background values stay inside [BG_MIN, BG_MAX] in every channel
while each defect colour has a channel outside that range, so for lossless PNG images
`mask == (image == DEFECT_COLORS[kind]).all(-1)`. VisA images are JPEG (as in the real download): JPEG
changes pixels but the PNG masks stay exact.

    python -m dataset.synthetic --layout mvtec --out /tmp/datasets/mvtec --categories bottle,wood --n_defect 4

Depends on numpy, OpenCV and Pillow only, so it also runs as a file (`python dataset/synthetic.py`).
"""

from __future__ import annotations

import argparse
import csv
import os
import zlib
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

BG_MIN, BG_MAX = 32, 223
DEFECT_KINDS: tuple[str, ...] = ("scratch", "hole", "stain")
DEFECT_COLORS: dict[str, tuple[int, int, int]] = {
    "scratch": (250, 250, 250),
    "hole": (5, 5, 5),
    "stain": (240, 16, 16),
}
# MVTec AD categories whose images are grayscale PNGs.
GRAYSCALE_CATEGORIES: tuple[str, ...] = ("grid", "screw", "zipper")

Size = int | tuple[int, int]


def _hw(size: Size) -> tuple[int, int]:
    """(height, width) from an int (square) or a (height, width) pair."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _rng(seed: int, *keys: str) -> np.random.Generator:
    """A generator that depends on the seed and on string keys (category, split), stable across runs."""
    return np.random.default_rng([seed, *(zlib.crc32(k.encode()) for k in keys)])


def defect_kind(defect_type: str) -> str:
    """The drawing of a defect type: itself if it is in DEFECT_KINDS, else a fixed one chosen by its name."""
    if defect_type in DEFECT_KINDS:
        return defect_type
    return DEFECT_KINDS[zlib.crc32(defect_type.encode()) % len(DEFECT_KINDS)]


def textured_background(rng: np.random.Generator, size: Size, tint: np.ndarray | None = None) -> np.ndarray:
    """A surface of noise and stripes. Returns (H, W, 3) uint8 with every value in [BG_MIN, BG_MAX]."""
    h, w = _hw(size)
    base = rng.uniform(80, 170, size=3) if tint is None else np.asarray(tint, dtype=np.float64)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(6, 16) * max(h, w) / 64
    stripes = 18 * np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)
    noise = rng.normal(0, 8, size=(h, w, 3))
    img = base[None, None, :] + stripes[..., None] + noise
    return np.clip(np.rint(img), BG_MIN, BG_MAX).astype(np.uint8)


def draw_defect(image: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Draw one defect of `kind` (scratch, hole, stain) onto `image` in place, in DEFECT_COLORS[kind].

    image: (H, W, 3) uint8. Returns the (H, W) bool mask of exactly the pixels drawn (never empty).
    """
    h, w = image.shape[:2]
    side = min(h, w)
    canvas = np.zeros((h, w), dtype=np.uint8)
    cy, cx = int(rng.integers(side // 4, h - side // 4)), int(rng.integers(side // 4, w - side // 4))
    if kind == "scratch":
        length = rng.uniform(0.25, 0.5) * side
        angle = rng.uniform(0, np.pi)
        dx, dy = length * np.cos(angle) / 2, length * np.sin(angle) / 2
        p0, p1 = (int(cx - dx), int(cy - dy)), (int(cx + dx), int(cy + dy))
        cv2.line(canvas, p0, p1, 1, thickness=max(1, side // 40), lineType=cv2.LINE_8)
    elif kind == "hole":
        radius = int(rng.integers(max(2, side // 14), max(3, side // 7) + 1))
        cv2.circle(canvas, (cx, cy), radius, 1, thickness=-1, lineType=cv2.LINE_8)
    elif kind == "stain":
        axes = (
            int(rng.integers(max(2, side // 12), max(3, side // 6) + 1)),
            int(rng.integers(max(1, side // 20), max(2, side // 10) + 1)),
        )
        cv2.ellipse(
            canvas, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, 1, thickness=-1, lineType=cv2.LINE_8
        )
    else:
        raise ValueError(f"unknown defect kind {kind!r}: expected one of {', '.join(DEFECT_KINDS)}")
    mask = canvas.astype(bool)
    image[mask] = DEFECT_COLORS[kind]
    return mask


def _save_png(array: np.ndarray, path: Path, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(array)
    (img.convert(mode) if mode else img).save(path)


def _save_mask(mask: np.ndarray, path: Path, mask_mode: str) -> None:
    """8bit: mode L with 0/255; 1bit: mode "1" with 0/1 (as in the real MVTec AD sample)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if mask_mode == "8bit":
        Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(path)
    elif mask_mode == "1bit":
        Image.fromarray(mask.astype(bool)).convert("1").save(path)
    else:
        raise ValueError(f"unknown mask_mode {mask_mode!r}: expected '8bit' or '1bit'")


def _surface(rng: np.random.Generator, tint: np.ndarray, size: Size) -> np.ndarray:
    return textured_background(rng, size, tint=tint + rng.uniform(-6, 6, size=3))


def make_mvtec_like(
    root: str | os.PathLike[str],
    categories: Sequence[str] = ("bottle", "wood"),
    n_train: int = 3,
    n_good: int = 3,
    n_defect: int = 4,
    size: Size = 64,
    seed: int = 0,
    defect_types: Sequence[str] = ("scratch", "hole"),
    mask_mode: str = "8bit",
    grayscale: Sequence[str] = GRAYSCALE_CATEGORIES,
) -> Path:
    """Write an MVTec AD tree: `root/<cat>/{train/good, test/{good,<defect>}, ground_truth/<defect>}`.

    `n_defect` defective test images per category, assigned to `defect_types` in turn; images are numbered
    000.png, 001.png, ... in each folder and masks are `<stem>_mask.png` (`mask_mode` "8bit" 0/255 or "1bit").
    Categories in `grayscale` are written as 8-bit gray PNGs. Returns `root` as a Path.
    """
    out = Path(root)
    for category in categories:
        rng = _rng(seed, "mvtec", category)
        tint = rng.uniform(80, 170, size=3)
        mode = "L" if category in grayscale else None
        cat = out / category
        for i in range(n_train):
            _save_png(_surface(rng, tint, size), cat / "train" / "good" / f"{i:03d}.png", mode)
        for i in range(n_good):
            _save_png(_surface(rng, tint, size), cat / "test" / "good" / f"{i:03d}.png", mode)
        counters: dict[str, int] = {}
        for i in range(n_defect):
            defect = defect_types[i % len(defect_types)]
            k = counters[defect] = counters.get(defect, -1) + 1
            image = _surface(rng, tint, size)
            mask = draw_defect(image, defect_kind(defect), rng)
            _save_png(image, cat / "test" / defect / f"{k:03d}.png", mode)
            _save_mask(mask, cat / "ground_truth" / defect / f"{k:03d}_mask.png", mask_mode)
    out.mkdir(parents=True, exist_ok=True)
    return out


def make_visa_like(
    root: str | os.PathLike[str],
    categories: Sequence[str] = ("candle", "pcb1"),
    n_normal: int = 3,
    n_anomaly: int = 3,
    size: Size = (48, 64),
    seed: int = 0,
    n_train: int = 3,
    defect_types: Sequence[str] = ("scratch", "hole", "stain"),
) -> Path:
    """Write a raw VisA tree with its split file.

    `root/<cat>/Data/Images/Normal/NNNN.JPG` (n_train train + n_normal test), `Data/Images/Anomaly/NNN.JPG`
    (n_anomaly test), `Data/Masks/Anomaly/NNN.png` (uint8 class ids: 1 + index of the defect type; 0 normal)
    and `root/split_csv/1cls.csv` (`object,split,label,image,mask`, paths relative to root). Images are JPEG
    at quality 95, so pixels differ slightly from the drawing; masks are exact. Returns `root` as a Path.
    """
    out = Path(root)
    rows: list[tuple[str, str, str, str, str]] = []
    for category in categories:
        rng = _rng(seed, "visa", category)
        tint = rng.uniform(80, 170, size=3)
        data = out / category / "Data"
        for i in range(n_train + n_normal):
            rel = f"{category}/Data/Images/Normal/{i:04d}.JPG"
            _save_jpeg(_surface(rng, tint, size), out / rel)
            rows.append((category, "train" if i < n_train else "test", "normal", rel, ""))
        (data / "Masks" / "Anomaly").mkdir(parents=True, exist_ok=True)
        for i in range(n_anomaly):
            class_id = i % len(defect_types)
            image = _surface(rng, tint, size)
            mask = draw_defect(image, defect_kind(defect_types[class_id]), rng)
            rel_img = f"{category}/Data/Images/Anomaly/{i:03d}.JPG"
            rel_mask = f"{category}/Data/Masks/Anomaly/{i:03d}.png"
            _save_jpeg(image, out / rel_img)
            _save_png(mask.astype(np.uint8) * np.uint8(class_id + 1), out / rel_mask)
            rows.append((category, "test", "anomaly", rel_img, rel_mask))
    split_csv = out / "split_csv" / "1cls.csv"
    split_csv.parent.mkdir(parents=True, exist_ok=True)
    with open(split_csv, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("object", "split", "label", "image", "mask"))
        writer.writerows(rows)
    return out


def _save_jpeg(image: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="JPEG", quality=95)


def make_folder_like(
    root: str | os.PathLike[str],
    categories: Sequence[str] = ("widget",),
    n_good: int = 3,
    n_defect: int = 4,
    size: Size = 64,
    seed: int = 0,
    defect_types: Sequence[str] = ("scratch", "stain"),
    with_masks: bool = True,
    split_subfolders: bool = False,
    n_train: int = 3,
) -> Path:
    """Write own data: `root/<cat>/{good,<defect>}/NNN.png` and `root/<cat>/masks/<defect>/NNN_mask.png`.

    Without `with_masks` no masks folder is written. With `split_subfolders` the same layout is written
    under `root/<cat>/train/` (n_train good images only) and `root/<cat>/test/`. Returns `root` as a Path.
    """
    out = Path(root)
    for category in categories:
        rng = _rng(seed, "folder", category)
        tint = rng.uniform(80, 170, size=3)
        cat = out / category
        parts: list[tuple[Path, int, int]] = [(cat, n_good, n_defect)]
        if split_subfolders:
            parts = [(cat / "train", n_train, 0), (cat / "test", n_good, n_defect)]
        for base, goods, defects in parts:
            for i in range(goods):
                _save_png(_surface(rng, tint, size), base / "good" / f"{i:03d}.png")
            for i in range(defects):
                defect = defect_types[i % len(defect_types)]
                image = _surface(rng, tint, size)
                mask = draw_defect(image, defect_kind(defect), rng)
                _save_png(image, base / defect / f"{i:03d}.png")
                if with_masks:
                    _save_mask(mask, base / "masks" / defect / f"{i:03d}_mask.png", "8bit")
    out.mkdir(parents=True, exist_ok=True)
    return out


def make_demo_image(size: int = 512, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A textured surface with one drawn scratch (a bent polyline).

    Returns image (size, size, 3) uint8 RGB and mask (size, size) bool of exactly the scratch pixels.
    """
    rng = _rng(seed, "demo")
    image = textured_background(rng, size, tint=np.array([150.0, 128.0, 96.0]))
    n_points = 4
    start = rng.uniform(0.2, 0.35, size=2) * size
    end = rng.uniform(0.65, 0.8, size=2) * size
    t = np.linspace(0, 1, n_points)[:, None]
    points = start + t * (end - start) + rng.normal(0, size * 0.03, size=(n_points, 2))
    canvas = np.zeros((size, size), dtype=np.uint8)
    cv2.polylines(
        canvas,
        [np.rint(points).astype(np.int32)],
        isClosed=False,
        color=1,
        thickness=max(2, size // 100),
        lineType=cv2.LINE_8,
    )
    mask = canvas.astype(bool)
    image[mask] = (40, 30, 25)
    return image, mask


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """CLI flags; `argv` is a list so tests can call it."""
    parser = argparse.ArgumentParser(
        prog="python -m dataset.synthetic",
        description="Write a small synthetic dataset in the MVTec AD, raw VisA or own-folder layout.",
    )
    parser.add_argument("--layout", choices=("mvtec", "visa", "folder"), required=True)
    parser.add_argument("--out", required=True, help="folder to write into (created)")
    parser.add_argument(
        "--categories", default=None, help="comma-separated; default: bottle,wood | candle,pcb1 | widget"
    )
    parser.add_argument("--n_train", type=int, default=3, help="normal training images per category")
    parser.add_argument("--n_good", type=int, default=3, help="normal test images per category")
    parser.add_argument("--n_defect", type=int, default=4, help="defective test images per category")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--defect_types",
        default="scratch,hole",
        help="comma-separated defect folder names (drawn as scratch, hole or stain)",
    )
    parser.add_argument("--mask_mode", choices=("8bit", "1bit"), default="8bit", help="MVTec mask PNG depth")
    args = parser.parse_args(argv)
    if min(args.n_train, args.n_good, args.n_defect) < 0 or args.size < 16:
        parser.error("counts must be >= 0 and --size >= 16")
    return args


def _split(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def main(args: argparse.Namespace) -> Path:
    """Write the dataset described by `args`; returns (and prints) the root written."""
    categories = _split(args.categories)
    defects = _split(args.defect_types) or ["scratch"]
    common = {"n_defect": args.n_defect, "size": args.size, "seed": args.seed, "defect_types": defects}
    if args.layout == "mvtec":
        root = make_mvtec_like(
            args.out,
            categories or ("bottle", "wood"),
            n_train=args.n_train,
            n_good=args.n_good,
            mask_mode=args.mask_mode,
            **common,
        )
    elif args.layout == "visa":
        root = make_visa_like(
            args.out,
            categories or ("candle", "pcb1"),
            n_normal=args.n_good,
            n_anomaly=args.n_defect,
            size=args.size,
            seed=args.seed,
            n_train=args.n_train,
            defect_types=defects,
        )
    else:
        root = make_folder_like(args.out, categories or ("widget",), n_good=args.n_good, **common)
    print(root)
    return root


if __name__ == "__main__":
    main(parse_args())
