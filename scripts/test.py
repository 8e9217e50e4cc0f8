"""Zero-shot evaluation of SAM 3 on MVTec AD, VisA or your own folders.

    python scripts/test.py --config configs/mvtec.yaml
    python scripts/test.py --dataset visa --dataset_path ~/autodl-tmp/datasets --output_dir results/visa

Writes results.json, results.csv, results.md, curves/<category>_{roc,pr}.png and (with --visualize)
vis/<category>/*.png into --output_dir; without --output_dir (and no output_dir in --config), into
results/<dataset>. Rerunning into the same folder resumes; a second run into a folder in use is refused.
With `--visual fewshot --shot_seeds 0,1,2`: one run per seed in <output_dir>/seed_<s>/ and their mean in
<output_dir>.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.versions import require_torch  # noqa: E402

require_torch()  # one line naming both versions when torch is too old, before torch is imported

from dataset import select_categories  # noqa: E402
from utils.config.cli import config_from_args, run, script_parser  # noqa: E402
from utils.config.schema import Config  # noqa: E402
from utils.distributed import Dist, everywhere, from_environment, on_main, shutdown  # noqa: E402
from utils.evaluation.benchmark_hooks import check_benchmark_settings  # noqa: E402
from utils.evaluation.runner import evaluate  # noqa: E402
from utils.evaluation.seeds import evaluate_seeds, seed_runs  # noqa: E402
from utils.files import OutputLock, check_output_dir  # noqa: E402
from utils.pipeline import CategoryScorer, build_detector, check_prompt_overrides  # noqa: E402
from utils.run_log import get_logger, log_to_folder  # noqa: E402
from utils.run_record import RunRecord  # noqa: E402

log = get_logger(__name__)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Every flag is a config key (utils/config/schema.py declares which ones test.py takes)."""
    return script_parser("test", __doc__.splitlines()[0]).parse_args(argv)


def main(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, output_per_dataset=True)
    dist, device = from_environment(cfg.model.device)  # torchrun: this rank's device
    cfg = cfg.replace(device=device)
    try:
        return evaluate_on_ranks(cfg, dist)
    finally:
        shutdown(dist)


def evaluate_on_ranks(cfg: Config, dist: Dist) -> int:
    """Check inputs, lock the output folder (rank 0), load SAM 3 on every rank, evaluate, print (rank 0)."""
    record = RunRecord(cfg.model.device, cfg.model.dtype)  # wall time from here: model loading included
    # Fail on bad paths and on an unwritable or busy output folder before loading a 3 GB model.
    several_seeds = bool(seed_runs(cfg))  # --shot_seeds: checked before the model loads
    cfg = cfg.replace(
        categories=select_categories(cfg.data.dataset, cfg.data.dataset_path, cfg.data.categories)
    )
    check_benchmark_settings(cfg)  # test_split, defect_type_report: for the datasets they apply to
    check_prompt_overrides(cfg)  # a misspelt category would keep its built prompts
    out = check_output_dir(cfg.evaluation.output_dir)
    with ExitStack() as stack:
        on_main(dist, lambda: stack.enter_context(OutputLock(out)))
        if dist.is_main:
            log_to_folder(out)
        detector, concepts = everywhere(dist, lambda: build_detector(cfg))
        if several_seeds:  # <out>/seed_<s>/ each, then the mean over seeds in <out>
            evaluate_seeds(
                cfg, lambda c: CategoryScorer(detector, c, concepts), cfg.data.categories, record, dist
            )
        else:
            scorer = CategoryScorer(detector, cfg, concepts)
            evaluate(cfg, scorer, categories=cfg.data.categories, record=record, dist=dist)
    if dist.is_main:  # the console shows results.md itself: the same title, categories and image counts
        print((out / "results.md").read_text(encoding="utf-8"))
        log.info(f"results written to {out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main, parse_args, sys.argv[1:]))
