"""Load SAM 3 (``transformers.Sam3Model`` + ``CLIPTokenizer``) from a local facebook/sam3 folder.

The folder is laid out like a facebook/sam3 download: a *video* ``config.json`` (``model_type:
"sam3_video"``, the image detector under ``detector_config``), ``model.safetensors`` with
``detector_model.``/``tracker_model.`` keys, and the CLIP tokenizer files. ``Sam3Model.from_pretrained``
reads the detector part and ignores the tracker keys. Every way the folder can be wrong is checked first
and reported as a one-line :class:`ModelLoadError` that says how to fix it.
"""

from __future__ import annotations

import functools
import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import CLIPTokenizer, Sam3Model

DOWNLOAD_HINT = (
    "download it with `python scripts/download_weights.py --model_dir {dir}` "
    "or `modelscope download --model facebook/sam3 --local-dir {dir} --exclude sam3.pt`"
)
# Added where the weights are missing altogether: a way to try the pipeline before the 3.4 GB download.
TINY_HINT = (
    "; to try the pipeline without them, `python scripts/make_tiny_sam3.py /tmp/tiny_sam3` writes a tiny "
    "random SAM 3 for --model_path /tmp/tiny_sam3 (meaningless maps)"
)
SAM3_MODEL_TYPES = ("sam3", "sam3_video")

_DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}


class ModelLoadError(RuntimeError):
    """A SAM 3 folder cannot be loaded; the message is one line naming the folder and the fix."""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> ``cuda`` when available, else ``cpu``; anything else is passed to ``torch.device``.

    Raises:
        ValueError: an unknown device name, or a CUDA device asked for where CUDA is not available.
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from None
    if resolved.type not in ("cpu", "cuda"):  # mps, xpu, meta, ...: SAM 3 here runs on CPU or CUDA only
        raise ValueError(f"device {device!r} is not supported: use auto, cpu, cuda or cuda:N")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {device!r} asked for but CUDA is not available (CPU-only torch or no GPU): "
            "use --device cpu"
        )
    return resolved


def native_bf16(device: str | torch.device) -> bool:
    """Whether `device` computes in bf16 natively: a CUDA GPU of compute capability 8.0 or later (A100, RTX
    30xx/40xx, H100, ...; ROCm GPUs too). Older GPUs (V100, T4, RTX 20xx) only emulate bf16, slowly; the CPU
    is False (its autocast supports bf16, but "auto" keeps fp32 there)."""
    device = torch.device(device)
    if device.type != "cuda":
        return False
    return bool(torch.version.hip) or torch.cuda.get_device_capability(device)[0] >= 8


def resolve_dtype(dtype: str | torch.dtype, device: str | torch.device) -> torch.dtype:
    """``"auto"`` -> bf16 on a CUDA GPU with native bf16 (`native_bf16`), fp32 elsewhere (the CPU, and GPUs
    that would emulate bf16); accepts fp32/float32, bf16/bfloat16, fp16/float16. bf16 asked for on a GPU
    that would emulate it is kept, with a warning.

    Raises:
        ValueError: an unknown dtype name.
    """
    if dtype == "auto":
        return torch.bfloat16 if native_bf16(resolve_device(device)) else torch.float32
    if isinstance(dtype, torch.dtype):
        resolved = dtype
    else:
        try:
            resolved = _DTYPES[dtype.lower()]
        except KeyError:
            raise ValueError(f"unknown dtype {dtype!r}: use auto, {', '.join(_DTYPES)}") from None
    device = resolve_device(device)
    if resolved == torch.bfloat16 and device.type == "cuda" and not native_bf16(device):
        _warn_emulated_bf16(torch.cuda.get_device_name(device))
    return resolved


@functools.cache
def _warn_emulated_bf16(gpu: str) -> None:
    """One warning per GPU model and process, however many times its dtype is resolved."""
    warnings.warn(
        f"{gpu} has no native bf16 (compute capability < 8.0): bf16 runs emulated and slowly; "
        "use --dtype fp16 (tensor cores) or fp32",
        stacklevel=3,
    )


def _has_tokenizer(folder: Path) -> bool:
    """CLIPTokenizer loads from ``tokenizer.json`` or from ``vocab.json`` + ``merges.txt``."""
    return (folder / "tokenizer.json").is_file() or (
        (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
    )


def check_model_dir(model_path: str | Path) -> Path:
    """Check that ``model_path`` looks like a facebook/sam3 download before transformers touches it.

    Returns:
        The expanded, resolved folder path.

    Raises:
        ModelLoadError: folder, config.json, model.safetensors or tokenizer files missing, only the original
            ``sam3.pt`` present, or a config whose ``model_type`` is not sam3/sam3_video.
    """
    folder = Path(model_path).expanduser().resolve()
    hint = DOWNLOAD_HINT.format(dir=folder)
    if not folder.is_dir():
        raise ModelLoadError(f"SAM 3 model folder {folder} does not exist: {hint}{TINY_HINT}")
    config_file = folder / "config.json"
    if not (folder / "model.safetensors").is_file():
        if (folder / "sam3.pt").is_file():
            raise ModelLoadError(
                f"{folder} holds only the original sam3.pt; transformers needs model.safetensors "
                f"(with config.json and tokenizer files) from the same facebook/sam3 repo: {hint}"
            )
        if not config_file.is_file():
            raise ModelLoadError(f"no config.json and no model.safetensors in {folder}: {hint}{TINY_HINT}")
        raise ModelLoadError(f"no model.safetensors in {folder}: {hint}{TINY_HINT}")
    if not config_file.is_file():
        raise ModelLoadError(f"no config.json in {folder}: {hint}")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{config_file} is not valid JSON ({exc}): re-download it; {hint}") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type not in SAM3_MODEL_TYPES:
        raise ModelLoadError(
            f"{config_file} has model_type {model_type!r}, not a SAM 3 model ({'/'.join(SAM3_MODEL_TYPES)}): "
            f"point --model_path at a facebook/sam3 folder; {hint}"
        )
    if not _has_tokenizer(folder):
        raise ModelLoadError(
            f"no tokenizer files (tokenizer.json, or vocab.json + merges.txt) in {folder}: {hint}"
        )
    return folder


def model_image_size(model: Sam3Model) -> int:
    """Square input side the model expects, from ``vision_config.backbone_config.image_size``."""
    return int(model.config.vision_config.backbone_config.image_size)


def _first_line(exc: BaseException) -> str:
    """The first line of ``str(exc)``, or the exception's class name when it has no message."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _name_keys(kind: str, keys: Sequence[str], limit: int = 3) -> str:
    """``"2 missing (a, b)"`` / ``"5 unexpected (a, b, c, ...)"``: a count and the first ``limit`` keys."""
    shown = ", ".join(keys[:limit]) + (", ..." if len(keys) > limit else "")
    return f"{len(keys)} {kind} ({shown})"


def check_loading_info(info: Mapping[str, Sequence[Any]], weights: Path) -> None:
    """Refuse a checkpoint whose detector tensors do not match the model exactly.

    transformers random-initialises tensors missing from ``model.safetensors`` (or of the wrong shape, with
    ``ignore_mismatched_sizes``) and only prints a report; a model with a random presence or semantic head
    still runs and gives meaningless scores. The tracker's ``tracker_model.``/``tracker_neck.`` keys of a
    real download are ignored by ``Sam3Model`` itself (``_keys_to_ignore_on_load_unexpected``) and never
    appear here.

    Args:
        info: the ``loading_info`` dict of ``from_pretrained(..., output_loading_info=True)``
            (``missing_keys``, ``unexpected_keys``, ``mismatched_keys``, ``error_msgs``).
        weights: the ``model.safetensors`` file, named in the error.

    Raises:
        ModelLoadError: any missing, unexpected or mismatched key, or a load error message.
    """
    problems = []
    for kind, name in (("missing", "missing_keys"), ("unexpected", "unexpected_keys")):
        keys = sorted(str(k) for k in info.get(name) or ())
        if keys:
            problems.append(_name_keys(kind, keys))
    mismatched = sorted(str(k[0] if isinstance(k, tuple) else k) for k in info.get("mismatched_keys") or ())
    if mismatched:
        problems.append(_name_keys("of the wrong shape", mismatched))
    problems += [str(m).strip().splitlines()[0] for m in info.get("error_msgs") or () if str(m).strip()]
    if problems:
        raise ModelLoadError(
            f"{weights} does not match the SAM 3 detector (tensors: {'; '.join(problems)}): it is damaged or "
            f"not facebook/sam3's; {DOWNLOAD_HINT.format(dir=weights.parent)}"
        )


def load_sam3(model_path: str | Path, device: str | torch.device = "auto") -> tuple[Sam3Model, CLIPTokenizer]:
    """Load the SAM 3 detector and its tokenizer from a local facebook/sam3 folder (never downloads).

    The weights are always loaded in float32, whatever precision the model will run in: the compute dtype
    (bf16/fp16 autocast) is the engine's business (:class:`model.engine.Sam3Engine`), as in Meta's own
    predictor, which keeps fp32 weights and runs under ``torch.autocast``.

    Args:
        model_path: folder of a facebook/sam3 download (``~`` is expanded).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...

    Returns:
        ``(model, tokenizer)``: the float32 model in eval mode on ``device`` with ``requires_grad=False`` on
        every parameter; its input size is ``model.config.vision_config.backbone_config.image_size``.

    Raises:
        ModelLoadError: the folder is incomplete or not SAM 3 (see :func:`check_model_dir`); any detector
            tensor is missing, unexpected or of the wrong shape (see :func:`check_loading_info`); or
            transformers/safetensors fails on the files (e.g. a truncated ``model.safetensors``).
    """
    folder = check_model_dir(model_path)
    try:
        torch_device = resolve_device(device)
    except ValueError as exc:
        raise ModelLoadError(str(exc)) from None
    weights = folder / "model.safetensors"
    hint = DOWNLOAD_HINT.format(dir=folder)
    # Catch Exception, not BaseException: whatever damaged files make transformers/safetensors raise
    # (SafetensorError, RuntimeError on a shape mismatch, ...) becomes one line; Ctrl-C stays Ctrl-C.
    try:
        model, info = Sam3Model.from_pretrained(
            folder,
            local_files_only=True,
            dtype=torch.float32,
            output_loading_info=True,
            ignore_mismatched_sizes=True,  # reported by check_loading_info, naming the tensors
        )
    except Exception as exc:
        raise ModelLoadError(
            f"could not load SAM 3 from {weights} ({_first_line(exc)}): the file (or config.json beside it) "
            f"is damaged or incomplete; {hint}"
        ) from exc
    check_loading_info(info, weights)
    try:
        tokenizer = CLIPTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception as exc:
        raise ModelLoadError(
            f"could not load the SAM 3 tokenizer in {folder} ({_first_line(exc)}): {hint}"
        ) from exc
    model.to(torch_device).eval()
    model.requires_grad_(False)
    return model, tokenizer
