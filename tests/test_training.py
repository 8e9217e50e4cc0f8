"""Fine-tuning: losses, over-fitting, checkpoints, resume, --checkpoint in test.py, train.sh and test.sh."""

import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from dataset import categories_of, load_dataset, select_categories
from dataset.constants import MVTEC_CATEGORIES, VISA_CATEGORIES
from dataset.synthetic import make_mvtec_like, make_visa_like
from model.concepts import ConceptBank, concept_names
from model.engine import Sam3Engine
from model.losses import dice_loss, focal_loss, image_loss
from scripts import test as test_script
from scripts import train as train_script
from tests.conftest import build_config
from utils.config.cli import run
from utils.config.loading import resolve_config
from utils.training.checkpoint import CheckpointError, apply_checkpoint, load_checkpoint
from utils.training.trainer import Trainer, batch_loss, semantic_head

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- losses (hand-solved)
def test_focal_loss_known_values():
    prob = torch.tensor([[[0.9, 0.2]]])
    target = torch.tensor([[[1.0, 0.0]]])
    expected = (-0.25 * 0.1**2 * np.log(0.9) - 0.75 * 0.2**2 * np.log(0.8)) / 2
    assert float(focal_loss(prob, target)) == pytest.approx(expected, rel=1e-5)
    # gamma = 0, alpha = 0.5 is half the binary cross-entropy
    bce = torch.nn.functional.binary_cross_entropy(prob, target)
    assert float(focal_loss(prob, target, gamma=0.0, alpha=0.5)) == pytest.approx(0.5 * float(bce), rel=1e-5)


def test_dice_loss_known_values():
    target = torch.tensor([[[1.0, 1.0, 0.0, 0.0]]])
    assert float(dice_loss(target, target, smooth=0.0)) == pytest.approx(0.0)
    assert float(dice_loss(1 - target, target, smooth=0.0)) == pytest.approx(1.0)
    half = torch.tensor([[[1.0, 0.0, 0.0, 0.0]]])  # 2*1 / (1 + 2) = 2/3 overlap
    assert float(dice_loss(half, target, smooth=0.0)) == pytest.approx(1 / 3)
    assert float(dice_loss(torch.zeros(1, 1, 4), torch.zeros(1, 1, 4))) == pytest.approx(0.0)  # good image


def test_image_loss_is_bce():
    score, label = torch.tensor([0.8, 0.3]), torch.tensor([1, 0])
    assert float(image_loss(score, label)) == pytest.approx(-(np.log(0.8) + np.log(0.7)) / 2, rel=1e-5)


# ----------------------------------------------------------------------------- training
_cfg = partial(
    build_config,
    dataset="mvtec",
    device="cpu",
    dtype="fp32",
    batch_size=2,
    grad_accum=1,
    num_concepts=2,
    lr=0.05,
)


@pytest.fixture()
def fresh_engine(tiny_sam3_dir):
    """A private engine: training with train_head changes its weights."""
    return Sam3Engine.from_pretrained(tiny_sam3_dir, device="cpu", dtype="fp32", chunk_size=4)


@pytest.mark.parametrize(("train_head", "lr", "min_drop"), [(False, 0.5, 0.02), (True, 0.05, 0.08)])
def test_a_few_steps_overfit_a_fixed_batch(train_head, lr, min_drop, fresh_engine, mvtec_root, tmp_path):
    """12 AdamW steps on one fixed batch lower the loss by a margin (embeddings only: steadily)."""
    cfg = _cfg(mvtec_root.parent, tmp_path, train_head=train_head, lr=lr)
    data = load_dataset("mvtec", mvtec_root, "bottle", "test")
    batch = [data[i] for i in (0, 3, 4, 5)]  # good and defective images
    bank = ConceptBank.from_words(fresh_engine, ["defect", "scratch"])
    start = bank.embeds.detach().clone()
    trainer = Trainer(fresh_engine, bank, cfg)
    losses = []
    for _ in range(12):
        terms = batch_loss(fresh_engine, batch, bank, cfg)
        trainer.optimizer.zero_grad()
        terms["loss"].backward()
        trainer.optimizer.step()
        losses.append(float(terms["loss"].detach()))
    assert losses[-1] < (1 - min_drop) * losses[0], losses
    if not train_head:
        assert all(b < a for a, b in zip(losses, losses[1:], strict=False)), losses
        assert all(p.grad is None for p in fresh_engine.model.parameters())  # SAM 3 stays frozen
    assert not torch.equal(bank.embeds.detach(), start)


def test_checkpoint_round_trip_holds_only_trained_tensors(fresh_engine, tiny_sam3_dir, mvtec_root, tmp_path):
    cfg = _cfg(mvtec_root.parent, tmp_path, train_head=True, num_epochs=1, categories=["bottle"])
    data = load_dataset("mvtec", mvtec_root, "bottle", "test")
    trainer = Trainer(fresh_engine, ConceptBank.from_words(fresh_engine, ["defect", "crack"]), cfg)
    trainer.run_epoch(data, progress=False)
    path = trainer.save(tmp_path)
    assert path.name == "epoch_001.safetensors" and (tmp_path / "last.safetensors").is_file()
    assert path.stat().st_size < 200_000  # no backbone inside
    ckpt = load_checkpoint(path)
    assert set(ckpt) == {"concepts", "seed_words", "head", "optimizer", "epoch", "history", "config"}
    other = Sam3Engine.from_pretrained(tiny_sam3_dir, device="cpu", dtype="fp32")
    bank = apply_checkpoint(ckpt, other)
    assert torch.equal(bank.embeds.detach(), trainer.bank.embeds.detach())
    assert bank.names == concept_names(2) and bank.seed_words == ["defect", "crack"]
    assert torch.equal(semantic_head(other).weight, semantic_head(fresh_engine).weight)
    log = (tmp_path / "train_log.csv").read_text().splitlines()
    assert log[0].startswith("epoch,loss") and len(log) == 2 and (tmp_path / "loss_curve.png").is_file()


def test_checkpoint_errors(tmp_path, tiny_engine):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "none.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "junk.safetensors")
    wrong = {
        "concepts": {"embeds": torch.zeros(1, 32, 7), "attention_mask": torch.ones(1, 32)},
        "seed_words": ["x"],
    }
    with pytest.raises(CheckpointError, match="hidden size"):
        apply_checkpoint(wrong, tiny_engine)


def _flags(**flags) -> list[str]:
    """{"num_epochs": 2} -> ["--num_epochs", "2"]."""
    return [item for key, value in flags.items() for item in (f"--{key}", str(value))]


def _train(root, model_dir, out, **flags) -> int:
    """Run scripts/train.py on the bottle category of a generated MVTec tree; returns the exit code.

    `flags` add to or override the defaults (e.g. categories="wood")."""
    common = dict(dataset="mvtec", dataset_path=root, categories="bottle", model_path=model_dir, device="cpu")
    argv = _flags(**{**common, "lr": 0.05, "num_concepts": 2, "output_dir": out, **flags})
    return run(train_script.main, train_script.parse_args, argv)


def test_resume_continues_exactly(tiny_sam3_dir, mvtec_root, tmp_path):
    root, split_dir = mvtec_root.parent, tmp_path / "split"
    kw = dict(batch_size=2, grad_accum=2)
    assert _train(root, tiny_sam3_dir, tmp_path / "straight", num_epochs=2, **kw) == 0
    assert _train(root, tiny_sam3_dir, split_dir, num_epochs=1, **kw) == 0
    assert (
        _train(root, tiny_sam3_dir, split_dir, num_epochs=2, resume=split_dir / "last.safetensors", **kw) == 0
    )
    straight, split = (
        load_checkpoint(tmp_path / "straight" / "last.safetensors"),
        load_checkpoint(split_dir / "last.safetensors"),
    )
    assert split["epoch"] == straight["epoch"] == 2
    assert torch.equal(split["concepts"]["embeds"], straight["concepts"]["embeds"])
    assert [r["loss"] for r in split["history"]] == [r["loss"] for r in straight["history"]]
    first_epoch = load_checkpoint(split_dir / "epoch_001.safetensors")["concepts"]["embeds"]
    assert not torch.equal(straight["concepts"]["embeds"], first_epoch)


def test_ctrl_c_in_training_is_one_line_naming_the_checkpoint(
    tiny_sam3_dir, mvtec_root, tmp_path, monkeypatch, capsys
):
    """Ctrl-C in the second epoch: exit 130, one line (no traceback) with the --resume path of epoch 1."""
    from utils.training.trainer import Trainer

    finish_epoch = Trainer.run_epoch

    def interrupted_after_one(self, data, progress=True):
        if self.epoch == 1:
            raise KeyboardInterrupt
        return finish_epoch(self, data, progress=False)

    monkeypatch.setattr(Trainer, "run_epoch", interrupted_after_one)
    out = tmp_path / "run"
    assert _train(mvtec_root.parent, tiny_sam3_dir, out, num_epochs=3, batch_size=4) == 130
    err = [line for line in capsys.readouterr().err.splitlines() if line and "Loading weights" not in line]
    assert err == [f"stopped by Ctrl-C: continue with --resume {out / 'last.safetensors'}"]
    assert load_checkpoint(out / "last.safetensors")["epoch"] == 1


def test_resume_with_other_settings_is_a_clear_error(fresh_engine, mvtec_root, tmp_path):
    cfg = _cfg(mvtec_root.parent, tmp_path, num_epochs=1, categories=["bottle"])
    trainer = Trainer(fresh_engine, ConceptBank.from_words(fresh_engine, ["defect", "crack"]), cfg)
    trainer.run_epoch(load_dataset("mvtec", mvtec_root, "bottle", "test"), progress=False)
    ckpt = load_checkpoint(trainer.save(tmp_path))
    other = Trainer(fresh_engine, ConceptBank.from_words(fresh_engine, ["defect"]), cfg)
    with pytest.raises(CheckpointError, match="cannot resume.*--num_concepts"):
        other.load_state(ckpt)
    same = Trainer(fresh_engine, ConceptBank.from_words(fresh_engine, ["defect", "crack"]), cfg)
    ckpt["optimizer"]["param_groups"] = []  # an optimiser state for other parameters
    with pytest.raises(CheckpointError, match="cannot resume: .*parameter groups") as info:
        same.load_state(ckpt)
    assert "\n" not in str(info.value)


def test_test_script_with_checkpoint_changes_maps_and_is_repeatable(tiny_sam3_dir, mvtec_root, tmp_path):
    assert _train(mvtec_root.parent, tiny_sam3_dir, tmp_path / "run", num_epochs=1) == 0
    test_argv = _flags(
        dataset="mvtec",
        dataset_path=mvtec_root.parent,
        categories="bottle",
        model_path=tiny_sam3_dir,
        device="cpu",
        eval_size=32,
    )
    ckpt = _flags(checkpoint=tmp_path / "run" / "last.safetensors")
    for name, extra in (("zero", []), ("ft1", ckpt), ("ft2", ckpt)):
        argv = [*test_argv, *extra, "--output_dir", str(tmp_path / name)]
        assert run(test_script.main, test_script.parse_args, argv) == 0
    maps = {n: np.load(tmp_path / n / "categories" / "bottle" / "maps.npy") for n in ("zero", "ft1", "ft2")}
    assert not np.array_equal(maps["zero"], maps["ft1"])
    assert np.array_equal(maps["ft1"], maps["ft2"])
    assert json.loads((tmp_path / "ft1" / "results.json").read_text())["config"]["checkpoint"].endswith(
        "last.safetensors"
    )


def test_every_configured_category_is_found_in_its_dataset_layout(tmp_path):
    """The published categories of MVTec AD and VisA: the loaders find each in a tiny copy of the layout."""
    make_mvtec_like(tmp_path / "mvtec", categories=MVTEC_CATEGORIES, n_train=1, n_good=1, n_defect=1, size=16)
    make_visa_like(tmp_path / "visa", categories=VISA_CATEGORIES, n_normal=1, n_anomaly=1, size=16, n_train=1)
    for name, n in (("mvtec", 15), ("visa", 12)):
        assert select_categories(name, tmp_path, None) == sorted(categories_of(name))
        assert len(categories_of(name)) == n
        for category in categories_of(name):
            assert len(load_dataset(name, tmp_path, category, "test")) == 2


@pytest.mark.slow
def test_train_sh_and_test_sh_end_to_end(tiny_sam3_dir, tmp_path):
    """train.sh trains on VisA and tests the checkpoint on MVTec AD (training on MVTec AD runs in-process
    above; the other direction differs only in names); then test.sh on VisA with its compare.md."""
    root = tmp_path / "datasets"
    make_mvtec_like(root / "mvtec", categories=("bottle",), n_train=1, n_good=1, n_defect=1, size=32)
    make_visa_like(root / "visa", categories=("candle",), n_normal=1, n_anomaly=1, size=32, n_train=1)
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "MODEL_PATH": str(tiny_sam3_dir),
        "DATASET_PATH": str(root),
        "RUN_ROOT": str(tmp_path / "runs"),
        "OUTPUT_ROOT": str(tmp_path / "results"),
        "DIRECTIONS": "visa:mvtec",
        "TRAIN_ARGS": "--num_epochs 1 --device cpu --categories candle",
        "TEST_ARGS": "--device cpu --eval_size 32 --categories bottle",
    }
    proc = subprocess.run(
        ["bash", str(REPO / "train.sh")], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads((tmp_path / "results" / "visa_to_mvtec" / "results.json").read_text())
    assert list(doc["categories"]) == ["bottle"] and doc["config"]["checkpoint"]
    assert load_checkpoint(tmp_path / "runs" / "visa" / "last.safetensors")["config"]["categories"] == [
        "candle"
    ]
    env["DATASETS"] = "visa"
    proc = subprocess.run(
        ["bash", str(REPO / "test.sh"), "--device", "cpu", "--eval_size", "32", "--categories", "candle"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads((tmp_path / "results" / "text" / "visa" / "results.json").read_text())
    assert list(doc["categories"]) == ["candle"]
    assert "| text | visa | 1 |" in (tmp_path / "results" / "compare.md").read_text()


def test_bad_checkpoint_fails_before_the_model_loads(tmp_path, monkeypatch):
    """build_detector reads --checkpoint before SAM 3: a broken file is reported without loading weights."""
    from model import Sam3Engine
    from utils.pipeline import build_detector
    from utils.training.checkpoint import CheckpointError

    def no_model(*args, **kwargs):
        raise AssertionError("SAM 3 was loaded before the checkpoint was checked")

    monkeypatch.setattr(Sam3Engine, "from_pretrained", no_model)
    broken = tmp_path / "last.safetensors"
    broken.write_bytes(b"not a checkpoint")
    cfg = resolve_config(None, {"checkpoint": str(broken), "dataset_path": str(tmp_path)})
    with pytest.raises(CheckpointError):
        build_detector(cfg)
