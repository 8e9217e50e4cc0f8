"""The fine-tuning run behind scripts/train.py: the training data, the model, resume, the epoch loop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dataset import ImageDataset, load_dataset, select_categories
from dataset.base import BitDepths
from dataset.records import short_list
from model.concepts import ConceptBank
from model.engine import Sam3Engine
from model.prompts import build_prompts
from utils.config.loading import ConfigError
from utils.config.schema import Config
from utils.run_log import get_logger
from utils.training.trainer import Trainer

log = get_logger(__name__)


def training_samples(cfg: Config) -> ImageDataset:
    """Test-split samples (with masks) of every selected category of cfg.data.dataset, decoded lazily.

    A defective image without a mask (own folders may have them) is left out, with a warning: its all-zero
    target would teach that its defect pixels are normal.
    """
    data = cfg.data
    categories = select_categories(data.dataset, data.dataset_path, data.categories)
    parts = [
        load_dataset(data.dataset, data.dataset_path, c, "test", data.realiad_resolution) for c in categories
    ]
    depths = BitDepths([r for part in parts for r in part.depths.records], data.bit_depth)  # per category
    unmasked = [r for part in parts for r in part.records if r.label != 0 and r.mask_path is None]
    if unmasked:
        log.warning(
            f"{len(unmasked)} defective image(s) without a mask are left out of training "
            f"({short_list([Path(r.image_path).name for r in unmasked])}): add their masks to train on them"
        )
    records = [r for part in parts for r in part.records if r.label == 0 or r.mask_path is not None]
    return ImageDataset(records, data.dataset, parts[0].root, "all", "test", depths=depths)


def concept_seed_words(num_concepts: int, prompt_strategy: str) -> list[str]:
    """The `num_concepts` generic words of `prompt_strategy` the concepts start from (one per concept).

    Raises:
        ConfigError: more concepts than words: training fewer than asked would record a wrong num_concepts.
    """
    words = build_prompts(None, prompt_strategy)
    if num_concepts > len(words):
        raise ConfigError(
            f"config key 'num_concepts' is {num_concepts}, but prompt_strategy {prompt_strategy} has "
            f"{len(words)} seed words (one per concept): use --num_concepts {len(words)} or fewer"
        )
    return words[:num_concepts]


def train(cfg: Config, out: Path, ckpt: dict[str, Any] | None) -> None:
    """Load SAM 3, build (or resume) the trainer and run the remaining epochs, saving after each."""
    seeds = concept_seed_words(cfg.training.num_concepts, cfg.prompts.prompt_strategy)  # before loading
    data = training_samples(cfg)
    torch.manual_seed(cfg.training.seed)
    model = cfg.model
    engine = Sam3Engine.from_pretrained(model.model_path, model.device, model.dtype, model.chunk_size)
    trainer = Trainer(engine, ConceptBank.from_words(engine, seeds), cfg)
    if ckpt is not None:
        changes = trainer.load_state(ckpt)
        log.info(
            f"resuming after epoch {trainer.epoch}" + (f"; changed: {', '.join(changes)}" if changes else "")
        )
    log.info(
        f"training {len(seeds)} concepts on {len(data)} {cfg.data.dataset} images, epochs "
        f"{trainer.epoch + 1}..{cfg.training.num_epochs}"
    )
    while trainer.epoch < cfg.training.num_epochs:
        row = trainer.run_epoch(data)
        path = trainer.save(out)
        log.info(
            f"epoch {row['epoch']}: loss {row['loss']:.4f} (focal {row['focal']:.4f}, "
            f"dice {row['dice']:.4f}, "
            f"image {row['image']:.4f}) -> {path}"
        )
