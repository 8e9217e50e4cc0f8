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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataset import select_categories  # noqa: E402
from utils.config.cli import add_checkpoint_arg, add_dataset_args, base_parser, config_from_args, run  # noqa: E402
from utils.evaluation.results import markdown_table, mean_metrics  # noqa: E402
from utils.evaluation.runner import evaluate  # noqa: E402
from utils.files import OutputLock, check_output_dir  # noqa: E402
from utils.pipeline import build_detector, make_scorer  # noqa: E402


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = base_parser(__doc__.splitlines()[0])
    add_checkpoint_arg(parser)
    add_dataset_args(parser)
    parser.add_argument("--eval_size", type=int, help="maps and masks are compared at this square size")
    parser.add_argument("--aupro_variant", choices=["official", "clip"])
    parser.add_argument("--visualize", action="store_true", default=None, help="write overlays per category")
    parser.add_argument("--num_visualize", type=int, help="overlays per category (worst errors first)")
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, output_per_dataset=True)
    # Fail on bad paths and on an unwritable or busy output folder before loading a 3 GB model.
    cfg["categories"] = select_categories(cfg["dataset"], cfg["dataset_path"], cfg["categories"])
    out = check_output_dir(cfg["output_dir"])
    with OutputLock(out):
        detector, concepts = build_detector(cfg)
        per_category = evaluate(cfg, make_scorer(detector, cfg, concepts))
    print(markdown_table(per_category, mean_metrics(per_category), cfg["dataset"]))
    print(f"results written to {out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main, parse_args, sys.argv[1:]))
