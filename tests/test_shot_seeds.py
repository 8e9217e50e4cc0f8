"""`--shot_seeds`: a few-shot run per seed in seed_<s>/ and their mean on top (tiny SAM 3, end to end)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from dataset.synthetic import make_mvtec_like
from scripts import test as test_script
from utils.config.cli import run
from utils.config.loading import ConfigError, resolve_config
from utils.evaluation.compare import collect_runs
from utils.evaluation.metrics import METRIC_KEYS


@pytest.fixture(scope="module")
def seeds_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """mvtec/{bottle,wood}: 6 train, 2 good + 3 defective test images, 64 x 64."""
    root = tmp_path_factory.mktemp("seeds_data")
    make_mvtec_like(
        root / "mvtec", categories=("bottle", "wood"), n_train=6, n_good=2, n_defect=3, size=64, seed=0
    )
    return root


def run_test(root: Path, model: Path, out: Path, *extra: str) -> int:
    base = ["--dataset", "mvtec", "--dataset_path", str(root), "--model_path", str(model), "--device", "cpu"]
    argv = [*base, "--eval_size", "64", "--output_dir", str(out), *extra]
    return run(test_script.main, test_script.parse_args, argv)


def _read(path: Path) -> dict:
    return json.loads((path / "results.json").read_text())


def _mean(values: list[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def _close(a: float | None, b: float | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and math.isclose(a, b, abs_tol=1e-9))


def test_two_seeds_two_runs_their_mean_and_a_resume(seeds_root, tiny_sam3_dir, tmp_path):
    out = tmp_path / "fewshot" / "mvtec"  # test.sh's layout, so that compare.py reads it
    args = ("--visual", "fewshot", "--shots", "2", "--shot_seeds", "0,1")
    assert run_test(seeds_root, tiny_sam3_dir, out, *args) == 0

    seeds = {s: _read(out / f"seed_{s}") for s in (0, 1)}
    for s, doc in seeds.items():  # each seed folder: an ordinary single-seed run
        assert doc["visual"]["seed"] == s and doc["config"]["shot_seed"] == s
        assert doc["config"]["shot_seeds"] is None
        assert all(len(refs) == 2 for refs in doc["visual"]["references"].values())
    assert seeds[0]["visual"]["references"]["bottle"] != seeds[1]["visual"]["references"]["bottle"]

    top = _read(out)
    assert top["visual"]["seeds"] == [0, 1] and "references" not in top["visual"]
    assert set(top["categories"]) == {"bottle", "wood"}
    assert top["prompts"] == seeds[0]["prompts"] and set(top["prompts"]) == {"bottle", "wood"}
    for category, metrics in top["categories"].items():
        for key in METRIC_KEYS:
            per_seed = [doc["categories"][category][key] for doc in seeds.values()]
            assert _close(metrics[key], _mean(per_seed)), (category, key)
            std = top["seeds"]["std"][category][key]
            assert _close(std, float(np.std(per_seed)) if None not in per_seed else std)
    for key in METRIC_KEYS:
        assert _close(top["mean"][key], _mean([m[key] for m in top["categories"].values()])), key
        assert _close(top["seeds"]["runs"]["1"]["mean"][key], seeds[1]["mean"][key]), key
    assert (out / "results.csv").is_file() and "**mean**" in (out / "results.md").read_text()

    # compare.md counts the two seeds once each, not the seed folders and their mean again
    runs = collect_runs(tmp_path)
    assert list(runs) == [("fewshot K=2", "mvtec")] and len(runs[("fewshot K=2", "mvtec")]) == 2

    # a rerun resumes every seed: nothing is scored again and the mean is unchanged
    assert run_test(seeds_root, tiny_sam3_dir, out, *args) == 0
    for s in (0, 1):
        entries = _read(out / f"seed_{s}")["run"]["categories"].values()
        assert [e["scored"] for e in entries] == [0, 0], s
    assert _read(out)["categories"] == top["categories"]


def test_shot_seeds_without_fewshot_is_a_one_line_error(seeds_root, tmp_path, capsys):
    missing_model = tmp_path / "no_model"  # refused before the model is loaded
    assert run_test(seeds_root, missing_model, tmp_path / "o", "--shot_seeds", "0,1") == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 1 and "add --visual fewshot or drop --shot_seeds" in errors[0], errors
    with pytest.raises(ConfigError, match="--visual fewshot"):
        test_script.main(test_script.parse_args(["--visual", "mutual", "--shot_seeds", "1"]))
    with pytest.raises(ConfigError, match="each seed once"):
        test_script.main(test_script.parse_args(["--visual", "fewshot", "--shot_seeds", "1,1"]))


def test_shot_seeds_is_a_list_of_ints_from_flags_and_yaml():
    assert test_script.parse_args(["--shot_seeds", "0, 2"]).shot_seeds == [0, 2]
    with pytest.raises(SystemExit):
        test_script.parse_args(["--shot_seeds", "0,a"])
    assert resolve_config(None, {"shot_seeds": [3]}).visual.shot_seeds == [3]
    with pytest.raises(ConfigError, match="'shot_seeds' must be a list of int"):
        resolve_config(None, {"shot_seeds": ["a"]})
