"""utils/app.py: re-thresholding, the per-session encode cache, the JSON, the missing-model message."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from dataset import DatasetError
from model.detector import AnomalyDetector, AnomalyResult, Detection, ScoringSettings
from scripts import app as app_script
from utils.app import (
    BOX_FLOOR,
    EncodeCache,
    engine_calls,
    missing_model_message,
    parse_prompts,
    read_upload,
    result_json,
    rethreshold,
    with_floor,
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
    cache = EncodeCache(size=2)
    rng = np.random.default_rng(0)
    a, b = (rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(2))
    before = engine_calls(detector)["vision_calls"]
    first = cache.result(detector, a, ["scratch"], None)
    assert cache.result(detector, a.copy(), ["scratch"], None) is first  # same pixels: cached
    assert engine_calls(detector)["vision_calls"] == before + 1
    cache.result(detector, a, ["dent"], None)  # other prompts: a new pass
    cache.result(detector, b, ["scratch"], None)
    assert engine_calls(detector)["vision_calls"] == before + 3 and len(cache) == 2  # oldest dropped


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
