"""The synthetic dataset generator: exact masks, determinism, layouts on disk and the CLI."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dataset import available_categories, load_dataset
from dataset.synthetic import (
    BG_MAX,
    BG_MIN,
    DEFECT_COLORS,
    DEFECT_KINDS,
    draw_defect,
    main,
    make_demo_image,
    make_mvtec_like,
    make_visa_like,
    parse_args,
    textured_background,
)

REPO = Path(__file__).resolve().parents[1]


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_background_range_and_texture() -> None:
    image = textured_background(np.random.default_rng(0), (40, 56))
    assert image.shape == (40, 56, 3) and image.dtype == np.uint8
    assert image.min() >= BG_MIN and image.max() <= BG_MAX
    assert image.std() > 5  # textured, not flat


@pytest.mark.parametrize("kind", DEFECT_KINDS)
def test_draw_defect_mask_is_exactly_the_drawn_pixels(kind: str) -> None:
    rng = np.random.default_rng(3)
    for _ in range(5):
        image = textured_background(rng, 48)
        before = image.copy()
        mask = draw_defect(image, kind, rng)
        assert mask.dtype == bool and mask.shape == (48, 48) and mask.any() and not mask.all()
        np.testing.assert_array_equal(mask, (image != before).any(axis=2))
        np.testing.assert_array_equal(mask, (image == np.array(DEFECT_COLORS[kind], np.uint8)).all(axis=2))
    with pytest.raises(ValueError, match="unknown defect kind"):
        draw_defect(image, "smudge", rng)


def test_demo_image() -> None:
    image, mask = make_demo_image(size=128, seed=1)
    assert image.shape == (128, 128, 3) and image.dtype == np.uint8
    assert mask.shape == (128, 128) and mask.dtype == bool
    assert 0 < mask.mean() < 0.1
    assert (image[mask] == (40, 30, 25)).all() and image[~mask].min() >= BG_MIN
    again, mask_again = make_demo_image(size=128, seed=1)
    np.testing.assert_array_equal(image, again)
    np.testing.assert_array_equal(mask, mask_again)
    other, _ = make_demo_image(size=128, seed=2)
    assert not np.array_equal(image, other)
    assert make_demo_image()[0].shape == (512, 512, 3)


def test_generators_are_deterministic(tmp_path: Path) -> None:
    for name in ("a", "b"):
        make_mvtec_like(
            tmp_path / name / "mvtec", categories=("bottle",), n_train=1, n_good=1, n_defect=2, size=32
        )
        make_visa_like(tmp_path / name / "visa", categories=("fryum",), n_normal=1, n_anomaly=1, size=32)
    assert files(tmp_path / "a") == files(tmp_path / "b")
    make_mvtec_like(tmp_path / "c", categories=("bottle",), n_train=1, n_good=1, n_defect=2, size=32, seed=1)
    assert files(tmp_path / "a" / "mvtec") != files(tmp_path / "c")


def test_mvtec_layout_on_disk(tmp_path: Path) -> None:
    root = make_mvtec_like(
        tmp_path,
        categories=("hazelnut",),
        n_train=2,
        n_good=1,
        n_defect=3,
        size=32,
        defect_types=("crack", "print"),
        mask_mode="1bit",
    )
    assert root == tmp_path
    assert sorted(files(root / "hazelnut")) == [
        "ground_truth/crack/000_mask.png",
        "ground_truth/crack/001_mask.png",
        "ground_truth/print/000_mask.png",
        "test/crack/000.png",
        "test/crack/001.png",
        "test/good/000.png",
        "test/print/000.png",
        "train/good/000.png",
        "train/good/001.png",
    ]
    with Image.open(root / "hazelnut" / "ground_truth" / "print" / "000_mask.png") as mask:
        assert mask.mode == "1" and mask.size == (32, 32)


def test_visa_layout_on_disk(tmp_path: Path) -> None:
    root = make_visa_like(
        tmp_path,
        categories=("macaroni1", "pcb4"),
        n_normal=2,
        n_anomaly=3,
        size=(24, 40),
        n_train=4,
        defect_types=("scratch", "hole"),
    )
    with open(root / "split_csv" / "1cls.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["object", "split", "label", "image", "mask"]
    for category in ("macaroni1", "pcb4"):
        mine = [r for r in rows if r["object"] == category]
        assert sum(r["split"] == "train" for r in mine) == 4
        assert sum(r["split"] == "test" and r["label"] == "normal" for r in mine) == 2
        anomalies = [r for r in mine if r["label"] == "anomaly"]
        assert len(anomalies) == 3 and all(r["split"] == "test" for r in anomalies)
        for row in mine:
            assert row["image"].endswith(".JPG") and (root / row["image"]).is_file()
            with Image.open(root / row["image"]) as img:
                assert img.format == "JPEG" and img.size == (40, 24)
        ids = [np.unique(np.asarray(Image.open(root / r["mask"]))).tolist() for r in anomalies]
        assert ids == [[0, 1], [0, 2], [0, 1]]  # class id = 1 + index of the defect type


def test_cli_parse_args_and_main(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = parse_args(
        [
            "--layout",
            "mvtec",
            "--out",
            str(tmp_path / "m"),
            "--categories",
            "bottle,wood",
            "--n_defect",
            "4",
            "--size",
            "32",
            "--mask_mode",
            "1bit",
        ]
    )
    assert args.categories == "bottle,wood" and args.n_defect == 4 and args.mask_mode == "1bit"
    assert main(args) == tmp_path / "m"
    assert str(tmp_path / "m") in capsys.readouterr().out
    assert available_categories("mvtec", tmp_path / "m") == ["bottle", "wood"]
    assert sum(r.label for r in load_dataset("mvtec", tmp_path / "m", "wood", "test").records) == 4

    main(
        parse_args(
            [
                "--layout",
                "visa",
                "--out",
                str(tmp_path / "v"),
                "--n_good",
                "2",
                "--n_defect",
                "1",
                "--size",
                "32",
            ]
        )
    )
    assert [r.label for r in load_dataset("visa", tmp_path / "v", "candle", "test").records] == [0, 0, 1]

    main(
        parse_args(
            [
                "--layout",
                "folder",
                "--out",
                str(tmp_path / "f"),
                "--categories",
                "knob",
                "--size",
                "32",
                "--defect_types",
                "dent",
            ]
        )
    )
    assert {r.defect_type for r in load_dataset("folder", tmp_path / "f", "knob", "test").records} == {
        "good",
        "dent",
    }

    bad_argvs = (
        ["--layout", "coco", "--out", "x"],
        ["--layout", "mvtec"],
        ["--layout", "mvtec", "--out", "x", "--size", "4"],
    )
    for bad in bad_argvs:
        with pytest.raises(SystemExit):
            parse_args(bad)


def test_cli_runs_as_module_and_as_file(tmp_path: Path) -> None:
    as_module = [sys.executable, "-m", "dataset.synthetic"]
    as_file = [sys.executable, str(REPO / "dataset" / "synthetic.py")]
    for cmd, cwd in ((as_module, REPO), (as_file, tmp_path)):
        out = tmp_path / Path(cmd[-1]).stem
        flags = ["--layout", "folder", "--out", str(out), "--n_defect", "1", "--size", "16"]
        result = subprocess.run([*cmd, *flags], cwd=cwd, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
        assert (out / "widget" / "good" / "000.png").is_file()
    help_text = subprocess.run(
        [sys.executable, "-m", "dataset.synthetic", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "--layout" in help_text and "--mask_mode" in help_text
