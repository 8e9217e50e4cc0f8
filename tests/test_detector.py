"""Tests for model/detector.py with a fake engine yielding hand-made SAM 3 concept outputs in chunks."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from model.detector import AnomalyDetector, AnomalyResult, Detection, ScoringSettings
from model.fusion import fuse_visual
from model.tiny_sam3 import TINY_NUM_QUERIES
from tests.tolerances import assert_close
from utils.config.schema import Config, defaults

H = W = 16  # mask resolution of the fake engine
Q = 3  # queries per row
BIG = 20.0


@dataclass
class FakeFeatures:
    num_images: int
    sizes: list[tuple[int, int]]
    patch_layers: dict[int, torch.Tensor] = field(default_factory=dict)  # none asked for: visual none


@dataclass
class FakeOutputs:
    image_index: torch.Tensor
    prompt_index: torch.Tensor
    mask_logits: torch.Tensor
    scores: torch.Tensor
    boxes: torch.Tensor
    presence: torch.Tensor
    semantic_logits: torch.Tensor


@dataclass
class Row:
    """One image x prompt row: Q instances (mask logits, scores, boxes), presence, semantic logits."""

    mask_logits: torch.Tensor  # (Q, H, W)
    scores: torch.Tensor  # (Q,)
    boxes: torch.Tensor  # (Q, 4)
    presence: float
    semantic_logits: torch.Tensor  # (H, W)


def nothing() -> Row:
    """SAM 3 found nothing: zero scores and presence, very negative logits."""
    return Row(torch.full((Q, H, W), -BIG), torch.zeros(Q), torch.zeros(Q, 4), 0.0, torch.full((H, W), -BIG))


def box_logits(y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
    logits = torch.full((H, W), -BIG)
    logits[y0:y1, x0:x1] = BIG
    return logits


def with_instance(row: Row, q: int, rect: tuple[int, int, int, int], score: float) -> Row:
    """Put an instance with mask rect = (y0, y1, x0, x1) (map pixels) and its box into query q."""
    y0, y1, x0, x1 = rect
    row.mask_logits[q] = box_logits(y0, y1, x0, x1)
    row.scores[q] = score
    row.boxes[q] = torch.tensor([x0 / W, y0 / H, x1 / W, y1 / H])
    row.presence = max(row.presence, score)
    return row


class FakeEngine:
    """Implements the Sam3Engine contract from a function (image index, prompt) -> Row.

    Rows are yielded image-major in chunks of `chunk_size`; `shuffle` yields them in a random order instead.
    """

    def __init__(self, make_row: Callable[[int, str], Row], chunk_size: int = 4, shuffle: bool = False):
        self.make_row = make_row
        self.chunk_size = chunk_size
        self.shuffle = shuffle
        self.encode_calls = 0
        self.predict_calls: list[list[str]] = []

    def encode_images(self, images: Sequence[np.ndarray]) -> FakeFeatures:
        self.encode_calls += 1
        return FakeFeatures(len(images), [tuple(im.shape[:2]) for im in images])

    def predict(self, features: FakeFeatures, prompts: Sequence[str]) -> Iterator[FakeOutputs]:
        self.predict_calls.append(list(prompts))
        pairs = [(i, p) for i in range(features.num_images) for p in range(len(prompts))]
        if self.shuffle:
            order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(3)).tolist()
            pairs = [pairs[k] for k in order]
        for start in range(0, len(pairs), self.chunk_size):
            part = pairs[start : start + self.chunk_size]
            rows = [self.make_row(i, prompts[p]) for i, p in part]
            yield FakeOutputs(
                image_index=torch.tensor([i for i, _ in part]),
                prompt_index=torch.tensor([p for _, p in part]),
                mask_logits=torch.stack([r.mask_logits for r in rows]),
                scores=torch.stack([r.scores for r in rows]),
                boxes=torch.stack([r.boxes for r in rows]),
                presence=torch.tensor([r.presence for r in rows]),
                semantic_logits=torch.stack([r.semantic_logits for r in rows]),
            )


def settings(**changes) -> ScoringSettings:
    """Exact-arithmetic settings: instance maps only, no smoothing."""
    base = dict(map_source="instance", sigma=0.0)
    base.update(changes)
    return ScoringSettings(**base)


def image(height: int = 40, width: int = 60) -> np.ndarray:
    return np.zeros((height, width, 3), dtype=np.uint8)


# --- settings --------------------------------------------------------------------------------------


def test_settings_defaults_match_config_yaml():
    declared = defaults()
    for f in dataclasses.fields(ScoringSettings):
        assert getattr(ScoringSettings(), f.name) == declared[f.name], f.name


def test_config_scoring_section_picks_its_keys():
    cfg = {**defaults(), "map_source": "semantic", "topk": 7, "lr": 0.1}
    s = Config.from_dict(cfg).scoring
    assert s.map_source == "semantic" and s.topk == 7


def test_settings_reject_unknown_choices():
    with pytest.raises(ValueError, match="map_source"):
        ScoringSettings(map_source="all")
    with pytest.raises(ValueError, match="image_score"):
        ScoringSettings(image_score="median")
    with pytest.raises(ValueError, match="outside_weight"):
        ScoringSettings(outside_weight=1.5)
    with pytest.raises(ValueError, match="topk"):
        ScoringSettings(topk=0)


# --- maps, scores, detections ---------------------------------------------------------------------


def test_one_instance_gives_known_map_score_and_box():
    def make_row(i, prompt):
        return with_instance(nothing(), 0, (4, 8, 8, 12), 0.8) if prompt == "crack" else nothing()

    engine = FakeEngine(make_row)
    det = AnomalyDetector(engine, settings())
    [res] = det.detect_arrays([image(40, 60)], ["crack", "stain"], out_size=(H, W))
    assert isinstance(res, AnomalyResult)
    expected = np.zeros((H, W), np.float32)
    expected[4:8, 8:12] = 0.8
    assert res.anomaly_map.dtype == np.float32 and res.anomaly_map.shape == (H, W)
    np.testing.assert_allclose(res.anomaly_map, expected, atol=1e-5)
    assert res.image_score == pytest.approx(0.8, abs=1e-5)
    assert res.prompt_best_score == pytest.approx({"crack": 0.8, "stain": 0.0})
    assert res.prompt_presence == pytest.approx({"crack": 0.8, "stain": 0.0})
    # box (x0, y0, x1, y1) = (8/16, 4/16, 12/16, 8/16) of a 60 x 40 (W x H) image
    assert res.detections == [Detection("crack", pytest.approx(0.8), pytest.approx((30.0, 10.0, 45.0, 20.0)))]
    assert res.object_found is None
    assert engine.encode_calls == 1 and engine.predict_calls == [["crack", "stain"]]


def test_nothing_found_gives_an_all_zero_map():
    det = AnomalyDetector(FakeEngine(lambda i, p: nothing()), settings(map_source="both", sigma=2.0))
    [res] = det.detect_arrays([image()], ["defect"])
    assert res.anomaly_map.shape == (40, 60)  # out_size None -> the image's own size
    assert float(np.abs(res.anomaly_map).max()) < 1e-6
    assert res.image_score < 1e-6 and res.detections == []


def test_detections_threshold_and_order_and_per_image_scaling():
    def make_row(i, prompt):
        row = nothing()
        if prompt == "a":
            with_instance(row, 0, (0, 4, 0, 4), 0.35)
            with_instance(row, 1, (8, 12, 8, 12), 0.2)  # below box_threshold 0.3
        else:
            with_instance(row, 2, (0, 16, 0, 8), 0.9)
        return row

    det = AnomalyDetector(FakeEngine(make_row), settings())
    small, large = det.detect_arrays([image(16, 32), image(160, 64)], ["a", "b"], out_size=(8, 8))
    assert [(d.prompt, round(d.score, 5)) for d in small.detections] == [("b", 0.9), ("a", 0.35)]
    assert small.detections[0].box == pytest.approx((0.0, 0.0, 16.0, 16.0))
    assert large.detections[0].box == pytest.approx((0.0, 0.0, 32.0, 160.0))
    assert small.anomaly_map.shape == (8, 8)


def test_mean_aggregation_and_semantic_source():
    def make_row(i, prompt):
        row = nothing()
        row.semantic_logits = torch.zeros(H, W) if prompt == "a" else torch.full((H, W), -BIG)
        row.presence = 0.6 if prompt == "a" else 0.0
        return row

    det = AnomalyDetector(FakeEngine(make_row), settings(map_source="semantic", prompt_aggregation="mean"))
    [res] = det.detect_arrays([image()], ["a", "b"], out_size=(H, W))
    np.testing.assert_allclose(res.anomaly_map, np.full((H, W), 0.6 * 0.5 / 2), atol=1e-6)


def test_topk_mean_and_instance_image_scores():
    def make_row(i, prompt):
        return with_instance(nothing(), 0, (0, 2, 0, 2), 0.5) if prompt == "a" else nothing()

    topk = AnomalyDetector(FakeEngine(make_row), settings(image_score="topk_mean", topk=8))
    assert topk.detect_arrays([image()], ["a"], out_size=(H, W))[0].image_score == pytest.approx(
        0.25, abs=1e-5
    )
    inst = AnomalyDetector(FakeEngine(make_row), settings(image_score="instance"))
    assert inst.detect_arrays([image()], ["a", "b"], out_size=(H, W))[0].image_score == pytest.approx(0.5)


# --- object regularisation ------------------------------------------------------------------------

OBJECT = (4, 12, 4, 12)  # the object occupies the centre 8 x 8 of the 16 x 16 map


def regularisation_row(i: int, prompt: str, object_rect=OBJECT) -> Row:
    row = nothing()
    if prompt == "metal nut":
        return with_instance(row, 0, object_rect, 0.95) if object_rect else row
    with_instance(row, 0, (3, 13, 3, 13), 0.9)  # "defect" = the whole object: dropped
    with_instance(row, 1, (0, 2, 0, 2), 0.6)  # outside the dilated object: x 0.2
    with_instance(row, 2, (6, 8, 6, 8), 0.5)  # a real defect inside the object
    return row


def test_object_regularisation_drops_object_sized_instance_and_downweights_outside():
    engine = FakeEngine(regularisation_row)
    det = AnomalyDetector(engine, settings(object_dilation=0.0625))  # 1 map pixel
    [res] = det.detect_arrays([image()], ["scratch"], object_noun="metal nut", out_size=(H, W))
    assert engine.predict_calls == [["metal nut", "scratch"]]
    assert res.object_found is True
    expected = np.zeros((H, W), np.float32)
    expected[0:2, 0:2] = 0.6 * 0.2
    expected[6:8, 6:8] = 0.5
    np.testing.assert_allclose(res.anomaly_map, expected, atol=1e-5)
    assert res.image_score == pytest.approx(0.5, abs=1e-5)
    assert res.prompt_best_score == pytest.approx({"scratch": 0.6})
    assert "metal nut" not in res.prompt_presence
    assert [d.score for d in res.detections] == pytest.approx([0.6, 0.5])  # the dropped one is gone


def whole_object_row(i: int, prompt: str, defect_rect=(3, 13, 3, 13), score: float = 0.9) -> Row:
    """Both heads answer: the object for the noun; for the defect prompt, `defect_rect` with `score`."""
    rect, p = (OBJECT, 0.95) if prompt == "metal nut" else (defect_rect, score)
    row = with_instance(nothing(), 0, rect, p)
    row.semantic_logits = box_logits(*rect)
    return row


@pytest.mark.parametrize("source", ["instance", "semantic", "both"])
def test_whole_object_answer_is_dropped_from_every_map_source(source):
    """Issue 8.1: the object prior used to skip the semantic map (image score 0.9 with semantic/both)."""
    det = AnomalyDetector(FakeEngine(whole_object_row), settings(map_source=source))
    [res] = det.detect_arrays([image()], ["scratch"], object_noun="metal nut", out_size=(H, W))
    assert res.object_found is True
    assert res.image_score == pytest.approx(0.0, abs=1e-6)
    assert float(res.anomaly_map.max()) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("source", ["instance", "semantic", "both"])
def test_small_defect_survives_and_outside_is_downweighted_for_every_source(source):
    """A defect covering 4 of the object's 64 pixels is kept; one outside the object is multiplied by 0.2."""

    def make_row(i, prompt):
        rect = (6, 8, 6, 8) if i == 0 else (0, 2, 0, 2)  # image 0: inside the object; image 1: outside
        return whole_object_row(i, prompt, defect_rect=rect, score=0.5)

    det = AnomalyDetector(FakeEngine(make_row), settings(map_source=source, object_dilation=0.0625))
    inside, outside = det.detect_arrays(
        [image(), image()], ["scratch"], object_noun="metal nut", out_size=(H, W)
    )
    assert inside.image_score == pytest.approx(0.5, abs=1e-5)
    assert outside.image_score == pytest.approx(0.5 * 0.2, abs=1e-5)


def test_no_object_noun_means_no_regularisation():
    engine = FakeEngine(regularisation_row)
    [res] = AnomalyDetector(engine, settings()).detect_arrays([image()], ["scratch"], out_size=(H, W))
    assert engine.predict_calls == [["scratch"]]
    assert res.object_found is None
    assert res.image_score == pytest.approx(0.9, abs=1e-5)


def test_regularisation_switched_off_ignores_the_noun():
    engine = FakeEngine(regularisation_row)
    det = AnomalyDetector(engine, settings(object_regularisation=False))
    [res] = det.detect_arrays([image()], ["scratch"], object_noun="metal nut", out_size=(H, W))
    assert engine.predict_calls == [["scratch"]]
    assert res.object_found is None and res.image_score == pytest.approx(0.9, abs=1e-5)


def test_object_not_found_leaves_the_map_unchanged():
    def make_row(i, prompt):
        return regularisation_row(i, prompt, object_rect=None)

    det = AnomalyDetector(FakeEngine(make_row), settings())
    [with_noun] = det.detect_arrays([image()], ["scratch"], object_noun="metal nut", out_size=(H, W))
    [without] = det.detect_arrays([image()], ["scratch"], out_size=(H, W))
    assert with_noun.object_found is False
    np.testing.assert_array_equal(with_noun.anomaly_map, without.anomaly_map)
    assert with_noun.image_score == pytest.approx(0.9, abs=1e-5)


# --- streaming ------------------------------------------------------------------------------------


def random_row(i: int, prompt: str) -> Row:
    g = torch.Generator().manual_seed(1000 * i + sum(map(ord, prompt)))
    boxes = torch.rand(Q, 4, generator=g)
    return Row(
        mask_logits=torch.randn(Q, H, W, generator=g) * 4,
        scores=torch.rand(Q, generator=g),
        boxes=torch.cat([boxes[:, :2] * 0.5, boxes[:, 2:] * 0.5 + 0.5], dim=1),
        presence=float(torch.rand(1, generator=g)),
        semantic_logits=torch.randn(H, W, generator=g) * 2,
    )


def assert_same(a: list[AnomalyResult], b: list[AnomalyResult]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):  # other chunkings: equal up to float rounding
        assert_close(x.anomaly_map, y.anomaly_map, "anomaly_map")
        assert_close(x.image_score, y.image_score, "image_score")
        assert_close(x.prompt_presence, y.prompt_presence, "prompt_presence")
        assert_close(x.prompt_best_score, y.prompt_best_score, "prompt_best_score")
        assert [d.prompt for d in x.detections] == [d.prompt for d in y.detections]
        assert_close([d.score for d in x.detections], [d.score for d in y.detections], "detection scores")
        assert_close(
            np.array([d.box for d in x.detections]).reshape(-1, 4),
            np.array([d.box for d in y.detections]).reshape(-1, 4),
            "boxes (pixels)",
        )
        assert x.object_found == y.object_found


@pytest.mark.parametrize("noun", [None, "bottle"])
def test_chunk_boundaries_and_row_order_do_not_change_results(noun):
    images = [image(40, 60), image(30, 30), image(50, 20)]
    prompts = ["crack", "stain", "hole", "dent"]
    s = ScoringSettings(sigma=1.0, object_threshold=0.3, box_threshold=0.1)
    reference = AnomalyDetector(FakeEngine(random_row, chunk_size=1000), s).detect_arrays(
        images, prompts, noun
    )
    for chunk_size in (1, 2, 3, 7):
        results = AnomalyDetector(FakeEngine(random_row, chunk_size=chunk_size), s).detect_arrays(
            images, prompts, noun
        )
        assert_same(results, reference)
    shuffled = AnomalyDetector(FakeEngine(random_row, chunk_size=2, shuffle=True), s)
    if noun is None:  # without an object prior, any row order gives the same maps
        assert_same(shuffled.detect_arrays(images, prompts, noun), reference)
    else:  # the object row must precede its image's defect rows (image-major order)
        with pytest.raises(RuntimeError, match="image-major"):
            shuffled.detect_arrays(images, prompts, noun)
    for res, im in zip(reference, images, strict=True):
        assert res.anomaly_map.shape == im.shape[:2]
        assert res.anomaly_map.min() >= 0 and res.anomaly_map.max() <= 1


def test_duplicate_prompts_are_scored_once_and_empty_inputs():
    engine = FakeEngine(random_row)
    det = AnomalyDetector(engine, ScoringSettings())
    det.detect_arrays([image()], ["crack", "crack", "hole"])
    assert engine.predict_calls == [["crack", "hole"]]
    assert det.detect_arrays([], ["crack"]) == []
    with pytest.raises(ValueError, match="prompt"):
        det.detect_arrays([image()], [])


def test_missing_rows_are_an_error():
    class Lossy(FakeEngine):
        def predict(self, features, prompts):
            for out in super().predict(features, prompts):
                yield dataclasses.replace(out, prompt_index=torch.zeros_like(out.prompt_index))

    with pytest.raises(RuntimeError, match="no rows"):
        AnomalyDetector(Lossy(random_row), ScoringSettings()).detect_arrays([image()], ["a", "b"])


def test_text_override_is_the_single_route_to_the_engine():
    calls = []

    def override(engine, features, prompts):
        calls.append(list(prompts))
        return engine.predict(features, [*prompts])

    engine = FakeEngine(random_row)
    det = AnomalyDetector(engine, ScoringSettings(), text_override=override)
    det.detect_arrays([image()], ["crack"], object_noun="bottle")
    assert calls == [["bottle", "crack"]] and engine.predict_calls == [["bottle", "crack"]]


# --- the real (tiny, random) SAM 3 engine ---------------------------------------------------------


def real_images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, size=shape, dtype=np.uint8) for shape in ((48, 64, 3), (70, 50, 3))]


@pytest.mark.parametrize("noun", [None, "bottle"])
def test_tiny_engine_end_to_end(tiny_engine, noun):
    det = AnomalyDetector(tiny_engine, ScoringSettings(box_threshold=0.0, box_nms_iou=1.0))
    images = real_images()
    first = det.detect_arrays(images, ["crack", "scratch", "hole"], object_noun=noun, out_size=(32, 40))
    again = det.detect_arrays(images, ["crack", "scratch", "hole"], object_noun=noun, out_size=(32, 40))
    assert len(first) == 2
    for res, im in zip(first, images, strict=True):
        assert res.anomaly_map.shape == (32, 40) and res.anomaly_map.dtype == np.float32
        assert 0.0 <= res.anomaly_map.min() and res.anomaly_map.max() <= 1.0
        assert 0.0 <= res.image_score <= 1.0
        assert set(res.prompt_presence) == {"crack", "scratch", "hole"}
        assert (res.object_found is None) == (noun is None)
        # threshold 0, no NMS: every query of every prompt, minus object-sized ones dropped by regularisation
        if noun is None:
            assert len(res.detections) == 3 * TINY_NUM_QUERIES
        assert 0 < len(res.detections) <= 3 * TINY_NUM_QUERIES
        assert [d.score for d in res.detections] == sorted((d.score for d in res.detections), reverse=True)
        height, width = im.shape[:2]
        for d in res.detections:
            x0, y0, x1, y1 = d.box
            assert 0 <= x0 <= width and 0 <= x1 <= width and 0 <= y0 <= height and 0 <= y1 <= height
    assert_same(first, again)  # deterministic


def test_tiny_engine_chunking_and_native_size(tiny_sam3_dir):
    from model import Sam3Engine

    images = real_images()
    prompts = ["crack", "stain"]
    results = []
    for chunk_size in (1, 3, 16):
        engine = Sam3Engine.from_pretrained(tiny_sam3_dir, device="cpu", dtype="fp32", chunk_size=chunk_size)
        results.append(AnomalyDetector(engine, ScoringSettings()).detect_arrays(images, prompts, "bottle"))
        assert engine.vision_calls == len(images)
    for other in results[1:]:
        assert_same(other, results[0])
    assert [r.anomaly_map.shape for r in results[0]] == [(48, 64), (70, 50)]


def test_overlapping_boxes_of_different_prompts_are_merged_by_nms():
    def make_row(i, prompt):
        row = nothing()
        with_instance(row, 0, (0, 8, 0, 8), {"a": 0.5, "b": 0.8}[prompt])  # the same region for both prompts
        return row

    one = AnomalyDetector(FakeEngine(make_row), settings()).detect_arrays([image(16, 16)], ["a", "b"])[0]
    assert [(d.prompt, round(d.score, 5)) for d in one.detections] == [("b", 0.8)]
    both = AnomalyDetector(FakeEngine(make_row), settings(box_nms_iou=1.0)).detect_arrays(
        [image(16, 16)], ["a", "b"]
    )[0]
    assert [d.prompt for d in both.detections] == ["b", "a"]


# --- visual fusion ---------------------------------------------------------------------------------


def _text_result(region: np.ndarray | None, best: float = 0.3) -> AnomalyResult:
    return AnomalyResult(
        anomaly_map=np.zeros((8, 8), np.float32),
        image_score=best,  # what TextMaps gives with image_score="instance"
        prompt_presence={"crack": 0.5},
        prompt_best_score={"crack": best},
        object_region=region,
    )


def test_visual_map_gets_the_object_prior_of_the_text_map():
    """Visual map all 0.8 on a 4 x 4 patch grid; object region = left half of the 8 x 8 mask grid."""
    scoring = settings(visual="fewshot", outside_weight=0.25, visual_image_score="fused_map")
    region = np.zeros((8, 8), bool)
    region[:, :4] = True
    inside, plain = _text_result(region), _text_result(None)
    fuse_visual([inside, plain], torch.full((2, 4, 4), 0.8), scoring)
    assert np.allclose(inside.anomaly_map[:, :4], 0.4) and np.allclose(inside.anomaly_map[:, 4:], 0.1)
    assert np.allclose(plain.anomaly_map, 0.4)  # no object found / texture: no prior, as for text
    assert inside.image_score == pytest.approx(0.4)


def test_instance_image_score_includes_the_visual_map():
    scoring = settings(visual="fewshot", image_score="instance", visual_image_score="fused_map")
    result = _text_result(None, best=0.3)
    fuse_visual([result], torch.full((1, 4, 4), 0.9), scoring)
    assert result.image_score == pytest.approx(0.5 * 0.3 + 0.5 * 0.9)


def test_the_model_package_exports_the_detector_and_the_mutual_scorer():
    import model
    from model.mutual import MutualScorer

    assert model.AnomalyDetector is AnomalyDetector and model.MutualScorer is MutualScorer


def test_with_settings_shares_the_engine_and_keeps_settings_frozen():
    engine = FakeEngine(lambda i, prompt: with_instance(nothing(), 0, (0, 4, 0, 4), 0.2))
    det = AnomalyDetector(engine, settings())
    with pytest.raises(dataclasses.FrozenInstanceError):
        det.settings.box_threshold = 0.1  # type: ignore[misc]
    low = det.with_settings(box_threshold=0.1)
    assert low.engine is engine and det.settings.box_threshold == 0.3
    assert [d.score for d in low.detect_arrays([image()], ["a"])[0].detections] == pytest.approx([0.2])
    assert det.detect_arrays([image()], ["a"])[0].detections == []
    with pytest.raises(TypeError):
        det.with_settings(no_such_setting=1)
