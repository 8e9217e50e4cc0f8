"""Fine-tuning checkpoints: small files with only the trained tensors, the optimiser state and the config.

Keys: "concepts" (ConceptBank state: embeds (K, L, D), attention_mask (K, L)), "seed_words", optional "head"
(SAM 3 semantic-projection weights), "optimizer", "epoch", "history", "config". Never the SAM 3 backbone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from model.concepts import ConceptBank
from model.engine import Sam3Engine


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or made for another model."""


def save_checkpoint(ckpt: dict[str, Any], path: Path) -> None:
    """torch.save through a temporary file, so an interrupted save never leaves a broken checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by scripts/train.py; one-line CheckpointError when it cannot be used."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint not found: {path} (train one with scripts/train.py or drop --checkpoint)"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises several types for a truncated or foreign file
        raise CheckpointError(
            f"cannot read checkpoint {path}: {type(err).__name__} (file corrupt?)"
        ) from None
    if not isinstance(ckpt, dict) or "concepts" not in ckpt:
        raise CheckpointError(f"{path} is not a checkpoint of scripts/train.py (no 'concepts' entry)")
    return ckpt


def apply_checkpoint(ckpt: dict[str, Any], engine: Sam3Engine) -> ConceptBank:
    """Build the learned ConceptBank for `engine` and load the fine-tuned head into it when present."""
    state = ckpt["concepts"]
    hidden = engine.model.config.detr_encoder_config.hidden_size
    if state["embeds"].shape[-1] != hidden:
        raise CheckpointError(
            f"checkpoint concepts have size {state['embeds'].shape[-1]} "
            f"but this SAM 3 has hidden size {hidden}: "
            "use the model folder the checkpoint was trained with"
        )
    bank = ConceptBank(state["embeds"], state["attention_mask"], ckpt["seed_words"]).to(engine.device)
    if "head" in ckpt:
        engine.model.mask_decoder.semantic_projection.load_state_dict(ckpt["head"])
    return bank
