"""The bad-input battery's cases that once failed: each is now a one-line error or handled correctly.

Everything runs in-process (the scripts through `run(main, parse_args, argv)`) with the tiny SAM 3.
"""

from __future__ import annotations

import errno
import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from dataset import DatasetError, DatasetWarning, load_dataset, select_categories
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


# ------------------------------------------------------------------ second sweep: config files and values
@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "sigma: 1.0\neval_size: 64\nsigma: 2.0\n",
            r"c\.yaml has key 'sigma' twice \(lines 1 and 3\): keep one$",
        ),
        (
            "sigma: !!python/object/apply:os.system ['echo hacked']\n",
            r"c\.yaml uses the tag tag:yaml\.org,2002:python/object/apply:os\.system at line 1, which is not",
        ),
        (
            "categories: [[bottle]]\n",
            r"config key 'categories' holds \['bottle'\]: it must be a list of names",
        ),
        ("categories: [1, 2]\n", r"config key 'categories' holds 1: it must be a list of names"),
        ("categories: [null]\n", r"config key 'categories' holds None: it must be a list of names"),
        ("categories: ['  ']\n", r"config key 'categories' holds '  ': it must be a list of names"),
        ("texture_categories: [true]\n", r"config key 'texture_categories' holds True: it must be a list"),
        ("output_dir: ''\n", r"config key 'output_dir' is empty: give a folder path \(--output_dir DIR\)"),
        ("model_path: ' '\n", r"config key 'model_path' is empty: give a folder path"),
    ],
)
def test_yaml_duplicates_tags_and_non_name_lists_are_one_line(
    tmp_path: Path, text: str, message: str
) -> None:
    """Before: a second `sigma:` silently won, a tag was "not valid YAML", `categories: [[bottle]]` was a
    TypeError deep in the category check, and `output_dir: ''` wrote into the current folder."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        resolve_config(str(path), {})
    assert "\n" not in str(info.value)


def test_yaml_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("base: &b {sigma: 1.0}\n")  # an anchor needs a key; an unknown key is the error here
    with pytest.raises(ConfigError, match="unknown config key 'base'"):
        resolve_config(str(path), {})
    path.write_text("prompt_overrides:\n  bottle: &p [crack]\n  wood: *p\n")
    assert resolve_config(str(path), {}).prompts.prompt_overrides == {"bottle": ["crack"], "wood": ["crack"]}


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"eval_size": 10**9}, "'eval_size' must be in [1, 8192], got 1000000000"),
        ({"num_visualize": -3}, "'num_visualize' must be >= 0, got -3"),
        ({"seed": -1}, "'seed' must be in [0, 4.29497e+09], got -1"),
        ({"seed": 2**70}, "'seed' must be in [0, 4.29497e+09], got 1180591620717411303424"),
        ({"weight_decay": -5.0}, "'weight_decay' must be >= 0, got -5.0"),
        ({"focal_weight": -1.0}, "'focal_weight' must be >= 0, got -1.0"),
        (
            {"focal_weight": 0.0, "dice_weight": 0.0, "image_loss_weight": 0.0},
            "focal_weight, dice_weight and image_loss_weight are all 0, so nothing would be learned",
        ),
    ],
)
def test_values_that_crashed_or_did_nothing_are_refused(flags: dict, message: str) -> None:
    """Before: eval_size 1e9 an OSError from the map store, a negative seed or weight decay a traceback from
    numpy/torch, num_visualize -3 and all-zero loss weights a run that silently did nothing."""
    with pytest.raises(ConfigError) as info:
        resolve_config(None, flags)
    assert message in str(info.value)


# ------------------------------------------------------------------ second sweep: thresholds.json, demo
def test_thresholds_json_nested_too_deep_bom_and_no_category(tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(
        ConfigError, match=r"deep\.json: not a thresholds\.json written by test\.py \(maximum"
    ):
        mask_threshold_from(deep, "bottle")
    two = tmp_path / "two.json"
    entry = {"pixel_normal_threshold": 0.25}
    two.write_text("\ufeff" + json.dumps({"categories": {"bottle": entry, "wood": entry}}), encoding="utf-8")
    assert mask_threshold_from(two, "wood") == 0.25  # a byte-order mark is read
    with pytest.raises(
        ConfigError, match=r"two\.json holds 2 categories: pass --category one of bottle, wood$"
    ):
        mask_threshold_from(two, None)


def test_demo_refuses_an_empty_image_path_and_its_input_folder_as_output(tmp_path: Path, capsys) -> None:
    """Before: --image_path '' scored the current folder; --output_dir equal to the image folder made the
    next run score its own overlays and masks as input images."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.full((32, 32, 3), 80, np.uint8)).save(folder / "a.png")
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(tmp_path / "b.png")
    assert run(demo.main, demo.parse_args, ["--image_path", "", "--output_dir", str(tmp_path / "o")]) == 2
    assert one_error_line(capsys) == "error: --image_path is empty: pass an image file or a folder of images"
    for flags in (
        ["--image_path", str(folder)],
        ["--image_path", str(tmp_path / "b.png"), "--reference_dir", str(folder)],
    ):
        assert (
            run(demo.main, demo.parse_args, [*flags, "--output_dir", str(folder), "--model_path", "/nope"])
            == 2
        )
        assert one_error_line(capsys).endswith(
            "folder: the next run would read its outputs as images; choose another --output_dir"
        )
    assert sorted(p.name for p in folder.iterdir()) == ["a.png"]


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_demo_mask_at_a_huge_finite_threshold_has_no_overflow_warning(dtype) -> None:
    anomaly_map = np.array([[0.0, 0.5], [1.0, 0.25]], dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # before: "overflow encountered in cast"
        assert demo.binary_mask(anomaly_map, -1e300).all()
        assert not demo.binary_mask(anomaly_map, 1e300).any()
    assert demo.binary_mask(anomaly_map, 0.5).tolist() == [[False, True], [True, False]]


# ------------------------------------------------------------------ second sweep: checkpoints, outputs
def test_a_head_of_another_shape_is_one_line_naming_the_mismatch(tiny_sam3_dir: Path, tmp_path: Path) -> None:
    from model.engine import Sam3Engine
    from utils.training.checkpoint import apply_checkpoint

    engine = Sam3Engine.from_pretrained(tiny_sam3_dir, device="cpu", dtype="float32")
    hidden = engine.model.config.detr_encoder_config.hidden_size
    ckpt = {
        "concepts": {
            "embeds": torch.zeros(2, 3, hidden),
            "attention_mask": torch.ones(2, 3, dtype=torch.long),
        },
        "seed_words": ["crack", "scratch"],
        "head": {"weight": torch.zeros(3, 3)},
    }
    with pytest.raises(CheckpointError) as info:
        apply_checkpoint(ckpt, engine)
    message = str(info.value)
    assert "\n" not in message and "size mismatch for weight" in message
    assert message.endswith("use the model folder and settings it was trained with")


def test_vis_names_of_long_stems_fit_and_empty_curves_draw_no_legend(tmp_path: Path) -> None:
    from utils.evaluation.visualization import save_curves, vis_name

    name = vis_name("highest_good01", "good", "/d/" + "é" * 126 + ".png")  # a legal 252-byte stem
    assert name.startswith("highest_good01_good_é") and name.endswith(".png")
    assert len(name.encode()) <= 255
    empty = {
        "image": {"fpr": np.array([]), "tpr": np.array([]), "precision": np.array([]), "recall": np.array([])}
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # before: "No artists with labels found to put in legend"
        assert len(save_curves(tmp_path / "c", empty, "t")) == 2


# ------------------------------------------------------------------ second sweep: dataset files
def test_split_csv_with_a_cell_over_the_csv_field_limit(tmp_path: Path) -> None:
    from tests.fixtures_data import visa_tree, write_split

    root, lines = visa_tree(tmp_path)
    write_split(root, [*lines, "candle,test,normal,candle/" + "a" * 200_000 + ".JPG,"])
    with pytest.raises(
        DatasetError, match=r"1cls\.csv is not a readable CSV file \(field larger than field limit"
    ):
        load_dataset("visa", root, "candle", "test")


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            {"anomaly_class": "../../../../outside"},
            r"anomaly_class '\.\./\.\./\.\./\.\./outside' is not a plain name",
        ),
        ({"anomaly_class": None}, r"has anomaly_class None, not a name: fix the item"),
        ({"anomaly_class": ["AK"]}, r"has anomaly_class \['AK'\], not a name"),
    ],
)
def test_real_iad_anomaly_class_must_be_a_plain_name(tmp_path: Path, change: dict, problem: str) -> None:
    """The anomaly class is the defect type, a folder of --save_maps tiff (anomaly_maps/<cat>/test/<defect>/):
    before, `../../outside` made test.py write maps outside the output folder."""
    from tests.fixtures_benchmarks import make_real_iad

    base = make_real_iad(tmp_path)
    path = base / "realiad_jsons" / "toy.json"
    doc = json.loads(path.read_text())
    doc["test"][-2].update(change)  # the anomalous view
    path.write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match=rf"toy\.json: test item {len(doc['test']) - 2}.*{problem}"):
        load_dataset("real_iad", tmp_path, "toy", "test")


def test_real_iad_repeated_item_is_scored_once_and_deep_json_is_one_line(tmp_path: Path) -> None:
    from tests.fixtures_benchmarks import make_real_iad

    base = make_real_iad(tmp_path)
    path = base / "realiad_jsons" / "toy.json"
    doc = json.loads(path.read_text())
    n = len(load_dataset("real_iad", tmp_path, "toy", "test"))
    doc["test"].append(doc["test"][-2])  # before: counted twice in every metric
    path.write_text("\ufeff" + json.dumps(doc), encoding="utf-8")
    with pytest.warns(
        DatasetWarning, match=rf"toy\.json: 1 item\(s\) repeat an image listed before \(items {n}\)"
    ):
        assert len(load_dataset("real_iad", tmp_path, "toy", "test")) == n
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DatasetError, match=r"toy\.json is not valid JSON \(maximum recursion depth"):
        load_dataset("real_iad", tmp_path, "toy", "test")


def test_meta_json_nested_too_deep_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "meta.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DatasetError, match=r"meta\.json is not a JSON file \(maximum recursion depth"):
        select_categories("meta_json", tmp_path, None)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("\ufeff/data/sets\r\n".encode(), "/data/sets"),  # a byte-order mark and CRLF (Windows Notepad)
        (b"# the root\n\nsets\n", "DIR/sets"),  # relative to the file, not to the current folder
        ("/données\n".encode("latin-1"), r"dataset_dir\.txt is not UTF-8 text \(byte 5\): save it as UTF-8"),
    ],
)
def test_dataset_dir_txt_bom_relative_and_not_utf8(tmp_path: Path, monkeypatch, content, expected) -> None:
    from utils.config.loading import read_dataset_dir

    path = tmp_path / "dataset_dir.txt"
    path.write_bytes(content)
    monkeypatch.chdir(tmp_path.parent)
    if "UTF-8" not in expected:
        assert read_dataset_dir(path) == expected.replace("DIR", str(tmp_path))
        return
    with pytest.raises(ConfigError, match=expected):  # before: a UnicodeDecodeError traceback
        read_dataset_dir(path)


# ------------------------------------------------------------------ second sweep: shell scripts' environment
REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("script", "env", "message"),
    [
        (
            "train.sh",
            {"DIRECTIONS": "mvtec"},
            "DIRECTIONS entry 'mvtec' is not SOURCE:TARGET (e.g. mvtec:visa)",
        ),
        ("train.sh", {"DIRECTIONS": "visa:mvtec a:b:c"}, "DIRECTIONS entry 'a:b:c' is not SOURCE:TARGET"),
        (
            "train.sh",
            {"DIRECTIONS": "mvtec:mvtec"},
            "DIRECTIONS entry 'mvtec:mvtec' tests on the set it trains on",
        ),
        (
            "train.sh",
            {"DIRECTIONS": "mvtec:nosuch"},
            "unknown dataset 'nosuch' in DIRECTIONS: use any of btad ksdd2 meta_json mpdd mvtec",
        ),
        ("train.sh", {"DIRECTIONS": "config:visa"}, "unknown dataset 'config' in DIRECTIONS"),
        (
            "test.sh",
            {"DATASETS": "mvtec config"},
            "unknown dataset 'config' in DATASETS: use any of btad ksdd2 meta_json mpdd mvtec",
        ),
        (
            "test.sh",
            {"NPROC": "two"},
            "NPROC 'two' is not a number of processes: use 1, or the number of GPUs",
        ),
        ("test.sh", {"NPROC": "0"}, "NPROC '0' is not a number of processes"),
    ],
)
def test_shell_script_environment_is_checked_before_any_run(tmp_path: Path, script, env, message) -> None:
    """Before: DIRECTIONS=mvtec trained on MVTec AD and tested on it (a number of the wrong protocol),
    mvtec:nosuch failed only after training, DATASETS=config ran the generated defaults file and NPROC=two
    printed a bash error and ran one process. PYTHON=true: nothing else is started (bash only)."""
    import subprocess

    keep = {k: v for k, v in os.environ.items() if k not in ("DATASETS", "DIRECTIONS", "NPROC", "MODES")}
    full = {
        **keep,
        "PYTHON": "true",
        "RUN_ROOT": str(tmp_path / "runs"),
        "OUTPUT_ROOT": str(tmp_path / "o"),
        **env,
    }
    proc = subprocess.run(["bash", str(REPO / script)], env=full, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith(f"error: {message}"), proc.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "o").exists()


# ------------------------------------------------------------------ second sweep: outputs inside the dataset
@pytest.mark.parametrize(("out", "refused"), [("gear", True), ("gear/good", True), ("gear_out", False)])
def test_test_py_output_inside_a_category_folder_is_refused(tmp_path: Path, out: str, refused: bool) -> None:
    """Before: --output_dir DIR/gear (own-data layout) put curves/ and vis/ PNGs into the category, read as a
    defect type of images by every later run."""
    from dataset.synthetic import make_folder_like
    from tests.test_harness import gt_scorer
    from utils.evaluation.runner import evaluate

    root = make_folder_like(tmp_path / "data", categories=("gear",), n_good=1, n_defect=1, size=32)
    cfg = resolve_config(
        None, {"dataset": "folder", "dataset_path": str(root), "output_dir": str(root / out)}
    )
    if not refused:
        assert set(evaluate(cfg, gt_scorer, progress=False)) == {"gear"}
        return
    with pytest.raises(
        OutputDirError, match=rf"output folder {root / out} is inside {root / 'gear'}, which holds"
    ):
        evaluate(cfg, gt_scorer, progress=False)
    assert not (root / "gear" / "curves").exists()


def test_prompt_overrides_for_an_unknown_category_is_refused(folder_root: Path) -> None:
    """Before: `prompt_overrides: {bottel: [...]}` was ignored and bottle kept its built prompts."""
    from utils.pipeline import check_prompt_overrides

    mvtec = resolve_config(None, {"dataset_path": str(folder_root), "prompt_overrides": {"bottel": ["dent"]}})
    with pytest.raises(
        ConfigError, match=r"^prompt_overrides names bottel, not a mvtec category: fix the name"
    ):
        check_prompt_overrides(mvtec)
    check_prompt_overrides(mvtec.replace(prompt_overrides={"zipper": ["dent"]}))  # published, not on disk
    own = mvtec.replace(dataset="folder", prompt_overrides={"widget": ["dent"]})
    check_prompt_overrides(own)  # found on disk
    with pytest.raises(
        ConfigError, match=r"names bottle, not a folder category: fix the name \(categories: widget\)"
    ):
        check_prompt_overrides(own.replace(prompt_overrides={"bottle": ["dent"]}))


def test_an_error_during_a_progress_bar_starts_its_own_line(capsys: pytest.CaptureFixture[str]) -> None:
    """Before: `bottle:  50%|#####     | 2/4 [00:01<00:01]error: cannot decode image ...` on one line."""
    from tqdm import tqdm

    def fails_midway(args) -> int:
        bar = tqdm(total=4, desc="bottle", unit="img")
        bar.update(2)
        raise DatasetError("cannot decode image x.png: re-download it")

    assert run(fails_midway, lambda argv: None, []) == 2
    assert capsys.readouterr().err.splitlines()[-1] == "error: cannot decode image x.png: re-download it"


def test_nul_in_a_yaml_path_and_repeated_categories(tmp_path: Path, datasets_root: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text('output_dir: "/tmp/a\\0b"\n')  # a flag cannot hold NUL, a YAML string can
    with pytest.raises(ConfigError, match=r"^config key 'output_dir' holds a NUL character: remove it$"):
        resolve_config(str(path), {})
    assert select_categories("mvtec", datasets_root, ["wood", "bottle", "wood"]) == ["wood", "bottle"]


def test_demo_warns_when_the_images_are_their_own_references(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(np.full((32, 32, 3), 80, np.uint8)).save(folder / name)
    argv = ["--image_path", str(folder), "--reference_dir", str(folder), "--output_dir", str(tmp_path / "o")]
    assert run(demo.main, demo.parse_args, [*argv, "--model_path", str(tmp_path / "no_model")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == (
        "2 of the 2 images are also in --reference_dir (a.png, b.png): each is compared with itself and "
        "looks normal; keep the references apart from the images to score"
    )
    assert err[-1].startswith("error: ") and "no_model" in err[-1]  # the run goes on (here: no model)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            {"relative_saturation": "false"},
            "relative_saturation of missing_pushpin is 'false', not true or false",
        ),
        (
            {"saturation_threshold": float("nan")},
            "saturation_threshold of missing_pushpin is nan, not a number > 0",
        ),
        ({"saturation_threshold": 0}, "saturation_threshold of missing_pushpin is 0.0, not a number > 0"),
        ({"pixel_value": 300}, "pixel_value of missing_pushpin is 300, not a mask value 0..255"),
        ({"pixel_value": 1e400}, "OverflowError"),
    ],
)
def test_loco_defects_config_values_that_would_skew_spro(tmp_path: Path, change: dict, problem: str) -> None:
    """Before: "false" (a string) read as true and NaN or 0 thresholds went into sPRO without a word."""
    from tests.fixtures_benchmarks import LOCO_DEFECTS, make_mvtec_loco

    make_mvtec_loco(tmp_path)
    path = tmp_path / "mvtec_loco_anomaly_detection" / "pushpins" / "defects_config.json"
    path.write_text(
        json.dumps([{**LOCO_DEFECTS[0], **change}, *LOCO_DEFECTS[1:]]).replace("Infinity", "1e400")
    )
    with pytest.raises(DatasetError, match=rf"defects_config\.json: every entry needs .*{problem}"):
        load_dataset("mvtec_loco", tmp_path, "pushpins", "test")


def test_own_folder_images_outside_good_and_defect_folders_are_named(tmp_path: Path) -> None:
    """Before: an image put directly into the category folder was left out without a word."""
    from dataset.synthetic import make_folder_like

    root = make_folder_like(tmp_path, categories=("gear",), n_good=1, n_defect=1, size=32)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "gear" / "loose.png")
    with pytest.warns(
        DatasetWarning, match=r"1 image\(s\) directly in .*gear are not read \(loose\.png\): put"
    ):
        assert len(load_dataset("folder", root, "gear", "test")) == 2


def test_training_leaves_out_defective_images_without_a_mask(tmp_path: Path, caplog) -> None:
    """Before: own-folder defect images without masks were trained on with an all-zero target."""
    from dataset.synthetic import make_folder_like
    from utils.training.runner import training_samples

    root = make_folder_like(tmp_path, categories=("gear",), n_good=2, n_defect=2, size=32, with_masks=False)
    cfg = resolve_config(None, {"dataset": "folder", "dataset_path": str(root)})
    with pytest.warns(DatasetWarning):  # the loader's own warning (pixel metrics)
        data = training_samples(cfg)
    assert [r.label for r in data.records] == [0, 0]
    assert "2 defective image(s) without a mask are left out of training" in caplog.text


def test_the_demo_verdict_reads_thresholds_json_through_the_one_reader(tmp_path: Path) -> None:
    """Before: summary.csv's verdict re-read thresholds.json with a bare json.loads (a BOM: a traceback)."""
    from utils.evaluation.summary import verdict_rule

    path = tmp_path / "thresholds.json"
    entry = {"pixel_normal_threshold": 0.25, "image_f1_threshold": 0.625}
    path.write_text("\ufeff" + json.dumps({"categories": {"bottle": entry}}), encoding="utf-8")
    rule = verdict_rule(str(path), None, 0.25, "x")
    assert rule.image_threshold == 0.625 and rule.source == f"image_f1_threshold of bottle in {path}"


def test_a_warning_during_a_run_is_one_line_without_our_source() -> None:
    """Python prints a warning as `file.py:134: DatasetWarning: ...` plus that source line; during a script's
    run it is `warning: ...`, and Python's format is back after the run."""
    import argparse
    import warnings

    from dataset import DatasetWarning

    shown: list[str] = []

    def main(args: argparse.Namespace) -> int:
        shown.append(warnings.formatwarning("2 masks are all zero", DatasetWarning, "dataset/x.py", 134, "x"))
        return 0

    before = warnings.formatwarning
    assert run(main, lambda argv: argparse.Namespace(), []) == 0
    assert shown == ["warning: 2 masks are all zero\n"] and warnings.formatwarning is before
