"""Run records: run.log beside the outputs (timestamped, never duplicated), results.json's "run" section."""

from __future__ import annotations

import json
import logging
import platform
import re
import subprocess
from pathlib import Path

import pytest
import torch
import transformers

from scripts import demo
from scripts import test as test_script
from scripts import train as train_script
from utils.config.cli import run
from utils.evaluation import runner
from utils.run_log import LOGGER_NAME
from utils.run_record import REPO_ROOT, RunRecord, git_commit

REPO = Path(__file__).resolve().parents[1]
STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING|ERROR) ")


def _test_argv(datasets_root: Path, model_dir: Path, out: Path) -> list[str]:
    flags = ["--dataset", "mvtec", "--dataset_path", str(datasets_root), "--model_path", str(model_dir)]
    return [*flags, "--device", "cpu", "--dtype", "fp32", "--eval_size", "32", "--output_dir", str(out)]


def _log_lines(out: Path) -> list[str]:
    lines = (out / "run.log").read_text().splitlines()
    assert lines and all(STAMP.match(line) for line in lines), lines
    return lines


def _messages(out: Path) -> list[str]:
    return [STAMP.sub("", line) for line in _log_lines(out)]


def test_test_script_writes_run_log_and_run_record(datasets_root, tiny_sam3_dir, tmp_path, capsys):
    out = tmp_path / "a"
    assert run(test_script.main, test_script.parse_args, _test_argv(datasets_root, tiny_sam3_dir, out)) == 0
    messages = _messages(out)
    assert messages[0].startswith("run started: test.py --dataset mvtec")
    assert any(
        re.fullmatch(r"bottle: \d+ images scored in [\d.]+ s \([\d.]+ images/s\)", m) for m in messages
    )
    assert messages[-1] == f"results written to {out / 'results.md'}"
    assert "results written to" in capsys.readouterr().out  # the console still shows it on stdout

    doc = json.loads((out / "results.json").read_text())
    assert {"dataset", "categories", "mean", "config"} < set(doc)  # the former keys are unchanged
    record = doc["run"]
    assert record["python"] == platform.python_version()
    assert record["torch"] == torch.__version__ and record["transformers"] == transformers.__version__
    assert record["device"] == "cpu" and record["compute_dtype"] == "float32" and record["wall_seconds"] > 0
    assert record["git_commit"] == git_commit() and set(record["categories"]) == {"bottle", "wood"}
    for entry in record["categories"].values():
        assert entry["images"] == entry["scored"] > 0 and entry["seconds"] > 0 and entry["images_per_s"] > 0

    # Resumed into the same folder: nothing is scored again, which the record says; run.log is appended to.
    assert run(test_script.main, test_script.parse_args, _test_argv(datasets_root, tiny_sam3_dir, out)) == 0
    resumed = json.loads((out / "results.json").read_text())["run"]["categories"]
    assert all(
        e["scored"] == 0 and e["seconds"] is None and e["images_per_s"] is None for e in resumed.values()
    )
    again = _messages(out)
    assert again[: len(messages)] == messages
    assert sum(m.startswith("run started") for m in again) == 2
    assert f"bottle: all {resumed['bottle']['images']} images from an earlier run" in again


def test_repeated_runs_in_one_process_do_not_duplicate_lines(datasets_root, tiny_sam3_dir, tmp_path, capsys):
    argv = [*_test_argv(datasets_root, tiny_sam3_dir, tmp_path / "a"), "--categories", "wood"]
    assert run(test_script.main, test_script.parse_args, argv) == 0
    first = (tmp_path / "a" / "run.log").read_text()
    capsys.readouterr()
    argv = [*_test_argv(datasets_root, tiny_sam3_dir, tmp_path / "b"), "--categories", "wood"]
    assert run(test_script.main, test_script.parse_args, argv) == 0
    assert (tmp_path / "a" / "run.log").read_text() == first  # the second run wrote nothing there
    messages = _messages(tmp_path / "b")
    assert len(messages) == len(set(messages)) == 3  # run started, wood, results written
    assert capsys.readouterr().out.count("results written to") == 1
    assert logging.getLogger(LOGGER_NAME).handlers == []  # closed after the run


def test_error_is_one_line_on_stderr_and_in_run_log(datasets_root, tmp_path, capsys):
    out = tmp_path / "o"
    argv = _test_argv(datasets_root, tmp_path / "no_model", out)  # fails after the output folder is known
    assert run(test_script.main, test_script.parse_args, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "no_model" in err[0]
    assert _log_lines(out)[-1].endswith(f"ERROR {err[0]}")


def test_crash_traceback_goes_to_run_log_only(datasets_root, tiny_sam3_dir, tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(runner, "save_curves", broken)
    out = tmp_path / "o"
    argv = [*_test_argv(datasets_root, tiny_sam3_dir, out), "--categories", "wood"]
    with pytest.raises(RuntimeError, match="a bug"):
        run(test_script.main, test_script.parse_args, argv)
    assert "stopped by an unexpected error" not in capsys.readouterr().err  # Python prints the traceback
    log = (out / "run.log").read_text()
    assert "ERROR stopped by an unexpected error" in log and "RuntimeError: a bug" in log


def test_train_and_demo_write_run_log(mvtec_root, tiny_sam3_dir, tmp_path):
    out = tmp_path / "train"
    flags = ["--dataset", "mvtec", "--dataset_path", str(mvtec_root.parent), "--categories", "bottle"]
    flags += ["--model_path", str(tiny_sam3_dir), "--device", "cpu", "--num_epochs", "1"]
    flags += ["--num_concepts", "2", "--output_dir", str(out)]
    assert run(train_script.main, train_script.parse_args, flags) == 0
    messages = _messages(out)
    assert messages[0].startswith("run started: train.py")
    assert any(m.startswith("epoch 1: loss ") for m in messages)
    assert messages[-1] == f"done: test with --checkpoint {out / 'last.safetensors'}"

    out = tmp_path / "demo"
    image = REPO / "assets" / "demo_scratch.png"
    argv = ["--image_path", str(image), "--model_path", str(tiny_sam3_dir), "--device", "cpu"]
    assert run(demo.main, demo.parse_args, [*argv, "--output_dir", str(out)]) == 0
    messages = _messages(out)
    assert messages[0].startswith("run started: demo.py")
    assert any(m.startswith("demo_scratch.png -> demo_scratch: score ") for m in messages)
    assert messages[-1].startswith(f"1 of 1 images written to {out} (verdicts: ")


def test_git_commit_is_none_outside_a_checkout(tmp_path, monkeypatch):
    assert git_commit(tmp_path) is None
    if (REPO_ROOT / ".git").exists():
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True)
        assert git_commit() == head.stdout.strip()
    monkeypatch.setenv("PATH", str(tmp_path))  # no git installed
    assert git_commit() is None


def test_record_of_a_category_taken_from_an_earlier_run():
    record = RunRecord("cpu")
    assert record.add_category("a", 10, 4, 2.0) == {
        "images": 10,
        "scored": 4,
        "seconds": 2.0,
        "images_per_s": 2.0,
    }
    assert record.add_category("b", 7, 0, 0.0001) == {
        "images": 7,
        "scored": 0,
        "seconds": None,
        "images_per_s": None,
    }
    assert list(record.to_json()["categories"]) == ["a", "b"]


def test_record_names_the_compute_dtype_auto_resolved():
    assert RunRecord("cpu", "bf16").to_json()["compute_dtype"] == "bfloat16"  # auto: the run above


def test_categories_are_selected_once(datasets_root, tiny_sam3_dir, tmp_path, monkeypatch):
    calls = []
    for module in (test_script, runner):
        real = module.select_categories
        monkeypatch.setattr(module, "select_categories", lambda *a, real=real: calls.append(a) or real(*a))
    argv = [*_test_argv(datasets_root, tiny_sam3_dir, tmp_path / "o"), "--categories", "wood"]
    assert run(test_script.main, test_script.parse_args, argv) == 0
    assert len(calls) == 1
