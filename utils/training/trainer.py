"""Fine-tuning loop: learned concept embeddings (and optionally SAM 3's semantic head) on one dataset.

SAM 3 stays frozen. Each step encodes a batch of images (no gradient), scores the learned concepts
against them with gradients on, builds the anomaly map exactly as at test time (instance and/or semantic
map, max over concepts) at SAM 3's mask resolution, and minimises
    focal_weight * focal + dice_weight * dice + image_loss_weight * BCE(max of map, label).
A checkpoint with only the trained tensors, the optimiser state and the config is written after every epoch
(`epoch_NNN.safetensors`, and `last.safetensors`), with `train_log.csv` and `loss_curve.png`.

Resuming (`Trainer.load_state`) keeps the settings that define the trained tensors or the data fixed
(`RESUME_FIXED`: a change is a CheckpointError) and applies the new value of every other setting training
reads (`RESUME_CHANGEABLE`: e.g. a new lr is set into the loaded optimiser).
"""

from __future__ import annotations

import csv
import io
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
from model.map_ops import resize_mask
from model.scoring import aggregate_prompts, combine_sources, instance_map, semantic_map
from utils.config.schema import SETTINGS, Config
from utils.files import atomic_write_text
from utils.plots import save_loss_curve
from utils.training.checkpoint import LAST_NAME, CheckpointError, epoch_name, save_checkpoint

LOG_FIELDS = ("epoch", "loss", "focal", "dice", "image", "steps", "seconds")

# How --resume treats each setting training reads, from its policy (`resume=` in utils/config/policy.py):
# "fixed" settings define the trained tensors or their data, so a change would mix two
# experiments and is refused; "changeable" ones (schedule, optimiser, loss weights, execution) apply from the
# next epoch (a lower batch_size with a higher grad_accum is the fix for CUDA out-of-memory).
RESUME_FIXED = tuple(key for key, s in SETTINGS.items() if s.policy.resume == "fixed")
RESUME_CHANGEABLE = tuple(key for key, s in SETTINGS.items() if s.policy.resume == "changeable")


def _same_setting(key: str, saved: Any, current: Any) -> bool:
    """Equal settings; the model folder compares as a resolved path (`~/m` and `/home/u/m` are one folder)."""
    if key == "model_path" and saved and current:
        return Path(saved).expanduser().resolve() == Path(current).expanduser().resolve()
    return saved == current


def resume_changes(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Compare a checkpoint's config with this run's (both flat: `Config.to_dict()`): refuse a changed fixed
    setting, list changed others.

    Returns:
        One "key old -> new" line per changed RESUME_CHANGEABLE setting (empty when nothing changed).

    Raises:
        CheckpointError: a RESUME_FIXED setting differs; the message names it and both values.
    """
    for key in RESUME_FIXED:
        if not _same_setting(key, saved.get(key), current[key]):
            raise CheckpointError(
                f"cannot resume: the checkpoint was trained with {key}={saved.get(key)!r}, this run has "
                f"{key}={current[key]!r}; use the checkpoint's value, or a new --output_dir without --resume"
            )
    return [
        f"{key} {saved.get(key)!r} -> {current[key]!r}"
        for key in RESUME_CHANGEABLE
        if not _same_setting(key, saved.get(key), current[key])
    ]


def semantic_head(engine: Sam3Engine) -> torch.nn.Module:
    """SAM 3's 1x1 semantic-segmentation projection (the part `train_head` fine-tunes)."""
    return engine.model.mask_decoder.semantic_projection


def concept_maps(engine: Sam3Engine, images: Sequence[np.ndarray], bank: ConceptBank, cfg: Config):
    """Differentiable anomaly maps of `images` from the learned concepts.

    Returns:
        (B, h, w) float32 maps in [0, 1] at SAM 3's mask resolution, with gradients w.r.t. the bank (and the
        semantic head when it requires grad).
    """
    with torch.no_grad():  # frozen backbone: plain tensors, no graph
        features = engine.encode_images(images, inference_mode=False)
    per_image: list[list[Tensor]] = [[] for _ in images]
    for chunk in engine.predict_text(features, bank.text_features(), grad=True):
        rows = combine_sources(
            instance_map(chunk.mask_logits, chunk.scores),
            semantic_map(chunk.semantic_logits, chunk.presence),
            cfg.scoring.map_source,
        )
        for image, row in zip(chunk.image_index.tolist(), rows, strict=True):
            per_image[image].append(row)
    return torch.stack(
        [aggregate_prompts(torch.stack(rows), cfg.scoring.prompt_aggregation) for rows in per_image]
    )


def batch_loss(
    engine: Sam3Engine, samples: Sequence[Sample], bank: ConceptBank, cfg: Config
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
        cfg.training.focal_weight * terms["focal"]
        + cfg.training.dice_weight * terms["dice"]
        + cfg.training.image_loss_weight * terms["image"]
    )
    return terms


class Trainer:
    """Owns the trained tensors, the optimiser and the epoch loop (see the module docstring)."""

    def __init__(self, engine: Sam3Engine, bank: ConceptBank, cfg: Config) -> None:
        self.engine, self.bank, self.cfg = engine, bank.to(engine.device), cfg
        params = list(self.bank.parameters())
        if cfg.training.train_head:
            head = semantic_head(engine)
            head.requires_grad_(True)
            params += list(head.parameters())
        # fp32 trainable tensors (hence fp32 AdamW state) whatever the compute dtype: bf16 weights would round
        # away most small updates. The engine keeps fp32 weights and runs SAM 3 under autocast.
        not_fp32 = sorted({str(p.dtype) for p in params if p.dtype != torch.float32})
        if not_fp32:
            raise ValueError(
                f"trainable tensors are {', '.join(not_fp32)}, not float32: build the engine with "
                "Sam3Engine.from_pretrained (fp32 weights; --dtype only sets the autocast compute dtype)"
            )
        self.optimizer = torch.optim.AdamW(params, lr=cfg.training.lr, weight_decay=cfg.training.weight_decay)
        # fp16 compute needs loss scaling: the gradients flowing back through fp16 activations are mostly
        # below fp16's smallest normal number (6e-5; a mean over 288 x 288 pixels per image) and lose their
        # low bits or flush to zero. bf16 has fp32's range and needs none; disabled, the scaler is a no-op.
        self.scaler = torch.amp.GradScaler(engine.device.type, enabled=engine.compute_dtype == torch.float16)
        self.epoch = 0  # epochs completed
        self.history: list[dict[str, float]] = []

    def trained_state(self) -> dict[str, Any]:
        """Only what training changed: concept embeddings and, with train_head, the semantic head."""
        state = {
            "concepts": {k: v.detach().cpu() for k, v in self.bank.state_dict().items()},
            "seed_words": self.bank.seed_words,
        }
        if self.cfg.training.train_head:
            state["head"] = {k: v.detach().cpu() for k, v in semantic_head(self.engine).state_dict().items()}
        return state

    def load_state(self, ckpt: Mapping[str, Any]) -> list[str]:
        """Continue from a checkpoint written by `save` (parameters, optimiser, epoch, history).

        This run's settings (`self.cfg`) must agree with the checkpoint's on RESUME_FIXED; the new values of
        RESUME_CHANGEABLE apply (lr and weight_decay are set into the loaded optimiser's param groups; the
        fp16 loss scale carries over when both runs compute in fp16, else the scaler starts afresh).

        Returns:
            The changed settings, one "key old -> new" line each (see `resume_changes`).
        """
        changes = resume_changes(ckpt["config"], self.cfg.to_dict())
        saved, current = tuple(ckpt["concepts"]["embeds"].shape), tuple(self.bank.embeds.shape)
        if saved != current or ("head" in ckpt) != bool(self.cfg.training.train_head):
            raise CheckpointError(
                f"cannot resume: the checkpoint has concepts {saved} and train_head={'head' in ckpt}, "
                f"this run {current} and train_head={self.cfg.training.train_head}; "
                "use the same --num_concepts/--train_head"
            )
        try:
            self.bank.load_state_dict(ckpt["concepts"])
            if self.cfg.training.train_head:
                semantic_head(self.engine).load_state_dict(ckpt["head"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:  # tensors that do not fit this model or optimiser
            raise CheckpointError(f"cannot resume: {str(err).splitlines()[0]}") from None
        if self.scaler.is_enabled() and "scaler" in ckpt:  # fp16 then and now: continue with its scale
            self.scaler.load_state_dict(ckpt["scaler"])
        for group in self.optimizer.param_groups:  # the loaded groups carry the checkpoint's values
            group["lr"], group["weight_decay"] = self.cfg.training.lr, self.cfg.training.weight_decay
        self.epoch, self.history = ckpt["epoch"], list(ckpt["history"])
        return changes

    def run_epoch(self, data: Sequence[Sample], progress: bool = True) -> dict[str, float]:
        """One pass over `data` in a seeded order; returns the epoch's mean loss terms."""
        cfg = self.cfg
        order = np.random.default_rng(cfg.training.seed + self.epoch).permutation(len(data))
        batches = [order[i : i + cfg.model.batch_size] for i in range(0, len(order), cfg.model.batch_size)]
        torch.manual_seed(cfg.training.seed + self.epoch)
        sums = dict.fromkeys(("loss", "focal", "dice", "image"), 0.0)
        start, steps = time.time(), 0
        bar = tqdm(batches, desc=f"epoch {self.epoch + 1}/{cfg.training.num_epochs}", disable=not progress)
        self.optimizer.zero_grad(set_to_none=True)
        for i, batch in enumerate(bar):
            # SAM 3 calls run under the engine's autocast (engine.compute_dtype); maps and losses stay fp32.
            terms = batch_loss(self.engine, [data[int(j)] for j in batch], self.bank, cfg)
            self.scaler.scale(terms["loss"] / cfg.training.grad_accum).backward()
            if (i + 1) % cfg.training.grad_accum == 0 or i + 1 == len(batches):
                self.scaler.step(self.optimizer)  # unscales first; skips a step whose gradients overflowed
                self.scaler.update()
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

    def checkpoint(self) -> dict[str, Any]:
        """What `save` writes (see checkpoint.py): trained tensors, optimiser, epoch, history, config, and
        with fp16 compute the loss scaler's state."""
        scaler = {"scaler": self.scaler.state_dict()} if self.scaler.is_enabled() else {}
        return {
            **self.trained_state(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "history": self.history,
            "config": self.cfg.to_dict(),
            **scaler,
        }

    def save(self, out_dir: Path) -> Path:
        """Write epoch_NNN.safetensors and last.safetensors (tensors, optimiser, config), log and curve.

        Returns:
            The path of epoch_NNN.safetensors.
        """
        ckpt = self.checkpoint()
        path = out_dir / epoch_name(self.epoch)
        save_checkpoint(ckpt, path)
        save_checkpoint(ckpt, out_dir / LAST_NAME)
        write_log(out_dir, self.history)
        return path


def write_log(out_dir: Path, history: Sequence[Mapping[str, float]]) -> None:
    """train_log.csv (one row per epoch, replaced atomically) and loss_curve.png."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=LOG_FIELDS)
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(out_dir / "train_log.csv", text.getvalue())
    save_loss_curve(out_dir / "loss_curve.png", history)
