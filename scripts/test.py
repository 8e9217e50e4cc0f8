"""Zero-shot evaluation of SAM 3 on MVTec AD, VisA or your own folders.

    python scripts/test.py --config configs/mvtec.yaml
    python scripts/test.py --dataset visa --dataset_path ~/autodl-tmp/datasets --output_dir results/visa

Writes results.json, results.csv, results.md, curves/<category>_{roc,pr}.png and (with --visualize)
vis/<category>/*.png into --output_dir; without --output_dir (and no output_dir in --config), into
results/<dataset>. Rerunning into the same folder resumes; a second run into a folder in use is refused.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataset import load_dataset, select_categories  # noqa: E402
from utils.cli import add_checkpoint_arg, add_dataset_args, base_parser, config_from_args, run  # noqa: E402
from utils.evaluation import CategoryResult, Scorer, evaluate_category, fingerprint_settings  # noqa: E402
from utils.files import OutputLock, check_output_dir  # noqa: E402
from utils.metrics import image_curves, pixel_curves  # noqa: E402
from utils.results import markdown_table, mean_metrics, write_results  # noqa: E402
from utils.visualization import pick_for_visualization, save_curves, save_overlay  # noqa: E402


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = base_parser(__doc__.splitlines()[0])
    add_checkpoint_arg(parser)
    add_dataset_args(parser)
    parser.add_argument("--eval_size", type=int, help="maps and masks are compared at this square size")
    parser.add_argument("--aupro_variant", choices=["official", "clip"])
    parser.add_argument("--visualize", action="store_true", default=None, help="write overlays per category")
    parser.add_argument("--num_visualize", type=int, help="overlays per category (worst errors first)")
    return parser.parse_args(argv)


def visualize_category(samples, result: CategoryResult, vis_dir: Path, count: int) -> None:
    """Overlays for the worst false negatives and false positives of one category."""
    vis_dir.mkdir(parents=True, exist_ok=True)
    for index in pick_for_visualization(result.labels, result.scores, count):
        sample = samples[index]
        name = f"{sample.defect_type}_{Path(sample.image_path).stem}.png"
        title = f"{sample.defect_type}  score {result.scores[index]:.3f}"
        save_overlay(vis_dir / name, sample.image, result.maps[index].astype("float32"), title, sample.mask)


def evaluate(cfg: dict[str, Any], scorer: Scorer, progress: bool = True) -> dict[str, dict[str, float]]:
    """Evaluate every category of cfg with `scorer`, writing results into cfg["output_dir"] as it goes.

    Returns {category: {metric: value}} (NaN for undefined metrics).
    """
    categories = select_categories(cfg["dataset"], cfg["dataset_path"], cfg["categories"])
    out = Path(cfg["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    settings = fingerprint_settings(cfg)
    per_category: dict[str, dict[str, float]] = {}
    for category in categories:
        samples = load_dataset(cfg["dataset"], cfg["dataset_path"], category, "test")
        result = evaluate_category(
            samples,
            scorer,
            category,
            out / "categories" / category,
            cfg["eval_size"],
            cfg["batch_size"],
            settings,
            cfg["aupro_variant"],
            progress,
        )
        per_category[category] = result.metrics
        (out / "curves").mkdir(exist_ok=True)
        curves = {
            "image": image_curves(result.labels, result.scores),
            "pixel": pixel_curves(result.masks, result.maps),
        }
        save_curves(out / "curves" / category, curves, category)
        if cfg["visualize"]:
            visualize_category(samples, result, out / "vis" / category, cfg["num_visualize"])
        write_results(out, cfg["dataset"], per_category, cfg)
    return per_category


def main(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, output_per_dataset=True)
    # Fail on bad paths and on an unwritable or busy output folder before loading a 3 GB model.
    cfg["categories"] = select_categories(cfg["dataset"], cfg["dataset_path"], cfg["categories"])
    out = check_output_dir(cfg["output_dir"])
    with OutputLock(out):
        from utils.pipeline import build_detector, make_scorer

        detector, concepts = build_detector(cfg)
        per_category = evaluate(cfg, make_scorer(detector, cfg, concepts))
    print(markdown_table(per_category, mean_metrics(per_category), cfg["dataset"]))
    print(f"results written to {out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main, parse_args, sys.argv[1:]))
