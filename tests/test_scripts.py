"""End-to-end runs of scripts/test.py and scripts/demo.py with the tiny real-layout SAM 3, and errors."""

import errno
import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from dataset import MVTEC_CATEGORIES, DatasetError, select_categories
from model.prompts import build_prompts
from scripts import demo
from scripts import test as test_script
from utils.config.cli import run
from utils.config.schema import Config
from utils.evaluation import runner
from utils.evaluation.metrics import METRIC_KEYS
from utils.files import OutputLock
from utils.pipeline import prompts_for

REPO = Path(__file__).resolve().parents[1]


def run_test_script(argv):
    return run(test_script.main, test_script.parse_args, argv)


def _common(model_dir, out):
    """Flags of a small CPU run; `out` None leaves --output_dir out (test.py's default folder)."""
    flags = ["--model_path", str(model_dir), "--device", "cpu", "--dtype", "fp32", "--eval_size", "32"]
    return [*flags, "--batch_size", "2", *(["--output_dir", str(out)] if out is not None else [])]


@pytest.mark.parametrize("dataset", ["mvtec", "visa"])
def test_test_script_end_to_end_and_resume(dataset, datasets_root, tiny_sam3_dir, tmp_path, capsys):
    argv = [
        "--dataset",
        dataset,
        "--dataset_path",
        str(datasets_root),
        "--visualize",
        "--num_visualize",
        "2",
        *_common(tiny_sam3_dir, tmp_path / "a"),
    ]
    assert run_test_script(argv) == 0
    out = tmp_path / "a"
    doc = json.loads((out / "results.json").read_text())
    assert doc["dataset"] == dataset
    assert set(doc) == {"dataset", "categories", "mean", "config", "run", "prompts"}
    categories = {"mvtec": {"bottle", "wood"}, "visa": {"candle", "pcb1"}}[dataset]
    assert set(doc["categories"]) == categories
    for category in categories:  # the prompts each category was really scored with
        prompts, noun = prompts_for(Config.from_dict(doc["config"]), category)
        assert doc["prompts"][category] == {"prompts": prompts, "object_prompt": noun}
    for metrics in [*doc["categories"].values(), doc["mean"]]:
        assert set(metrics) == set(METRIC_KEYS)
        assert all(v is None or 0.0 <= v <= 1.0 for v in metrics.values())
    assert doc["config"]["eval_size"] == 32 and doc["config"]["model_path"] == str(tiny_sam3_dir)
    assert (out / "results.csv").read_text().splitlines()[0] == "category," + ",".join(METRIC_KEYS)
    assert "| **mean** |" in (out / "results.md").read_text()
    for category in categories:
        assert (out / "curves" / f"{category}_roc.png").is_file()
        names = [p.name for p in (out / "vis" / category).glob("*.png")]
        assert len(names) == 2 and all(re.match(r"(fn|fp|lowest_defect|highest_good)\d\d_", n) for n in names)
    printed = capsys.readouterr().out  # results.md itself, heading included
    heading = (out / "results.md").read_text().splitlines()[0]
    assert heading in printed.splitlines() and "| **mean** |" in printed
    assert f" test images in 2 of {15 if dataset == 'mvtec' else 12} categories (%)" in heading

    # A fresh run into another folder equals it; a rerun into the same folder resumes (same results).
    assert (
        run_test_script([*argv[: -len(_common(tiny_sam3_dir, out))], *_common(tiny_sam3_dir, tmp_path / "b")])
        == 0
    )
    assert json.loads((tmp_path / "b" / "results.json").read_text())["categories"] == doc["categories"]
    maps_before = np.load(out / "categories" / sorted(categories)[0] / "maps.npy")
    assert run_test_script(argv) == 0
    assert json.loads((out / "results.json").read_text())["categories"] == doc["categories"]
    assert np.array_equal(np.load(out / "categories" / sorted(categories)[0] / "maps.npy"), maps_before)


def test_test_script_with_yaml_config(datasets_root, tiny_sam3_dir, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"dataset: mvtec\ndataset_path: {datasets_root}\ncategories: [wood]\nprompt_strategy: base\n"
    )
    assert run_test_script(["--config", str(cfg), *_common(tiny_sam3_dir, tmp_path / "o")]) == 0
    doc = json.loads((tmp_path / "o" / "results.json").read_text())
    assert list(doc["categories"]) == ["wood"] and doc["config"]["prompt_strategy"] == "base"


def test_test_script_on_own_folder_data(folder_root, tiny_sam3_dir, tmp_path):
    """--dataset folder: categories found on disk; an unknown object gets generic prompts, no object prior."""
    argv = [
        "--dataset",
        "folder",
        "--dataset_path",
        str(folder_root),
        *_common(tiny_sam3_dir, tmp_path / "o"),
    ]
    assert run_test_script(argv) == 0
    doc = json.loads((tmp_path / "o" / "results.json").read_text())
    assert list(doc["categories"]) == ["widget"] and doc["dataset"] == "folder"
    assert all(v is not None for v in doc["categories"]["widget"].values())  # masks were found: all defined
    prompts, noun = prompts_for(Config.from_dict(doc["config"]), "widget")
    assert prompts == build_prompts(None, "base") and noun is None
    assert prompts_for(Config.from_dict(doc["config"]), "bottle")[1] == "bottle"


def test_demo_on_an_image_and_on_a_folder_with_a_corrupt_file(tiny_sam3_dir, tmp_path, capsys):
    argv = ["--model_path", str(tiny_sam3_dir), "--device", "cpu", "--output_dir", str(tmp_path / "one")]
    assert (
        run(demo.main, demo.parse_args, ["--image_path", str(REPO / "assets" / "demo_scratch.png"), *argv])
        == 0
    )
    for suffix in ("_overlay.png", "_mask.png", "_boxes.png", ".json"):
        assert (tmp_path / "one" / f"demo_scratch{suffix}").is_file()
    record = json.loads((tmp_path / "one" / "demo_scratch.json").read_text())
    assert 0.0 <= record["image_score"] <= 1.0
    assert set(record["prompt_presence"]) == set(record["prompts"]) == set(record["prompt_best_score"])
    mask = cv2.imread(str(tmp_path / "one" / "demo_scratch_mask.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (512, 512) and set(np.unique(mask)) <= {0, 255}

    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(folder / name), np.full((40, 50, 3), 120, np.uint8))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    argv = [
        "--image_path",
        str(folder),
        "--model_path",
        str(tiny_sam3_dir),
        "--device",
        "cpu",
        "--output_dir",
        str(tmp_path / "many"),
        "--dataset",
        "mvtec",
        "--category",
        "bottle",
    ]
    assert run(demo.main, demo.parse_args, argv) == 0
    captured = capsys.readouterr()
    assert "broken.png" in captured.err and "2 of 3 images" in captured.out
    assert sorted(p.name for p in (tmp_path / "many").glob("*.json")) == ["a.json", "b.json"]
    record = json.loads((tmp_path / "many" / "a.json").read_text())
    assert record["object_prompt"] == "bottle" and "bottle" not in record["prompts"]


def _cli(script, *args):
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / script), *args],
        capture_output=True,
        text=True,
        cwd=REPO.parent,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "mvtec", "--dataset_path", "/nonexistent/data"], "/nonexistent/data"),
        (["--categories", "bottle,nosuchthing"], "unknown category nosuchthing"),
        (["--categories", "bottle,nosuchthing"], "pass --categories bottle"),
        # all 15 published categories asked for; the generated root holds bottle and wood
        (["--categories", ",".join(MVTEC_CATEGORIES)], "13 of the 15 mvtec categories asked for"),
        (["--categories", ",".join(MVTEC_CATEGORIES)], "pass --categories bottle,wood to run the ones"),
        (["--model_path", "/nonexistent/sam3"], "/nonexistent/sam3"),
        (["--config", "BADCONFIG"], "unknown config key 'eval_sise'"),
        (["--dataset_path", "EMPTY"], "no mvtec categories under"),
        # Checked before the model is loaded: the (also missing) model is not what the error is about.
        (["--output_dir", "FILE", "--model_path", "/nonexistent/sam3"], "is a file"),
        (["--output_dir", "FILE/sub", "--model_path", "/nonexistent/sam3"], "cannot write to output folder"),
    ],
)
def test_bad_input_is_one_line_without_traceback(
    args, message, datasets_root, tiny_sam3_dir, tmp_path, capsys
):
    bad_cfg = tmp_path / "bad.yaml"
    bad_cfg.write_text("eval_sise: 12\n")
    (tmp_path / "all15.yaml").write_text(f"categories: [{', '.join(MVTEC_CATEGORIES)}]\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("not a folder")
    placeholders = {
        "BADCONFIG": str(bad_cfg),
        "ALL15": str(tmp_path / "all15.yaml"),
        "EMPTY": str(tmp_path / "empty"),
        "FILE": str(tmp_path / "file"),
    }
    defaults = {
        "--dataset": "mvtec",
        "--dataset_path": str(datasets_root),
        "--model_path": str(tiny_sam3_dir),
        "--output_dir": str(tmp_path / "o"),
    }
    for i in range(0, len(args), 2):
        head, _, tail = args[i + 1].partition("/")
        defaults[args[i]] = placeholders[head] + _ + tail if head in placeholders else args[i + 1]
    flat = [x for pair in defaults.items() for x in pair]
    assert run_test_script(flat) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_test_script_as_a_process_exits_2_with_one_line(tmp_path):
    """The one subprocess run of scripts/test.py here: `python scripts/test.py` from another folder maps a
    user error to exit code 2 and one stderr line (the cases above run in-process through the same `run`)."""
    bad_cfg = tmp_path / "bad.yaml"
    bad_cfg.write_text("eval_sise: 12\n")
    proc = _cli("test.py", "--config", str(bad_cfg), "--output_dir", str(tmp_path / "o"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown config key 'eval_sise' in "), lines


@pytest.mark.parametrize("dataset", ["mvtec", "visa", "folder"])
def test_datasets_root_without_categories_is_refused(dataset, tmp_path):
    """Before: exit 0 and "results written to ...", with nothing written."""
    if dataset == "visa":  # a VisA root with its split file but no category folders
        (tmp_path / "split_csv").mkdir()
        (tmp_path / "split_csv" / "1cls.csv").write_text("object,split,label,image,mask\n")
    with pytest.raises(DatasetError, match=rf"no {dataset} categories under {tmp_path}: expected <root>/"):
        select_categories(dataset, tmp_path, None)


@pytest.mark.parametrize("dataset", ["mvtec", "visa"])
def test_default_output_folder_is_per_dataset(dataset, datasets_root, tiny_sam3_dir, tmp_path, monkeypatch):
    """Without --output_dir, each dataset gets results/<dataset>: the second no longer replaces the first."""
    monkeypatch.chdir(tmp_path)
    argv = _common(tiny_sam3_dir, None)
    assert run_test_script(["--dataset", dataset, "--dataset_path", str(datasets_root), *argv]) == 0
    assert json.loads((tmp_path / "results" / dataset / "results.json").read_text())["dataset"] == dataset
    assert not (tmp_path / "results" / "results.json").exists()


def test_output_folder_given_explicitly_is_kept(tmp_path):
    """--output_dir and an output_dir in the --config file mean exactly that folder."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("output_dir: mine\n")
    resolved = {
        flags: test_script.config_from_args(
            test_script.parse_args(flags), output_per_dataset=True
        ).evaluation.output_dir
        for flags in [("--dataset", "visa"), ("--output_dir", "results"), ("--config", str(cfg))]
    }
    assert list(resolved.values()) == [str(Path("results") / "visa"), "results", "mine"]


def test_second_run_into_a_folder_in_use_is_refused(datasets_root, tiny_sam3_dir, tmp_path, capsys):
    """A lock held elsewhere (here: this process; tests/test_files.py holds it from another one)."""
    out = tmp_path / "o"
    out.mkdir()
    argv = ["--dataset", "mvtec", "--dataset_path", str(datasets_root), *_common(tiny_sam3_dir, out)]
    with OutputLock(out):
        assert run_test_script(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"is in use by a running process (pid {os.getpid()} " in err[0]
    assert not (out / "categories").exists()  # refused before anything was written


def test_full_disk_anywhere_is_one_line(datasets_root, tiny_sam3_dir, tmp_path, monkeypatch, capsys):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "o" / "curves" / "x.png"))

    monkeypatch.setattr(runner, "save_curves", full)
    argv = ["--dataset", "mvtec", "--categories", "wood", "--dataset_path", str(datasets_root)]
    assert run_test_script([*argv, *_common(tiny_sam3_dir, tmp_path / "o")]) == 2
    err = capsys.readouterr().err  # progress bars, then the error
    assert "Traceback" not in err and err.count("error: ") == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"error: disk full while writing {tmp_path}/o/curves/x.png")
    assert last.endswith("rerun the same command to resume")


def test_demo_missing_model_folder_is_one_line(tmp_path):
    proc = _cli(
        "demo.py",
        "--image_path",
        str(REPO / "assets" / "demo_scratch.png"),
        "--model_path",
        str(tmp_path / "nope"),
        "--output_dir",
        str(tmp_path / "o"),
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "download" in proc.stderr


def test_shell_scripts_parse():
    for script in ("test.sh", "train.sh"):
        assert subprocess.run(["bash", "-n", str(REPO / script)]).returncode == 0


def _run_test_sh(
    tmp_path: Path, env: dict[str, str], *extra: str
) -> tuple[subprocess.CompletedProcess, list]:
    """test.sh with a PYTHON that records each scripts/test.py command line instead of running it."""
    tmp_path.mkdir(exist_ok=True)
    log = tmp_path / "calls.jsonl"
    fake = tmp_path / "python"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        'case "$1" in\n'
        f"  scripts/test.py) {sys.executable} -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "
        f'"${{@:2}}" >> {log} ;;\n'
        '  -m) [ "$2" = utils.evaluation.compare ] || exec ' + sys.executable + ' "$@" ;;\n'
        "esac\n"
    )
    fake.chmod(0o755)
    keep = {
        k: v for k, v in os.environ.items() if k not in ("MODEL_PATH", "SHOTS", "SHOT_SEEDS", "OUTPUT_ROOT")
    }
    proc = subprocess.run(
        ["bash", str(REPO / "test.sh"), *extra],
        env={**keep, "PYTHON": str(fake), "DATASETS": "visa", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    return proc, calls


def test_test_sh_passes_only_what_the_environment_sets(tmp_path):
    """A `shots:` key of a YAML given as an extra argument wins unless SHOTS is set; no default is repeated;
    each mode's flags come from utils/evaluation/modes.py."""
    proc, calls = _run_test_sh(tmp_path, {"MODES": "fewshot mutual"}, "--config", "my.yaml")
    assert proc.returncode == 0, proc.stderr
    fewshot, mutual = calls
    assert fewshot == [
        "--config", "configs/visa.yaml", "--output_dir", "results/fewshot/visa", "--visual", "fewshot",
        "--config", "my.yaml",
    ]  # fmt: skip
    assert mutual[4:] == ["--visual", "mutual", "--visual_weight", "1.0", "--config", "my.yaml"]
    env = {"MODES": "fewshot", "SHOTS": "2", "SHOT_SEEDS": "0 1", "MODEL_PATH": "/m", "OUTPUT_ROOT": "o"}
    _, (call,) = _run_test_sh(tmp_path / "b", env)
    assert call == [
        "--config", "configs/visa.yaml", "--output_dir", "o/fewshot/visa", "--model_path", "/m",
        "--visual", "fewshot", "--shots", "2", "--shot_seeds", "0,1",
    ]  # fmt: skip


def test_test_sh_refuses_an_unknown_mode_before_any_run(tmp_path):
    proc, calls = _run_test_sh(tmp_path, {"MODES": "text fancy"})
    assert proc.returncode == 2 and calls == []
    assert (
        proc.stderr.strip() == "error: unknown mode 'fancy' in MODES: use text, mutual, text+mutual, fewshot"
    )


@pytest.mark.parametrize(
    "script", ["test", "demo", "train", "app", "download_weights", "make_tiny_sam3", "convert_checkpoint"]
)
def test_help_of_every_script_prints_and_exits_0(script: str, capsys: pytest.CaptureFixture[str]) -> None:
    """argparse formats help with `%`: a setting whose help holds one ("top 1 % of patches") must print."""
    module = importlib.import_module(f"scripts.{script}")
    with pytest.raises(SystemExit) as info:
        module.parse_args(["--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and out.startswith("usage: ")
    if script in ("test", "demo", "app"):
        assert "top 1 % of patches" in " ".join(out.split())


@pytest.mark.parametrize("script", ["test", "demo", "train", "app", "download_weights", "convert_checkpoint"])
def test_a_usage_error_of_every_script_is_one_line(script: str, capsys: pytest.CaptureFixture[str]) -> None:
    module = importlib.import_module(f"scripts.{script}")
    with pytest.raises(SystemExit) as info:
        module.parse_args(["--no_such_flag", "1"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("error: ") and err.rstrip().endswith(" --help)")  # (see <script> --help)
