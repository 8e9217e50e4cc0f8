"""Fine-tuning loop: learned concept embeddings (and optionally SAM 3's semantic head) on one dataset.

SAM 3 stays frozen. Each step encodes a batch of images (no gradient), scores the learned concepts
against them with gradients on, builds the anomaly map exactly as at test time (instance and/or semantic
map, max over concepts) at SAM 3's mask resolution, and minimises
    focal_weight * focal + dice_weight * dice + image_loss_weight * BCE(max of map, label).
A checkpoint with only the trained tensors, the optimiser state and the config is written after every epoch
(`epoch_NNN.pt`, and `last.pt`), with `train_log.csv` and `loss_curve.png`.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from dataset import Sample
from model.concepts import ConceptBank
from model.engine import Sam3Engine
from model.losses import dice_loss, focal_loss, image_loss
from model.scoring import aggregate_prompts, combine_sources, instance_map, semantic_map
from utils.checkpoint import CheckpointError, save_checkpoint
from utils.image_ops import resize_mask
from utils.visualization import save_loss_curve

LOG_FIELDS = ("epoch", "loss", "focal", "dice", "image", "steps", "seconds")


def semantic_head(engine: Sam3Engine) -> torch.nn.Module:
    """SAM 3's 1x1 semantic-segmentation projection (the part `train_head` fine-tunes)."""
    return engine.model.mask_decoder.semantic_projection


def concept_maps(engine: Sam3Engine, images: Sequence[np.ndarray], bank: ConceptBank, cfg: Mapping[str, Any]):
    """Differentiable anomaly maps of `images` from the learned concepts.

    Returns:
        (B, h, w) float32 maps in [0, 1] at SAM 3's mask resolution, with gradients w.r.t. the bank (and the
        semantic head when it requires grad).
    """
    with torch.no_grad():  # frozen backbone: plain tensors, no graph
        features = engine.encode_images(images, grad=True)
    per_image: list[list[Tensor]] = [[] for _ in images]
    for chunk in engine.predict_text(features, bank.text_features(), grad=True):
        rows = combine_sources(
            instance_map(chunk.mask_logits, chunk.scores),
            semantic_map(chunk.semantic_logits, chunk.presence),
            cfg["map_source"],
        )
        for image, row in zip(chunk.image_index.tolist(), rows, strict=True):
            per_image[image].append(row)
    return torch.stack(
        [aggregate_prompts(torch.stack(rows), cfg["prompt_aggregation"]) for rows in per_image]
    )


def batch_loss(
    engine: Sam3Engine, samples: Sequence[Sample], bank: ConceptBank, cfg: Mapping[str, Any]
) -> dict[str, Tensor]:
    """Loss terms of one batch: {"loss", "focal", "dice", "image"} (scalars; "loss" is the weighted sum)."""
    maps = concept_maps(engine, [s.image for s in samples], bank, cfg)
    size = tuple(maps.shape[-2:])
    masks = torch.from_numpy(np.stack([resize_mask(s.mask, size) for s in samples])).to(maps.device)
    labels = torch.tensor([s.label for s in samples], device=maps.device)
    terms = {
        "focal": focal_loss(maps, masks),
        "dice": dice_loss(maps, masks),
        "image": image_loss(maps.flatten(1).amax(1), labels),
    }
    terms["loss"] = (
        cfg["focal_weight"] * terms["focal"]
        + cfg["dice_weight"] * terms["dice"]
        + cfg["image_loss_weight"] * terms["image"]
    )
    return terms


class Trainer:
    """Owns the trained tensors, the optimiser and the epoch loop (see the module docstring)."""

    def __init__(self, engine: Sam3Engine, bank: ConceptBank, cfg: Mapping[str, Any]) -> None:
        self.engine, self.bank, self.cfg = engine, bank.to(engine.device), dict(cfg)
        params = list(self.bank.parameters())
        if cfg["train_head"]:
            head = semantic_head(engine)
            head.requires_grad_(True)
            params += list(head.parameters())
        self.optimizer = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
        self.epoch = 0  # epochs completed
        self.history: list[dict[str, float]] = []

    def trained_state(self) -> dict[str, Any]:
        """Only what training changed: concept embeddings and, with train_head, the semantic head."""
        state = {
            "concepts": {k: v.detach().cpu() for k, v in self.bank.state_dict().items()},
            "seed_words": self.bank.seed_words,
        }
        if self.cfg["train_head"]:
            state["head"] = {k: v.detach().cpu() for k, v in semantic_head(self.engine).state_dict().items()}
        return state

    def load_state(self, ckpt: Mapping[str, Any]) -> None:
        """Continue from a checkpoint written by `save` (parameters, optimiser, epoch, history)."""
        saved, current = tuple(ckpt["concepts"]["embeds"].shape), tuple(self.bank.embeds.shape)
        if saved != current or ("head" in ckpt) != bool(self.cfg["train_head"]):
            raise CheckpointError(
                f"cannot resume: the checkpoint has concepts {saved} and train_head={'head' in ckpt}, "
                f"this run {current} and train_head={self.cfg['train_head']}; "
                "use the same --num_concepts/--train_head"
            )
        self.bank.load_state_dict(ckpt["concepts"])
        if self.cfg["train_head"]:
            semantic_head(self.engine).load_state_dict(ckpt["head"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.epoch, self.history = ckpt["epoch"], list(ckpt["history"])

    def run_epoch(self, data: Sequence[Sample], progress: bool = True) -> dict[str, float]:
        """One pass over `data` in a seeded order; returns the epoch's mean loss terms."""
        cfg = self.cfg
        order = np.random.default_rng(cfg["seed"] + self.epoch).permutation(len(data))
        batches = [order[i : i + cfg["batch_size"]] for i in range(0, len(order), cfg["batch_size"])]
        torch.manual_seed(cfg["seed"] + self.epoch)
        sums = dict.fromkeys(("loss", "focal", "dice", "image"), 0.0)
        start, steps = time.time(), 0
        bar = tqdm(batches, desc=f"epoch {self.epoch + 1}/{cfg['num_epochs']}", disable=not progress)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.engine.device.type == "cuda")
        self.optimizer.zero_grad(set_to_none=True)
        for i, batch in enumerate(bar):
            with autocast:
                terms = batch_loss(self.engine, [data[int(j)] for j in batch], self.bank, cfg)
            (terms["loss"] / cfg["grad_accum"]).backward()
            if (i + 1) % cfg["grad_accum"] == 0 or i + 1 == len(batches):
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                steps += 1
            for key in sums:
                sums[key] += float(terms[key].detach())
            bar.set_postfix(loss=f"{sums['loss'] / (i + 1):.4f}")
        self.epoch += 1
        row = {
            "epoch": self.epoch,
            **{k: v / max(len(batches), 1) for k, v in sums.items()},
            "steps": steps,
            "seconds": round(time.time() - start, 2),
        }
        self.history.append(row)
        return row

    def save(self, out_dir: Path) -> Path:
        """Write epoch_NNN.pt and last.pt (trained tensors, optimiser, config), log and curve."""
        ckpt = {
            **self.trained_state(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "history": self.history,
            "config": self.cfg,
        }
        path = out_dir / f"epoch_{self.epoch:03d}.pt"
        save_checkpoint(ckpt, path)
        save_checkpoint(ckpt, out_dir / "last.pt")
        write_log(out_dir, self.history)
        return path


def write_log(out_dir: Path, history: Sequence[Mapping[str, float]]) -> None:
    """train_log.csv (one row per epoch) and loss_curve.png."""
    with (out_dir / "train_log.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOG_FIELDS)
        writer.writeheader()
        writer.writerows(history)
    save_loss_curve(out_dir / "loss_curve.png", history)
