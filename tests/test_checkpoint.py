"""Checkpoint format: exact round trip, no pickle on load, incomplete files, the old-checkpoint converter."""

from __future__ import annotations

import os
import pickle
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from dataset import load_dataset
from model.concepts import ConceptBank
from model.engine import Sam3Engine
from scripts import convert_checkpoint
from utils.config.cli import run
from utils.config.loading import resolve_config
from utils.training.checkpoint import CheckpointError, apply_checkpoint, load_checkpoint, save_checkpoint
from utils.training.trainer import Trainer, batch_loss

REPO = Path(__file__).resolve().parents[1]


def assert_same(a: Any, b: Any, where: str = "ckpt") -> None:
    """Exact recursive equality: same types, same keys (any order), bit-identical tensors, same dtypes."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert sorted(a, key=str) == sorted(b, key=str), f"{where}: keys {list(a)} != {list(b)}"
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.fixture(scope="module")
def trained(tiny_sam3_dir, mvtec_root, tmp_path_factory) -> Trainer:
    """A trainer (concepts and semantic head) after three AdamW steps on one batch, on a private engine."""
    engine = Sam3Engine.from_pretrained(tiny_sam3_dir, device="cpu", dtype="fp32", chunk_size=4)
    out = tmp_path_factory.mktemp("ckpt")
    flags = {"dataset_path": str(mvtec_root.parent), "output_dir": str(out), "device": "cpu", "dtype": "fp32"}
    flags |= {"num_concepts": 2, "train_head": True, "lr": 0.05, "categories": ["bottle"]}
    cfg = resolve_config(None, flags)
    trainer = Trainer(engine, ConceptBank.from_words(engine, ["defect", "crack"]), cfg)
    data = load_dataset("mvtec", mvtec_root, "bottle", "test")
    for _ in range(3):
        trainer.optimizer.zero_grad()
        batch_loss(engine, [data[0], data[4]], trainer.bank, cfg)["loss"].backward()
        trainer.optimizer.step()
    trainer.epoch = 1
    trainer.history = [{"epoch": 1, "loss": 0.123456789, "focal": 0.1, "dice": 0.2, "image": 0.3, "steps": 3}]
    return trainer


def test_round_trip_is_exact(trained, tmp_path):
    ckpt = trained.checkpoint()
    path = tmp_path / "last.safetensors"
    save_checkpoint(ckpt, path)
    loaded = load_checkpoint(path)
    assert_same(loaded, ckpt)
    assert len(loaded["optimizer"]["state"]) == 3  # embeds, head weight, head bias: exp_avg etc. kept
    optimizer = torch.optim.AdamW(trained.optimizer.param_groups[0]["params"], lr=1.0)
    optimizer.load_state_dict(loaded["optimizer"])  # torch accepts what we rebuilt
    assert_same(optimizer.state_dict(), trained.optimizer.state_dict())


def test_file_is_safetensors_with_json_header(trained, tmp_path):
    path = trained.save(tmp_path)
    assert path.name == "epoch_001.safetensors" and (tmp_path / "last.safetensors").is_file()
    with safe_open(str(path), framework="pt") as handle:
        names, meta = set(handle.keys()), handle.metadata()
    assert {"concepts.embeds", "concepts.attention_mask", "head.weight", "optimizer.state.0.exp_avg"} <= names
    assert meta["format"] == "sam3-anomaly-concepts" and meta["format_version"] == "1"
    assert not any(n.startswith(("backbone", "detector")) for n in names)  # never the SAM 3 backbone


class Payload:
    """Unpickling this creates `marker`: stands for any code a crafted checkpoint would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _write_payload(kind: str, path: Path, marker: Path) -> None:
    """A malicious old-style checkpoint: a bare pickle or a torch.save zip archive."""
    obj = {"concepts": Payload(marker)}
    if kind == "pickle":
        path.write_bytes(pickle.dumps(obj, protocol=2))
    else:
        torch.save(obj, path)


@pytest.mark.parametrize("kind", ["pickle", "torch_zip"])
def test_pickle_payload_is_refused_without_running(kind, tmp_path, capsys):
    marker, path = tmp_path / "pwned", tmp_path / "last.pt"
    _write_payload(kind, path, marker)
    with pytest.raises(CheckpointError, match=r"old pickle checkpoint.*convert_checkpoint\.py") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)
    assert run(convert_checkpoint.main, convert_checkpoint.parse_args, [str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: refused") and err.count("\n") == 1, err
    assert not marker.exists()  # neither the loader nor the converter ran the payload
    assert not (tmp_path / "last.safetensors").exists()


def test_old_checkpoint_converts_exactly(trained, tmp_path, capsys):
    """An old .pt (torch.save of the same dict) holds only tensors and plain values: weights_only reads it."""
    ckpt = trained.checkpoint()
    old = tmp_path / "last.pt"
    torch.save(ckpt, old)
    with pytest.raises(CheckpointError, match=f"python scripts/convert_checkpoint.py {old}"):
        load_checkpoint(old)
    assert run(convert_checkpoint.main, convert_checkpoint.parse_args, [str(old)]) == 0
    assert "converted" in capsys.readouterr().out
    assert_same(load_checkpoint(tmp_path / "last.safetensors"), ckpt)
    # a second conversion does not overwrite the first
    assert run(convert_checkpoint.main, convert_checkpoint.parse_args, [str(old)]) == 2
    assert "exists already" in capsys.readouterr().err


def _rewrite_without(path: Path, out: Path, drop: set[str]) -> None:
    """Copy a checkpoint file without the tensors and metadata entries named in `drop`."""
    with safe_open(str(path), framework="pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys() if k not in drop}  # noqa: SIM118
        meta = {k: v for k, v in handle.metadata().items() if k not in drop}
    save_file(tensors, str(out), metadata=meta)


def test_checkpoint_lacking_keys_is_one_line_naming_them(trained, tmp_path):
    good = trained.save(tmp_path)
    broken = tmp_path / "broken.safetensors"
    _rewrite_without(good, broken, {"concepts.attention_mask", "optimizer"})
    with pytest.raises(CheckpointError, match="lacks concepts.attention_mask, optimizer") as info:
        load_checkpoint(broken)
    assert "\n" not in str(info.value)
    _rewrite_without(good, broken, {"head.weight", "head.bias"})  # train_head: true in its config
    with pytest.raises(CheckpointError, match=r"lacks head\.\*"):
        load_checkpoint(broken)
    _rewrite_without(good, broken, {"format"})
    with pytest.raises(CheckpointError, match="not a checkpoint of scripts/train.py"):
        load_checkpoint(broken)


def test_unreadable_and_mismatched_checkpoints(trained, tmp_path, tiny_engine):
    path = trained.save(tmp_path)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="cannot read checkpoint") as info:
        load_checkpoint(truncated)
    assert "\n" not in str(info.value)
    ckpt = load_checkpoint(path)
    ckpt["seed_words"] = ["only one"]  # 2 concepts, 1 word
    with pytest.raises(CheckpointError, match="does not fit this model"):
        apply_checkpoint(ckpt, tiny_engine)


def test_train_sh_stops_at_an_old_checkpoint_with_the_command_to_convert_it(tmp_path):
    """Rerunning train.sh after an upgrade must not silently restart training beside an old last.pt."""
    (tmp_path / "runs" / "mvtec").mkdir(parents=True)
    (tmp_path / "runs" / "mvtec" / "last.pt").write_bytes(b"\x80\x02}q\x00.")
    env = {**os.environ, "RUN_ROOT": str(tmp_path / "runs"), "DIRECTIONS": "mvtec:visa", "PYTHON": "false"}
    proc = subprocess.run(
        ["bash", str(REPO / "train.sh")], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert f"convert_checkpoint.py {tmp_path}/runs/mvtec/last.pt" in proc.stderr, proc.stderr
