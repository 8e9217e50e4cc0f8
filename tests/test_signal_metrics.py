"""The text map alone and the visual map alone are measured as the fused map is (utils/evaluation/figures.py):
at `metrics_resolution`, against the same ground truth, with the benchmark's own metrics."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dataset import load_dataset
from model.map_ops import resize_map
from tests.conftest import build_config
from tests.fixtures_benchmarks import make_mvtec_ad2, make_mvtec_loco
from utils.evaluation.benchmarks import validation_threshold
from utils.evaluation.compare import collect_signals, signal_table
from utils.evaluation.metrics import compute_metrics
from utils.evaluation.runner import evaluate

H, W = 20, 36  # non-square images, stored at eval_size 8 x 8


def _toy_mvtec(root: Path) -> Path:
    """`root/mvtec/toy`: 1 train, 3 good and 3 bad 20x36 test images, each defect a block of its own."""
    cat = root / "mvtec" / "toy"
    (cat / "train" / "good").mkdir(parents=True)
    Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(cat / "train" / "good" / "000.png")
    for kind in ("good", "bad"):
        for i in range(3):
            path = cat / "test" / kind / f"{i:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(path)
            if kind == "bad":
                mask = np.zeros((H, W), np.uint8)
                mask[2 + 5 * i : 7 + 5 * i, 3 + 9 * i : 14 + 9 * i] = 255
                (cat / "ground_truth" / "bad").mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask).save(cat / "ground_truth" / "bad" / f"{i:03d}_mask.png")
    return root


def _noise(sample, salt: str) -> np.ndarray:
    """A (H, W) float32 map in [0, 0.5) fixed by the image's path and `salt`."""
    seed = zlib.crc32(f"{sample.image_path}{salt}".encode())
    return (0.5 * np.random.default_rng(seed).random(sample.mask.shape)).astype(np.float32)


def weight_one_scorer(samples, category, references=()):
    """What `fuse_visual` gives at visual_weight 1: the fused map and score are the visual ones."""
    outputs = []
    for s in samples:
        visual = _noise(s, "visual") + 0.4 * s.mask
        text = _noise(s, "text") + 0.1 * s.mask
        signals = {"text": (text, float(text.max())), "visual": (visual, float(visual.max()))}
        outputs.append((visual, float(visual.max()), signals))
    return outputs


def _run(root: Path, out: Path, **settings) -> dict:
    cfg = build_config(root, out, eval_size=8, visual="fewshot", shots=1, visual_weight=1.0, **settings)
    evaluate(cfg, weight_one_scorer, progress=False)
    return json.loads((out / "results.json").read_text())


def test_signals_follow_metrics_resolution_as_the_fused_map_does(tmp_path: Path) -> None:
    root = _toy_mvtec(tmp_path / "data")
    native = _run(root, tmp_path / "native", dataset="mvtec", metrics_resolution="native")
    stored = _run(root, tmp_path / "stored", dataset="mvtec", metrics_resolution="eval_size")
    for doc in (native, stored):  # the visual map is the fused map: every figure equal
        assert doc["visual_only"]["categories"]["toy"] == doc["categories"]["toy"]
    # The text map alone at native resolution: compute_metrics on each stored text map resized to 20x36.
    cat = tmp_path / "native" / "categories" / "toy"
    text_maps = np.load(cat / "signals" / "text_maps.npy")
    text_scores = json.loads((cat / "signals" / "scores.json").read_text())["text"]
    full = np.stack([resize_map(m.astype(np.float32), (H, W)) for m in text_maps])
    records = load_dataset("mvtec", root, "toy", "test").records  # the store's order
    masks = np.zeros((len(records), H, W), bool)
    for i, r in enumerate(records):
        if r.mask_path is not None:
            masks[i] = np.asarray(Image.open(r.mask_path)) > 0
    labels = np.array([r.label for r in records])
    expected = compute_metrics(labels, np.asarray(text_scores), masks, full)
    assert native["text_only"]["categories"]["toy"] == pytest.approx(expected, abs=1e-9)
    text_native, text_stored = native["text_only"]["mean"], stored["text_only"]["mean"]
    assert abs(text_native["pixel_auroc"] - text_stored["pixel_auroc"]) > 1e-3  # the setting matters here
    assert text_native["image_auroc"] == text_stored["image_auroc"]
    signal_doc = json.loads((cat / "signals" / "metrics.json").read_text())
    assert signal_doc["metrics_resolution"] == "native"
    again = _run(root, tmp_path / "native", dataset="mvtec", metrics_resolution="native")  # resumed
    assert again["text_only"] == native["text_only"] and again["visual_only"] == native["visual_only"]


@pytest.mark.parametrize(
    ("dataset", "make", "category", "own"),
    [
        ("mvtec_loco", make_mvtec_loco, "pushpins", "pixel_spro_0.05"),
        ("mvtec_ad2", make_mvtec_ad2, "can", "pixel_seg_f1"),
    ],
)
def test_signals_get_the_benchmarks_own_metrics(tmp_path, dataset, make, category, own) -> None:
    make(tmp_path / "data")
    out = tmp_path / "runs" / "fewshot" / dataset
    doc = _run(tmp_path / "data", out, dataset=dataset, metrics_resolution="native")
    fused = doc["benchmark_metrics"]["categories"][category]
    assert doc["visual_only"]["benchmark_metrics"]["categories"][category] == fused
    text = doc["text_only"]["benchmark_metrics"]["categories"][category]
    assert set(text) == set(fused) and text[own] is not None
    if dataset == "mvtec_ad2":  # SegF1 of the text map at the text map's own validation threshold
        validation = np.load(out / "validation" / category / "signals" / "text_maps.npy")
        assert text["seg_threshold"] == pytest.approx(validation_threshold(validation))
        assert text["seg_threshold"] != fused["seg_threshold"]
    assert own in (out / "results.md").read_text().split("fused map, visual map alone")[1]
    table = signal_table(collect_signals(tmp_path / "runs"))
    assert f" {own} " in table.splitlines()[2]  # compare.md's header has the column
