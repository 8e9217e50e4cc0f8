"""Few-shot over several seeds (`--shot_seeds 0,1,2`): one ordinary run per seed, then their mean.

Seed s is evaluated exactly like `--shot_seed s --output_dir <output_dir>/seed_<s>`: its own store,
fingerprint, resume and results.json with its reference paths. `<output_dir>/results.{json,csv,md}` then
hold, per category, the mean over seeds of that category's metrics, and the mean row over categories (as
in any run); undefined (NaN) values are ignored, as in the category mean. results.json adds a "seeds"
section: the seeds, each seed's folder, its per-category metrics and its mean row, and the population
standard deviation (ddof = 0) over seeds of every category's metrics and of the mean row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from model.visual import VisualMode
from utils.config.loading import ConfigError
from utils.config.schema import Config
from utils.distributed import SINGLE, Dist, on_main
from utils.evaluation.loop import Scorer
from utils.evaluation.results import json_metrics, mean_metrics, prompt_record, std_metrics, write_results
from utils.evaluation.runner import evaluate, visual_section
from utils.files import OutputLock, check_output_dir
from utils.run_log import get_logger
from utils.run_record import RunRecord

log = get_logger(__name__)
Metrics = dict[str, dict[str, float]]  # {category: {metric: value}}


def seed_runs(cfg: Config) -> list[tuple[int, Config]]:
    """(seed, that seed's config) for every seed of cfg.fewshot.shot_seeds; [] when it is null or empty.

    A seed's config: cfg with shot_seed = the seed, shot_seeds = null, output_dir = `<output_dir>/seed_<s>`.

    Raises:
        ConfigError: shot_seeds without --visual fewshot, a seed given twice or a negative seed.
    """
    seeds = cfg.fewshot.shot_seeds
    if not seeds:
        return []
    if cfg.scoring.visual is not VisualMode.FEWSHOT:
        raise ConfigError(
            f"--shot_seeds draws few-shot references but --visual is {cfg.scoring.visual}: "
            "add --visual fewshot or drop --shot_seeds"
        )
    if len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ConfigError(f"--shot_seeds {','.join(map(str, seeds))}: give each seed once, each >= 0")
    out = Path(cfg.evaluation.output_dir)
    return [
        (seed, cfg.replace(shot_seed=seed, shot_seeds=None, output_dir=str(out / f"seed_{seed}")))
        for seed in seeds
    ]


def evaluate_seeds(
    cfg: Config,
    scorer_for: Callable[[Config], Scorer],
    categories: Sequence[str],
    record: RunRecord,
    dist: Dist = SINGLE,
) -> Metrics:
    """Evaluate each seed of `seed_runs(cfg)` into its folder, then the mean into cfg.evaluation.output_dir.

    `scorer_for(seed_cfg)` makes the scorer of one seed (a new one: it holds that seed's references). Each
    seed folder is locked while it is written (rank 0). Returns {category: {metric: mean over seeds}} on
    rank 0, {} on the other ranks.
    """
    per_seed: dict[int, Metrics] = {}
    images: dict[str, int] = {}  # test images per category (the same for every seed), for the title
    prompts: dict[str, Any] | None = None  # the same for every seed: results.json "prompts"
    for seed, seed_cfg in seed_runs(cfg):
        log.info(f"shot_seed {seed}: {seed_cfg.evaluation.output_dir}")
        with ExitStack() as stack:
            folder = seed_cfg.evaluation.output_dir
            on_main(dist, lambda f=folder: stack.enter_context(OutputLock(check_output_dir(f))))
            seed_record = RunRecord(cfg.model.device, cfg.model.dtype)
            scorer = scorer_for(seed_cfg)
            per_seed[seed] = evaluate(seed_cfg, scorer, categories=categories, record=seed_record, dist=dist)
            images = {c: entry["images"] for c, entry in seed_record.categories.items()}
            if hasattr(scorer, "prompts_of"):
                prompts = {c: prompt_record(*scorer.prompts_of(c)) for c in categories}
    if not dist.is_main:
        return {}
    run = {k: v for k, v in record.to_json().items() if k != "categories"}  # per category: in each seed's run
    run["images"] = images
    return write_seed_mean(Path(cfg.evaluation.output_dir), cfg, per_seed, run, prompts)


def write_seed_mean(
    out: Path,
    cfg: Config,
    per_seed: Mapping[int, Metrics],
    run: Mapping[str, Any] | None = None,
    prompts: Mapping[str, Any] | None = None,
) -> Metrics:
    """Write results.json/.csv/.md of the mean over seeds into `out`; return {category: {metric: mean}}.

    `per_seed`: {seed: {category: {metric: value}}}, every seed with the same categories; `prompts`: the
    "prompts" section (`write_results`).
    """
    categories = list(next(iter(per_seed.values())))
    per_category = {c: mean_metrics({s: r[c] for s, r in per_seed.items()}) for c in categories}
    section = {
        "seeds": list(per_seed),
        "runs": {
            str(s): {"folder": f"seed_{s}", "categories": {c: json_metrics(m) for c, m in r.items()}}
            | {"mean": json_metrics(mean_metrics(r))}
            for s, r in per_seed.items()
        },
        "std": {c: json_metrics(std_metrics({s: r[c] for s, r in per_seed.items()})) for c in categories}
        | {"mean": json_metrics(std_metrics({s: mean_metrics(r) for s, r in per_seed.items()}))},
    }
    visual = visual_section(cfg)
    write_results(out, cfg.data.dataset, per_category, cfg.to_dict(), run, visual, section, prompts=prompts)
    return per_category
