"""Detect anomalies in one image or a folder of images with SAM 3 and text prompts.

    python scripts/demo.py --image_path assets/demo_scratch.png --model_path ~/autodl-tmp/download/sam3
    python scripts/demo.py --image_path my_bottles/ --dataset mvtec --category bottle --output_dir demo_out

Per image, in --output_dir: <stem>_overlay.png (heatmap + colour bar), <stem>_mask.png (map >= threshold),
<stem>_boxes.png (instances with prompt and confidence), <stem>.json (scores, boxes with their instance
masks as COCO RLE, the mask threshold and where it came from, and the input's path). --thresholds FILE
(thresholds.json of test.py) sets the mask threshold to the category's pixel_normal_threshold.
<stem> is the image's file stem; images whose stems clash (part.png, part.jpg) get <stem>_<extension>
(part_png, part_jpg), so no output replaces another. summary.csv lists every image written (score,
verdict, mask pixels, boxes: utils/evaluation/summary.py); files of a folder that are not images are named
in one line. The output folder is checked and locked before the model is loaded: a second demo into the
same folder stops with an error naming the running one.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.versions import require_torch  # noqa: E402

require_torch()  # one line naming both versions when torch is too old, before torch is imported

from dataset import DatasetError, fixed_categories  # noqa: E402
from dataset.images import category_bit_depth, read_image  # noqa: E402
from dataset.records import IMAGE_EXTENSIONS, list_images, short_list  # noqa: E402
from model.detector import AnomalyResult  # noqa: E402
from model.mutual import MutualScorer  # noqa: E402
from model.visual import VisualMode  # noqa: E402
from utils.config.cli import config_from_args, run, script_parser  # noqa: E402
from utils.config.schema import Config  # noqa: E402
from utils.evaluation.exports import detections_json  # noqa: E402
from utils.evaluation.summary import (  # noqa: E402
    VerdictRule,
    skipped_line,
    summary_row,
    verdict_rule,
    write_summary,
)
from utils.evaluation.thresholds import chosen_mask_threshold  # noqa: E402
from utils.evaluation.visualization import draw_boxes, save_mask, save_overlay, save_rgb  # noqa: E402
from utils.files import NAME_MAX_BYTES, OutputLock, atomic_write_text, check_output_dir, fit_name  # noqa: E402
from utils.pipeline import build_detector, prompts_for  # noqa: E402
from utils.run_log import bar_progress, get_logger, log_to_folder  # noqa: E402

log = get_logger(__name__)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Config keys as flags (utils/config/schema.py declares which ones demo.py takes), plus the input.

    --dataset with --category picks that benchmark's prompts and object noun.
    """
    parser = script_parser("demo", __doc__.splitlines()[0])
    parser.add_argument("--image_path", required=True, help="an image file or a folder of images")
    parser.add_argument(
        "--category", help="category name (e.g. bottle, pcb1): category prompts + object prior"
    )
    parser.add_argument(
        "--reference_dir",
        help="a folder of a few good images of the same product: few-shot visual scoring against them",
    )
    return parser.parse_args(argv)


def visual_inputs(cfg: Config, reference_dir: str | None, n_images: int) -> list[np.ndarray]:
    """Check the visual mode against the inputs and read the reference images (before the model loads).

    Fewshot needs --reference_dir (which turns --visual none into fewshot: `main`), mutual (the demo images
    against each other, encoded in one batch) needs two images or more and no references.
    """
    visual = cfg.scoring.visual
    if reference_dir is None:
        if visual is VisualMode.FEWSHOT:
            raise DatasetError("--visual fewshot needs --reference_dir DIR (a few good images of the part)")
        if visual is VisualMode.MUTUAL and n_images < 2:
            raise DatasetError(
                "--visual mutual compares the demo images with each other: pass a folder of two or more "
                "images, or --reference_dir DIR with good images for few-shot scoring"
            )
        return []
    if visual is VisualMode.MUTUAL:
        raise DatasetError("--reference_dir is for few-shot scoring: drop --visual mutual or --reference_dir")
    folder = Path(reference_dir).expanduser()
    if not folder.is_dir():
        raise DatasetError(f"--reference_dir {folder} is not a folder: pass a folder of good images")
    paths = list_images(folder)
    if not paths:
        raise DatasetError(
            f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in --reference_dir {folder}: "
            "put a few good images of the product there"
        )
    return [read_image(p, cfg.data.bit_depth) for p in paths]  # unreadable: a one-line DatasetError naming it


def input_images(path: Path) -> list[Path]:
    """The image itself, or the image files in a folder (sorted, not recursive)."""
    if path.is_file():
        return [path]
    if path.is_dir():
        images = list_images(path)
        if images and (skipped := skipped_line(path, images, sorted(IMAGE_EXTENSIONS))):
            log.warning(skipped)
        if images:
            return images
        raise DatasetError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {path}")
    raise DatasetError(f"image path not found: {path} (pass an image file or a folder of images)")


def warn_self_references(paths: Sequence[Path], references: Sequence[Path]) -> None:
    """Warn when images to score are references too: compared with themselves, they look normal."""
    same = sorted({p.resolve() for p in paths} & {p.resolve() for p in references})
    if same:
        names = short_list([p.name for p in same])
        log.warning(
            f"{len(same)} of the {len(paths)} images are also in --reference_dir ({names}): each is compared "
            "with itself and looks normal; keep the references apart from the images to score"
        )


def check_category(dataset: str | None, category: str | None) -> None:
    """With --dataset <benchmark>, --category must be one of that benchmark's categories; a set whose classes
    are its own (meta_json, folder) takes any name (an unknown one gets the base prompts, no object prior)."""
    known = fixed_categories(dataset) if dataset else ()
    if known and category not in known:
        raise DatasetError(
            f"--category {category} is not a {dataset} category: choose one of {', '.join(known)}"
        )


def output_stems(paths: Sequence[Path]) -> dict[Path, str]:
    """A distinct output stem per input image: its file stem, or `<stem>_<ext>` where stems clash.

    Clashes are found case-insensitively (`Part.png` and `part.jpg` clash on macOS and Windows); a name that
    still clashes (e.g. with another image named `part_png.bmp`) gets `_2`, `_3`, ... appended.
    """
    counts = Counter(p.stem.casefold() for p in paths)
    stems: dict[Path, str] = {}
    taken: set[str] = set()
    for path in paths:
        stem = path.stem if counts[path.stem.casefold()] == 1 else f"{path.stem}_{path.suffix.lstrip('.')}"
        stem = fitting_stem(stem)
        unique, n = stem, 1
        while unique.casefold() in taken:
            n += 1
            unique = f"{stem}_{n}"
        taken.add(unique.casefold())
        stems[path] = unique
    return stems


def result_record(
    path: Path,
    result: AnomalyResult,
    prompts: list[str],
    noun: str | None,
    threshold: tuple[float, str] = (math.nan, ""),
) -> dict[str, Any]:
    """The JSON document written for one image; "image_path" (absolute) maps the output stem to its input.

    `threshold`: the mask threshold and where it came from (`chosen_mask_threshold`), recorded so that a
    mask can be told apart from one made with another threshold.
    """
    return {
        "image_path": str(path.resolve()),
        "image_score": result.image_score,
        "mask_threshold": threshold[0],
        "mask_threshold_source": threshold[1],
        "prompts": prompts,
        "object_prompt": noun,
        "object_found": result.object_found,
        "prompt_presence": result.prompt_presence,
        "prompt_best_score": result.prompt_best_score,
        "boxes": detections_json(result.detections),
    }


OUTPUT_SUFFIXES: tuple[str, ...] = ("_overlay.png", "_mask.png", "_boxes.png", ".json")
# The longest output stem: 255 bytes per file name, minus the longest suffix and room for a `_<n>` suffix.
MAX_STEM_BYTES = NAME_MAX_BYTES - max(len(s) for s in OUTPUT_SUFFIXES) - 8


def fitting_stem(stem: str) -> str:
    """`stem`, cut (at a character boundary) to MAX_STEM_BYTES of UTF-8 so that every output name fits."""
    return fit_name(stem, MAX_STEM_BYTES)


def save_outputs(
    out: Path,
    stem: str,
    image: np.ndarray,
    result: AnomalyResult,
    record: dict[str, Any],
) -> bool:
    """Write the four files of one image as `out/<stem><suffix>` (OUTPUT_SUFFIXES); the JSON is written last.

    Returns True only if all four files are there afterwards (outputs of an earlier run are removed first,
    so a file that failed to write is not counted).
    """
    files = [out / f"{stem}{suffix}" for suffix in OUTPUT_SUFFIXES]
    for file in files:
        file.unlink(missing_ok=True)
    overlay, mask, boxes_png, json_file = files
    save_overlay(overlay, image, result.anomaly_map, f"score {result.image_score:.3f}")
    save_mask(mask, result.mask)
    boxes = [(d.prompt, d.score, d.box) for d in result.detections]
    save_rgb(boxes_png, draw_boxes(image, boxes))
    atomic_write_text(json_file, json.dumps(record, indent=2))
    return all(file.is_file() for file in files)


def binary_mask(anomaly_map: np.ndarray, threshold: float) -> np.ndarray:
    """(H, W) bool: `anomaly_map >= threshold`, compared in float64 so that a huge finite threshold (-1e308)
    does not overflow the map's float16/float32 dtype."""
    return anomaly_map.astype(np.float64) >= threshold


def read_batch(paths: Sequence[Path], bit_depth: int | None = None) -> list[tuple[Path, np.ndarray]]:
    """Decode `paths` (`bit_depth`: see `read_image`); an unreadable image is reported and left out."""
    batch = []
    for path in paths:
        try:
            batch.append((path, read_image(path, bit_depth)))
        except DatasetError as err:
            log.warning(f"skipped: {err}")
    return batch


def detect_and_save(
    paths: Sequence[Path],
    out: Path,
    cfg: Config,
    category: str | None,
    references: Sequence[np.ndarray] = (),
    threshold_source: str = "",
    rule: VerdictRule | None = None,
) -> list[dict[str, Any]]:
    """Load the detector, score `paths` in batches, save each image's outputs; return the summary.csv row
    of each image whose outputs were all written (verdict by `rule`; None: any mask pixel).

    With `references` (few-shot) they are encoded once first; visual mutual scores all images in one batch.
    Maps are scored at eval_size x eval_size, as test.py scores them, and resized to each image.
    """
    rule = rule or verdict_rule(None, category, cfg.demo.mask_threshold, threshold_source)
    rows: list[dict[str, Any]] = []
    detector, concepts = build_detector(cfg)
    if references:
        detector.set_references(references)
    mutual = MutualScorer(detector, cfg.data.dataset) if cfg.scoring.visual is VisualMode.MUTUAL else None
    step = len(paths) if mutual is not None else cfg.model.batch_size
    prompts, noun = prompts_for(cfg, category, concepts)
    size = (cfg.evaluation.eval_size, cfg.evaluation.eval_size)  # the maps test.py scores (thresholds.json)
    stems = output_stems(paths)
    for start in range(0, len(paths), step):
        batch = read_batch(paths[start : start + step], cfg.data.bit_depth)
        if mutual is not None and len(batch) < 2:
            raise DatasetError(
                f"--visual mutual compares the images with each other, but only {len(batch)} of "
                f"{len(paths)} could be read: fix the unreadable files or add images"
            )
        if not batch:
            continue
        arrays = [image for _, image in batch]  # instance masks: for the COCO RLE of each box in the JSON
        if mutual is not None:
            with tqdm(total=len(arrays), desc="mutual: compare", unit="img") as bar:
                results = mutual.score(
                    [arrays], prompts, noun, size, instance_masks=True, progress=bar_progress(bar)
                )
        else:
            results = detector.detect_arrays(arrays, prompts, noun, size, instance_masks=True)
        threshold = cfg.demo.mask_threshold
        for result, image in zip(results, arrays, strict=True):
            result.resize_maps(image.shape[:2])  # scored at eval_size as test.py, shown at the image's size
            result.mask = binary_mask(result.anomaly_map, threshold)
        for (path, image), result in zip(batch, results, strict=True):
            record = result_record(path, result, prompts, noun, (threshold, threshold_source))
            try:
                saved = save_outputs(out, stems[path], image, result, record)
            except OSError as err:  # a file system with shorter names than 255 bytes: the others are written
                if err.errno != errno.ENAMETOOLONG:
                    raise
                log.warning(
                    f"not written: outputs of {path} (the name is too long for {out}: rename the file)"
                )
                continue
            if saved:
                rows.append(summary_row(path.name, result, rule))
                n_boxes = len(result.detections)
                log.info(f"{path.name} -> {stems[path]}: score {result.image_score:.3f}, {n_boxes} boxes")
            else:
                log.warning(f"not written: outputs of {path} in {out} (check the folder and free space)")
    return rows


def check_not_an_input(out: Path, inputs: dict[str, str | None]) -> None:
    """Refuse an output folder that is an input folder: a rerun would read the outputs written there
    (<stem>_overlay.png, ...) as images to score (or as good references)."""
    for flag, given in inputs.items():
        if given and Path(given).expanduser().resolve() == out.resolve():
            raise DatasetError(
                f"--output_dir {out} is the {flag} folder: the next run would read its outputs as images; "
                "choose another --output_dir"
            )


def main(args: argparse.Namespace) -> int:
    if not args.image_path.strip():  # "" would be the current folder
        raise DatasetError("--image_path is empty: pass an image file or a folder of images")
    cfg = config_from_args(args, not_config=("image_path", "category", "reference_dir"))
    check_category(cfg.data.dataset if args.dataset else None, args.category)
    # the category's threshold from test.py (--thresholds) replaces mask_threshold
    threshold, source = chosen_mask_threshold(
        cfg.demo.thresholds,
        cfg.demo.mask_threshold,
        args.category,
        args.mask_threshold is not None,
        cfg.evaluation.eval_size,
    )
    log.info(f"mask threshold {threshold:.4g}: {source}")
    paths = input_images(Path(args.image_path).expanduser())
    bit_depth = cfg.data.bit_depth
    if bit_depth is None:  # the images (and references) as one category: one depth for all of them
        folder = Path(args.reference_dir).expanduser() if args.reference_dir else None
        bit_depth = category_bit_depth([*paths, *(list_images(folder) if folder else [])])
    cfg = cfg.replace(mask_threshold=threshold, bit_depth=bit_depth)
    references = visual_inputs(cfg, args.reference_dir, len(paths))
    if references:  # --reference_dir: few-shot scoring against them
        cfg = cfg.replace(visual=VisualMode.FEWSHOT.value)
        warn_self_references(paths, list_images(Path(args.reference_dir).expanduser()))
    out = check_output_dir(cfg.evaluation.output_dir)  # before the (large) model is loaded
    check_not_an_input(out, {"--image_path": args.image_path, "--reference_dir": args.reference_dir})
    with OutputLock(out):
        log_to_folder(out)
        rule = verdict_rule(cfg.demo.thresholds, args.category, threshold, source)
        rows = detect_and_save(paths, out, cfg, args.category, references, source, rule)
        summary = write_summary(out, rows)
    log.info(
        f"{len(rows)} of {len(paths)} images written to {out} (verdicts: {summary.name}, {rule.describe()})"
    )
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(run(main, parse_args, sys.argv[1:]))
