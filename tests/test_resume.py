"""Resuming into an output folder: the settings fingerprint, AUPRO variants, damaged stores, a full disk."""

import errno
import json
import os
import shutil

import numpy as np
import pytest

from utils import files
from utils.config.loading import StaleOutputError, resolve_config
from utils.config.schema import defaults
from utils.evaluation.fingerprint import (
    FINGERPRINT_KEYS,
    IDENTITY_KEYS,
    NOT_FINGERPRINTED,
    fingerprint_settings,
)
from utils.evaluation.runner import evaluate
from utils.evaluation.store import CategoryStore, DamagedStoreWarning
from utils.files import OutputDirError


def noisy_scorer(samples, category, references=()):
    """An imperfect but deterministic detector: the mask blurred into noise seeded by the file name."""
    outputs = []
    for s in samples:
        rng = np.random.default_rng(sum(map(ord, str(s.image_path))))
        amap = 0.5 * s.mask + 0.6 * rng.random(s.mask.shape)
        outputs.append(
            (np.clip(amap, 0, 1).astype(np.float32), float(amap.max() - 0.3 * s.label * rng.random()))
        )
    return outputs


def counting(calls):
    def score(samples, category, references=()):
        calls.append(len(samples))
        return noisy_scorer(samples, category)

    return score


def _cfg(root, out, **kw):
    base = {"dataset": "mvtec", "dataset_path": str(root), "output_dir": str(out), "batch_size": 3}
    return resolve_config(None, {**base, "eval_size": 32, "categories": ["bottle"], **kw})


def _maps(out, category="bottle"):
    return np.load(out / "categories" / category / "maps.npy")


# --- the fingerprint -----------------------------------------------------------------------------------
def test_every_config_key_is_sorted_for_the_fingerprint():
    """A new key in configs/config.yaml must be declared score-changing or not (and why): never forgotten."""
    tables = [set(FINGERPRINT_KEYS), set(IDENTITY_KEYS), set(NOT_FINGERPRINTED)]
    assert set.union(*tables) == set(defaults())
    assert sum(map(len, tables)) == len(defaults())  # no key in two tables


# One valid other value per fingerprinted key; the test below checks that this covers every such key.
CHANGED = {
    "dataset": "folder",
    "texture_categories": ["bottle"],
    "concept_mode": "add",
    "dtype": "bf16",
    "prompt_strategy": "mixed",
    "extra_prompts": ["dent"],
    "prompt_overrides": {"bottle": ["crack"]},
    "map_source": "semantic",
    "prompt_aggregation": "mean",
    "object_regularisation": False,
    "max_object_fraction": 0.5,
    "outside_weight": 0.5,
    "object_dilation": 0.1,
    "object_threshold": 0.3,
    "eval_size": 33,
    "sigma": 1.0,
    "image_score": "topk_mean",
    "topk": 10,
    "visual": "fewshot",
    "visual_weight": 0.25,
    "mutual_fraction": 0.5,
    "shots": 2,
    "shot_seed": 1,
    "model_path": "OTHER_MODEL",
    "checkpoint": "OTHER_CHECKPOINT",
    "device": "cuda",
    "bit_depth": 12,
    "test_split": "test_private",
    "patch_pool": 1,
    "visual_degrees": [1, 3],
    "mutual_partners": 5,
    "mutual_rescore": False,
    "rescore_k": [1, 8, 9],
    "reference_rotations": True,
}


def _fake_model(folder, config_text="{}"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(config_text)
    (folder / "model.safetensors").write_bytes(b"weights")
    return folder


@pytest.mark.parametrize("key", [*FINGERPRINT_KEYS, *IDENTITY_KEYS])
def test_each_score_changing_key_changed_is_refused(key, tmp_path):
    assert set(CHANGED) == {*FINGERPRINT_KEYS, *IDENTITY_KEYS}
    ckpt = tmp_path / "a.safetensors"
    ckpt.write_bytes(b"one")
    (tmp_path / "b.safetensors").write_bytes(b"two")
    placeholders = {
        "OTHER_MODEL": str(_fake_model(tmp_path / "m2", '{"x": 1}')),
        "OTHER_CHECKPOINT": str(tmp_path / "b.safetensors"),
    }
    base = {"model_path": str(_fake_model(tmp_path / "m1")), "checkpoint": str(ckpt), "device": "cpu"}
    before = resolve_config(None, base).to_dict()
    value = placeholders.get(CHANGED[key], CHANGED[key]) if isinstance(CHANGED[key], str) else CHANGED[key]
    after = resolve_config(None, {**base, key: value}).to_dict()
    paths = ["a.png", "b.png"]
    CategoryStore(tmp_path / "store", paths, 8, fingerprint_settings(before))
    CategoryStore(tmp_path / "store", paths, 8, fingerprint_settings(before))  # same settings: resumes
    with pytest.raises(StaleOutputError, match=rf"different config \({key}\)"):
        CategoryStore(tmp_path / "store", paths, 8, fingerprint_settings(after))


def test_model_identity_is_its_content_not_its_path(tmp_path):
    """A replaced weights file is refused; the same folder copied elsewhere (mtime kept) resumes."""
    model = _fake_model(tmp_path / "sam3")
    settings = fingerprint_settings(resolve_config(None, {"model_path": str(model)}).to_dict())
    CategoryStore(tmp_path / "store", ["a.png"], 8, settings)
    moved = tmp_path / "elsewhere" / "sam3"
    shutil.copytree(model, moved)  # copy2 keeps modification times
    CategoryStore(
        tmp_path / "store",
        ["a.png"],
        8,
        fingerprint_settings(resolve_config(None, {"model_path": str(moved)}).to_dict()),
    )
    os.utime(model / "model.safetensors", (1, 1))  # e.g. a new download over the old one
    with pytest.raises(StaleOutputError, match="model_path"):
        CategoryStore(
            tmp_path / "store",
            ["a.png"],
            8,
            fingerprint_settings(resolve_config(None, {"model_path": str(model)}).to_dict()),
        )


def test_checkpoint_bytes_are_fingerprinted_whatever_the_extension(tmp_path):
    ckpt = tmp_path / "last.safetensors"
    ckpt.write_bytes(b"epoch 1")
    settings = fingerprint_settings(resolve_config(None, {"checkpoint": str(ckpt)}).to_dict())
    CategoryStore(tmp_path / "store", ["a.png"], 8, settings)
    ckpt.write_bytes(b"epoch 2")  # same path, trained further
    with pytest.raises(StaleOutputError, match="checkpoint"):
        CategoryStore(
            tmp_path / "store",
            ["a.png"],
            8,
            fingerprint_settings(resolve_config(None, {"checkpoint": str(ckpt)}).to_dict()),
        )


def test_changed_setting_is_refused_end_to_end(datasets_root, tmp_path):
    evaluate(_cfg(datasets_root, tmp_path), noisy_scorer, progress=False)
    with pytest.raises(
        StaleOutputError, match=r"categories/bottle holds results from a different config \(sigma\)"
    ):
        evaluate(_cfg(datasets_root, tmp_path, sigma=1.0), noisy_scorer, progress=False)


# --- metrics-only settings -----------------------------------------------------------------------------
def test_other_aupro_variant_is_recomputed_from_the_stored_maps(datasets_root, tmp_path):
    clip = evaluate(
        _cfg(datasets_root, tmp_path / "clip", aupro_variant="clip"), noisy_scorer, progress=False
    )
    official = evaluate(_cfg(datasets_root, tmp_path / "out"), noisy_scorer, progress=False)
    assert official["bottle"]["pixel_aupro"] != pytest.approx(
        clip["bottle"]["pixel_aupro"]
    )  # the test can fail

    calls = []
    rerun = evaluate(
        _cfg(datasets_root, tmp_path / "out", aupro_variant="clip"), counting(calls), progress=False
    )
    assert rerun == clip and calls == []  # nothing scored again: only the metrics were recomputed
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    assert doc["config"]["aupro_variant"] == "clip"
    assert doc["categories"]["bottle"]["pixel_aupro"] == pytest.approx(clip["bottle"]["pixel_aupro"])
    stored = json.loads((tmp_path / "out" / "categories" / "bottle" / "metrics.json").read_text())
    assert stored["aupro_variant"] == "clip"


# --- a damaged store -----------------------------------------------------------------------------------
def _truncate(path):
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


DAMAGE = {
    "maps truncated": lambda d: _truncate(d / "maps.npy"),
    "maps deleted": lambda d: (d / "maps.npy").unlink(),
    "masks deleted": lambda d: (d / "masks.npy").unlink(),
    "maps of another shape": lambda d: np.save(d / "maps.npy", np.zeros((7, 16, 16), np.float16)),
    "masks of another dtype": lambda d: np.save(d / "masks.npy", np.zeros((7, 32, 32), np.uint8)),
    "progress not json": lambda d: (d / "progress.json").write_text('{"fingerprint": "abc", "lab'),
    "progress counts wrong": lambda d: (d / "progress.json").write_text(
        json.dumps({**json.loads((d / "progress.json").read_text()), "labels": [0]})
    ),
}


@pytest.mark.parametrize("finished", [False, True], ids=["interrupted", "finished"])
@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_store_is_computed_again(damage, finished, datasets_root, tmp_path):
    fresh = evaluate(_cfg(datasets_root, tmp_path / "fresh"), noisy_scorer, progress=False)
    out = tmp_path / "out"
    if finished:
        evaluate(_cfg(datasets_root, out), noisy_scorer, progress=False)
    else:
        _interrupt_after_two_batches(datasets_root, out)
    DAMAGE[damage](out / "categories" / "bottle")

    calls = []
    with pytest.warns(DamagedStoreWarning, match=r"categories/bottle: .*computing this category again"):
        rerun = evaluate(_cfg(datasets_root, out), counting(calls), progress=False)
    assert sum(calls) == 7  # every image scored again
    assert rerun == fresh
    assert np.array_equal(_maps(out), _maps(tmp_path / "fresh"))


def _interrupt_after_two_batches(root, out):
    batches = []

    def crashing(samples, category, references=()):
        batches.append(samples)
        if len(batches) == 3:
            raise KeyboardInterrupt
        return noisy_scorer(samples, category)

    with pytest.raises(KeyboardInterrupt):
        evaluate(_cfg(root, out), crashing, progress=False)


def test_finished_category_with_unreadable_metrics_recomputes_only_the_metrics(datasets_root, tmp_path):
    first = evaluate(_cfg(datasets_root, tmp_path), noisy_scorer, progress=False)
    (tmp_path / "categories" / "bottle" / "metrics.json").write_text("{not json")
    calls = []
    assert evaluate(_cfg(datasets_root, tmp_path), counting(calls), progress=False) == first
    assert calls == []


# --- a full disk ---------------------------------------------------------------------------------------
def test_full_disk_is_found_when_the_store_is_created_and_a_rerun_resumes(
    datasets_root, tmp_path, monkeypatch
):
    """Memmap writes on a full disk are a SIGBUS: the blocks are allocated up front instead."""

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(files.os, "posix_fallocate", full)
        with pytest.raises(
            OutputDirError, match=r"disk full while writing .*maps.npy: free some space, then rerun"
        ):
            evaluate(_cfg(datasets_root, tmp_path / "out"), noisy_scorer, progress=False)
    assert not (tmp_path / "out" / "categories" / "bottle" / "progress.json").exists()
    fresh = evaluate(_cfg(datasets_root, tmp_path / "fresh"), noisy_scorer, progress=False)
    assert evaluate(_cfg(datasets_root, tmp_path / "out"), noisy_scorer, progress=False) == fresh


def test_store_arrays_are_allocated_not_sparse(tmp_path):
    store = CategoryStore(tmp_path, ["a.png"] * 4, 256, {"any": 1})
    path = tmp_path / "maps.npy"
    assert os.stat(path).st_blocks * 512 >= 4 * 256 * 256 * 2
    assert store.maps.shape == (4, 256, 256) and not store.maps.any()
