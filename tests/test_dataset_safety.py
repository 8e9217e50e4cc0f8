"""Names a dataset provides (csv cells, folder names, links) never lead outside its root or the output."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dataset import DatasetError, DatasetWarning, load_dataset
from dataset.synthetic import make_folder_like
from scripts import test as test_script
from tests.fixtures_data import visa_tree, write_split
from utils.config.cli import run


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every path under `folder` with its size and modification time (nanoseconds)."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
    }


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim"
    (victim / "curves").mkdir(parents=True)
    (victim / "keep.txt").write_text("precious")
    Image.fromarray(np.full((32, 32, 3), 7, np.uint8)).save(victim / "secret.png")
    return victim


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            "../../victim,test,normal,candle/Data/Images/Normal/x.JPG,",
            r"object '\.\./\.\./victim' is not a plain",
        ),
        (
            "candle,test,normal,../victim/secret.png,",
            r"image path '\.\./victim/secret\.png' leaves the dataset root",
        ),
        (
            "candle,test,normal,../../etc/passwd,",
            r"image path '\.\./\.\./etc/passwd' leaves the dataset root",
        ),
        ("candle,test,normal,/etc/passwd,", r"image path '/etc/passwd' leaves the dataset root"),
        ("candle,test,normal,candle/../../victim/secret.png,", r"image path .* leaves the dataset root"),
        (
            "candle,test,anomaly,candle/a.JPG,..\\..\\victim\\secret.png",
            r"mask path .* leaves the dataset root",
        ),
    ],
)
def test_split_csv_cells_leaving_the_root_are_refused_with_the_line(
    tmp_path: Path, row: str, message: str
) -> None:
    root, lines = visa_tree(tmp_path)
    write_split(root, [*lines, row])
    with pytest.raises(DatasetError, match=rf"1cls\.csv, line {len(lines) + 1}: {message}") as info:
        load_dataset("visa", root, "candle", "test")
    assert "\n" not in str(info.value) and "re-download" not in str(info.value)


@pytest.mark.parametrize(
    "kind,split,message",
    [
        (",train,", "train", "lines {a} and {b} list {image} in both train and test"),
        (",anomaly,", "test", "lines {a} and {b} disagree about {image}"),
    ],
)
def test_a_second_row_for_one_image_is_an_error_naming_both_lines(
    tmp_path: Path, kind: str, split: str, message: str
) -> None:
    """A test row `normal` for an image that a first row lists as train, or as an anomaly."""
    root, lines = visa_tree(tmp_path)
    first = next(i for i, line in enumerate(lines) if kind in line)
    image = lines[first].split(",")[3]
    write_split(root, [*lines, f"candle,test,normal,{image},"])
    with pytest.raises(DatasetError, match=message.format(a=first + 1, b=len(lines) + 1, image=image)):
        load_dataset("visa", root, "candle", split)


def test_equivalent_spellings_of_one_image_count_as_one(tmp_path: Path) -> None:
    """`candle/./x` and `candle/sub/../x` are the file `candle/x`: a (train, test) pair of them is caught."""
    root, lines = visa_tree(tmp_path)
    train = next(i for i, line in enumerate(lines) if ",train," in line)
    image = lines[train].split(",")[3]
    head, _, tail = image.partition("/")
    write_split(root, [*lines, f"candle,test,normal,{head}/./x/../{tail},"])
    with pytest.raises(DatasetError, match=r"in both train and test"):
        load_dataset("visa", root, "candle", "test")


def test_crafted_split_csv_given_to_test_py_changes_nothing_outside(tmp_path, tiny_sam3_dir, capsys) -> None:
    """Before: object `../../victim` made test.py write and delete files in that folder."""
    victim = _victim(tmp_path)
    root, lines = visa_tree(tmp_path / "data")
    depth = len(Path(os.path.relpath(victim, root)).parts) - 1
    escape = "/".join([".."] * depth) + "/victim"
    crafted = [
        line.replace("candle,", f"{escape},", 1) if line.startswith("candle,") else line for line in lines
    ]
    write_split(root, crafted)
    (root / escape).resolve().mkdir(exist_ok=True)  # the folder the crafted object names exists
    before = _snapshot(victim)
    out = tmp_path / "out"
    argv = ["--dataset", "visa", "--dataset_path", str(root), "--model_path", str(tiny_sam3_dir)]
    argv += [
        "--device",
        "cpu",
        "--dtype",
        "fp32",
        "--eval_size",
        "32",
        "--output_dir",
        str(out),
        "--visualize",
    ]
    assert run(test_script.main, test_script.parse_args, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "line 2: object" in err[0] and "is not a plain name" in err[0]
    assert _snapshot(victim) == before
    assert not out.exists()


def test_dangling_link_in_a_dataset_folder_warns_and_is_skipped(tmp_path: Path) -> None:
    root = make_folder_like(tmp_path, categories=("gear",), n_good=2, n_defect=1, size=32)
    (root / "gear" / "good" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    with pytest.warns(
        DatasetWarning, match=r"1 link\(s\) in .*good point to missing files and are skipped: gone\.png"
    ):
        ds = load_dataset("folder", root, "gear", "test")
    assert len([r for r in ds.records if r.label == 0]) == 2


def test_own_folder_defect_type_without_masks_warns(tmp_path: Path) -> None:
    root = make_folder_like(
        tmp_path,
        categories=("gear",),
        n_good=1,
        n_defect=2,
        size=32,
        with_masks=False,
        defect_types=("dent",),
    )
    with pytest.warns(DatasetWarning, match=r"2 of 2 dent image\(s\) in .*dent have no mask") as caught:
        ds = load_dataset("folder", root, "gear", "test")
    assert len(caught) == 1 and [r.mask_path for r in ds.records if r.label] == [None, None]
