"""Detect anomalies in one image or a folder of images with SAM 3 and text prompts.

    python scripts/demo.py --image_path assets/demo_scratch.png --model_path ~/autodl-tmp/download/sam3
    python scripts/demo.py --image_path my_bottles/ --dataset mvtec --category bottle --output_dir demo_out

Per image, in --output_dir: <stem>_overlay.png (heatmap + colour bar), <stem>_mask.png (map >= threshold),
<stem>_boxes.png (instances with prompt and confidence), <stem>.json (scores and boxes).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataset import MVTEC_CATEGORIES, VISA_CATEGORIES, DatasetError  # noqa: E402
from dataset.base import IMAGE_EXTENSIONS, list_images, read_image  # noqa: E402
from utils.cli import add_checkpoint_arg, base_parser, config_from_args, run  # noqa: E402
from utils.visualization import draw_boxes, save_mask, save_overlay, save_rgb  # noqa: E402

if TYPE_CHECKING:  # the model stack is imported only once the inputs are checked
    from model.detector import AnomalyResult


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = base_parser(__doc__.splitlines()[0])
    add_checkpoint_arg(parser)
    parser.add_argument("--image_path", required=True, help="an image file or a folder of images")
    parser.add_argument("--dataset", choices=["mvtec", "visa", "folder"], help="with --category: its prompts")
    parser.add_argument(
        "--category", help="category name (e.g. bottle, pcb1): category prompts + object prior"
    )
    parser.add_argument("--mask_threshold", type=float, help="binary mask = anomaly map >= this")
    parser.add_argument("--box_threshold", type=float, help="draw instances with score >= this")
    return parser.parse_args(argv)


def input_images(path: Path) -> list[Path]:
    """The image itself, or the image files in a folder (sorted, not recursive)."""
    if path.is_file():
        return [path]
    if path.is_dir():
        images = list_images(path)
        if images:
            return images
        raise DatasetError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {path}")
    raise DatasetError(f"image path not found: {path} (pass an image file or a folder of images)")


def check_category(dataset: str | None, category: str | None) -> None:
    """With --dataset mvtec|visa, --category must be one of that benchmark's categories."""
    known = {"mvtec": MVTEC_CATEGORIES, "visa": VISA_CATEGORIES}.get(dataset or "")
    if known and category not in known:
        raise DatasetError(
            f"--category {category} is not a {dataset} category: choose one of {', '.join(known)}"
        )


def result_record(path: Path, result: AnomalyResult, prompts: list[str], noun: str | None) -> dict[str, Any]:
    """The JSON document written for one image."""
    return {
        "image_path": str(path),
        "image_score": result.image_score,
        "prompts": prompts,
        "object_prompt": noun,
        "object_found": result.object_found,
        "prompt_presence": result.prompt_presence,
        "prompt_best_score": result.prompt_best_score,
        "boxes": [{"prompt": d.prompt, "score": d.score, "box_xyxy": list(d.box)} for d in result.detections],
    }


def save_outputs(
    out: Path,
    path: Path,
    image: np.ndarray,
    result: AnomalyResult,
    cfg: dict[str, Any],
    record: dict[str, Any],
) -> None:
    """Write the four files of one image into `out`: overlay, binary mask, boxes (PNG) and `record` (JSON)."""
    stem = path.stem
    save_overlay(out / f"{stem}_overlay.png", image, result.anomaly_map, f"score {result.image_score:.3f}")
    save_mask(out / f"{stem}_mask.png", result.anomaly_map >= cfg["mask_threshold"])
    boxes = [(d.prompt, d.score, d.box) for d in result.detections]
    save_rgb(out / f"{stem}_boxes.png", draw_boxes(image, boxes))
    (out / f"{stem}.json").write_text(json.dumps(record, indent=2))


def main(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, not_config=("image_path", "category"))
    check_category(cfg["dataset"] if args.dataset else None, args.category)
    paths = input_images(Path(args.image_path).expanduser())
    out = Path(cfg["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    from utils.pipeline import build_detector, prompts_for

    detector, concepts = build_detector(cfg)
    prompts, noun = prompts_for(cfg, args.category, concepts)
    failed = 0
    for start in range(0, len(paths), cfg["batch_size"]):
        batch = []
        for path in paths[start : start + cfg["batch_size"]]:
            try:
                batch.append((path, read_image(path)))
            except DatasetError as err:
                print(f"skipped: {err}", file=sys.stderr)
                failed += 1
        if not batch:
            continue
        results = detector.detect([image for _, image in batch], prompts, noun)
        for (path, image), result in zip(batch, results, strict=True):
            save_outputs(out, path, image, result, cfg, result_record(path, result, prompts, noun))
            print(f"{path.name}: score {result.image_score:.3f}, {len(result.detections)} boxes")
    print(f"{len(paths) - failed} of {len(paths)} images written to {out}")
    return 1 if failed == len(paths) else 0


if __name__ == "__main__":
    sys.exit(run(main, parse_args, sys.argv[1:]))
