"""The Python API: `AnomalyDetector.from_pretrained` + `detect` on paths, PIL images and arrays; the README
example run from a temporary working directory with the tiny SAM 3."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from dataset import DatasetError
from dataset.images import read_image, to_rgb
from model.detector import MASK_THRESHOLD, AnomalyDetector, ScoringSettings
from model.prompts import build_prompts
from tests.tolerances import assert_close

REPO = Path(__file__).resolve().parents[1]
README_MODEL_PATH = '"~/autodl-tmp/download/sam3"'


@pytest.fixture(scope="module")
def detector(tiny_sam3_dir: Path) -> AnomalyDetector:
    # box_threshold 0 so that the tiny random model yields detections to check
    return AnomalyDetector.from_pretrained(
        tiny_sam3_dir, device="cpu", dtype="float32", settings=ScoringSettings(box_threshold=0.0)
    )


def frame16() -> np.ndarray:
    """(48, 64) uint16 12-bit samples."""
    return np.random.default_rng(3).integers(0, 4096, (48, 64), dtype=np.uint16)


def test_to_rgb_converts_arrays_and_pil_images_like_read_image(tmp_path: Path) -> None:
    frame = frame16()
    Image.fromarray(frame).save(tmp_path / "f.png")
    from_file = read_image(tmp_path / "f.png")
    assert from_file.shape == (48, 64, 3) and from_file.dtype == np.uint8
    np.testing.assert_array_equal(to_rgb(frame), from_file)
    np.testing.assert_array_equal(to_rgb(Image.fromarray(frame)), from_file)  # in memory, no file
    np.testing.assert_array_equal(to_rgb(Image.open(tmp_path / "f.png")), from_file)
    rgba = np.zeros((2, 2, 4), np.uint8)  # fully transparent -> white, as read_image composites
    np.testing.assert_array_equal(to_rgb(rgba), np.full((2, 2, 3), 255, np.uint8))
    np.testing.assert_array_equal(to_rgb(np.array([[0.0, 1.0]])), [[[0] * 3, [255] * 3]])
    rgb = np.zeros((3, 3, 3), np.uint8)
    assert to_rgb(rgb) is rgb


@pytest.mark.parametrize("bad", [np.zeros((2, 2, 5)), np.zeros((1, 2, 2, 3)), np.array([["a"]]), [[0, 1]]])
def test_to_rgb_rejects_what_is_not_an_image(bad: object) -> None:
    with pytest.raises(DatasetError, match="pass"):
        to_rgb(bad)  # type: ignore[arg-type]


def test_detect_gives_the_same_result_for_a_path_a_pil_image_and_an_array(
    detector: AnomalyDetector, tmp_path: Path
) -> None:
    frame = frame16()
    Image.fromarray(frame).save(tmp_path / "f.png")
    by_path, by_pil, by_array = detector.detect([tmp_path / "f.png", Image.fromarray(frame), frame])
    single = detector.detect(str(tmp_path / "f.png"))  # one input -> one result (a batch of one)
    for other in (by_pil, by_array, single):  # rows of a batch of 3 vs a batch of 1: up to float rounding
        assert_close(other.anomaly_map, by_path.anomaly_map, "anomaly_map")
        assert_close(other.image_score, by_path.image_score, "image_score")
        assert_close(other.prompt_presence, by_path.prompt_presence, "prompt_presence")


def test_detect_is_detect_arrays_bit_for_bit_plus_mask_and_instance_masks(detector: AnomalyDetector) -> None:
    """The pipeline's numbers come from `detect`; they must equal the lower-level call's exactly."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 56, 3), dtype=np.uint8), rng.integers(0, 256, (32, 32, 3), np.uint8)]
    prompts = build_prompts("bottle", "base")
    low = detector.detect_arrays(images, prompts, "bottle", out_size=(24, 24))
    high = detector.detect(images, "bottle", mask_threshold=0.3, out_size=(24, 24))
    for a, b, image in zip(low, high, images, strict=True):
        np.testing.assert_array_equal(a.anomaly_map, b.anomaly_map)
        assert (a.image_score, a.prompt_presence, a.prompt_best_score) == (
            b.image_score,
            b.prompt_presence,
            b.prompt_best_score,
        )
        assert a.detections == b.detections  # prompt, score, box (masks are not compared)
        assert b.object_prompt == "bottle" and b.object_found is not None
        np.testing.assert_array_equal(b.mask, b.anomaly_map >= 0.3)
        assert b.detections, "box_threshold 0 must give detections"
        for d in b.detections:
            assert d.mask is not None and d.mask.dtype == bool and d.mask.shape == image.shape[:2]
        assert all(d.mask is None for d in a.detections)  # detect_arrays keeps none by default
    assert not any(d.mask is not None for d in detector.detect(images[0], instance_masks=False).detections)


def test_detect_picks_prompts_and_object_noun_from_the_category(detector: AnomalyDetector) -> None:
    image = np.zeros((32, 32, 3), np.uint8)
    generic = detector.detect(image)
    assert list(generic.prompt_presence) == build_prompts(None, "base") and generic.object_prompt is None
    bottle = detector.detect(image, category="metal_nut", prompt_strategy="category")
    assert list(bottle.prompt_presence) == build_prompts("metal_nut", "category")
    assert bottle.object_prompt == "metal nut"
    assert detector.detect(image, category="wood").object_prompt is None  # texture: no object prior
    own = detector.detect(image, category="metal_nut", prompts=["dent"])
    assert list(own.prompt_presence) == ["dent"] and own.object_prompt == "metal nut"


def test_detect_default_mask_threshold_is_the_config_default() -> None:
    config = yaml.safe_load((REPO / "configs" / "config.yaml").read_text())
    assert MASK_THRESHOLD == config["mask_threshold"]


def readme_example() -> str:
    """The ```python block of README.md's "## Python API" section."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the Python API section holds exactly one python example"
    return blocks[0]


def test_readme_example_runs_from_another_working_directory(
    tiny_sam3_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The example, run as written from an empty working directory (in this process: the repository is on
    sys.path as it would be in a notebook)."""
    code = readme_example()
    assert code.count(README_MODEL_PATH) == 1
    code = code.replace(README_MODEL_PATH, repr(str(tiny_sam3_dir)))
    code = code.replace('device="auto"', 'device="cpu"')  # the CPU test run, even where CUDA is present
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})
    out = capsys.readouterr().out
    assert (tmp_path / "frame16.png").is_file()
    with Image.open(tmp_path / "frame16.png") as png:
        assert png.mode.startswith("I")  # the example really reads a 16-bit PNG
    assert len(re.findall(r"^score \d\.\d{3}, map \((\d+), (\d+)\)", out, flags=re.M)) == 3
    assert "presence:" in out
