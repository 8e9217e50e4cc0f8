"""The Python API: `AnomalyDetector.from_pretrained` + `detect` on paths, PIL images and arrays; the README
example run from a temporary working directory with the tiny SAM 3."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from dataset import DatasetError
from dataset.images import read_image, to_rgb
from model import ModelLoadError, MutualScorer
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


def test_detect_on_a_pil_image_after_verify_is_one_line(tmp_path: Path, detector: AnomalyDetector) -> None:
    """verify() leaves PIL without a file: PIL asserts; detect() says what to do instead."""
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    image = Image.open(tmp_path / "a.png")
    image.verify()
    with pytest.raises(DatasetError, match=r"cannot read PIL image .*a\.png \(its file is closed\)"):
        detector.detect(image, prompts=["crack"])


# --- hostile arguments: each a one-line error of a documented type, or read as the user meant -------------

IMAGE = np.random.default_rng(5).integers(0, 256, (24, 32, 3), dtype=np.uint8)


def one_line(error: BaseException) -> str:
    text = str(error)
    assert text and "\n" not in text
    return text


@pytest.mark.parametrize("images", [None, 5, {"a.png": 1}, b"\x89PNG", io.BytesIO(b"\x89PNG")])
def test_detect_names_what_is_no_image(detector: AnomalyDetector, images: object) -> None:
    with pytest.raises(DatasetError, match=f"cannot read images from a {type(images).__name__}") as info:
        detector.detect(images)  # type: ignore[arg-type]
    one_line(info.value)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"category": 5}, TypeError, "category must be a name"),
        ({"category": ["bottle"]}, TypeError, "category must be a name"),
        ({"prompts": 5}, TypeError, "prompts must be a string or a list of strings"),
        ({"prompts": b"crack"}, TypeError, "prompts must be a string or a list of strings"),
        ({"mask_threshold": "0.5"}, TypeError, "mask_threshold must be a number"),
        ({"mask_threshold": None}, TypeError, "mask_threshold must be a number"),
        ({"out_size": 20}, TypeError, r"out_size must be \(height, width\)"),
        ({"out_size": "20x30"}, TypeError, r"out_size must be \(height, width\)"),
        ({"out_size": (None, 3)}, TypeError, r"out_size must be \(height, width\)"),
        ({"out_size": (True, True)}, TypeError, r"out_size must be \(height, width\)"),
        ({"out_size": (0, 10)}, ValueError, "must have sides >= 1"),
        ({"out_size": (10**6, 10**6)}, ValueError, "at most 178956970 pixels"),
    ],
)
def test_detect_arguments_of_the_wrong_kind_are_one_line(
    detector: AnomalyDetector, kwargs: dict, error: type, message: str
) -> None:
    with pytest.raises(error, match=message) as info:
        detector.detect(IMAGE, **kwargs)
    one_line(info.value)


def test_home_folder_paths_and_integer_valued_sizes(
    detector: AnomalyDetector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    Image.fromarray(IMAGE).save(tmp_path / "part.png")
    by_tilde = detector.detect("~/part.png", out_size=(np.int64(12), 16.0))
    by_path = detector.detect(tmp_path / "part.png", out_size=(12, 16))
    assert by_tilde.anomaly_map.shape == (12, 16)
    np.testing.assert_array_equal(by_tilde.anomaly_map, by_path.anomaly_map)


def test_prompt_strings_reach_every_entry_point_as_one_prompt(detector: AnomalyDetector) -> None:
    [result] = detector.detect_arrays([IMAGE], "crack")  # type: ignore[arg-type]
    assert list(result.prompt_presence) == ["crack"]
    scorer = MutualScorer(detector.with_settings(visual="mutual"))
    with pytest.raises(ValueError, match="prompts hold ' '"):
        scorer.score([[IMAGE, IMAGE]], [" "])


def test_set_references_takes_one_image_or_any_list(detector: AnomalyDetector, tmp_path: Path) -> None:
    Image.fromarray(IMAGE).save(tmp_path / "good.png")
    fewshot = detector.with_settings(visual="fewshot")
    fewshot.set_references(IMAGE)  # one image, not its rows
    single = fewshot.detect(IMAGE)
    fewshot.set_references(str(tmp_path / "good.png"))  # one path, not its letters
    assert fewshot.references is not None and len(fewshot.references.sources) == 1
    fewshot.set_references(x for x in [IMAGE])
    np.testing.assert_array_equal(fewshot.detect(IMAGE).anomaly_map, single.anomaly_map)
    with pytest.raises(DatasetError, match="cannot read images from a NoneType"):
        fewshot.set_references(None)  # type: ignore[arg-type]


def test_mutual_scorer_reads_any_image_and_refuses_a_flat_list(
    detector: AnomalyDetector, tmp_path: Path
) -> None:
    """MutualScorer compares patches whatever the detector's own visual setting; a flat list of images
    (instead of a list of batches) is refused, not read row by row."""
    Image.fromarray(IMAGE).save(tmp_path / "a.png")
    results = MutualScorer(detector).score([[str(tmp_path / "a.png"), IMAGE[:12] / 255.0]], ["crack"])
    assert [r.anomaly_map.shape for r in results] == [(24, 32), (12, 32)]
    assert all(0.0 <= r.image_score <= 1.0 for r in results)
    with pytest.raises(TypeError, match=r"a batch must be a list of image lists.*\[\[image1"):
        MutualScorer(detector).score([IMAGE, IMAGE], ["crack"])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"topk": 2.5}, "topk must be an integer, got 2.5"),
        ({"map_source": None}, "map_source must be a string, got None"),
        ({"object_regularisation": "no"}, "object_regularisation must be True or False, got 'no'"),
        ({"sigma": "4"}, "sigma must be a number, got '4'"),
        ({"rescore_k": [1.5]}, "rescore_k must be a list of integers or None"),
        ({"reference_rotations": "90"}, "reference_rotations must be a list of integers, got '90'"),
        ({"nope": 1, "sigma": 1.0}, "no scoring setting nope: use one of box_nms_iou, box_threshold"),
    ],
)
def test_with_settings_names_a_wrong_type_or_name(changes: dict, message: str) -> None:
    with pytest.raises(TypeError, match=message) as info:
        AnomalyDetector(engine=None).with_settings(**changes)
    one_line(info.value)


def test_settings_lists_given_as_tuples_and_settings_of_the_wrong_kind() -> None:
    settings = ScoringSettings(visual_degrees=(1, 3), rescore_k=(1, 2))  # type: ignore[arg-type]
    assert settings.visual_degrees == [1, 3] and settings.rescore_k == [1, 2]
    assert ScoringSettings(sigma=np.float32(2.0), topk=np.int64(5)).topk == 5
    with pytest.raises(TypeError, match="settings must be a ScoringSettings"):
        AnomalyDetector(engine=None, settings={"sigma": 1.0})  # type: ignore[arg-type]


def test_loading_from_a_file_none_or_an_integer_dtype(tmp_path: Path, tiny_sam3_dir: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    for path, message in [
        (tmp_path / "config.json", "is a file: give the folder"),
        (None, "must be a folder"),
    ]:
        with pytest.raises(ModelLoadError, match=message):
            AnomalyDetector.from_pretrained(path, device="cpu")  # type: ignore[arg-type]
    with pytest.raises(ModelLoadError, match="dtype torch.int8 cannot run SAM 3"):
        AnomalyDetector.from_pretrained(tiny_sam3_dir, device="cpu", dtype=torch.int8)


def test_an_unreadable_item_of_a_list_is_named_by_its_position(
    detector: AnomalyDetector, tmp_path: Path
) -> None:
    with pytest.raises(
        DatasetError, match=r"^item 1 of the 3 images: image array holds NaN or infinite"
    ) as info:
        detector.detect([IMAGE, np.full((4, 4), np.nan), tmp_path / "never.png"])
    one_line(info.value)
    with pytest.raises(DatasetError, match=r"^image not found: .*never\.png"):  # one image: no position
        detector.detect(tmp_path / "never.png")


def test_one_pixel_sides_taken_backwards_and_turned_references(detector: AnomalyDetector) -> None:
    """numpy calls a reversed 1-row array contiguous, torch refuses its negative stride: both are copied."""
    row = IMAGE[:1, ::-1]
    assert detector.detect(row).anomaly_map.shape == (1, 32)
    fewshot = detector.with_settings(visual="fewshot", reference_rotations=[90])
    fewshot.set_references([IMAGE[:1, :1]])
    assert fewshot.detect(IMAGE[:1, :1]).anomaly_map.shape == (1, 1)


def test_one_reference_on_a_one_row_patch_grid_says_what_to_do(detector: AnomalyDetector) -> None:
    fewshot = detector.with_settings(visual="fewshot", patch_pool=1000)  # the 16 x 16 grid pooled to 1 x 1
    with pytest.raises(ValueError, match="1 row high cannot calibrate itself: give two or more references"):
        fewshot.set_references(IMAGE)


@pytest.mark.parametrize("device", [torch.device("meta"), "meta", "mps", "cuda:99", 1.5])
def test_devices_sam3_cannot_run_on_are_one_line(tiny_sam3_dir: Path, device: object) -> None:
    with pytest.raises(ModelLoadError, match=r"device|CUDA") as info:
        AnomalyDetector.from_pretrained(tiny_sam3_dir, device=device)  # type: ignore[arg-type]
    one_line(info.value)
