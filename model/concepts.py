"""Learned concept embeddings: trainable stand-ins for the text features SAM 3 receives.

SAM 3's decoders consume per-token text features `text_embeds` (K, L, D) (the projected CLIP token
states, see `model.engine.TextFeatures`). Fine-tuning keeps SAM 3 frozen and learns `num_concepts` such
sequences, each initialised from the text features of a generic defect word, so training starts from the
zero-shot model. At test time the learned concepts are scored like prompts, under the names `<concept-i>`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from model.engine import Sam3Engine, TextFeatures

CONCEPT_PREFIX = "<concept-"


def concept_names(count: int) -> list[str]:
    """The prompt names under which learned concepts are scored: `<concept-0>`, `<concept-1>`, …"""
    return [f"{CONCEPT_PREFIX}{i}>" for i in range(count)]


class ConceptBank(nn.Module):
    """K learned text-feature sequences.

    Attributes:
        embeds: (K, L, D) trainable parameter, in the text-feature space of the detector (D = hidden size).
        attention_mask: (K, L) buffer, the token mask of the word each concept was initialised from.
        seed_words: the K words used for initialisation (kept for the record).
    """

    def __init__(self, embeds: Tensor, attention_mask: Tensor, seed_words: Sequence[str]) -> None:
        super().__init__()
        if embeds.ndim != 3 or attention_mask.shape != embeds.shape[:2] or len(seed_words) != embeds.shape[0]:
            raise ValueError("ConceptBank needs embeds (K, L, D), attention_mask (K, L) and K seed words")
        self.embeds = nn.Parameter(embeds.detach().clone().float())
        self.register_buffer("attention_mask", attention_mask.detach().clone())
        self.seed_words = list(seed_words)

    @classmethod
    def from_words(cls, engine: Sam3Engine, words: Sequence[str]) -> ConceptBank:
        """Initialise one concept per word from SAM 3's own text features of that word."""
        text = engine.encode_text(list(words))
        return cls(text.embeds.float().cpu(), text.attention_mask.cpu(), words)

    @property
    def names(self) -> list[str]:
        return concept_names(self.embeds.shape[0])

    def text_features(self) -> TextFeatures:
        """All concepts as text rows (K, L, D), differentiable w.r.t. `embeds`."""
        return TextFeatures(self.embeds, self.attention_mask, tuple(self.names))

    def text_for_prompts(self, engine: Sam3Engine, prompts: Sequence[str]) -> TextFeatures:
        """Text rows for a prompt list mixing words (encoded by SAM 3) and concept names (learned rows).

        Returns TextFeatures whose row i belongs to prompts[i].
        """
        index = {name: i for i, name in enumerate(self.names)}
        unknown = [p for p in prompts if p.startswith(CONCEPT_PREFIX) and p not in index]
        if unknown:
            raise ValueError(f"{unknown} are not concepts of this checkpoint ({len(index)} concepts)")
        words = [p for p in prompts if p not in index]
        encoded = engine.encode_text(words) if words else None
        word_row = {w: i for i, w in enumerate(words)}
        device = engine.device
        rows, masks = [], []
        for p in prompts:
            if p in index:
                rows.append(self.embeds[index[p]].to(device))
                masks.append(self.attention_mask[index[p]].to(device))
            else:
                rows.append(encoded.embeds[word_row[p]].to(device=device, dtype=torch.float32))
                masks.append(encoded.attention_mask[word_row[p]].to(device))
        return TextFeatures(torch.stack(rows), torch.stack(masks), tuple(prompts))
