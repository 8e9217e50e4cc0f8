"""model/loader.py: folder checks with one-line fixes, dtype/device resolution, loading the tiny model."""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from model import ModelLoadError, Sam3Engine, load_sam3, loader, resolve_device, resolve_dtype
from model.loader import check_model_dir
from model.tiny_sam3 import build_tiny_sam3
from scripts import make_tiny_sam3
from utils.evaluation.fingerprint import device_kind

REPO = Path(__file__).resolve().parents[1]

DOWNLOAD_FIX = "scripts/download_weights.py --model_dir"


def _copy(src: Path, dst: Path, skip: tuple[str, ...] = ()) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        if f.name not in skip:
            shutil.copyfile(f, dst / f.name)
    return dst


def _assert_one_line_fix(exc: ModelLoadError, folder: Path) -> None:
    msg = str(exc)
    assert "\n" not in msg
    assert str(folder.resolve()) in msg
    assert DOWNLOAD_FIX in msg and "modelscope download --model facebook/sam3" in msg


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:0")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("fp32", torch.float32),
        ("float32", torch.float32),
        ("bf16", torch.bfloat16),
        ("bfloat16", torch.bfloat16),
        ("fp16", torch.float16),
        ("float16", torch.float16),
    ],
)
def test_resolve_dtype_names(name: str, expected: torch.dtype) -> None:
    assert resolve_dtype(name, "cpu") == expected


def test_resolve_dtype_auto_and_unknown() -> None:
    assert resolve_dtype("auto", "cpu") == torch.float32
    with pytest.raises(ValueError, match="unknown dtype 'int8'"):
        resolve_dtype("int8", "cpu")


@pytest.mark.parametrize(
    ("capability", "auto", "kind"),
    [((8, 0), torch.bfloat16, "cuda"), ((7, 5), torch.float32, "cuda without native bf16")],
)
def test_auto_is_bf16_only_on_gpus_that_compute_it_natively(
    monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int], auto: torch.dtype, kind: str
) -> None:
    """An A100 (8.0) runs bf16 natively; a T4 (7.5) or V100 (7.0) only emulates it: "auto" is fp32 there,
    explicit bf16 warns, and the resume fingerprint tells the two kinds of GPU apart."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "a GPU")
    monkeypatch.setattr(torch.version, "hip", None)
    assert resolve_dtype("auto", "cuda") == auto and resolve_dtype("auto", "auto") == auto
    assert device_kind("auto") == device_kind("cuda:0") == kind
    loader._warn_emulated_bf16.cache_clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert resolve_dtype("bf16", "cuda") == torch.bfloat16
        assert resolve_dtype(torch.bfloat16, "cuda:0") == torch.bfloat16  # the same GPU: warned once
        assert resolve_dtype("fp16", "cuda") == torch.float16
    assert [str(w.message) for w in caught] == (
        []
        if auto == torch.bfloat16
        else [
            "a GPU has no native bf16 (compute capability < 8.0): bf16 runs emulated and slowly; "
            "use --dtype fp16 (tensor cores) or fp32"
        ]
    )


def test_missing_folder(tmp_path: Path) -> None:
    folder = tmp_path / "nope"
    with pytest.raises(ModelLoadError, match="does not exist") as info:
        load_sam3(folder)
    _assert_one_line_fix(info.value, folder)


@pytest.mark.parametrize("files", [(), ("config.json",)])
def test_missing_weights_name_the_tiny_model(tmp_path: Path, files: tuple[str, ...]) -> None:
    """No folder, or no weights in it: the error says how to try the pipeline with the tiny random model."""
    folder = tmp_path / "sam3"
    if files:
        folder.mkdir()
        (folder / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError) as info:
        load_sam3(folder)
    command = re.search(r"`python (scripts/make_tiny_sam3\.py) ([^`]+)`", str(info.value))
    assert command, str(info.value)
    assert (REPO / command.group(1)).is_file()
    assert make_tiny_sam3.parse_args(command.group(2).split()).out_dir == "/tmp/tiny_sam3"
    assert "--model_path /tmp/tiny_sam3" in str(info.value)


def test_tilde_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ModelLoadError) as info:
        load_sam3("~/sam3")
    assert str((tmp_path / "sam3").resolve()) in str(info.value)


@pytest.mark.parametrize(
    ("skip", "match"),
    [
        (("config.json",), "no config.json in"),
        (("model.safetensors",), "no model.safetensors in"),
        (("config.json", "model.safetensors"), "no config.json and no model.safetensors"),
        (("tokenizer.json", "vocab.json", "merges.txt"), "no tokenizer files"),
    ],
)
def test_incomplete_folder(tiny_sam3_dir: Path, tmp_path: Path, skip: tuple[str, ...], match: str) -> None:
    folder = _copy(tiny_sam3_dir, tmp_path / "sam3", skip=skip)
    with pytest.raises(ModelLoadError, match=match) as info:
        load_sam3(folder, device="cpu")
    _assert_one_line_fix(info.value, folder)


def test_only_sam3_pt(tmp_path: Path) -> None:
    folder = tmp_path / "sam3"
    folder.mkdir()
    (folder / "sam3.pt").write_bytes(b"\0")
    with pytest.raises(ModelLoadError, match="only the original sam3.pt.*needs model.safetensors") as info:
        load_sam3(folder)
    _assert_one_line_fix(info.value, folder)


@pytest.mark.parametrize("model_type", ["sam2", None])
def test_not_sam3_config(tiny_sam3_dir: Path, tmp_path: Path, model_type: str | None) -> None:
    folder = _copy(tiny_sam3_dir, tmp_path / "sam3")
    config = json.loads((folder / "config.json").read_text())
    config.pop("model_type")
    if model_type:
        config["model_type"] = model_type
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=f"model_type {model_type!r}, not a SAM 3 model") as info:
        load_sam3(folder)
    _assert_one_line_fix(info.value, folder)


def test_broken_config_json(tiny_sam3_dir: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_sam3_dir, tmp_path / "sam3")
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON") as info:
        load_sam3(folder)
    _assert_one_line_fix(info.value, folder)


def test_real_layout_passes_checks(tiny_sam3_dir: Path) -> None:
    config = json.loads((tiny_sam3_dir / "config.json").read_text())
    assert config["model_type"] == "sam3_video" and "detector_config" in config
    assert check_model_dir(tiny_sam3_dir) == tiny_sam3_dir.resolve()


def test_weights_use_detector_prefix(tiny_sam3_dir: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(tiny_sam3_dir / "model.safetensors"), framework="pt") as f:
        keys = list(f.keys())
    assert keys and all(k.startswith("detector_model.") for k in keys)


def test_load_fp32_frozen_eval(tiny_sam3_dir: Path) -> None:
    """Weights are always float32 (the compute dtype is the engine's autocast, see test_precision.py)."""
    model, tokenizer = load_sam3(tiny_sam3_dir, device="cpu")
    assert type(model).__name__ == "Sam3Model"
    assert not model.training
    params = list(model.parameters())
    assert all(p.dtype == torch.float32 for p in params)
    assert not any(p.requires_grad for p in params)
    ids = tokenizer("a crack", truncation=True, max_length=32, padding="max_length")["input_ids"]
    assert len(ids) == 32 and max(ids) < model.config.text_config.vocab_size


def _edit_weights(src: Path, dst: Path, edit) -> Path:
    """Copy the tiny folder to ``dst`` with ``edit(state_dict)`` applied to its model.safetensors."""
    from safetensors.torch import load_file, save_file

    folder = _copy(src, dst)
    state = load_file(str(folder / "model.safetensors"))
    edit(state)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def _drop_heads(state: dict) -> None:
    for key in [k for k in state if ".presence_head." in k or ".semantic_projection." in k]:
        del state[key]


def test_missing_detector_tensors_are_an_error(tiny_sam3_dir: Path, tmp_path: Path) -> None:
    """Issue 8.5: transformers random-initialises absent tensors and only prints a report."""
    folder = _edit_weights(tiny_sam3_dir, tmp_path / "sam3", _drop_heads)
    with pytest.raises(ModelLoadError, match=r"model.safetensors does not match") as info:
        load_sam3(folder, device="cpu")
    _assert_one_line_fix(info.value, folder)
    # presence_head: 3 layers x (weight, bias); semantic_projection: weight, bias -> 8 missing, 3 named
    assert "8 missing (detr_decoder.presence_head.layer1.bias, " in str(info.value)
    assert ", ...)" in str(info.value)


def test_unexpected_detector_tensor_is_an_error_but_tracker_keys_are_not(
    tiny_sam3_dir: Path, tmp_path: Path
) -> None:
    def add_tracker(state: dict) -> None:  # a real download also holds the video tracker
        state["tracker_model.memory_encoder.proj.weight"] = torch.zeros(2, 2)
        state["tracker_neck.fpn.0.weight"] = torch.zeros(2)

    folder = _edit_weights(tiny_sam3_dir, tmp_path / "tracker", add_tracker)
    load_sam3(folder, device="cpu")

    def add_detector_key(state: dict) -> None:
        state["detector_model.mask_decoder.extra_head.weight"] = torch.zeros(2)

    folder = _edit_weights(tiny_sam3_dir, tmp_path / "extra", add_detector_key)
    with pytest.raises(
        ModelLoadError, match=r"1 unexpected \(detector_model.mask_decoder.extra_head.weight\)"
    ):
        load_sam3(folder, device="cpu")


def test_wrong_shape_tensor_is_an_error_naming_it(tiny_sam3_dir: Path, tmp_path: Path) -> None:
    def reshape(state: dict) -> None:
        state["detector_model.mask_decoder.semantic_projection.weight"] = torch.zeros(2, 32, 1, 1)

    folder = _edit_weights(tiny_sam3_dir, tmp_path / "sam3", reshape)
    with pytest.raises(
        ModelLoadError, match=r"1 of the wrong shape \(mask_decoder.semantic_projection.weight\)"
    ) as info:
        load_sam3(folder, device="cpu")
    _assert_one_line_fix(info.value, folder)
    assert str(folder.resolve() / "model.safetensors") in str(info.value)


@pytest.mark.parametrize("keep", [0.5, 0.0001])
def test_truncated_weights_are_one_model_load_error(tiny_sam3_dir: Path, tmp_path: Path, keep: float) -> None:
    """Issue 8.16: a partial download is a one-line error naming the file, not a safetensors traceback."""
    folder = _copy(tiny_sam3_dir, tmp_path / "sam3")
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: max(1, int(len(data) * keep))])
    with pytest.raises(ModelLoadError, match="could not load SAM 3 from .*model.safetensors") as info:
        load_sam3(folder, device="cpu")
    _assert_one_line_fix(info.value, folder)


def test_keyboard_interrupt_is_not_swallowed(tiny_sam3_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import Sam3Model

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Sam3Model, "from_pretrained", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_sam3(tiny_sam3_dir, device="cpu")


def test_image_size_from_config(tiny_sam3_dir: Path) -> None:
    engine = Sam3Engine.from_pretrained(tiny_sam3_dir, device="cpu", dtype="fp32")
    assert engine.image_size == 224 == engine.model.config.vision_config.backbone_config.image_size
    assert engine.device == torch.device("cpu") and engine.dtype == torch.float32


def test_fallback_layout_without_meta(tmp_path: Path) -> None:
    """Without the real facebook/sam3 small files the builder still gives a loadable folder."""
    folder = build_tiny_sam3(tmp_path / "tiny", meta_dir=tmp_path / "no_meta")
    model, tokenizer = load_sam3(folder, device="cpu")
    ids = tokenizer("crack")["input_ids"]
    assert ids[0] == 49406 and ids[-1] == 49407
    assert model.config.detr_decoder_config.num_queries == 20


def test_bad_device_or_dtype_is_a_model_load_error(tiny_sam3_dir, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelLoadError, match="unknown device 'gpu'"):
        load_sam3(tiny_sam3_dir, device="gpu")
    monkeypatch.setattr("model.engine.load_sam3", lambda *a, **k: pytest.fail("dtype checked after loading"))
    with pytest.raises(ModelLoadError, match="unknown dtype 'int8'"):
        Sam3Engine.from_pretrained(tiny_sam3_dir, device="cpu", dtype="int8")
