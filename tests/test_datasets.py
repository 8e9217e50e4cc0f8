"""Loaders: real sample files, generated trees (round trip of masks), root forms, errors, laziness."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import dataset
from dataset import (
    MVTEC_CATEGORIES,
    OBJECT_NOUNS,
    TEXTURE_CATEGORIES,
    VISA_CATEGORIES,
    DatasetError,
    Sample,
    available_categories,
    load_dataset,
    object_noun,
)
from dataset.folder import match_mask
from dataset.images import read_image
from dataset.records import DatasetWarning, MaskPairingError, list_images
from dataset.synthetic import DEFECT_COLORS, defect_kind, make_folder_like, make_mvtec_like, make_visa_like
from tests.fixtures_data import visa_tree, write_split

# VisA official 1cls test counts (normal, anomaly), from split_csv/1cls.csv of the VisA release.
VISA_TEST_COUNTS = {
    "candle": (100, 100),
    "capsules": (60, 100),
    "cashew": (50, 100),
    "chewinggum": (50, 100),
    "fryum": (50, 100),
    "macaroni1": (100, 100),
    "macaroni2": (100, 100),
    "pcb1": (100, 100),
    "pcb2": (100, 100),
    "pcb3": (101, 100),
    "pcb4": (101, 100),
    "pipe_fryum": (50, 100),
}


def drawn_mask(image: np.ndarray, defect_type: str) -> np.ndarray:
    """The pixels the generator painted (background never takes a defect colour)."""
    return (image == np.array(DEFECT_COLORS[defect_kind(defect_type)], dtype=np.uint8)).all(axis=2)


# --- real files --------------------------------------------------------------------------------------------


@pytest.fixture
def hazelnut_root(shared_data: Path, tmp_path: Path) -> Path:
    """A datasets root whose mvtec/hazelnut is a symlink to the real sample (nothing copied)."""
    sample = shared_data / "mvtec_sample_hazelnut"
    if not sample.is_dir():
        pytest.skip(f"{sample} absent")
    (tmp_path / "mvtec").mkdir()
    (tmp_path / "mvtec" / "hazelnut").symlink_to(sample, target_is_directory=True)
    return tmp_path


def test_real_hazelnut_counts_pairing_and_1bit_masks(hazelnut_root: Path) -> None:
    assert available_categories("mvtec", hazelnut_root) == ["hazelnut"]
    train = load_dataset("mvtec", hazelnut_root, "hazelnut", "train")
    test = load_dataset("mvtec", hazelnut_root, "hazelnut", "test")
    assert len(train) == 50 and all(r.label == 0 for r in train.records)
    assert len(test) == 10
    expected_types = [t for t in ("crack", "cut", "good", "hole", "print") for _ in range(2)]
    assert [r.defect_type for r in test.records] == expected_types
    for record in test.records:
        if record.label:
            gt = Path(record.mask_path)
            assert gt.parent.name == record.defect_type
            assert gt.name == Path(record.image_path).stem + "_mask.png"
        else:
            assert record.mask_path is None
    for sample in test:
        assert sample.image.shape == (256, 256, 3) and sample.image.dtype == np.uint8
        assert sample.mask.shape == (256, 256) and sample.mask.dtype == bool
        if sample.label:
            with Image.open(sample.mask_path) as raw:
                assert raw.mode == "1"  # 1-bit PNG, values 0/1: must not be thresholded at 127
                expected = int(np.count_nonzero(np.asarray(raw)))
            assert int(sample.mask.sum()) == expected > 0
        else:
            assert sample.mask.sum() == 0


def test_real_full_resolution_images(shared_data: Path) -> None:
    for name, shape in [
        ("mvtec_hazelnut_test_cut_000.png", (1024, 1024, 3)),
        ("visa_candle.JPG", (1168, 1284, 3)),
        ("visa_capsules.JPG", (1000, 1500, 3)),
    ]:
        path = shared_data / "full_res" / name
        if not path.is_file():
            pytest.skip(f"{path} absent")
        image = read_image(str(path))
        assert image.shape == shape and image.dtype == np.uint8


def test_real_visa_split_counts_match_protocol(shared_data: Path, tmp_path: Path) -> None:
    """The official 1cls.csv through the loader (empty files stand in for the images: nothing is decoded)."""
    csv_path = shared_data / "visa_split_csv" / "1cls.csv"
    if not csv_path.is_file():
        pytest.skip(f"{csv_path} absent")
    visa = tmp_path / "VisA_20220922"
    (visa / "split_csv").mkdir(parents=True)
    shutil.copyfile(csv_path, visa / "split_csv" / "1cls.csv")  # into tmp only, never into the repo
    with open(csv_path, newline="") as handle:
        for row in csv.DictReader(handle):
            if row["split"] == "test":
                for rel in (row["image"], row["mask"]):
                    if rel:
                        (visa / rel).parent.mkdir(parents=True, exist_ok=True)
                        (visa / rel).touch()
    assert available_categories("visa", tmp_path) == sorted(VISA_CATEGORIES)
    for category, (n_normal, n_anomaly) in VISA_TEST_COUNTS.items():
        records = load_dataset("visa", tmp_path, category, "test").records
        labels = [r.label for r in records]
        assert (labels.count(0), labels.count(1)) == (n_normal, n_anomaly), category
        assert {r.defect_type for r in records if r.label} == {"bad"}
        assert all(r.mask_path for r in records if r.label)
    assert sum(sum(c) for c in VISA_TEST_COUNTS.values()) == 2162


# --- generated trees ---------------------------------------------------------------------------------------


def test_mvtec_generated_round_trip(mvtec_root: Path) -> None:
    assert available_categories("mvtec", mvtec_root) == ["bottle", "wood"]
    for category in ("bottle", "wood"):
        train = load_dataset("mvtec", mvtec_root, category, "train")
        assert len(train) == 3 and {s.defect_type for s in train} == {"good"}
        test = load_dataset("mvtec", mvtec_root, category, "test")
        assert [r.defect_type for r in test.records] == ["good"] * 3 + ["hole"] * 2 + ["scratch"] * 2
        for sample in test:
            assert isinstance(sample, Sample) and sample.category == category
            assert sample.image.shape == (64, 64, 3) and sample.image.dtype == np.uint8
            if sample.label:
                assert sample.mask.any()
                np.testing.assert_array_equal(sample.mask, drawn_mask(sample.image, sample.defect_type))
            else:
                assert not sample.mask.any() and sample.defect_type == "good"


@pytest.mark.parametrize("mask_mode", ["8bit", "1bit"])
def test_mvtec_mask_depths(tmp_path: Path, mask_mode: str) -> None:
    make_mvtec_like(
        tmp_path / "mvtec",
        categories=("tile",),
        n_train=1,
        n_good=1,
        n_defect=2,
        size=32,
        mask_mode=mask_mode,
    )
    ds = load_dataset("mvtec", tmp_path, "tile", "test")
    bad = [s for s in ds if s.label]
    with Image.open(bad[0].mask_path) as raw:
        assert raw.mode == ("1" if mask_mode == "1bit" else "L")
    for sample in bad:
        np.testing.assert_array_equal(sample.mask, drawn_mask(sample.image, sample.defect_type))


def test_grayscale_becomes_rgb(tmp_path: Path) -> None:
    make_mvtec_like(tmp_path, categories=("screw",), n_train=1, n_good=1, n_defect=1, size=32)
    ds = load_dataset("mvtec", tmp_path, "screw", "test")
    with Image.open(ds.records[0].image_path) as raw:
        assert raw.mode == "L"
    for sample in ds:
        assert sample.image.shape == (32, 32, 3)
        assert (sample.image == sample.image[..., :1]).all()


def test_visa_raw_round_trip(visa_root: Path) -> None:
    assert available_categories("visa", visa_root) == ["candle", "pcb1"]
    train = load_dataset("visa", visa_root, "candle", "train")
    assert len(train) == 3 and all(r.label == 0 and r.mask_path is None for r in train.records)
    test = load_dataset("visa", visa_root, "pcb1", "test")
    assert [r.label for r in test.records] == [0, 0, 0, 1, 1, 1]
    class_ids = set()
    for sample in test:
        assert sample.image.shape == (48, 64, 3)
        if sample.label:
            ids = np.asarray(Image.open(sample.mask_path))
            class_ids |= set(np.unique(ids[ids > 0]).tolist())
            np.testing.assert_array_equal(sample.mask, ids > 0)
            assert sample.defect_type == "bad" and sample.mask.any()
            # JPEG moved the pixels a little, but the masked region still has the drawn colour
            kinds = [
                k
                for k, c in DEFECT_COLORS.items()
                if np.abs(sample.image[sample.mask].mean(0) - np.array(c)).max() < 40
            ]
            assert kinds
        else:
            assert not sample.mask.any()
    assert class_ids == {1, 2, 3}  # class ids > 1 are anomalous too


def test_visa_converted_layout_reuses_mvtec_pairing(tmp_path: Path) -> None:
    one_cls = tmp_path / "visa_pytorch" / "1cls"
    make_mvtec_like(
        one_cls,
        categories=("candle", "fryum"),
        n_train=2,
        n_good=2,
        n_defect=2,
        size=32,
        defect_types=("bad",),
    )
    for mask in (one_cls / "fryum" / "ground_truth" / "bad").iterdir():  # the `<stem>.png` naming also pairs
        mask.rename(mask.with_name(mask.name.replace("_mask", "")))
    for root in (tmp_path, tmp_path / "visa_pytorch", one_cls):
        assert available_categories("visa", root) == ["candle", "fryum"]
    for category in ("candle", "fryum"):
        ds = load_dataset("visa", tmp_path, category, "test")
        assert [r.defect_type for r in ds.records] == ["bad", "bad", "good", "good"]
        for sample in ds:
            if sample.label:
                np.testing.assert_array_equal(sample.mask, drawn_mask(sample.image, "bad"))


@pytest.mark.parametrize("folder_name", ["mvtec", "mvtec_anomaly_detection"])
def test_mvtec_root_forms(tmp_path: Path, folder_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    make_mvtec_like(
        tmp_path / "data" / folder_name, categories=("pill",), n_train=1, n_good=1, n_defect=1, size=32
    )
    as_datasets_root = load_dataset("mvtec", tmp_path / "data", "pill", "test")
    as_folder = load_dataset("mvtec", str(tmp_path / "data" / folder_name), "pill", "test")
    assert as_datasets_root.records == as_folder.records
    monkeypatch.setenv("HOME", str(tmp_path))
    assert load_dataset("mvtec", "~/data", "pill", "test").records == as_folder.records


@pytest.mark.parametrize("folder_name", ["visa", "VisA", "VisA_20220922"])
def test_visa_root_forms(tmp_path: Path, folder_name: str) -> None:
    make_visa_like(
        tmp_path / folder_name, categories=("cashew",), n_normal=1, n_anomaly=1, size=32, n_train=1
    )
    a = load_dataset("visa", tmp_path, "cashew", "test").records
    b = load_dataset("visa", tmp_path / folder_name, "cashew", "test").records
    assert a == b and len(a) == 2


def test_folder_layout(folder_root: Path) -> None:
    assert available_categories("folder", folder_root) == ["widget"]
    test = load_dataset("folder", folder_root, "widget", "test")
    train = load_dataset("folder", folder_root, "widget", "train")
    assert train.records == test.records  # own data: no official split
    assert [r.defect_type for r in test.records] == ["good"] * 3 + ["scratch"] * 2 + ["stain"] * 2
    for sample in test:
        if sample.label:
            assert sample.mask_path is not None
            np.testing.assert_array_equal(sample.mask, drawn_mask(sample.image, sample.defect_type))
    # the category folder itself as root
    single = load_dataset("folder", folder_root / "widget", "widget", "test")
    assert single.records == test.records
    assert available_categories("folder", folder_root / "widget") == ["widget"]


def test_folder_train_test_subfolders_and_missing_masks(tmp_path: Path) -> None:
    make_folder_like(
        tmp_path, categories=("gear",), n_good=2, n_defect=2, size=32, split_subfolders=True, n_train=3
    )
    assert len(load_dataset("folder", tmp_path, "gear", "train")) == 3
    test = load_dataset("folder", tmp_path, "gear", "test")
    assert [r.label for r in test.records] == [0, 0, 1, 1]
    make_folder_like(
        tmp_path / "nomask", categories=("gear",), n_good=1, n_defect=1, size=32, with_masks=False
    )
    sample = load_dataset("folder", tmp_path / "nomask", "gear", "test")[-1]
    assert sample.label == 1 and sample.mask_path is None and not sample.mask.any()


def test_folder_extensions_and_mask_matching(tmp_path: Path) -> None:
    cat = tmp_path / "part"
    for rel in ("good/a.JPG", "good/b.TIFF", "good/c.bmp", "dent/1.jpeg", "dent/10.png", "dent/x.png"):
        (cat / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(
            cat / rel, format=Image.registered_extensions()[Path(rel).suffix.lower()]
        )
    (cat / "good" / "notes.txt").write_text("not an image")
    masks = cat / "masks" / "dent"
    masks.mkdir(parents=True)
    for name in ("1_mask.png", "10.png", "10_extra.png", "x_defect.png"):
        Image.fromarray(np.full((8, 8), 255, np.uint8)).save(masks / name)
    ds = load_dataset("folder", tmp_path, "part", "test")
    assert [Path(r.image_path).name for r in ds.records] == [
        "1.jpeg",
        "10.png",
        "x.png",
        "a.JPG",
        "b.TIFF",
        "c.bmp",
    ]
    got = {Path(r.image_path).stem: Path(r.mask_path).name for r in ds.records if r.mask_path}
    assert got == {"1": "1_mask.png", "10": "10.png", "x": "x_defect.png"}
    assert match_mask("1", sorted(masks.iterdir())).name == "1_mask.png"


def test_sequence_protocol(mvtec_root: Path) -> None:
    ds = load_dataset("mvtec", mvtec_root, "bottle", "test")
    assert ds[-1].image_path == ds.records[-1].image_path
    part = ds[1:3]
    assert len(part) == 2 and part.records == ds.records[1:3] and part.category == "bottle"
    assert len(list(ds)) == len(ds) == 7
    with pytest.raises(IndexError):
        ds[7]
    assert "bottle" in repr(ds)


def test_construction_decodes_nothing(mvtec_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("an image was decoded while building the index")

    monkeypatch.setattr(dataset.images.Image, "open", refuse)
    for name in ("bottle", "wood"):
        assert len(load_dataset("mvtec", mvtec_root, name, "test").records) == 7
    with pytest.raises(AssertionError, match="decoded"):
        load_dataset("mvtec", mvtec_root, "bottle", "test")[0]


# --- errors ------------------------------------------------------------------------------------------------


def small_mvtec(tmp_path: Path) -> Path:
    return make_mvtec_like(
        tmp_path / "mvtec",
        categories=("cable", "zipper"),
        n_train=1,
        n_good=1,
        n_defect=2,
        size=32,
        defect_types=("cut",),
    )


def test_error_missing_root(tmp_path: Path) -> None:
    for name in ("mvtec", "visa", "folder"):
        with pytest.raises(DatasetError, match="dataset root not found") as err:
            load_dataset(name, tmp_path / "nowhere", "x", "test")
        assert str(tmp_path / "nowhere") in str(err.value) and "expected" in str(err.value)
        assert "\n" not in str(err.value)


def test_error_unknown_category_lists_found(tmp_path: Path) -> None:
    small_mvtec(tmp_path)
    with pytest.raises(DatasetError) as err:
        load_dataset("mvtec", tmp_path, "bottle", "test")
    message = str(err.value)
    assert "'bottle'" in message and "found: cable, zipper" in message and str(tmp_path / "mvtec") in message
    make_visa_like(tmp_path / "visa", categories=("pcb2",), n_normal=1, n_anomaly=1, size=32, n_train=1)
    with pytest.raises(DatasetError, match="found: pcb2"):
        load_dataset("visa", tmp_path, "pcb1", "test")
    make_folder_like(tmp_path / "own", categories=("a", "b"), n_good=1, n_defect=1, size=32)
    with pytest.raises(DatasetError, match="found: a, b"):
        load_dataset("folder", tmp_path / "own", "c", "test")


def test_error_bad_name_and_split(mvtec_root: Path) -> None:
    with pytest.raises(DatasetError, match="unknown dataset 'kitti'.*mvtec, visa, mvtec_ad2, .*, folder"):
        load_dataset("kitti", mvtec_root, "bottle", "test")
    with pytest.raises(DatasetError, match="unknown split 'val'"):
        load_dataset("mvtec", mvtec_root, "bottle", "val")
    with pytest.raises(DatasetError, match="unknown dataset"):
        available_categories("kitti", mvtec_root)


def test_error_empty_split(tmp_path: Path) -> None:
    root = small_mvtec(tmp_path)
    shutil.rmtree(root / "cable" / "train" / "good")
    (root / "cable" / "train" / "good").mkdir()
    with pytest.raises(DatasetError, match="no images for split 'train'") as err:
        load_dataset("mvtec", tmp_path, "cable", "train")
    assert str(root / "cable" / "train") in str(err.value)
    (tmp_path / "own" / "empty" / "good").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no images in"):
        load_dataset("folder", tmp_path / "own", "empty", "test")


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_error_corrupt_image_raises_on_indexing_only(tmp_path: Path, damage: str) -> None:
    root = small_mvtec(tmp_path)
    victim = root / "cable" / "test" / "good" / "000.png"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"not a png at all")
    ds = load_dataset("mvtec", tmp_path, "cable", "test")  # building the index is fine
    index = [r.image_path for r in ds.records].index(str(victim))
    with pytest.raises(DatasetError, match="cannot decode image") as err:
        ds[index]
    assert str(victim) in str(err.value) and "\n" not in str(err.value)
    ds[0 if index else 1]  # the other images still load


def test_error_mask_size_mismatch(tmp_path: Path) -> None:
    root = small_mvtec(tmp_path)
    mask = root / "cable" / "ground_truth" / "cut" / "000_mask.png"
    Image.fromarray(np.zeros((16, 20), np.uint8)).save(mask)
    ds = load_dataset("mvtec", tmp_path, "cable", "test")
    with pytest.raises(DatasetError, match="is 20x16 but image .* is 32x32") as err:
        ds[0]
    assert str(mask) in str(err.value)


def test_error_image_without_mask(tmp_path: Path) -> None:
    root = small_mvtec(tmp_path)
    (root / "cable" / "ground_truth" / "cut" / "001_mask.png").unlink()
    with pytest.raises(MaskPairingError, match="without a mask") as err:
        load_dataset("mvtec", tmp_path, "cable", "test")
    assert str(root / "cable" / "test" / "cut" / "001.png") in str(err.value)
    assert isinstance(err.value, DatasetError)


def test_error_mask_without_image(tmp_path: Path) -> None:
    root = small_mvtec(tmp_path)
    (root / "cable" / "test" / "cut" / "000.png").unlink()
    with pytest.raises(MaskPairingError, match="without an image") as err:
        load_dataset("mvtec", tmp_path, "cable", "test")
    assert str(root / "cable" / "ground_truth" / "cut" / "000_mask.png") in str(err.value)
    shutil.rmtree(root / "zipper" / "test" / "cut")
    with pytest.raises(MaskPairingError, match="masks without images"):
        load_dataset("mvtec", tmp_path, "zipper", "test")
    own = make_folder_like(tmp_path / "own", categories=("a",), n_good=1, n_defect=1, size=32)
    (own / "a" / "scratch" / "000.png").rename(own / "a" / "scratch" / "zzz.png")
    with pytest.raises(MaskPairingError, match="000_mask.png"):
        load_dataset("folder", own, "a", "test")


def test_error_visa_layout_problems(tmp_path: Path) -> None:
    (tmp_path / "visa" / "candle").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no VisA dataset under .*split_csv/1cls.csv"):
        load_dataset("visa", tmp_path, "candle", "test")
    root = make_visa_like(
        tmp_path / "visa", categories=("candle",), n_normal=1, n_anomaly=2, size=32, n_train=1
    )
    (root / "candle" / "Data" / "Masks" / "Anomaly" / "001.png").unlink()
    with pytest.raises(MaskPairingError, match="without a mask file") as err:
        load_dataset("visa", tmp_path, "candle", "test")
    assert "Anomaly/001.JPG" in str(err.value)
    (root / "candle" / "Data" / "Images" / "Normal" / "0000.JPG").unlink()
    with pytest.raises(MaskPairingError, match="listed in .*1cls.csv are missing"):
        load_dataset("visa", tmp_path, "candle", "train")
    (root / "split_csv" / "1cls.csv").write_text("a,b,c\n")
    with pytest.raises(DatasetError, match="has header a,b,c; expected object,split,label,image,mask"):
        load_dataset("visa", tmp_path, "candle", "test")


# --- constants ---------------------------------------------------------------------------------------------


def test_constants() -> None:
    assert len(MVTEC_CATEGORIES) == 15 and len(VISA_CATEGORIES) == 12
    assert set(TEXTURE_CATEGORIES) <= set(MVTEC_CATEGORIES) and len(TEXTURE_CATEGORIES) == 5
    benchmarks = (name for name in dataset.DATASET_NAMES if name != "folder")
    nouns = {
        *OBJECT_NOUNS,
        *dataset.constants.SURFACE_NOUNS,
    }  # surfaces: nouns without an object prior (meta.json sets)
    assert nouns == {c for name in benchmarks for c in dataset.categories_of(name)}
    assert object_noun("metal_nut") == "metal nut" and object_noun("pcb3") == "printed circuit board"
    assert object_noun("pipe_fryum") == "pipe-shaped fryum snack"
    assert object_noun("capsules") == "green capsules"
    assert object_noun("brake_disc") == "brake disc"
    assert set(dataset.__all__) >= {
        "Sample",
        "DatasetError",
        "load_dataset",
        "available_categories",
        "MVTEC_CATEGORIES",
        "VISA_CATEGORIES",
        "TEXTURE_CATEGORIES",
        "OBJECT_NOUNS",
        "object_noun",
    }


def test_read_image_accepts_path_objects(mvtec_root: Path) -> None:
    path = mvtec_root / "bottle" / "train" / "good" / "000.png"
    np.testing.assert_array_equal(read_image(path), read_image(str(path)))


# --- dataset files: split csv robustness, duplicates, empty masks (issue 8, item 15) ----------------------


def test_visa_split_csv_as_a_spreadsheet_saves_it(tmp_path: Path) -> None:
    """BOM, spaces around cells, blank lines, trailing empty columns, CRLF: same records as the plain file."""
    root, lines = visa_tree(tmp_path)
    expected = load_dataset("visa", tmp_path, "candle", "test").records
    padded = [", ".join(f" {cell} " for cell in line.split(",")) + ",," for line in lines]
    (root / "split_csv" / "1cls.csv").write_text(
        "\r\n".join(padded[:3] + ["", " , , "] + padded[3:]) + "\r\n", encoding="utf-8-sig"
    )
    assert (root / "split_csv" / "1cls.csv").read_bytes().startswith(b"\xef\xbb\xbf")
    assert load_dataset("visa", tmp_path, "candle", "test").records == expected


def test_visa_split_csv_not_in_utf8_is_a_one_line_error(tmp_path: Path) -> None:
    root, lines = visa_tree(tmp_path)
    write_split(root, [*lines, "candle,test,normal,candle/caf\u00e9.JPG,"], encoding="latin-1")
    with pytest.raises(DatasetError, match=r"1cls\.csv is not UTF-8 text: save it as CSV \(UTF-8\)"):
        load_dataset("visa", tmp_path, "candle", "test")


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        ("candle,test,normal", r"line 3: 3 field\(s\), expected 5"),
        ("candle,test,normal,candle/a.JPG,,extra", r"line 3: 6 field\(s\), expected 5"),
        ("candle,test,normal, ,", r"line 3: empty 'image' field"),
        ("candle,,normal,candle/a.JPG,", r"line 3: empty 'split' field"),
        ("candle,test,anomaly,candle/a.JPG,", r"line 3: anomaly candle/a.JPG has an empty 'mask' field"),
        ("candle,val,normal,candle/a.JPG,", r"line 3: split 'val'; expected train or test"),
        (
            "candle,test,good,candle/a.JPG,",
            r"line 3: label 'good' for candle/a.JPG; expected normal or anomaly",
        ),
    ],
)
def test_visa_malformed_row_names_file_and_line(tmp_path: Path, bad_row: str, message: str) -> None:
    root, lines = visa_tree(tmp_path)
    write_split(root, [*lines[:2], bad_row, *lines[2:]])
    with pytest.raises(DatasetError, match=r"1cls\.csv, " + message) as info:
        load_dataset("visa", tmp_path, "candle", "test")
    assert "\n" not in str(info.value)


def test_visa_duplicated_rows_are_scored_once_and_counted(tmp_path: Path) -> None:
    root, lines = visa_tree(tmp_path)
    expected = load_dataset("visa", tmp_path, "candle", "test").records
    anomaly = next(line for line in lines if ",anomaly," in line)
    write_split(root, [*lines, anomaly, anomaly.replace(",", " , ")])  # lines 7 and 8
    with pytest.warns(
        DatasetWarning, match=r"candle/test: 2 duplicated row\(s\) in .*1cls\.csv \(lines 7, 8\)"
    ):
        records = load_dataset("visa", tmp_path, "candle", "test").records
    assert records == expected


def test_all_zero_masks_of_anomalous_images_are_reported_with_a_count(tmp_path: Path) -> None:
    root, _ = visa_tree(tmp_path)
    ds = load_dataset("visa", tmp_path, "candle", "test")
    bad = [r for r in ds.records if r.label]
    for record in bad:
        Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(record.mask_path)
    with pytest.warns(DatasetWarning) as caught:
        samples = list(ds)
    messages = [str(w.message) for w in caught if issubclass(w.category, DatasetWarning)]
    assert len(messages) == 2
    assert bad[0].mask_path in messages[0] and "(1 so far in visa/candle/test)" in messages[0]
    assert "(2 so far in visa/candle/test)" in messages[1]
    assert ds.empty_masks == {r.image_path for r in bad}
    assert sum(s.label for s in samples) == 2  # still scored as anomalous images: the warning is the report
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds[len(ds) - 1]  # an image already reported is not reported again (slices share the count)
        ds[len(ds) - 1 :][0]


@pytest.mark.parametrize("layout", ["mvtec", "folder"])
def test_images_sharing_a_stem_are_reported(tmp_path: Path, layout: str) -> None:
    if layout == "mvtec":
        make_mvtec_like(
            tmp_path, categories=("bottle",), n_train=1, n_good=1, n_defect=2, size=32, defect_types=("hole",)
        )
        folder = tmp_path / "bottle" / "test" / "hole"
    else:
        root = make_folder_like(tmp_path, categories=("widget",), n_good=1, n_defect=2, size=32)
        folder = next(d for d in (root / "widget").iterdir() if d.name not in ("good", "masks"))
    first = sorted(folder.iterdir())[0]
    Image.open(first).convert("RGB").save(first.with_suffix(".jpg"))
    category = "bottle" if layout == "mvtec" else "widget"
    with pytest.warns(DatasetWarning, match=rf"2 images in {folder} share a stem .*{first.stem}\.jpg"):
        load_dataset(layout, tmp_path, category, "test")


def test_dot_named_images_are_named_in_a_warning(tmp_path):
    """`..png` and `.hidden.png` are real images a listing leaves out: the warning names both."""
    for name in ("a.png", "..png", ".hidden.png"):
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / name, format="PNG")
    with pytest.warns(
        DatasetWarning, match=r"2 hidden file\(s\) in .*: \.\.png, \.hidden\.png \(rename them"
    ):
        assert list_images(tmp_path) == [tmp_path / "a.png"]
