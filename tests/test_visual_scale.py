"""Visual scale in grid cells, image score from the patch map, reference angles, the object-prior switch and
the visual-only / text-only figures: known answers at two grid sizes."""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pytest
import torch

from model.detector import AnomalyDetector, AnomalyResult, ScoringSettings
from model.fusion import fuse_visual, patch_reading
from model.map_ops import rotate_image
from model.text_scorer import TextScorer
from model.visual import VisualMode, check_degrees_fit
from model.vit_layers import patch_features, pool_factor
from utils.evaluation.compare import collect_signals, signal_table
from utils.evaluation.metrics import METRIC_KEYS
from utils.evaluation.results import write_results
from utils.evaluation.signals import SignalStore, signal_batch


@pytest.mark.parametrize(
    ("side", "grid", "pool", "pooled"),
    [(72, 36, 2, 36), (16, 36, 1, 16), (36, 36, 1, 36), (100, 36, 2, 50), (73, 36, 2, 37), (72, 16, 4, 18)],
)
def test_the_grid_is_pooled_to_the_nearest_size_at_or_above_visual_grid(side, grid, pool, pooled):
    """The real 72 x 72 grid pools to 36 x 36 as before; the tiny 16 x 16 is not pooled (a factor of 2 made
    it 8 x 8); the pooled side is never below visual_grid unless the ViT grid itself is."""
    assert pool_factor(side, grid) == pool
    features = torch.randn(1, side, side, 4)
    assert patch_features(features, pool).shape == (1, pooled, pooled, 4)


def test_degrees_wider_than_a_third_of_the_grid_are_one_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_degrees_fit([1, 3, 5], (36, 36))  # the default at the real pooled grid: silent
        check_degrees_fit([1, 3, 5], (16, 16))  # the tiny grid: 5 <= 16 / 3
    with pytest.warns(UserWarning, match=r"visual_degrees \[3, 5\] cover more than a third of the 8 x 8"):
        check_degrees_fit([1, 3, 5], (8, 8))


def test_detector_scores_the_tiny_grid_unpooled_and_patch_pool_overrides(tiny_engine):
    images = [np.full((32, 32, 3), 100, np.uint8)]
    default = TextScorer(tiny_engine, lambda: ScoringSettings(visual="fewshot"))
    assert tiny_engine.vit_grid == 16 and default.patch_pool() == 1
    grid = next(iter(default.encode(images, with_patches=True).patch_layers.values())).shape[1:3]
    assert tuple(grid) == (16, 16)
    forced = TextScorer(tiny_engine, lambda: ScoringSettings(visual="fewshot", patch_pool=2))
    with pytest.warns(UserWarning, match="8 x 8 patch grid"):
        layers = forced.encode(images, with_patches=True).patch_layers
    assert tuple(next(iter(layers.values())).shape[1:3]) == (8, 8)


def test_patch_readings_known_answers():
    """patch_max = the largest patch; patch_top1 = the mean of the top 1 % (round(2.56) = 3 of 256)."""
    patch_map = torch.zeros(2, 16, 16)
    patch_map[0, 0, :3] = torch.tensor([0.9, 0.6, 0.3])
    patch_map[1, 5, 5] = 0.4
    assert patch_reading(patch_map, "patch_max").tolist() == pytest.approx([0.9, 0.4])
    assert patch_reading(patch_map, "patch_top1").tolist() == pytest.approx([0.6, 0.4 / 3])
    with pytest.raises(ValueError, match="patch_max or patch_top1"):
        patch_reading(patch_map, "fused_map")


def _text_result(shape=(8, 8), score=0.3, region=None) -> AnomalyResult:
    return AnomalyResult(
        anomaly_map=np.full(shape, 0.2, np.float32),
        image_score=score,
        prompt_presence={"crack": 0.5},
        prompt_best_score={"crack": score},
        object_region=region,
    )


def test_image_score_fuses_the_text_score_with_the_patch_reading_and_keeps_both_signals():
    settings = ScoringSettings(visual="fewshot", visual_weight=0.25, sigma=0.0)
    visual = torch.zeros(1, 4, 4)
    visual[0, 1, 2] = 0.8
    result = _text_result()
    fuse_visual([result], visual, settings)
    assert result.image_score == pytest.approx(0.75 * 0.3 + 0.25 * 0.8)  # read before upsampling
    text_map, text_score = result.signals["text"]
    visual_map, visual_score = result.signals["visual"]
    assert text_score == 0.3 and visual_score == pytest.approx(0.8) and np.allclose(text_map, 0.2)
    assert np.allclose(result.anomaly_map, 0.75 * text_map + 0.25 * visual_map)


def test_object_prior_switch_leaves_the_visual_map_outside_the_object():
    """A missing part lies outside the found object: with visual_object_prior off it keeps its strength."""
    region = np.zeros((8, 8), bool)
    region[:, :4] = True
    on = ScoringSettings(visual="fewshot", sigma=0.0, outside_weight=0.25)
    off = dataclasses.replace(on, visual_object_prior=False)
    results = [_text_result(region=region), _text_result(region=region)]
    fuse_visual(results[:1], torch.full((1, 4, 4), 0.8), on)
    fuse_visual(results[1:], torch.full((1, 4, 4), 0.8), off)
    assert np.allclose(results[0].signals["visual"][0][:, 4:], 0.2)  # 0.8 x outside_weight
    assert np.allclose(results[1].signals["visual"][0], 0.8)


def test_rotations_are_exact_at_right_angles_and_mirror_the_corners_otherwise():
    image = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
    assert np.array_equal(rotate_image(image, 90), np.rot90(image))
    assert np.array_equal(rotate_image(image, 270), np.rot90(image, 3))
    flat = np.full((20, 30, 3), 77, np.uint8)
    turned = rotate_image(flat, 45)
    assert turned.shape == flat.shape and (turned == 77).all()  # no black wedges in the corners


def test_reference_angles_are_checked_and_each_adds_the_references_turned(tiny_engine):
    with pytest.raises(ValueError, match="distinct angles"):
        ScoringSettings(reference_rotations=[90, 450])
    with pytest.raises(ValueError, match="distinct angles"):
        ScoringSettings(reference_rotations=[0])
    det = AnomalyDetector(tiny_engine, ScoringSettings(visual="fewshot", reference_rotations=[45, 180]))
    rng = np.random.default_rng(0)
    det.set_references([rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)])
    assert det.references is not None and det.references.sources == [0, 0, 0]  # itself, at 45 and at 180


def test_references_are_encoded_a_few_at_a_time(tiny_engine, monkeypatch):
    """3 references and their turns are 6 images (of 1008 px on the real model): 4 per vision pass."""
    rng = np.random.default_rng(1)
    refs = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(3)]
    det = AnomalyDetector(tiny_engine, ScoringSettings(visual="fewshot", reference_rotations=[90]))
    whole = det._text.encode([*refs, *(rotate_image(r, 90) for r in refs)], with_patches=True).patch_layers
    sizes, encode = [], tiny_engine.encode_images

    def counted(images, **kwargs):
        sizes.append(len(images))
        return encode(images, **kwargs)

    monkeypatch.setattr(tiny_engine, "encode_images", counted)
    det.set_references(refs)
    assert sizes == [4, 2] and det.references.sources == [0, 1, 2] * 2
    for layer, features in whole.items():
        torch.testing.assert_close(det.references.features[layer], features, atol=1e-5, rtol=0)


def test_visual_mode_is_an_enum_equal_to_its_string():
    settings = ScoringSettings(visual="mutual")
    assert settings.visual is VisualMode.MUTUAL and settings.visual == "mutual"
    assert f"{settings.visual}" == "mutual" and json.dumps(settings.visual) == '"mutual"'


def _metrics(value: float) -> dict[str, float]:
    return dict.fromkeys(METRIC_KEYS, value)


def test_results_and_compare_show_the_visual_and_the_text_map_alone(tmp_path):
    config = {"visual": "mutual", "visual_weight": 0.5}
    signals = {"bottle": {"visual": _metrics(0.9), "text": _metrics(0.4)}}
    out = tmp_path / "text+mutual" / "mvtec"
    out.mkdir(parents=True)
    doc = write_results(out, "mvtec", {"bottle": _metrics(0.8)}, config, signals=signals)
    assert doc["visual_only"]["mean"]["pixel_auroc"] == 0.9 and doc["text_only"]["categories"]["bottle"]
    assert "| text only | 40.0 |" in (out / "results.md").read_text()
    table = signal_table(collect_signals(tmp_path))
    assert (
        "| text+mutual | fused | 1 | 80.0 |" in table and "| text+mutual | visual only | 1 | 90.0 |" in table
    )
    text_only = write_results(tmp_path, "mvtec", {"bottle": _metrics(0.8)}, {"visual": "none"})
    assert "visual_only" not in text_only


def test_signal_store_round_trip_and_resume_overwrites_the_batch_in_flight(tmp_path):
    def outputs(value: float) -> list[tuple]:
        maps = {"text": (np.full((8, 8), value), value), "visual": (np.full((8, 8), 1 - value), 1 - value)}
        return [(np.zeros((8, 8)), 0.0, maps)] * 2

    assert signal_batch([(np.zeros((8, 8)), 0.0, {})], (4, 4)) is None  # visual none: nothing stored
    store = SignalStore(tmp_path, 4, 4)
    store.append(0, signal_batch(outputs(0.25), (4, 4)))
    store.append(2, signal_batch(outputs(0.5), (4, 4)))
    store.append(2, signal_batch(outputs(0.75), (4, 4)))  # the same images again after an interruption
    again = SignalStore(tmp_path, 4, 4)
    assert again.scores["text"] == [0.25, 0.25, 0.75, 0.75] and again.complete(4)
    assert np.allclose(again.maps["visual"][3], 0.25)
