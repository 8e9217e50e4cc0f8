"""metrics_resolution native (utils/evaluation/native.py): each stored map at its image's own size, as the
TIFF export writes it, against the ground truth read at that size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from dataset import DatasetError, Record, available_categories, load_dataset
from dataset.mvtec_loco import read_defects_config
from model.map_ops import resize_map
from tests.fixtures_benchmarks import make_btad, make_mvtec_ad2, make_mvtec_loco
from utils.evaluation.exports import save_tiff_maps
from utils.evaluation.metrics import compute_metrics
from utils.evaluation.native import native_view, pixel_view
from utils.evaluation.spro import loco_spro_metrics
from utils.evaluation.store import CategoryResult

H, W = 20, 30  # non-square, unlike the stored 8 x 8 maps


def _records(tmp_path: Path) -> list[Record]:
    """Two good and two anomalous 20x30 images (each mask a block of its own)."""
    records = []
    for i in range(4):
        image = tmp_path / "test" / ("good" if i < 2 else "bad") / f"{i:03d}.png"
        image.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(image)
        mask_path = None
        if i >= 2:
            mask = np.zeros((H, W), np.uint8)
            mask[3 * i : 3 * i + 5, 4 * i : 4 * i + 9] = 255
            mask_path = tmp_path / "ground_truth" / f"{i:03d}_mask.png"
            mask_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(mask_path)
        records.append(
            Record(str(image), mask_path and str(mask_path), int(i >= 2), image.parent.name, "toy")
        )
    return records


def test_native_maps_are_the_exported_tiffs_and_the_masks_their_files(tmp_path: Path) -> None:
    records = _records(tmp_path)
    stored = np.random.default_rng(0).random((4, 8, 8)).astype(np.float16)
    view = native_view(records, stored)
    save_tiff_maps(tmp_path / "maps", "toy", records, stored)
    for i, record in enumerate(records):
        exported = tifffile.imread(tmp_path / "maps" / "toy" / "test" / record.defect_type / f"{i:03d}.tiff")
        assert view.maps[i].shape == (H, W) and np.array_equal(view.maps[i], exported)
    assert not view.masks[0].any() and view.masks[0].shape == (H, W)
    assert np.array_equal(view.masks[3], np.asarray(Image.open(records[3].mask_path)) > 0)


def test_native_metrics_equal_the_metrics_of_the_resized_maps(tmp_path: Path) -> None:
    """The reference: compute_metrics on a (N, 20, 30) stack of resize_map outputs and the mask files."""
    records = _records(tmp_path)
    rng = np.random.default_rng(1)
    stored = rng.random((4, 8, 8)).astype(np.float16)
    stored[2:, 2:5, 3:6] += 0.5
    labels, scores = np.array([0, 0, 1, 1]), stored.reshape(4, -1).max(axis=1).astype(float)
    masks_small = np.zeros((4, 8, 8), bool)
    result = CategoryResult({}, stored, masks_small, labels, scores)
    view = pixel_view(result, records, native=True)
    assert pixel_view(result, records, native=True) is view  # made once per result
    got = compute_metrics(labels, scores, view.masks, view.maps, pixels=view.ranking)
    full_maps = np.stack([resize_map(m.astype(np.float32), (H, W)) for m in stored])
    full_masks = np.stack([np.asarray(view.masks[i]) for i in range(4)])
    assert got == pytest.approx(compute_metrics(labels, scores, full_masks, full_maps), abs=1e-12)
    assert pixel_view(result, records, native=False).maps is stored


def test_native_spro_equals_eval_size_spro_when_the_sizes_agree(tmp_path: Path) -> None:
    make_mvtec_loco(tmp_path)
    data = load_dataset("mvtec_loco", tmp_path, "pushpins", "test")
    maps = np.random.default_rng(2).random((len(data), 24, 24)).astype(np.float16)  # the images are 24x24
    args = (read_defects_config(data.root / "pushpins"), [r.defect_type for r in data.records])
    regions = [r.regions for r in data.records]
    eval_size = loco_spro_metrics(*args, regions, maps)
    native = loco_spro_metrics(*args, regions, native_view(data.records, maps).maps, native=True)
    assert native == pytest.approx(eval_size, abs=1e-12)


def test_a_loco_category_without_defects_config_is_refused_when_loaded(tmp_path: Path) -> None:
    make_mvtec_loco(tmp_path)
    (tmp_path / "mvtec_loco_anomaly_detection" / "pushpins" / "defects_config.json").unlink()
    load_dataset("mvtec_loco", tmp_path, "pushpins", "train")  # training needs no defect list
    with pytest.raises(DatasetError, match=r"no defects_config.json in .*pushpins"):
        load_dataset("mvtec_loco", tmp_path, "pushpins", "test")


def test_anomalib_folder_names_are_found_under_a_datasets_root(tmp_path: Path, mvtec_root: Path) -> None:
    make_mvtec_ad2(tmp_path)
    (tmp_path / "mvtec_ad2").rename(tmp_path / "mvtecad2")
    make_btad(tmp_path)
    (tmp_path / "BTech_Dataset_transformed").rename(tmp_path / "btech")
    (tmp_path / "mvtecad").symlink_to(mvtec_root, target_is_directory=True)
    assert len(load_dataset("mvtec_ad2", tmp_path, "can", "test")) == 4
    assert available_categories("btad", tmp_path) == ["01", "03"]
    assert available_categories("mvtec", tmp_path) == ["bottle", "wood"]
