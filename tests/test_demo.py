"""scripts/demo.py: one output set per input image, honest counts, output folder checked and locked first."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from model import AnomalyDetector
from model.map_ops import resize_map
from scripts import demo
from utils.config.cli import run
from utils.evaluation.summary import SUMMARY_COLUMNS, SUMMARY_FILE, verdict_rule
from utils.files import OutputLock


def demo_argv(image_path: Path, model_dir: Path | str, out: Path) -> list[str]:
    return [
        "--image_path",
        str(image_path),
        "--model_path",
        str(model_dir),
        "--device",
        "cpu",
        "--dtype",
        "fp32",
        "--output_dir",
        str(out),
    ]


def write_images(folder: Path, names: dict[str, int]) -> None:
    """Flat 40x50 images, each of its own grey level, so an output can be traced back to its input."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, level in names.items():
        assert cv2.imwrite(str(folder / name), np.full((40, 50, 3), level, np.uint8))


def test_output_stems_are_distinct() -> None:
    paths = [Path("d/part.png"), Path("d/Part.JPG"), Path("d/other.png"), Path("d/part_png.bmp")]
    stems = demo.output_stems(paths)
    assert stems == {
        Path("d/part.png"): "part_png",
        Path("d/Part.JPG"): "Part_JPG",  # clashes with part.png where names ignore case (macOS, Windows)
        Path("d/other.png"): "other",
        Path("d/part_png.bmp"): "part_png_2",  # its own stem is already taken by part.png's outputs
    }
    assert demo.output_stems([Path("a/x.png")]) == {Path("a/x.png"): "x"}


def test_an_image_whose_output_names_would_be_too_long_is_written_under_a_shorter_stem(
    tiny_sam3_dir: Path, tmp_path: Path, capsys
) -> None:
    """A 250-byte file name fits the file system, `<stem>_overlay.png` would not: every image is written."""
    folder = tmp_path / "imgs"
    long_name = "é" * 123 + ".png"  # 246 + 4 bytes: a two-byte character is never cut in half
    write_images(folder, {long_name: 40, "short.png": 200})
    out = tmp_path / "out"
    assert run(demo.main, demo.parse_args, demo_argv(folder, tiny_sam3_dir, out)) == 0
    assert "2 of 2 images written" in capsys.readouterr().out
    stem = demo.output_stems([folder / long_name])[folder / long_name]
    assert stem == "é" * (demo.MAX_STEM_BYTES // 2) and len(os.fsencode(f"{stem}_overlay.png")) <= 255
    assert json.loads((out / f"{stem}.json").read_text())["image_path"] == str((folder / long_name).resolve())
    assert (out / "short_overlay.png").is_file()


def test_images_sharing_a_stem_get_their_own_outputs(tiny_sam3_dir: Path, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "imgs"
    write_images(folder, {"part.png": 40, "part.jpg": 200, "other.png": 120})
    out = tmp_path / "out"
    assert run(demo.main, demo.parse_args, demo_argv(folder, tiny_sam3_dir, out)) == 0
    assert "3 of 3 images written" in capsys.readouterr().out
    for stem, name in (("part_png", "part.png"), ("part_jpg", "part.jpg"), ("other", "other.png")):
        for suffix in demo.OUTPUT_SUFFIXES:
            assert (out / f"{stem}{suffix}").is_file(), f"{stem}{suffix}"
        record = json.loads((out / f"{stem}.json").read_text())
        assert record["image_path"] == str((folder / name).resolve())
    assert not (out / "part.json").exists()


def test_count_is_of_files_really_written(
    tiny_sam3_dir: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mask that fails to save (cv2.imwrite returns False silently) is not counted, even over an old one."""
    folder = tmp_path / "imgs"
    write_images(folder, {"a.png": 40, "b.png": 200})
    out = tmp_path / "out"
    out.mkdir()
    (out / "b_mask.png").write_bytes(b"from an earlier run")
    real_save_mask = demo.save_mask

    def save_mask_failing_for_b(path: Path, mask: np.ndarray) -> None:
        if path.name != "b_mask.png":
            real_save_mask(path, mask)

    monkeypatch.setattr(demo, "save_mask", save_mask_failing_for_b)
    assert run(demo.main, demo.parse_args, demo_argv(folder, tiny_sam3_dir, out)) == 0
    captured = capsys.readouterr()
    assert "1 of 2 images written" in captured.out
    assert "not written: outputs of" in captured.err and "b.png" in captured.err


@pytest.mark.parametrize("bad", ["file", "file/sub"])
def test_bad_output_dir_is_one_line_before_the_model_is_loaded(tmp_path: Path, capsys, bad: str) -> None:
    (tmp_path / "file").write_text("not a folder")
    image = tmp_path / "x.png"
    write_images(tmp_path, {"x.png": 100})
    argv = demo_argv(image, tmp_path / "no_model_here", tmp_path / bad)  # the model folder is missing too
    assert run(demo.main, demo.parse_args, argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1
    assert ("is a file" if bad == "file" else "cannot write to output folder") in err
    assert "no_model_here" not in err


def test_second_demo_into_a_locked_folder_stops_before_loading(tmp_path: Path, capsys) -> None:
    write_images(tmp_path, {"x.png": 100})
    out = tmp_path / "out"
    out.mkdir()
    with OutputLock(out):  # another run holds the folder
        assert run(demo.main, demo.parse_args, demo_argv(tmp_path / "x.png", tmp_path / "no_model", out)) == 2
    err = capsys.readouterr().err
    assert "is in use by a running process" in err and "no_model" not in err
    assert not list(out.glob("x*"))


def test_folder_run_writes_summary_csv_and_names_what_it_skipped(
    tiny_sam3_dir: Path, tmp_path: Path, capsys
) -> None:
    """summary.csv: a row per image, equal to its JSON and mask; the verdict by the category's
    image_f1_threshold (--thresholds); notes.txt and a sub-folder named in one warning line."""
    folder = tmp_path / "imgs"
    write_images(folder, {"a.png": 40, "b.png": 200})
    (folder / "notes.txt").write_text("not an image")
    (folder / "old").mkdir()
    out = tmp_path / "out"
    # the random model's scores are what they are: checked is that each verdict follows score >= 0.5
    thresholds = {"categories": {"bottle": {"pixel_normal_threshold": 0.5, "image_f1_threshold": 0.5}}}
    (tmp_path / "thresholds.json").write_text(json.dumps(thresholds))
    argv = [*demo_argv(folder, tiny_sam3_dir, out), "--thresholds", str(tmp_path / "thresholds.json")]
    assert run(demo.main, demo.parse_args, [*argv, "--category", "bottle"]) == 0
    captured = capsys.readouterr()
    skipped = [line for line in captured.err.splitlines() if "not images" in line]
    assert len(skipped) == 1 and "skipped 2 entries" in skipped[0] and "notes.txt, old/" in skipped[0]
    rows = list(csv.DictReader((out / SUMMARY_FILE).open()))
    assert [r["image"] for r in rows] == ["a.png", "b.png"] and list(rows[0]) == list(SUMMARY_COLUMNS)
    for row in rows:
        stem = Path(row["image"]).stem
        record = json.loads((out / f"{stem}.json").read_text())
        mask = cv2.imread(str(out / f"{stem}_mask.png"), cv2.IMREAD_GRAYSCALE)
        assert float(row["score"]) == pytest.approx(record["image_score"], rel=1e-5)
        assert int(row["mask_pixels"]) == int((mask > 0).sum()) and int(row["boxes"]) == len(record["boxes"])
        assert row["verdict"] == ("anomalous" if record["image_score"] >= 0.5 else "normal")
        assert row["verdict_by"].startswith("score >= 0.5 (image_f1_threshold of bottle in ")


def test_verdict_without_an_image_threshold_is_any_mask_pixel(tmp_path: Path) -> None:
    rule = verdict_rule(None, None, 0.5, "--mask_threshold")
    assert (rule.verdict(0.9, 0), rule.verdict(0.1, 3)) == ("normal", "anomalous")
    assert rule.describe() == "mask pixels > 0 (map >= 0.5, --mask_threshold)"
    no_image = tmp_path / "t.json"  # a category without defect images has no image_f1_threshold
    no_image.write_text(json.dumps({"categories": {"wood": {"image_f1_threshold": None}}}))
    assert verdict_rule(str(no_image), "wood", 0.3, "file").image_threshold is None
    assert demo.input_images(tmp_path / "t.json") == [tmp_path / "t.json"]  # one file: nothing skipped


def test_demo_scores_at_eval_size_as_test_py_and_shows_the_map_at_the_image_size(
    tiny_sam3_dir: Path, tmp_path: Path
) -> None:
    """The image score is test.py's (map at eval_size x eval_size, where thresholds.json comes from); the
    mask is that map resized bilinearly to the 40 x 50 image, then thresholded."""
    write_images(tmp_path / "imgs", {"a.png": 90})
    out = tmp_path / "out"
    argv = [*demo_argv(tmp_path / "imgs" / "a.png", tiny_sam3_dir, out), "--eval_size", "16"]
    assert run(demo.main, demo.parse_args, [*argv, "--category", "bottle", "--mask_threshold", "0.3"]) == 0
    record = json.loads((out / "a.json").read_text())
    detector = AnomalyDetector.from_pretrained(tiny_sam3_dir, device="cpu", dtype="fp32")
    image = np.full((40, 50, 3), 90, np.uint8)
    scored = detector.detect(image, "bottle", record["prompts"], out_size=(16, 16))
    assert record["image_score"] == pytest.approx(scored.image_score, rel=1e-6)
    mask = cv2.imread(str(out / "a_mask.png"), cv2.IMREAD_GRAYSCALE) > 0
    assert np.array_equal(mask, resize_map(scored.anomaly_map, (40, 50)) >= 0.3)
