"""Build a tiny random SAM 3 detector saved in the real ``facebook/sam3`` folder layout.

Tests, scripts and benchmarks use it to get a runnable model folder on CPU in about a second::

    python scripts/make_tiny_sam3.py OUT_DIR     # or build_tiny_sam3(OUT_DIR) from Python

The folder holds what a real download holds (minus ``sam3.pt``): a *video* ``config.json`` whose
``detector_config`` is the tiny detector, ``model.safetensors`` with ``detector_model.``-prefixed keys,
``processor_config.json`` and the CLIP tokenizer files. When the real small files of facebook/sam3
(``shared/data/sam3_hf_meta``) are available they are copied, so the real tokenizer is used; otherwise a
minimal equivalent config and a byte-level CLIP tokenizer (no merges, same special-token ids) are written.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import CLIPTokenizer, Sam3Config, Sam3Model

DEFAULT_META_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "sam3_hf_meta"
TINY_IMAGE_SIZE = 224
TINY_NUM_QUERIES = 20
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
)
# CLIP's special tokens keep their real ids so input_ids look like the real tokenizer's.
BOS_TOKEN, EOS_TOKEN = "<|startoftext|>", "<|endoftext|>"
BOS_ID, EOS_ID = 49406, 49407


def tiny_sam3_config(num_queries: int = TINY_NUM_QUERIES, image_size: int = TINY_IMAGE_SIZE) -> Sam3Config:
    """A tiny random SAM 3 detector config (hidden size 32, 2 ViT layers; 224 input -> 64x64 masks)."""
    small = dict(hidden_size=32, num_layers=1, num_attention_heads=2, intermediate_size=64)
    return Sam3Config(
        vision_config=dict(
            backbone_config=dict(
                model_type="sam3_vit_model",
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=2,
                image_size=image_size,
                patch_size=14,
                window_size=8,
                global_attn_indexes=[1],
                pretrain_image_size=image_size,
            ),
            fpn_hidden_size=32,
            backbone_feature_sizes=[[64, 64], [32, 32], [16, 16]],
        ),
        text_config=dict(
            vocab_size=49408,
            hidden_size=32,
            intermediate_size=64,
            projection_dim=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=32,
        ),
        geometry_encoder_config=dict(small),
        detr_encoder_config=dict(small),
        detr_decoder_config=dict(small, num_queries=num_queries),
        mask_decoder_config=dict(hidden_size=32, num_attention_heads=2),
    )


def _bytes_to_unicode() -> list[str]:
    """The 256 printable characters byte-level BPE (GPT-2/CLIP) maps bytes 0..255 to, in byte order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    by_byte = dict(zip(bs, cs, strict=True))
    return [chr(by_byte[b]) for b in range(256)]


def build_fallback_tokenizer(out_dir: Path) -> CLIPTokenizer:
    """Write a byte-level CLIP tokenizer (no merges) to ``out_dir``: every character is one token.

    Used only when the real facebook/sam3 tokenizer files are absent (no internet here). Token ids stay
    below the real vocab size (49408) and the special tokens keep the real ids 49406/49407.
    """
    chars = _bytes_to_unicode()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": 256 + i for i, c in enumerate(chars)})
    vocab[BOS_TOKEN], vocab[EOS_TOKEN] = BOS_ID, EOS_ID
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=32)
    tokenizer.save_pretrained(out_dir)
    # The real download also ships the slow-tokenizer files; keep the layout.
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (out_dir / "merges.txt").write_text("#version: 0.2\n")
    return tokenizer


def build_tiny_sam3(out_dir: str | Path, meta_dir: Path | None = None, seed: int = 0) -> Path:
    """Build a tiny random SAM 3 into ``out_dir`` (created) in the real facebook/sam3 layout.

    Args:
        out_dir: target folder; existing files of the same names are overwritten.
        meta_dir: folder with the real facebook/sam3 config/tokenizer files; default
            ``<repo>/../shared/data/sam3_hf_meta``. When it does not exist, a minimal video config and a
            byte-level tokenizer are written instead.
        seed: torch seed for the random weights (same seed -> same weights).

    Returns:
        ``out_dir`` as a Path.
    """
    out_dir = Path(out_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    meta_dir = DEFAULT_META_DIR if meta_dir is None else Path(meta_dir)

    config = tiny_sam3_config()
    torch.manual_seed(seed)
    model = Sam3Model(config).eval()
    # Same keys as the real checkpoint: the detector lives under `detector_model.` in the video model.
    state = {f"detector_model.{k}": v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})

    detector_config = config.to_dict()
    if meta_dir.is_dir() and (meta_dir / "config.json").is_file():
        video_config = json.loads((meta_dir / "config.json").read_text())
        video_config["detector_config"] = detector_config
        for name in ("processor_config.json", *TOKENIZER_FILES):
            if (meta_dir / name).is_file():
                shutil.copyfile(meta_dir / name, out_dir / name)
    else:
        video_config = {
            "architectures": ["Sam3VideoModel"],
            "model_type": "sam3_video",
            "detector_config": detector_config,
        }
        build_fallback_tokenizer(out_dir)
    (out_dir / "config.json").write_text(json.dumps(video_config, indent=2))
    return out_dir
