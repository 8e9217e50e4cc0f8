"""The bad-input battery's cases that once failed: each is now a one-line error or handled correctly.

Everything runs in-process (the scripts through `run(main, parse_args, argv)`) with the tiny SAM 3.
"""

from __future__ import annotations

import errno
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from dataset import DatasetError
from dataset.images import read_image, to_rgb
from model.detector import AnomalyDetector
from scripts import demo, train
from scripts import test as test_script
from utils import versions
from utils.config.cli import run, user_message
from utils.config.loading import ConfigError, resolve_config
from utils.evaluation import compare
from utils.evaluation.exports import write_tiff
from utils.evaluation.fingerprint import fingerprint_settings
from utils.evaluation.store import CategoryStore, DamagedStoreWarning
from utils.evaluation.thresholds import mask_threshold_from
from utils.files import OutputDirError
from utils.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from utils.training.runner import concept_seed_words


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The single line a script printed on stderr (fails when there are more, e.g. a traceback)."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# ------------------------------------------------------------------ settings: config values and files
@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"sigma": math.nan}, "config key 'sigma' must be a finite number, got nan"),
        ({"sigma": math.inf}, "config key 'sigma' must be a finite number, got inf"),
        ({"mask_threshold": math.nan}, "config key 'mask_threshold' must be a finite number, got nan"),
        ({"lr": math.nan}, "config key 'lr' must be a finite number, got nan"),
        ({"lr": -math.inf}, "config key 'lr' must be a finite number, got -inf"),
        ({"shot_seed": -1}, "config key 'shot_seed' must be >= 0, got -1"),
        ({"shot_seeds": [0, -2]}, "config key 'shot_seeds' must be >= 0, got -2 (an item of [0, -2])"),
    ],
)
def test_non_finite_and_negative_settings_are_refused(flags: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_config(None, flags)
    assert str(info.value) == message


def test_nan_on_the_command_line_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    argv = ["--sigma", "nan", "--output_dir", str(tmp_path / "o"), "--dataset_path", str(tmp_path)]
    assert run(test_script.main, test_script.parse_args, argv) == 2
    assert one_error_line(capsys) == "error: config key 'sigma' must be a finite number, got nan"
    assert not (tmp_path / "o").exists()


def test_config_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("sigma: 2.0  # réglé\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=rf"^{path} is not UTF-8 text \(byte 15\): save it as UTF-8"):
        resolve_config(str(path), {})


@pytest.mark.parametrize("value", ["NaN", "Infinity", '"0.4"', "[0.4]", "true"])
def test_thresholds_json_value_that_is_not_a_finite_number(tmp_path: Path, value: str) -> None:
    path = tmp_path / "thresholds.json"
    path.write_text('{"categories": {"bottle": {"pixel_normal_threshold": ' + value + "}}}")
    with pytest.raises(ConfigError, match=r"bottle has pixel_normal_threshold .*, not a finite number"):
        mask_threshold_from(path, "bottle")


def test_more_concepts_than_seed_words_is_refused_not_silently_fewer(capsys, tmp_path: Path) -> None:
    assert concept_seed_words(3, "base") == concept_seed_words(10, "base")[:3]
    with pytest.raises(ConfigError, match=r"'num_concepts' is 50, but prompt_strategy base has 10 seed"):
        concept_seed_words(50, "base")
    argv = ["--num_concepts", "50", "--output_dir", str(tmp_path / "t"), "--model_path", str(tmp_path)]
    assert run(train.main, train.parse_args, argv) == 2
    assert "use --num_concepts 10 or fewer" in one_error_line(capsys)
    assert not list((tmp_path / "t").glob("*.safetensors"))


# ------------------------------------------------------------------ the Python API
@pytest.fixture(scope="module")
def detector(tiny_sam3_dir: Path) -> AnomalyDetector:
    return AnomalyDetector.from_pretrained(tiny_sam3_dir, device="cpu", dtype="float32")


def test_a_string_prompt_is_one_prompt_not_its_letters(detector: AnomalyDetector) -> None:
    image = np.full((32, 32, 3), 90, np.uint8)
    one = detector.detect(image, prompts="crack")
    listed = detector.detect(image, prompts=["crack"])
    assert list(one.prompt_presence) == ["crack"]
    assert np.array_equal(one.anomaly_map, listed.anomaly_map)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompts": ["crack", "  "]}, r"prompts hold '  ': each prompt must be a non-blank string"),
        ({"prompts": [""]}, r"prompts hold '': each prompt must be a non-blank string"),
        ({"prompts": ["crack", 3]}, r"prompts hold 3"),
        (
            {"prompts": ["crack"], "mask_threshold": math.nan},
            r"mask_threshold must be a finite number, got nan",
        ),
    ],
)
def test_blank_prompts_and_nan_threshold_in_the_api(detector: AnomalyDetector, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        detector.detect(np.zeros((32, 32, 3), np.uint8), **kwargs)


# ------------------------------------------------------------------ images
@pytest.mark.parametrize("shape", [(0, 0, 3), (0, 16), (16, 0, 4)])
def test_zero_size_arrays_are_refused(shape: tuple[int, ...]) -> None:
    with pytest.raises(DatasetError, match=rf"image array has no pixels \(shape \({shape[0]}, {shape[1]}"):
        to_rgb(np.zeros(shape, np.uint8))


def test_a_pil_image_whose_file_was_closed(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    image = Image.open(tmp_path / "a.png")
    image.close()
    with pytest.raises(DatasetError, match=r"cannot read PIL image .*a\.png \(Operation on closed image\)"):
        to_rgb(image)


def test_missing_path_says_not_found(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as info:
        read_image(tmp_path / "nope.png")
    assert str(info.value).startswith(f"image not found: {tmp_path / 'nope.png'}")
    assert "index" not in str(info.value)


def test_images_over_the_decompression_bomb_limit_are_one_line(tmp_path: Path, monkeypatch) -> None:
    """The limit scaled down (20000x20000 would cost 400 MB here): over 2x MAX_IMAGE_PIXELS PIL refuses."""
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(DatasetError, match=r"big\.png is larger than PIL's limit of 2000 pixels"):
        read_image(tmp_path / "big.png")


def test_demo_mutual_with_one_readable_image(tiny_sam3_dir: Path, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.full((32, 32, 3), 80, np.uint8)).save(folder / "good.png")
    (folder / "broken.png").write_bytes(b"not a png")
    argv = ["--image_path", str(folder), "--model_path", str(tiny_sam3_dir), "--device", "cpu"]
    argv += ["--dtype", "fp32", "--output_dir", str(tmp_path / "out"), "--visual", "mutual"]
    assert run(demo.main, demo.parse_args, argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line and "Loading weights" not in line]
    assert "skipped: cannot decode image" in err[0] and len(err) == 2
    assert err[1] == (
        "error: --visual mutual compares the images with each other, but only 1 of 2 could be read: "
        "fix the unreadable files or add images"
    )


# ------------------------------------------------------------------ checkpoints
def _rewrite_header(good: Path, bad: Path, key: str, value: object) -> None:
    """Copy checkpoint `good` to `bad` with header entry `key` replaced by the JSON of `value`."""
    with safe_open(str(good), framework="pt") as handle:
        meta = dict(handle.metadata())
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118 - not a dict
    if key == "concepts.embeds":
        tensors[key] = torch.full_like(tensors[key], value)
    else:
        meta[key] = json.dumps(value)
    save_file(tensors, str(bad), metadata=meta)


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("epoch", "3", "epoch is '3', expected a whole number >= 0"),
        ("epoch", -1, "epoch is -1, expected a whole number >= 0"),
        ("epoch", True, "epoch is True, expected a whole number >= 0"),
        ("config", [1, 2], "config is a list, expected a mapping of settings"),
        ("history", {"loss": 1}, "history is not a list of per-epoch rows"),
        ("history", [1.0], "history is not a list of per-epoch rows"),
        ("seed_words", "crack", "seed_words is not a list of words"),
        ("concepts.embeds", math.nan, "concepts.embeds holds NaN or infinite values"),
        ("scaler", {"scale": -1.0}, "scaler is not an fp16 loss-scaler state with a finite positive scale"),
        ("scaler", [65536.0], "scaler is not an fp16 loss-scaler state"),
    ],
)
def test_checkpoint_header_of_wrong_types_is_a_checkpoint_error(tmp_path: Path, key, value, problem) -> None:
    ckpt = {
        "concepts": {"embeds": torch.zeros(2, 3, 4), "attention_mask": torch.ones(2, 3, dtype=torch.long)},
        "seed_words": ["crack", "scratch"],
        "optimizer": {"state": {}, "param_groups": []},
        "epoch": 1,
        "history": [{"epoch": 1, "loss": 0.5}],
        "config": {"num_concepts": 2},
    }
    save_checkpoint(ckpt, tmp_path / "good.safetensors")
    assert load_checkpoint(tmp_path / "good.safetensors")["epoch"] == 1
    _rewrite_header(tmp_path / "good.safetensors", tmp_path / "bad.safetensors", key, value)
    with pytest.raises(CheckpointError, match=rf"bad\.safetensors is malformed: {problem}"):
        load_checkpoint(tmp_path / "bad.safetensors")


# ------------------------------------------------------------------ writing outputs
def test_tiff_on_a_full_disk_is_the_disk_full_error(tmp_path: Path, monkeypatch) -> None:
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("utils.evaluation.exports.tifffile.imwrite", full)
    target = tmp_path / "anomaly_maps" / "a.tiff"
    with pytest.raises(OutputDirError, match=rf"^disk full while writing {target}: free some space"):
        write_tiff(target, np.zeros((4, 4)))
    assert list(target.parent.iterdir()) == []  # no temporary left behind


def test_tiff_names_near_255_bytes(tmp_path: Path) -> None:
    """250 bytes is a legal name (the temporary file beside it must be legal too); 256 is a one-line error."""
    fits = tmp_path / ("m" * 245 + ".tiff")
    write_tiff(fits, np.ones((4, 4)))
    assert read_back(fits) == 1.0
    with pytest.raises(OSError) as info:
        write_tiff(tmp_path / ("m" * 251 + ".tiff"), np.ones((4, 4)))
    message = user_message(info.value)
    assert message is not None and "(256-byte name)" in message and "rename the input file" in message


def read_back(path: Path) -> float:
    import tifffile

    return float(tifffile.imread(path).mean())


def test_anomaly_maps_being_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "anomaly_maps").write_text("in the way")
    with pytest.raises(OSError) as info:
        write_tiff(tmp_path / "anomaly_maps" / "bottle" / "a.tiff", np.zeros((4, 4)))
    message = user_message(info.value)
    assert message is not None and "\n" not in message
    assert str(tmp_path / "anomaly_maps") in message and "a file stands where a folder is needed" in message


@pytest.mark.parametrize(
    ("code", "strerror", "hint"),
    [
        (errno.EROFS, "Read-only file system", "the file system is read-only: choose another --output_dir"),
        (errno.EACCES, "Permission denied", "fix its permissions (an output: make it writable, or choose"),
    ],
)
def test_read_only_output_is_one_line(code: int, strerror: str, hint: str) -> None:
    """Running as root ignores permissions, so the refusal is built; the message is what the scripts print."""
    message = user_message(OSError(code, strerror, "/out/anomaly_maps/bottle"))
    assert message is not None and message.startswith(f"{strerror}: /out/anomaly_maps/bottle: {hint}")


def test_ctrl_c_is_one_stop_line(capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted(args) -> int:
        raise KeyboardInterrupt

    assert run(interrupted, lambda argv: None, []) == 130
    assert one_error_line(capsys) == (
        "stopped by Ctrl-C: rerun the same command to resume (finished images are kept)"
    )


# ------------------------------------------------------------------ compare over results folders
def test_compare_skips_a_truncated_results_json(tmp_path: Path, capsys) -> None:
    mean = dict.fromkeys(compare.METRIC_KEYS, 0.5)
    (tmp_path / "text" / "mvtec").mkdir(parents=True)
    (tmp_path / "text" / "mvtec" / "results.json").write_text(json.dumps({"dataset": "mvtec", "mean": mean}))
    (tmp_path / "mutual" / "mvtec").mkdir(parents=True)
    whole = json.dumps({"dataset": "mvtec", "mean": mean})
    (tmp_path / "mutual" / "mvtec" / "results.json").write_text(whole[: len(whole) // 2])
    with pytest.warns(
        UserWarning, match=r"skipped .*mutual/mvtec/results\.json: not a complete results\.json"
    ):
        assert compare.main(str(tmp_path)) == 0
    table = (tmp_path / "compare.md").read_text()
    assert "| text | mvtec |" in table and "mutual" not in table


# ------------------------------------------------------------------ the installed torch
@pytest.mark.parametrize(
    ("installed", "complaint"),
    [
        ("2.3.1+cu121", "torch 2.3.1+cu121 is installed; this project needs torch >= 2.4: install the CUDA"),
        ("1.13.0", "torch 1.13.0 is installed; this project needs torch >= 2.4"),
        (None, "torch is not installed; this project needs torch >= 2.4"),
        ("2.4.0", None),
        ("2.10.1", None),  # compared as numbers, not as text ("2.10" < "2.4" as strings)
    ],
)
def test_torch_too_old_is_one_line_naming_both_versions(installed, complaint) -> None:
    problem = versions.torch_problem(installed, versions.required_torch())
    assert problem == complaint if complaint is None else problem.startswith(complaint)


def test_require_torch_stops_the_script_with_one_line(monkeypatch, capsys) -> None:
    assert versions.required_torch() == "2.4"  # the torch>=X.Y line of requirements.txt
    monkeypatch.setattr(versions.metadata, "version", lambda name: "2.1.2")
    with pytest.raises(SystemExit) as info:
        versions.require_torch()
    assert info.value.code == 2
    assert one_error_line(capsys).startswith(
        "error: torch 2.1.2 is installed; this project needs torch >= 2.4"
    )


# ------------------------------------------------------------------ a damaged progress.json
@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda text: text.replace('"labels": [0, 1]', '"labels": [0, 7]'), "a label that is not 0, 1 or -1"),
        (lambda text: text.replace('"scores": [0.25,', '"scores": [null,'), "a score that is not a finite"),
    ],
)
def test_damaged_progress_json_of_the_right_length_warns_and_recomputes(
    tmp_path: Path, damage, problem
) -> None:
    settings = fingerprint_settings(resolve_config(None, {}).to_dict())
    store = CategoryStore(tmp_path / "store", ["a.png", "b.png", "c.png"], 4, settings)
    store.append([np.ones((4, 4))] * 2, [np.zeros((4, 4), bool)] * 2, [0, 1], [0.25, 0.75])
    path = tmp_path / "store" / "progress.json"
    text = path.read_text()
    damaged = damage(text)
    assert damaged != text and len(damaged) == len(text)
    path.write_text(damaged)
    with pytest.warns(
        DamagedStoreWarning, match=rf"progress\.json holds {problem}.*computing this category again"
    ):
        again = CategoryStore(tmp_path / "store", ["a.png", "b.png", "c.png"], 4, settings)
    assert again.n_done == 0
