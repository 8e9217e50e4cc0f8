"""scripts/train.py --resume: which settings may change, finished runs, the output folder, and kill -9."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scripts import train as train_script
from tests.test_checkpoint import assert_same
from tests.test_training import _flags, _train
from utils.config.cli import run
from utils.config.schema import defaults
from utils.files import OutputLock
from utils.training.checkpoint import load_checkpoint
from utils.training.trainer import RESUME_CHANGEABLE, RESUME_FIXED, resume_changes

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- the policy (pure)
def test_every_resume_setting_is_a_config_key_declared_once():
    assert not set(RESUME_FIXED) & set(RESUME_CHANGEABLE)
    assert set(RESUME_FIXED) | set(RESUME_CHANGEABLE) <= set(defaults())


@pytest.mark.parametrize("key", RESUME_FIXED)
def test_changed_fixed_setting_is_refused_naming_both_values(key):
    saved = defaults()
    current = {**saved, key: ["other"] if key == "categories" else f"other-{key}"}
    with pytest.raises(
        ValueError,
        match=f"cannot resume.*{re.escape(f'{key}={saved[key]!r}')}.*{re.escape(f'{key}={current[key]!r}')}",
    ) as info:
        resume_changes(saved, current)
    assert "\n" not in str(info.value)


def test_changed_settings_are_listed_and_model_path_compares_as_a_folder(tmp_path):
    saved = {**defaults(), "model_path": str(tmp_path / "sam3")}
    current = {**saved, "lr": 0.5, "seed": 7, "model_path": str(tmp_path / "x" / ".." / "sam3")}
    assert resume_changes(saved, current) == [f"lr {saved['lr']!r} -> 0.5", f"seed {saved['seed']!r} -> 7"]
    assert resume_changes(saved, dict(saved)) == []


# ----------------------------------------------------------------------------- scripts/train.py
@pytest.fixture(scope="module")
def one_epoch(tiny_sam3_dir, mvtec_root, tmp_path_factory) -> Path:
    """Output folder of a finished 1-epoch run (lr 0.05, seed 0); tests resume from it into other folders."""
    out = tmp_path_factory.mktemp("one_epoch")
    assert _train(mvtec_root.parent, tiny_sam3_dir, out, num_epochs=1) == 0
    return out


def test_resume_applies_new_lr_seed_and_epochs(one_epoch, tiny_sam3_dir, mvtec_root, tmp_path, capsys):
    out = tmp_path / "more"
    resume = one_epoch / "last.safetensors"
    assert _train(mvtec_root.parent, tiny_sam3_dir, out, num_epochs=2, lr=0.01, seed=3, resume=resume) == 0
    said = capsys.readouterr().out
    line = next(row for row in said.splitlines() if row.startswith("resuming after epoch 1; changed: "))
    changes = line.split("changed: ", 1)[1].split(", ")
    assert {"num_epochs 1 -> 2", "lr 0.05 -> 0.01", "seed 0 -> 3"} <= set(changes), said
    assert all(c.split()[0] in RESUME_CHANGEABLE for c in changes), said  # only changeable settings listed
    ckpt = load_checkpoint(out / "last.safetensors")
    assert ckpt["epoch"] == 2 and len(ckpt["history"]) == 2
    assert [g["lr"] for g in ckpt["optimizer"]["param_groups"]] == [0.01]  # used by the optimiser
    assert ckpt["config"]["lr"] == 0.01 and ckpt["config"]["seed"] == 3


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"dataset": "visa"}, "dataset='mvtec'.*dataset='visa'"),
        ({"categories": "wood"}, r"categories=\['bottle'\].*categories=\['wood'\]"),
        ({"num_concepts": 3}, "num_concepts=2.*num_concepts=3"),
        ({"prompt_strategy": "category"}, "prompt_strategy='base'.*prompt_strategy='category'"),
        ({"model_path": "/nonexistent/sam3"}, "model_path=.*model_path='/nonexistent/sam3'"),
    ],
)
def test_resume_with_a_changed_fixed_setting_stops_before_training(
    flags, message, one_epoch, tiny_sam3_dir, mvtec_root, tmp_path, capsys
):
    out = tmp_path / "other"
    code = _train(mvtec_root.parent, tiny_sam3_dir, out, resume=one_epoch / "last.safetensors", **flags)
    err = capsys.readouterr().err
    assert code == 2 and re.search(f"error: cannot resume.*{message}", err) and err.count("\n") == 1, err
    assert not list(out.glob("*.safetensors"))


def test_resume_of_a_finished_run_points_at_an_existing_checkpoint(
    one_epoch, tiny_sam3_dir, mvtec_root, tmp_path, capsys
):
    out = tmp_path / "elsewhere"  # the resumed checkpoint lives in another folder
    assert (
        _train(mvtec_root.parent, tiny_sam3_dir, out, num_epochs=1, resume=one_epoch / "last.safetensors")
        == 0
    )
    said = capsys.readouterr().out
    assert "training is already complete at epoch 1 (--num_epochs 1)" in said, said
    assert Path(re.search(r"--checkpoint (\S+)", said).group(1)).is_file()
    assert not list(out.glob("*.safetensors"))


def test_output_dir_is_checked_before_the_model_is_loaded(mvtec_root, tmp_path, capsys):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    assert _train(mvtec_root.parent, tmp_path / "no_model", not_a_folder, num_epochs=1) == 2
    assert "output folder" in capsys.readouterr().err  # not the missing model


def test_second_run_into_a_locked_folder_names_the_holder(mvtec_root, tmp_path, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    with OutputLock(out):
        assert _train(mvtec_root.parent, tmp_path / "no_model", out, num_epochs=1) == 2
    assert re.search(rf"in use by a running process \(pid {os.getpid()}\b", capsys.readouterr().err)


# ----------------------------------------------------------------------------- kill -9, then the same command
def _log_without_seconds(out: Path) -> list[dict[str, str]]:
    """train_log.csv rows without the wall-clock column."""
    with (out / "train_log.csv").open() as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def _train_argv(root: Path, model_dir: Path, out: Path) -> list[str]:
    """A train.sh-like command (3 epochs, head too): --resume OUT/last.safetensors when that file exists."""
    flags = dict(dataset="mvtec", dataset_path=root, categories="bottle", model_path=model_dir, device="cpu")
    flags |= dict(output_dir=out, num_epochs=3, batch_size=2, grad_accum=2, lr=0.05, num_concepts=2)
    if (out / "last.safetensors").is_file():
        flags["resume"] = out / "last.safetensors"
    return ["--train_head", *_flags(**flags)]


def _run_to_end(argv: list[str]) -> None:
    """The command run to its end, in this process (only the run that is killed needs a process)."""
    assert run(train_script.main, train_script.parse_args, argv) == 0


@pytest.mark.slow
def test_kill_9_mid_run_then_same_command_matches_an_uninterrupted_run(tiny_sam3_dir, mvtec_root, tmp_path):
    root, straight, killed = mvtec_root.parent, tmp_path / "straight", tmp_path / "killed"
    _run_to_end(_train_argv(root, tiny_sam3_dir, straight))

    proc = subprocess.Popen(
        [sys.executable, str(REPO / "scripts" / "train.py"), *_train_argv(root, tiny_sam3_dir, killed)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not (killed / "epoch_001.safetensors").exists() and proc.poll() is None:
        assert time.monotonic() < deadline, "epoch 1 never finished"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # somewhere in epoch 2 (or while saving epoch 1)
    assert proc.wait() == -signal.SIGKILL
    assert not (killed / "epoch_003.safetensors").exists()

    _run_to_end(_train_argv(root, tiny_sam3_dir, killed))  # the same command again
    done, want = load_checkpoint(killed / "last.safetensors"), load_checkpoint(straight / "last.safetensors")
    for key in ("concepts", "head", "optimizer", "epoch", "seed_words"):
        assert_same(done[key], want[key], key)
    assert _log_without_seconds(killed) == _log_without_seconds(straight)
    assert len(_log_without_seconds(straight)) == 3
