"""The six benchmark loaders on tiny trees laid out as distributed (tests/fixtures_benchmarks.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from dataset import (
    DATASET_NAMES,
    DatasetError,
    MaskPairingError,
    available_categories,
    benchmark_categories,
    categories_of,
    load_dataset,
    select_categories,
)
from dataset.images import read_image
from tests.fixtures_benchmarks import (
    make_btad,
    make_ksdd2,
    make_mpdd,
    make_mvtec_ad2,
    make_mvtec_loco,
    make_real_iad,
)
from utils.config.loading import resolve_config

MAKERS = {
    "mpdd": make_mpdd,
    "btad": make_btad,
    "ksdd2": make_ksdd2,
    "mvtec_ad2": make_mvtec_ad2,
    "mvtec_loco": make_mvtec_loco,
    "real_iad": make_real_iad,
}
# (category, test count, anomalous test count, train count) of each fixture
COUNTS = {
    "mpdd": ("tubes", 5, 3, 2),
    "btad": ("03", 6, 4, 2),
    "ksdd2": ("ksdd2", 4, 2, 2),
    "mvtec_ad2": ("can", 4, 2, 2),
    "mvtec_loco": ("pushpins", 5, 3, 2),
    "real_iad": ("toy", 4, 1, 2),
}


@pytest.fixture(scope="module")
def bench_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One datasets root holding all six trees (each under its archive's or its canonical folder name)."""
    root = tmp_path_factory.mktemp("bench")
    for make in MAKERS.values():
        make(root)
    return root


def _bright(path: str) -> np.ndarray:
    return read_image(path)[..., 0] > 200


@pytest.mark.parametrize("name", list(MAKERS))
def test_every_sample_pairs_with_its_own_mask(bench_root: Path, name: str) -> None:
    category, n_test, n_bad, n_train = COUNTS[name]
    test = load_dataset(name, bench_root, category, "test")
    assert (len(test), sum(r.label for r in test.records)) == (n_test, n_bad)
    assert len(load_dataset(name, bench_root, category, "train")) == n_train
    for sample in test:
        assert sample.mask.shape == sample.image.shape[:2]
        np.testing.assert_array_equal(sample.mask, _bright(sample.image_path) if sample.label else False)


@pytest.mark.parametrize("name", list(MAKERS))
def test_canonical_and_archive_folder_names_and_the_folder_itself(tmp_path: Path, name: str) -> None:
    made = MAKERS[name](tmp_path / "a")
    canonical = tmp_path / "b" / name
    canonical.parent.mkdir()
    shutil.copytree(made, canonical)
    category = COUNTS[name][0]
    loaded = [load_dataset(name, root, category, "test") for root in (tmp_path / "a", tmp_path / "b", made)]
    assert [d.root for d in loaded] == [made, canonical, made]
    relative = {tuple(Path(r.image_path).relative_to(d.root) for r in d.records) for d in loaded}
    assert len(relative) == 1
    paths = next(iter(relative))
    assert len(paths) == COUNTS[name][1]
    assert available_categories(name, tmp_path / "b") == available_categories(name, made)


def test_btad_pairs_by_stem_through_stray_files_and_mixed_extensions(bench_root: Path) -> None:
    for category, mask_ext in (("01", ".png"), ("03", ".bmp")):
        records = [r for r in load_dataset("btad", bench_root, category, "test").records if r.label]
        assert [Path(r.image_path).name for r in records] == [
            "0003.bmp",
            "0007.bmp",
            "0010.bmp",
            "a_extra.png",
        ]
        assert [Path(r.mask_path).stem for r in records] == ["0003", "0007", "0010", "a_extra"]
        assert {Path(r.mask_path).suffix for r in records[:3]} == {mask_ext}
        assert {r.defect_type for r in records} == {"ko"}
    normal = load_dataset("btad", bench_root, "01", "test").records
    assert [r.defect_type for r in normal if not r.label] == ["good", "good"]


def test_ksdd2_train_is_the_normal_pool_and_test_labels_come_from_the_gt(bench_root: Path) -> None:
    train = load_dataset("ksdd2", bench_root, "ksdd2", "train").records
    assert [Path(r.image_path).name for r in train] == ["20000.png", "20002.png"]  # 20001 is anomalous
    test = load_dataset("ksdd2", bench_root, "ksdd2", "test").records
    assert {Path(r.image_path).stem: r.label for r in test} == {
        "10000": 0,
        "10001": 1,
        "10002": 0,
        "10003": 1,
    }
    assert all("test" in Path(r.image_path).parts for r in test)


def test_loco_keeps_each_region_and_the_union_is_the_mask(bench_root: Path) -> None:
    data = load_dataset("mvtec_loco", bench_root, "pushpins", "test")
    two = next(i for i, r in enumerate(data.records) if len(r.regions) == 2)
    record = data.records[two]
    assert record.defect_type == "logical_anomalies"
    assert [Path(p).name for p in record.regions] == ["000.png", "001.png"]
    union = data[two].mask
    from dataset.images import read_mask

    parts = [read_mask(p) for p in record.regions]
    np.testing.assert_array_equal(union, parts[0] | parts[1])
    assert (
        parts[0].sum() == 36 and parts[1].sum() == 36 and union.sum() == 72 - 3
    )  # regions overlapping in 3 pixels
    assert len(load_dataset("mvtec_loco", bench_root, "pushpins", "validation")) == 2


def test_real_iad_labels_come_from_the_json_per_view(bench_root: Path) -> None:
    records = load_dataset("real_iad", bench_root, "toy", "test").records
    ng = [r for r in records if r.sample_id == "NG/AK/S0003"]
    assert [(Path(r.image_path).stem.split("_")[3], r.label, r.defect_type) for r in ng] == [
        ("C1", 1, "AK"),
        ("C2", 0, "good"),
    ]
    assert ng[1].mask_path is None


def test_real_iad_resolution_is_chosen_when_several(tmp_path: Path) -> None:
    make_real_iad(tmp_path, resolutions=("256", "512"))
    with pytest.raises(DatasetError, match=r"several Real-IAD resolutions .*\(256, 512\): choose one"):
        load_dataset("real_iad", tmp_path, "toy", "test")
    records = load_dataset("real_iad", tmp_path, "toy", "test", resolution="512").records
    assert all("realiad_512" in r.image_path for r in records)
    with pytest.raises(DatasetError, match="realiad_resolution 1024 not found .*found 256, 512"):
        load_dataset("real_iad", tmp_path, "toy", "test", resolution="1024")


def test_real_iad_json_path_cannot_leave_the_dataset(tmp_path: Path) -> None:
    base = make_real_iad(tmp_path)
    json_file = base / "realiad_jsons" / "toy.json"
    json_file.write_text(json_file.read_text().replace("OK/S0002/", "../../../../outside/"))
    with pytest.raises(MaskPairingError, match="listed in .* are missing"):
        load_dataset("real_iad", tmp_path, "toy", "test")


def test_mvtec_ad2_private_splits_are_unlabelled(bench_root: Path) -> None:
    private = load_dataset("mvtec_ad2", bench_root, "can", "test_private").records
    assert [(Path(r.image_path).name, r.label, r.defect_type) for r in private] == [
        ("000.png", None, "test_private"),
        ("001.png", None, "test_private"),
    ]
    assert len(load_dataset("mvtec_ad2", bench_root, "can", "test_private_mixed")) == 1
    public = load_dataset("mvtec_ad2", bench_root, "can", "test_public").records
    assert public == load_dataset("mvtec_ad2", bench_root, "can", "test").records
    assert len(load_dataset("mvtec_ad2", bench_root, "can", "validation")) == 2
    with pytest.raises(
        DatasetError, match="unknown split 'private': expected one of train, validation, test"
    ):
        load_dataset("mvtec_ad2", bench_root, "can", "private")


def test_every_name_is_registered_with_its_categories() -> None:
    assert set(MAKERS) <= set(DATASET_NAMES)
    assert categories_of("btad") == ("01", "02", "03")
    assert len(categories_of("real_iad")) == 30 and len(categories_of("mvtec_ad2")) == 8
    assert categories_of("folder") == ()
    every = benchmark_categories()
    assert (
        every[:15] == categories_of("mvtec")
        and len(every) == len(set(every)) == 15 + 12 + 8 + 5 + 6 + 3 + 1 + 28 + 2 + 10 + 12 + 12
    )
    with pytest.raises(DatasetError, match="unknown dataset 'nope'"):
        categories_of("nope")


@pytest.mark.parametrize("name", list(MAKERS))
def test_missing_folder_and_unknown_category(tmp_path: Path, bench_root: Path, name: str) -> None:
    with pytest.raises(DatasetError, match=f"dataset root not found: {tmp_path / 'nowhere'}"):
        load_dataset(name, tmp_path / "nowhere", "x", "test")
    found = ", ".join(available_categories(name, bench_root))
    with pytest.raises(DatasetError, match=f"category 'zzz' not found under .*; found: {found} "):
        load_dataset(name, bench_root, "zzz", "test")
    with pytest.raises(DatasetError, match="unknown category zzz"):
        select_categories(name, bench_root, ["zzz"])


def _mask_of(made: Path, name: str) -> tuple[Path, Path]:
    """(an anomalous test image, its mask) of a fresh tree of `name`."""
    category = COUNTS[name][0]
    record = next(r for r in load_dataset(name, made.parent, category, "test").records if r.label)
    mask = Path(record.regions[0]).parent if record.regions else Path(record.mask_path)
    return Path(record.image_path), mask


@pytest.mark.parametrize("name", ["mpdd", "btad", "ksdd2", "mvtec_ad2", "mvtec_loco"])
def test_image_without_mask_and_mask_without_image(tmp_path: Path, name: str) -> None:
    made = MAKERS[name](tmp_path / "one")
    image, mask = _mask_of(made, name)
    shutil.rmtree(mask) if mask.is_dir() else mask.unlink()
    with pytest.raises(MaskPairingError, match=rf"1 (defective )?image\(s\) without a mask .*{image.name}"):
        load_dataset(name, made.parent, COUNTS[name][0], "test")
    made = MAKERS[name](tmp_path / "two")
    image, _ = _mask_of(made, name)
    image.unlink()
    with pytest.raises(MaskPairingError, match=r"1 mask(\(s\)| folder\(s\)) without an image"):
        load_dataset(name, made.parent, COUNTS[name][0], "test")


def test_real_iad_anomalous_view_without_mask(tmp_path: Path) -> None:
    base = make_real_iad(tmp_path)
    next(base.rglob("*_mask.png")).unlink()
    with pytest.raises(
        MaskPairingError, match="1 anomalous view.* without a mask file: NG/AK/S0003/toy_0003_NG_C1"
    ):
        load_dataset("real_iad", tmp_path, "toy", "test")


@pytest.mark.parametrize("name", list(MAKERS))
def test_mask_of_another_size_is_one_line(tmp_path: Path, name: str) -> None:
    made = MAKERS[name](tmp_path)
    image, mask = _mask_of(made, name)
    target = next(iter(sorted(mask.iterdir()))) if mask.is_dir() else mask
    from PIL import Image

    with Image.open(target) as img:
        img.resize((10, 12)).save(target)
    data = load_dataset(name, made.parent, COUNTS[name][0], "test")
    index = next(i for i, r in enumerate(data.records) if r.image_path == str(image))
    with pytest.raises(DatasetError, match=r"mask .* is 10x12 but image .* is 24x24"):
        data[index]


def test_counts_table(bench_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dataset.counts import main, parse_args

    assert main(parse_args(["mvtec_loco", str(bench_root)])) == 0
    assert capsys.readouterr().out.splitlines()[2:] == [
        "| pushpins | 5 | 2 | 3 | 0 |",
        "| **total** | **5** | **2** | **3** | **0** |",
    ]
    assert main(parse_args(["mvtec_ad2", str(bench_root), "--split", "test_private"])) == 0
    assert "| can | 2 | 0 | 0 | 2 |" in capsys.readouterr().out
    assert main(parse_args(["btad", str(bench_root / "nowhere")])) == 2
    assert capsys.readouterr().err.startswith("error: dataset root not found:")


def test_demo_takes_every_benchmark_category_and_its_prompts(tmp_path: Path) -> None:
    from model.prompts import CATEGORY_DEFECTS
    from scripts.demo import check_category
    from utils.pipeline import prompts_for

    for name in MAKERS:
        for category in categories_of(name):
            check_category(name, category)
    with pytest.raises(
        DatasetError, match="--category bottle is not a btad category: choose one of 01, 02, 03"
    ):
        check_category("btad", "bottle")
    cfg = resolve_config(None, {"dataset": "mpdd", "prompt_strategy": "category"})
    assert prompts_for(cfg, "tubes")[0] == list(CATEGORY_DEFECTS["tubes"])
    assert prompts_for(cfg, "tubes")[1] == "metal tubes"
