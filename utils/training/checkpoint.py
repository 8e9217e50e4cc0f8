"""Fine-tuning checkpoints: one safetensors file with the trained tensors, the optimiser state and the config.

Never pickle: loading a checkpoint reads tensors and JSON, so a crafted file cannot run code.

In memory (what `load_checkpoint` returns and `save_checkpoint` takes) a checkpoint is a dict:
    "concepts":   {"embeds": (K, L, D) float32, "attention_mask": (K, L)}  (the ConceptBank state)
    "seed_words": K words the concepts were initialised from
    "head":       optional, SAM 3's semantic-projection state_dict (train_head: true)
    "optimizer":  torch optimiser state_dict: {"state": {param index: {name: value}}, "param_groups": [...]}
    "epoch":      epochs completed
    "history":    one dict of mean loss terms per epoch (the rows of train_log.csv)
    "config":     the run's settings (every key of configs/config.yaml)
    "scaler":     only with fp16 compute: the ``torch.amp.GradScaler`` state (loss scale, growth tracker)

On disk the tensors are the safetensors body under flat names ("concepts.embeds", "head.weight",
"optimizer.state.0.exp_avg", ...) and everything else is JSON in the header metadata, one key per entry, plus
"format" and "format_version". Never the SAM 3 backbone.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes
from torch import Tensor

from model.concepts import ConceptBank
from model.engine import Sam3Engine
from utils.files import atomic_write

SUFFIX = ".safetensors"
LAST_NAME = f"last{SUFFIX}"  # the newest checkpoint of a run, next to epoch_NNN.safetensors
FORMAT = "sam3-anomaly-concepts"
FORMAT_VERSION = 1
REQUIRED_TENSORS = ("concepts.embeds", "concepts.attention_mask")
REQUIRED_JSON = ("seed_words", "optimizer", "epoch", "history", "config")
OPTIONAL_JSON = ("scaler",)
CONVERTER = "scripts/convert_checkpoint.py"
# First bytes of what torch.save writes: a zip archive (torch >= 1.6) or a bare pickle (protocol 2+).
PICKLE_MAGIC = (b"PK\x03\x04", b"\x80")


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, incomplete or made for another model."""


def epoch_name(epoch: int) -> str:
    """File name of the checkpoint written after `epoch` (1-based): epoch_001.safetensors, ..."""
    return f"epoch_{epoch:03d}{SUFFIX}"


# ----------------------------------------------------------------------------- saving
def _flat_tensors(ckpt: Mapping[str, Any]) -> dict[str, Tensor]:
    """The tensors of a checkpoint under stable flat names, contiguous on the CPU."""
    flat = {f"concepts.{k}": v for k, v in ckpt["concepts"].items()}
    flat.update({f"head.{k}": v for k, v in ckpt.get("head", {}).items()})
    for index, state in ckpt["optimizer"]["state"].items():
        flat.update({f"optimizer.state.{index}.{k}": v for k, v in state.items() if isinstance(v, Tensor)})
    return {k: v.detach().cpu().contiguous() for k, v in flat.items()}


def _json_entries(ckpt: Mapping[str, Any]) -> dict[str, str]:
    """Everything that is not a tensor, as JSON strings (the safetensors header metadata)."""
    optimizer = ckpt["optimizer"]
    extra_state = {
        str(index): {k: v for k, v in state.items() if not isinstance(v, Tensor)}
        for index, state in optimizer["state"].items()
    }
    entries = {
        "seed_words": list(ckpt["seed_words"]),
        "optimizer": {"param_groups": optimizer["param_groups"], "state": extra_state},
        "epoch": int(ckpt["epoch"]),
        "history": list(ckpt["history"]),
        "config": dict(ckpt["config"]),
        **{key: dict(ckpt[key]) for key in OPTIONAL_JSON if key in ckpt},
    }
    meta = {key: json.dumps(value) for key, value in entries.items()}
    return {"format": FORMAT, "format_version": str(FORMAT_VERSION), **meta}


def save_checkpoint(ckpt: Mapping[str, Any], path: Path | str) -> None:
    """Write `ckpt` (see the module docstring) as one safetensors file, atomically."""
    data = safetensors_bytes(_flat_tensors(ckpt), metadata=_json_entries(ckpt))
    atomic_write(path, lambda handle: handle.write(data))


# ----------------------------------------------------------------------------- loading
def _read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors and header metadata of a safetensors file; CheckpointError for anything else."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            meta = handle.metadata() or {}
            return {k: handle.get_tensor(k) for k in handle.keys()}, meta  # noqa: SIM118 - not a dict
    except (SafetensorError, OSError, ValueError) as err:
        with path.open("rb") as handle:
            head = handle.read(4)
        if head.startswith(PICKLE_MAGIC):
            raise CheckpointError(
                f"{path} is an old pickle checkpoint, which is not loaded because unpickling can run code: "
                f"convert it once with `python {CONVERTER} {path}`"
            ) from None
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: {reason} (file corrupt?)") from None


def _unflatten(tensors: Mapping[str, Tensor], meta: Mapping[str, str]) -> dict[str, Any]:
    """Rebuild the in-memory checkpoint from flat tensors and decoded JSON entries."""
    keys = [*REQUIRED_JSON, *(key for key in OPTIONAL_JSON if key in meta)]
    ckpt: dict[str, Any] = {key: json.loads(meta[key]) for key in keys}
    groups: dict[str, dict[str, Any]] = {"concepts": {}, "head": {}}
    state: dict[int, dict[str, Any]] = {int(i): s for i, s in ckpt["optimizer"]["state"].items()}
    for name, tensor in tensors.items():
        prefix, rest = name.split(".", 1)
        if prefix == "optimizer":
            index, key = rest.removeprefix("state.").split(".", 1)
            state.setdefault(int(index), {})[key] = tensor
        else:
            groups[prefix][rest] = tensor
    # JSON has no tuples; torch's optimisers keep tuples (AdamW "betas") and lists only in "params".
    param_groups = [
        {k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in group.items()}
        for group in ckpt["optimizer"]["param_groups"]
    ]
    ckpt["optimizer"] = {"state": dict(sorted(state.items())), "param_groups": param_groups}
    ckpt["concepts"] = groups["concepts"]
    if groups["head"]:
        ckpt["head"] = groups["head"]
    return ckpt


def _check_complete(path: Path, tensors: Mapping[str, Tensor], meta: Mapping[str, str]) -> None:
    """CheckpointError naming every expected entry the file lacks (or a format it does not declare)."""
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a checkpoint of scripts/train.py (its header lacks format '{FORMAT}')"
        )
    if meta.get("format_version") != str(FORMAT_VERSION):
        raise CheckpointError(
            f"{path} has checkpoint format version {meta.get('format_version')}, this code reads "
            f"{FORMAT_VERSION}: use the matching version of this repository"
        )
    missing = [k for k in REQUIRED_TENSORS if k not in tensors] + [k for k in REQUIRED_JSON if k not in meta]
    if missing:
        raise CheckpointError(
            f"checkpoint {path} lacks {', '.join(missing)}: it was not written by this version of "
            "scripts/train.py; use another checkpoint or retrain"
        )


def header_problem(ckpt: Mapping[str, Any]) -> str | None:
    """What is wrong with the types or values of a decoded checkpoint (see the module docstring), or None.

    An edited or damaged header would otherwise fail later, far from the file (a negative epoch resumes
    nothing, a NaN embedding scores every image NaN).
    """
    epoch, embeds = ckpt["epoch"], ckpt["concepts"]["embeds"]
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        return f"epoch is {epoch!r}, expected a whole number >= 0"
    if not isinstance(ckpt["config"], dict):
        return f"config is a {type(ckpt['config']).__name__}, expected a mapping of settings"
    if not isinstance(ckpt["history"], list) or not all(isinstance(row, dict) for row in ckpt["history"]):
        return "history is not a list of per-epoch rows"
    words = ckpt["seed_words"]
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        return "seed_words is not a list of words"
    if not embeds.is_floating_point() or not bool(embeds.isfinite().all()):
        return "concepts.embeds holds NaN or infinite values (a diverged run)"
    scaler = ckpt.get("scaler", {"scale": 1.0})
    scale = scaler.get("scale") if isinstance(scaler, dict) else None
    if type(scale) not in (int, float) or not (math.isfinite(scale) and scale > 0):  # bool is no scale
        return "scaler is not an fp16 loss-scaler state with a finite positive scale"
    return None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by scripts/train.py (see the module docstring); never unpickles.

    Raises:
        CheckpointError: one line, for a missing, unreadable, incomplete or old pickle (.pt) checkpoint, or
            one whose header holds wrong types or values (`header_problem`).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint not found: {path} (scripts/train.py writes OUTPUT_DIR/{LAST_NAME}; check the path)"
        )
    tensors, meta = _read_safetensors(path)
    _check_complete(path, tensors, meta)
    try:
        ckpt = _unflatten(tensors, meta)
    except (ValueError, KeyError, TypeError, AttributeError) as err:  # malformed JSON or tensor names
        raise CheckpointError(f"checkpoint {path} is malformed ({type(err).__name__}): retrain") from None
    problem = header_problem(ckpt)
    if problem:
        raise CheckpointError(f"checkpoint {path} is malformed: {problem}; use another checkpoint or retrain")
    if ckpt["config"].get("train_head") and "head" not in ckpt:
        raise CheckpointError(f"checkpoint {path} lacks head.* (its config has train_head: true): retrain")
    return ckpt


def apply_checkpoint(ckpt: Mapping[str, Any], engine: Sam3Engine) -> ConceptBank:
    """Build the learned ConceptBank for `engine` and load the fine-tuned head into it when present."""
    state = ckpt["concepts"]
    hidden = engine.model.config.detr_encoder_config.hidden_size
    if state["embeds"].shape[-1] != hidden:
        raise CheckpointError(
            f"checkpoint concepts have size {state['embeds'].shape[-1]} "
            f"but this SAM 3 has hidden size {hidden}: "
            "use the model folder the checkpoint was trained with"
        )
    try:
        bank = ConceptBank(state["embeds"], state["attention_mask"], ckpt["seed_words"]).to(engine.device)
        if "head" in ckpt:
            engine.model.mask_decoder.semantic_projection.load_state_dict(ckpt["head"])
    except (ValueError, RuntimeError) as err:  # shapes that do not fit together or this model's head
        detail = " ".join(line.strip() for line in str(err).splitlines() if line.strip())  # one line
        raise CheckpointError(
            f"checkpoint does not fit this model ({detail}): "
            "use the model folder and settings it was trained with"
        ) from None
    return bank
