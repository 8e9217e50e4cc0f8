"""16-bit images of one category read alike: one sample value, one brightness (sBIT, category or declared)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dataset import load_dataset
from dataset.images import category_bit_depth, depth_holding, read_image, unscaled_peak
from tests.test_images import save_png16
from utils.config.loading import ConfigError, resolve_config
from utils.config.schema import Config
from utils.evaluation.references import reference_images


def _category(root: Path, images: dict[str, np.ndarray], sbit: dict[str, int] | None = None) -> Path:
    """Own-data layout `root/cam/good/<name>.png` with the given 16-bit gray images."""
    good = root / "cam" / "good"
    good.mkdir(parents=True)
    for name, gray in images.items():
        save_png16(good / f"{name}.png", gray, (sbit or {}).get(name))
    return root


# 200 fits 8 bits, 256 needs 10: read one by one, the same 200 was 4x brighter in `dim` than in `bright`
DIM = np.array([[0, 200], [100, 200]], dtype=np.uint16)
BRIGHT = np.array([[0, 200], [256, 200]], dtype=np.uint16)


def test_depth_holding_is_the_smallest_sensor_depth() -> None:
    assert [depth_holding(p) for p in (0, 255, 256, 1023, 1024, 4095, 16383, 16384, 65535)] == [
        8,
        8,
        10,
        10,
        12,
        12,
        14,
        16,
        16,
    ]


def test_one_sample_value_is_one_brightness_within_a_category(tmp_path: Path) -> None:
    root = _category(tmp_path, {"dim": DIM, "bright": BRIGHT})
    alone = [read_image(root / "cam" / "good" / f"{n}.png")[0, 1, 0] for n in ("dim", "bright")]
    assert alone == [200, 50]  # the old per-image rule: 200/255 vs 200/1023
    ds = load_dataset("folder", root, "cam", "test")
    assert ds.depths.of("cam") == 10
    levels = {Path(s.image_path).stem: s.image[..., 0] for s in ds}
    expected = np.rint(np.array([[0, 200], [100, 200]]) * 255 / 1023).astype(np.uint8)
    np.testing.assert_array_equal(levels["dim"], expected)
    assert levels["dim"][0, 1] == levels["bright"][0, 1] == 50
    assert ds[1:].depths is ds.depths  # a slice scales like its dataset


def test_train_and_test_images_of_a_category_share_the_depth(tmp_path: Path) -> None:
    """A few-shot reference (train) and a test image of one camera: the depth covers both splits."""
    for split, gray in (("train", DIM), ("test", BRIGHT)):
        save_png16(_mkdir(tmp_path / "cam" / split / "good") / f"{split}.png", gray)
    train = load_dataset("folder", tmp_path, "cam", "train")
    test = load_dataset("folder", tmp_path, "cam", "test")
    assert train.depths.of("cam") == test.depths.of("cam") == 10
    assert train[0].image[0, 1, 0] == test[0].image[0, 1, 0] == 50


def _mkdir(folder: Path) -> Path:
    folder.mkdir(parents=True)
    return folder


def test_sbit_wins_and_a_declared_depth_replaces_the_category_rule(tmp_path: Path) -> None:
    root = _category(tmp_path, {"dim": DIM, "marked": DIM}, sbit={"marked": 12})
    assert unscaled_peak(root / "cam" / "good" / "marked.png") is None  # sBIT says the depth itself
    ds = load_dataset("folder", root, "cam", "test")
    assert ds.depths.of("cam") == 8  # only `dim` has no sBIT; its max 200 fits 8 bits
    by_name = {Path(s.image_path).stem: s.image[0, 1, 0] for s in ds}
    assert by_name == {"dim": 200, "marked": round(200 * 255 / 4095)}
    declared = load_dataset("folder", root, "cam", "test", bit_depth=12)
    assert {Path(s.image_path).stem: s.image[0, 1, 0] for s in declared} == {"dim": 12, "marked": 12}


def test_eight_bit_categories_are_untouched_and_only_headers_are_read(tmp_path: Path, monkeypatch) -> None:
    good = _mkdir(tmp_path / "cam" / "good")
    Image.fromarray(np.full((4, 4, 3), 77, np.uint8)).save(good / "a.png")
    Image.fromarray(np.full((4, 4, 3), 77, np.uint8)).save(good / "b.jpg")
    loads = []
    original = Image.Image.load
    monkeypatch.setattr(Image.Image, "load", lambda self: loads.append(1) or original(self))
    assert category_bit_depth([good / "a.png", good / "b.jpg"]) is None
    assert loads == []
    ds = load_dataset("folder", tmp_path, "cam", "test")
    assert [int(s.image[0, 0, 0]) for s in ds] == [77, pytest.approx(77, abs=2)]


def test_fewshot_references_are_decoded_with_the_category_depth(tmp_path: Path) -> None:
    """The scorer gets reference paths; they are read like the test images, not each by its own maximum."""
    for split, gray in (("train", DIM), ("test", BRIGHT)):
        save_png16(_mkdir(tmp_path / "cam" / split / "good") / f"{split}.png", gray)
    reference = str(tmp_path / "cam" / "train" / "good" / "train.png")
    cfg = Config.from_dict({"dataset": "folder", "dataset_path": str(tmp_path), "bit_depth": None})
    assert reference_images(cfg, "cam", [reference])[0][0, 1, 0] == 50  # 200 / 1023, like the test image
    assert reference_images(cfg.replace(bit_depth=12), "cam", [reference])[0][0, 1, 0] == 12
    assert read_image(reference)[0, 1, 0] == 200  # alone: its own maximum fits 8 bits
    assert resolve_config(None, {"bit_depth": 12}).data.bit_depth == 12
    with pytest.raises(ConfigError, match=r"'bit_depth' must be one of 8, 10, 12, 14, 16, got 11"):
        resolve_config(None, {"bit_depth": 11})
