"""utils/app.py: re-thresholding, the per-session encode cache, the JSON, the missing-model message."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from dataset import DatasetError
from model.detector import AnomalyDetector, AnomalyResult, Detection, ScoringSettings
from scripts import app as app_script
from utils.app import (
    BOX_FLOOR,
    EncodeCache,
    Session,
    engine_calls,
    load_references,
    missing_model_message,
    parse_prompts,
    read_upload,
    read_uploads,
    resolve_prompts,
    result_json,
    rethreshold,
    scorer,
    summary_rows,
    unique_names,
    upload_paths,
    visual_problem,
    with_floor,
    write_downloads,
)
from utils.config.cli import config_from_args


def small_result() -> AnomalyResult:
    amap = np.array([[0.1, 0.5], [0.7, 0.9]], np.float32)
    m1, m2 = np.array([[1, 0], [0, 0]], bool), np.array([[0, 0], [1, 1]], bool)
    detections = [Detection("crack", 0.8, (0, 0, 1, 1), m2), Detection("hole", 0.2, (0, 0, 1, 0), m1)]
    return AnomalyResult(amap, 0.9, {"crack": 0.9, "hole": 0.4}, {"crack": 0.8, "hole": 0.2}, detections)


def test_rethreshold_cuts_mask_and_boxes():
    result = small_result()
    cut = rethreshold(result, 0.5, 0.3)
    assert cut.mask.tolist() == [[False, True], [True, True]]
    assert [d.prompt for d in cut.detections] == ["crack"]
    cut = rethreshold(result, 0.95, 0.1)
    assert not cut.mask.any() and [d.prompt for d in cut.detections] == ["crack", "hole"]


def test_result_json_has_rle_boxes_and_counts():
    result = small_result()
    doc = result_json(result, rethreshold(result, 0.6, 0.1), None, {"vision_calls": 3, "text_calls": 2})
    assert doc["mask_pixels"] == 2 and doc["image_score"] == 0.9 and doc["prompts"] == ["crack", "hole"]
    assert doc["engine_calls"] == {"vision_calls": 3, "text_calls": 2}
    for box, d in zip(doc["boxes"], result.detections, strict=True):
        rle = {"size": box["rle"]["size"], "counts": box["rle"]["counts"].encode()}
        assert np.array_equal(coco_mask.decode(rle).astype(bool), d.mask)


def test_cache_runs_sam3_once_per_image_and_prompts(tiny_engine):
    detector = with_floor(AnomalyDetector(tiny_engine, ScoringSettings()))
    assert detector.settings.box_threshold == BOX_FLOOR
    cache = EncodeCache(size=3)
    rng = np.random.default_rng(0)
    a, b, c = (rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(3))
    before = engine_calls(detector)["vision_calls"]
    first = cache.results(detector, [a, b, a], ["scratch"], None, batch_size=1)  # a repeated: scored once
    assert first[0] is first[2] and engine_calls(detector)["vision_calls"] == before + 2
    again = cache.results(detector, [b, a.copy()], ["scratch"], None)  # same pixels: cached
    assert again == [first[1], first[0]] and engine_calls(detector)["vision_calls"] == before + 2
    cache.results(detector, [a], ["dent"], None)  # other prompts: a new pass
    cache.results(detector, [c], ["scratch"], None)
    assert engine_calls(detector)["vision_calls"] == before + 4 and len(cache) == 3  # oldest dropped


def test_zero_shot_results_are_the_detectors_own(tiny_engine):
    """Without references the app calls the shared detector unchanged: bit-identical to detect()."""
    detector = with_floor(AnomalyDetector(tiny_engine, ScoringSettings()))
    image = np.random.default_rng(1).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    [cached] = EncodeCache().results(detector, [image], ["scratch", "dent"], None)
    direct = detector.detect(image, prompts=["scratch", "dent"])
    assert np.array_equal(cached.anomaly_map, direct.anomaly_map) and cached.image_score == direct.image_score
    assert scorer(detector, None) is detector


def test_references_switch_a_session_to_fewshot(tiny_engine, tmp_path):
    detector = with_floor(AnomalyDetector(tiny_engine, ScoringSettings()))
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    goods = []
    for i in range(2):
        goods.append(str(tmp_path / f"good{i}.png"))
        Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(goods[-1])
    assert load_references(detector, [], None) is None
    refs = load_references(detector, goods, None)
    assert refs.names == ["good0.png", "good1.png"] and refs.bank.num_references == 2
    calls = engine_calls(detector)["vision_calls"]
    assert load_references(detector, list(goods), refs) is refs  # same pictures: not encoded again
    assert engine_calls(detector)["vision_calls"] == calls
    cache = EncodeCache()
    [zero] = cache.results(detector, [image], ["scratch"], None)
    [few] = cache.results(detector, [image], ["scratch"], None, refs)  # references in the key: a new pass
    assert engine_calls(detector)["vision_calls"] == calls + 2
    assert not np.array_equal(zero.anomaly_map, few.anomaly_map)
    # the shared detector stays zero-shot (other sessions), the view carries this session's bank
    assert detector.settings.visual == "none" and detector.references is None
    view = scorer(detector, refs)
    assert (
        view.engine is detector.engine and view.settings.visual == "fewshot" and view.references is refs.bank
    )
    doc = result_json(few, rethreshold(few, 0.5, 0.3), ["scratch"], image="x.png", references=refs.names)
    assert doc["visual"] == "fewshot" and doc["references"] == ["good0.png", "good1.png"]
    assert result_json(zero, rethreshold(zero, 0.5, 0.3), ["scratch"])["visual"] == "none"
    fewshot_app = with_floor(AnomalyDetector(tiny_engine, ScoringSettings(visual="fewshot")))
    with pytest.raises(DatasetError, match="reference good images"):
        scorer(fewshot_app, None)


def test_prompts_follow_strategy_and_typed_prompts():
    cfg = app_script.config_from_args(app_script.parse_args([]), not_config=("port", "host", "share"))
    base, noun = resolve_prompts(cfg, "bottle", "base", "")
    contextual, _ = resolve_prompts(cfg, "bottle", "contextual", "")
    assert noun == "bottle" and "defect" in base and "defect on the bottle" in contextual
    assert resolve_prompts(cfg, None, "contextual", "")[0][0] == "defect on the object"
    assert resolve_prompts(cfg, "bottle", "contextual", "dent, hole") == (["dent", "hole"], "bottle")


def test_uploads_names_and_downloads(tmp_path):
    good = tmp_path / "a.png"
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(good)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    (tmp_path / "notes.txt").write_text("x")
    folder = [str(tmp_path / "notes.txt"), str(good)]
    assert upload_paths([str(tmp_path / "bad.png")], folder) == [tmp_path / "bad.png", good]
    assert upload_paths(str(good), None) == [good]
    with pytest.raises(DatasetError, match="no image files"):
        upload_paths(None, [str(tmp_path / "notes.txt")])
    assert unique_names([good, Path("x/a.png"), good]) == ["a.png", "a.png (2)", "a.png (3)"]
    images, errors = read_uploads([tmp_path / "bad.png", good])
    assert [n for n, _ in images] == ["a.png"] and len(errors) == 1 and "bad.png" in errors[0]
    with pytest.raises(DatasetError, match="bad.png"):
        read_uploads([tmp_path / "bad.png"])

    result = small_result()
    cut = rethreshold(result, 0.6, 0.1)
    docs = [result_json(result, cut, None, image=name) for name in ("a.png", "a.jpg")]
    out = tmp_path / "session"
    (out.mkdir(), (out / "stale.png").write_bytes(b"old"))
    paths = write_downloads(out, docs, [cut.mask, ~cut.mask])
    assert [p.name for p in paths] == ["results.json", "a_mask.png", "a_2_mask.png"]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths)  # earlier files gone
    assert json.loads(paths[0].read_text())["images"][1]["image"] == "a.jpg"
    assert np.array_equal(np.array(Image.open(paths[1])) > 0, cut.mask)
    assert np.array_equal(np.array(Image.open(paths[2])) > 0, ~cut.mask)
    assert summary_rows(docs) == [["a.png", 0.9, 2, 2], ["a.jpg", 0.9, 2, 2]]


def test_session_picks_the_selected_image():
    assert Session().run("x") is None
    session = Session()
    session.runs = [type("Run", (), {"name": n})() for n in ("a.png", "b.png")]  # run() reads names only
    assert session.run("b.png").name == "b.png" and session.run("gone.png").name == "a.png"


def test_visual_mutual_is_refused_with_what_to_do():
    assert visual_problem({"visual": "none"}) is None and visual_problem({"visual": "fewshot"}) is None
    assert "--visual none" in visual_problem({"visual": "mutual"})


def test_inputs_and_missing_model(tmp_path):
    assert parse_prompts(" scratch, , dent ") == ["scratch", "dent"] and parse_prompts("  ") is None
    with pytest.raises(DatasetError, match="upload an image"):
        read_upload(None)
    (tmp_path / "x.png").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="x.png"):
        read_upload(tmp_path / "x.png")
    message = missing_model_message(tmp_path / "nothing")
    assert "download facebook/sam3" in message and "scripts/download_weights.py" in message


def test_app_starts_without_a_model_and_says_what_to_download(tmp_path):
    args = app_script.parse_args(["--model_path", str(tmp_path / "no_sam3"), "--port", "7861"])
    blocks = app_script.build_app(config_from_args(args, not_config=("port", "host", "share")))
    status = [c.value for c in blocks.blocks.values() if getattr(c, "elem_id", None) == "status"]
    assert status == [missing_model_message(tmp_path / "no_sam3")]
