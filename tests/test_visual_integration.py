"""Visual scores wired into the detector, test.py and demo.py: end to end with the tiny random SAM 3."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dataset.synthetic import make_mvtec_like
from model.detector import AnomalyDetector, ScoringSettings
from model.mutual import MutualScorer
from scripts import demo
from scripts import test as test_script
from utils.config.cli import run
from utils.config.loading import StaleOutputError


@pytest.fixture(scope="module")
def visual_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """mvtec/{bottle,wood}: 6 train, 4 good + 6 defective test images (scratch, hole), 64 x 64."""
    root = tmp_path_factory.mktemp("visual_data")
    make_mvtec_like(
        root / "mvtec",
        categories=("bottle", "wood"),
        n_train=6,
        n_good=4,
        n_defect=6,
        size=64,
        seed=0,
        defect_types=("scratch", "hole"),
    )
    return root


def run_test(root: Path, model: Path, out: Path, *extra: str) -> int:
    """test.py on `root` at eval_size 64, the images' own size (sigma = 4 px of the 64 px image)."""
    return run(test_script.main, test_script.parse_args, _argv(root, model, out, *extra))


def pixel_auroc(out: Path) -> dict[str, float]:
    doc = json.loads((out / "results.json").read_text())
    return {c: m["pixel_auroc"] for c, m in doc["categories"].items()}


@pytest.fixture(scope="module")
def text_pixel_auroc(visual_root, tiny_sam3_dir, tmp_path_factory) -> dict[str, float]:
    """Pixel AUROC per category of the text path (--visual none) on `visual_root`, run once per module."""
    out = tmp_path_factory.mktemp("text")
    assert run_test(visual_root, tiny_sam3_dir, out) == 0
    return pixel_auroc(out)


@pytest.mark.parametrize("mode", ["fewshot", "mutual"])
def test_visual_scores_find_synthetic_defects_where_text_with_random_weights_does_not(
    mode, visual_root, tiny_sam3_dir, tmp_path, text_pixel_auroc, capsys
):
    """Fused at the default visual_weight 0.5, the visual map finds the drawn defects that the random text
    decoder does not (its map is noise)."""
    assert run_test(visual_root, tiny_sam3_dir, tmp_path / mode, "--visual", mode) == 0
    if mode == "mutual":  # progress bars of its two steps, in images: 4 good + 6 defective
        err = capsys.readouterr().err
        assert all(f"bottle: {step}: 100%" in err for step in ("encode", "compare")) and " 10/10 " in err
    text, visual = text_pixel_auroc, pixel_auroc(tmp_path / mode)
    assert all(v >= 0.85 for v in visual.values()), visual
    assert all(v < 0.6 for v in text.values()), text
    doc = json.loads((tmp_path / mode / "results.json").read_text())
    assert doc["visual"]["mode"] == mode
    # The maps it was fused from, measured alone: the text map alone is the text run's map.
    text_alone = {c: m["pixel_auroc"] for c, m in doc["text_only"]["categories"].items()}
    assert text_alone == pytest.approx(text, abs=1e-6)
    assert all(m["pixel_auroc"] >= 0.85 for m in doc["visual_only"]["categories"].values())
    assert "fused map, visual map alone, text map alone" in (tmp_path / mode / "results.md").read_text()
    if mode == "fewshot":
        refs = doc["visual"]["references"]["bottle"]
        assert doc["visual"]["shots"] == 4 and doc["visual"]["seed"] == 0 and len(refs) == 4
        assert all("/bottle/train/good/" in p for p in refs)


@pytest.mark.parametrize("mode", ["fewshot", "mutual"])
def test_resume_in_each_mode_and_other_seed_or_mode_refused(mode, visual_root, tiny_sam3_dir, tmp_path):
    out = tmp_path / "out"
    args = ("--visual", mode, "--categories", "bottle")
    assert run_test(visual_root, tiny_sam3_dir, out, *args) == 0
    first_doc = json.loads((out / "results.json").read_text())
    first = first_doc["categories"]
    # Interrupted after the first batch: only 4 images stored, no metrics.
    store = out / "categories" / "bottle"
    progress = json.loads((store / "progress.json").read_text())
    progress["labels"], progress["scores"] = progress["labels"][:4], progress["scores"][:4]
    (store / "progress.json").write_text(json.dumps(progress))
    (store / "metrics.json").unlink()
    assert run_test(visual_root, tiny_sam3_dir, out, *args) == 0
    resumed = json.loads((out / "results.json").read_text())
    assert resumed["categories"] == first
    assert (
        resumed["visual_only"] == first_doc["visual_only"] and resumed["text_only"] == first_doc["text_only"]
    )
    other = ("--visual", "mutual" if mode == "fewshot" else "fewshot", "--categories", "bottle")
    with pytest.raises(StaleOutputError, match="visual"):
        test_script.main(test_script.parse_args(_argv(visual_root, tiny_sam3_dir, out, *other)))
    with pytest.raises(StaleOutputError, match="shot_seed"):
        test_script.main(
            test_script.parse_args(_argv(visual_root, tiny_sam3_dir, out, *args, "--shot_seed", "1"))
        )


def _argv(root: Path, model: Path, out: Path, *extra: str) -> list[str]:
    base = ["--dataset", "mvtec", "--dataset_path", str(root), "--model_path", str(model), "--device", "cpu"]
    return [*base, "--eval_size", "64", "--output_dir", str(out), *extra]


def _images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (40, 48, 3), dtype=np.uint8) for _ in range(n)]


def test_vision_encoder_runs_once_per_test_and_reference_image(tiny_engine):
    """Few-shot with 3 prompts: 2 references + 5 test images = 7 vision calls; mutual: 5."""
    det = AnomalyDetector(tiny_engine, ScoringSettings(visual="fewshot"))
    before = tiny_engine.vision_calls
    det.set_references(_images(2, seed=1))
    det.detect(_images(5), prompts=["scratch", "dent", "stain"])
    assert tiny_engine.vision_calls - before == 7
    det = AnomalyDetector(tiny_engine, ScoringSettings(visual="mutual"))
    before = tiny_engine.vision_calls
    MutualScorer(det).score([_images(3), _images(2, seed=2)], ["scratch", "dent", "stain"])
    assert tiny_engine.vision_calls - before == 5


def test_zero_visual_weight_gives_the_text_result_exactly(tiny_engine):
    """Fusion keeps the text path: weight 0 reproduces visual none bit for bit (maps and image scores)."""
    text = AnomalyDetector(tiny_engine).detect(_images(3), prompts=["scratch"])
    det = AnomalyDetector(tiny_engine, ScoringSettings(visual="fewshot", visual_weight=0.0))
    det.set_references(_images(2, seed=1))
    fused = det.detect(_images(3), prompts=["scratch"])
    for a, b in zip(text, fused, strict=True):
        assert np.array_equal(a.anomaly_map, b.anomaly_map) and a.image_score == b.image_score
    full = AnomalyDetector(tiny_engine, ScoringSettings(visual="fewshot", visual_weight=1.0))
    full.references = det.references
    one = full.detect(_images(1)[0], prompts=["scratch"])
    assert not np.array_equal(one.anomaly_map, text[0].anomaly_map)


def test_fewshot_without_references_and_mutual_with_one_image_are_errors(tiny_engine):
    with pytest.raises(ValueError, match="call set_references first"):
        AnomalyDetector(tiny_engine, ScoringSettings(visual="fewshot")).detect(_images(1), prompts=["x"])
    mutual = AnomalyDetector(tiny_engine, ScoringSettings(visual="mutual"))
    with pytest.raises(ValueError, match="at least two images"):
        MutualScorer(mutual).score([_images(1)], prompts=["x"])
    with pytest.raises(ValueError, match="use model.mutual.MutualScorer"):  # never a silent switch
        mutual.detect(_images(3), prompts=["x"])


def test_bad_visual_input_is_one_line(visual_root, tiny_sam3_dir, tmp_path, capsys):
    assert run_test(visual_root, tiny_sam3_dir, tmp_path / "a", "--visual", "fewshot", "--shots", "7") == 2
    assert "lower --shots to at most 6" in capsys.readouterr().err
    make_mvtec_like(
        tmp_path / "one" / "mvtec", categories=("bottle",), n_train=0, n_good=1, n_defect=0, size=32
    )
    assert run_test(tmp_path / "one", tiny_sam3_dir, tmp_path / "b", "--visual", "mutual") == 2
    assert "add test images or use --visual fewshot" in capsys.readouterr().err
    assert run_test(tmp_path / "one", tiny_sam3_dir, tmp_path / "c", "--visual", "fewshot") == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "train" in errors[0], errors


def test_demo_reference_dir(tiny_sam3_dir, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()

    for i, arr in enumerate(_images(2)):
        Image.fromarray(arr).save(images / f"{i}.png")
    refs = tmp_path / "refs"
    refs.mkdir()
    base = ["--image_path", str(images), "--model_path", str(tiny_sam3_dir), "--device", "cpu"]

    def demo_run(*extra: str) -> int:
        return run(demo.main, demo.parse_args, [*base, "--output_dir", str(tmp_path / "o"), *extra])

    assert demo_run("--reference_dir", str(refs)) == 2
    assert "put a few good images of the product there" in capsys.readouterr().err
    (refs / "bad.png").write_bytes(b"not a png")
    assert demo_run("--reference_dir", str(refs)) == 2
    assert "bad.png" in capsys.readouterr().err
    (refs / "bad.png").unlink()
    for i, arr in enumerate(_images(2, seed=5)):
        Image.fromarray(arr).save(refs / f"{i}.png")
    assert demo_run("--reference_dir", str(refs)) == 0
    assert demo_run("--visual", "mutual") == 0
    single = ["--image_path", str(images / "0.png"), "--model_path", str(tiny_sam3_dir), "--device", "cpu"]
    assert (
        run(demo.main, demo.parse_args, [*single, "--output_dir", str(tmp_path / "p"), "--visual", "mutual"])
        == 2
    )
    assert "two or more images" in capsys.readouterr().err


def test_mutual_shares_give_the_one_process_result_and_rescoring_is_switchable(tiny_engine):
    """Scores of two shares, concatenated in order, fuse to exactly what one `score` call gives."""
    det = AnomalyDetector(tiny_engine, ScoringSettings(visual="mutual"))
    scorer = MutualScorer(det, dataset="visa")
    assert scorer.window_sizes == (1, 8, 9)
    batches = [_images(5)[:3], _images(5)[3:]]  # the same batches: batch size changes float rounding
    whole = scorer.score(batches, ["scratch"])
    results, features = scorer.parts(batches, ["scratch"])
    raw = torch.cat(
        [scorer.raw_scores(features, images=[0, 1, 2]), scorer.raw_scores(features, images=[3, 4])]
    )
    split = scorer.fuse(results, raw, features)
    for a, b in zip(whole, split, strict=True):
        assert np.array_equal(a.anomaly_map, b.anomaly_map) and a.image_score == b.image_score
    off = MutualScorer(AnomalyDetector(tiny_engine, ScoringSettings(visual="mutual", mutual_rescore=False)))
    identity = MutualScorer(AnomalyDetector(tiny_engine, ScoringSettings(visual="mutual", rescore_k=[1])))
    plain = off.score([_images(5)], ["scratch"])
    assert [r.image_score for r in identity.score([_images(5)], ["scratch"])] == pytest.approx(
        [r.image_score for r in plain]
    )
    assert [r.image_score for r in whole] != pytest.approx([r.image_score for r in plain])
