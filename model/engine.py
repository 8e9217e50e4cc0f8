"""Two-step SAM 3 inference: encode images once, then score any number of text prompts cheaply.

Modelled on segment_anything's ``SamPredictor`` (``set_image`` once, ``predict`` many times)::

    engine = Sam3Engine.from_pretrained("~/models/sam3")
    feats = engine.encode_images([img_a, img_b])            # vision encoder: once per image
    for out in engine.predict(feats, ["crack", "scratch"]):  # text encoder: once per distinct prompt
        ...                                                  # out: ConceptOutputs for <= chunk_size rows

How the reuse works (transformers 5.x ``Sam3Model.forward``):

* ``forward(vision_embeds=...)`` takes the ``Sam3VisionEncoderOutput`` of ``get_vision_features`` and reads
  its ``fpn_hidden_states`` / ``fpn_position_encoding`` tuples (batch first).
* ``forward(text_embeds=...)`` reads only ``text_embeds.pooler_output``. ``get_text_features`` returns a
  ``CLIPTextModelOutput`` (``text_embeds``: CLIP's pooled projection (K, P); ``last_hidden_state``: (K, L, H))
  and *adds the attribute* ``pooler_output = model.text_projection(last_hidden_state)``: the per-token text
  features (K, L, D) the DETR encoder/decoder and mask decoder consume (L = 32 tokens, D = detector hidden
  size, 256 for the real model). The mask is not part of it: ``attention_mask`` (K, L) must be passed too.
  :class:`TextFeatures` therefore holds just these two tensors, and the engine wraps ``embeds`` back into a
  ``BaseModelOutputWithPooling(pooler_output=embeds)`` -- so a trainer can substitute learned embeddings.
* Vision and text batch sizes must match: rows are (image, prompt) pairs, so the vision features are
  expanded with ``index_select`` per row and the text rows repeated, ``chunk_size`` rows at a time (the mask
  decoder clones FPN features per row, ~113 MB fp32 per row at 1008 px).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import CLIPTokenizer, Sam3Model
from transformers.modeling_outputs import BaseModelOutputWithPooling

from model.loader import load_sam3, model_image_size

TEXT_MAX_LENGTH = 32  # SAM 3's CLIP text encoder has 32 position embeddings
IMAGE_MEAN = 0.5
IMAGE_STD = 0.5


@dataclass
class ImageFeatures:
    """Vision-encoder output for a batch of images, reusable for any number of prompts.

    Attributes:
        vision: the ``Sam3VisionEncoderOutput`` of ``Sam3Model.get_vision_features`` for B images:
            ``fpn_hidden_states`` / ``fpn_position_encoding`` tuples of (B, C, h_l, w_l) maps (4 levels,
            4x..1/2x the patch grid) and ``last_hidden_state`` (B, N_patches, C_vit); model device/dtype.
        num_images: B.
        sizes: original (H, W) of each image, for resizing outputs back.
    """

    vision: Any
    num_images: int
    sizes: list[tuple[int, int]]


@dataclass
class TextFeatures:
    """Text-encoder output for K prompts: plain tensors, so learned embeddings can be substituted.

    Attributes:
        embeds: (K, L, D) per-token text features the decoders consume, i.e.
            ``Sam3Model.get_text_features(...).pooler_output`` (= ``text_projection`` of the CLIP last hidden
            state); L = 32, D = detector hidden size (256 real, 32 tiny). May require grad.
        attention_mask: (K, L) int/bool, 1 for real tokens, 0 for padding.
        prompts: the K prompt strings, when the rows came from :meth:`Sam3Engine.encode_text`.
    """

    embeds: Tensor
    attention_mask: Tensor
    prompts: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return int(self.embeds.shape[0])

    def as_model_input(self) -> BaseModelOutputWithPooling:
        """The object ``Sam3Model.forward(text_embeds=...)`` expects (it reads only ``.pooler_output``)."""
        return BaseModelOutputWithPooling(pooler_output=self.embeds)


@dataclass
class ConceptOutputs:
    """SAM 3 outputs for R rows, each an (image, prompt) pair; float32 tensors on the model's device.

    Attributes:
        image_index: (R,) int64 index into the encoded images.
        prompt_index: (R,) int64 index into the prompts / text rows.
        mask_logits: (R, Q, h, w) per-query mask logits at 4x the patch grid (288x288 real, 64x64 tiny).
        scores: (R, Q) instance scores in [0, 1] = sigmoid(pred_logits) * sigmoid(presence_logits).
        boxes: (R, Q, 4) xyxy boxes normalised to [0, 1] of the (resized) image.
        presence: (R,) probability in [0, 1] that the concept is in the image = sigmoid(presence_logits).
        semantic_logits: (R, h, w) per-pixel logit map for the concept (ignores presence).
    """

    image_index: Tensor
    prompt_index: Tensor
    mask_logits: Tensor
    scores: Tensor
    boxes: Tensor
    presence: Tensor
    semantic_logits: Tensor

    def __len__(self) -> int:
        return int(self.image_index.shape[0])

    def to(self, device: str | torch.device) -> ConceptOutputs:
        """A copy with every tensor moved to ``device``."""
        return ConceptOutputs(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    @staticmethod
    def cat(parts: Sequence[ConceptOutputs]) -> ConceptOutputs:
        """Concatenate chunks along rows (e.g. ``ConceptOutputs.cat(list(engine.predict(...)))``)."""
        if not parts:
            raise ValueError("ConceptOutputs.cat needs at least one chunk")
        names = [f.name for f in fields(ConceptOutputs)]
        return ConceptOutputs(**{n: torch.cat([getattr(p, n) for p in parts]) for n in names})


# Sam3Model.forward(vision_embeds=...) reads only the FPN features and their position encodings; the ViT's
# last_hidden_state (about 21 MB per row at 1008 px) is not copied per image x prompt row.
UNUSED_VISION_FIELDS = ("last_hidden_state",)


def _select_rows(value: Any, index: Tensor, batch: int) -> Any:
    """index_select every batch-first tensor in ``value`` (tensor, tuple/list, ModelOutput or None)."""
    if isinstance(value, Tensor):
        if value.shape[0] != batch:
            raise ValueError(f"vision feature of shape {tuple(value.shape)} is not batch-first (B={batch})")
        return value.index_select(0, index.to(value.device))
    if isinstance(value, (tuple, list)):
        return type(value)(_select_rows(v, index, batch) for v in value)
    if value is None:
        return None
    if hasattr(value, "items"):  # transformers ModelOutput (an OrderedDict of its non-None fields)
        kept = {k: v for k, v in value.items() if k not in UNUSED_VISION_FIELDS}
        return type(value)(**{k: _select_rows(v, index, batch) for k, v in kept.items()})
    raise TypeError(f"cannot expand vision feature of type {type(value).__name__}")


class Sam3Engine:
    """Frozen SAM 3 detector with an encode-once, predict-many API.

    Args:
        model: a ``Sam3Model`` (eval mode; its parameters should not require grad).
        tokenizer: the matching ``CLIPTokenizer``.
        chunk_size: (image, prompt) rows per decoder forward; bounds peak memory.

    Counters ``vision_calls`` (images through the vision encoder) and ``text_calls`` (prompts through the
    text encoder) count work done over the engine's lifetime.
    """

    def __init__(self, model: Sam3Model, tokenizer: CLIPTokenizer, chunk_size: int = 8) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.chunk_size = int(chunk_size)
        self.vision_calls = 0
        self.text_calls = 0
        self._text_cache: dict[str, tuple[Tensor, Tensor]] = {}  # prompt -> ((L, D) embeds, (L,) mask)

    @classmethod
    def from_pretrained(
        cls,
        model_path: str | Path,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        chunk_size: int = 8,
    ) -> Sam3Engine:
        """Load a local facebook/sam3 folder with :func:`model.loader.load_sam3` and wrap it."""
        model, tokenizer = load_sam3(model_path, device=device, dtype=dtype)
        return cls(model, tokenizer, chunk_size=chunk_size)

    @property
    def image_size(self) -> int:
        """Square input side S from the model config (1008 real, 224 tiny)."""
        return model_image_size(self.model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    # ------------------------------------------------------------------ images
    def preprocess(self, images: Sequence[np.ndarray]) -> Tensor:
        """Resize and normalise images the way ``Sam3ImageProcessor`` does.

        Args:
            images: B arrays of shape (H, W, 3), uint8 RGB; sizes may differ.

        Returns:
            (B, 3, S, S) float32 on the model's device, in [-1, 1]: resized to S x S (aspect ratio not
            kept) with bilinear antialiased interpolation, rounded to grey levels like the processor's
            uint8 resize, then ``(x / 255 - 0.5) / 0.5``.
        """
        if len(images) == 0:
            raise ValueError("preprocess needs at least one image")
        size = self.image_size
        out = []
        for i, img in enumerate(images):
            arr = np.asarray(img)
            if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
                raise ValueError(
                    f"image {i} has shape {arr.shape} dtype {arr.dtype}; expected (H, W, 3) uint8 RGB"
                )
            # Resize on the model's device: antialiased resizing of 1-2 MP images is slow on a CPU.
            x = torch.from_numpy(np.ascontiguousarray(arr)).to(self.device).permute(2, 0, 1)[None].float()
            if x.shape[-2:] != (size, size):
                x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
                x = x.round_().clamp_(0, 255)
            out.append(x)
        pixels = torch.cat(out) / 255.0
        return (pixels - IMAGE_MEAN) / IMAGE_STD

    def encode_images(self, images: Sequence[np.ndarray], grad: bool = False) -> ImageFeatures:
        """Run the vision encoder once on ``images`` (B arrays (H, W, 3) uint8 RGB).

        Runs under ``torch.inference_mode`` unless ``grad=True``. The features can still be used by
        :meth:`predict_text` with ``grad=True`` (gradients then flow into text embeddings only).
        """
        pixel_values = self.preprocess(images).to(device=self.device, dtype=self.dtype)
        ctx = nullcontext() if grad else torch.inference_mode()
        with ctx:
            vision = self.model.get_vision_features(pixel_values=pixel_values)
        self.vision_calls += len(images)
        sizes = [(int(np.asarray(im).shape[0]), int(np.asarray(im).shape[1])) for im in images]
        return ImageFeatures(vision=vision, num_images=len(images), sizes=sizes)

    # ------------------------------------------------------------------ text
    def encode_text(self, prompts: Sequence[str]) -> TextFeatures:
        """Text features for ``prompts``; each distinct string is encoded once per engine lifetime.

        Prompts are tokenized with ``truncation=True, max_length=32, padding="max_length"``; a prompt longer
        than 32 tokens is truncated with a warning naming it.

        Returns:
            :class:`TextFeatures` with ``embeds`` (K, 32, D) and ``attention_mask`` (K, 32), rows in the order
            of ``prompts`` (duplicates allowed), no grad.
        """
        if isinstance(prompts, str):
            raise TypeError("encode_text takes a sequence of prompt strings, not a single string")
        if len(prompts) == 0:
            raise ValueError("encode_text needs at least one prompt")
        new = list(dict.fromkeys(p for p in prompts if p not in self._text_cache))
        if new:
            for p in new:
                n_tokens = len(self.tokenizer(p)["input_ids"])
                if n_tokens > TEXT_MAX_LENGTH:
                    warnings.warn(
                        f"prompt {p!r} has {n_tokens} tokens; SAM 3 reads only the first {TEXT_MAX_LENGTH}, "
                        "so it is truncated",
                        stacklevel=2,
                    )
            tokens = self.tokenizer(
                new, truncation=True, max_length=TEXT_MAX_LENGTH, padding="max_length", return_tensors="pt"
            )
            input_ids = tokens["input_ids"].to(self.device)
            attention_mask = tokens["attention_mask"].to(self.device)
            # no_grad, not inference_mode: cached rows may later be mixed with tensors that require grad.
            with torch.no_grad():
                embeds = self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
            embeds = embeds.pooler_output
            self.text_calls += len(new)
            for j, p in enumerate(new):
                self._text_cache[p] = (embeds[j], attention_mask[j])
        rows = [self._text_cache[p] for p in prompts]
        return TextFeatures(
            embeds=torch.stack([e for e, _ in rows]),
            attention_mask=torch.stack([m for _, m in rows]),
            prompts=tuple(prompts),
        )

    # ------------------------------------------------------------------ prediction
    def predict(self, features: ImageFeatures, prompts: Sequence[str]) -> Iterator[ConceptOutputs]:
        """Score every (image, prompt) pair; the vision features are reused, never recomputed.

        Args:
            features: from :meth:`encode_images` (B images).
            prompts: K prompt strings (encoded once each, cached).

        Yields:
            :class:`ConceptOutputs` of at most ``chunk_size`` rows; over all chunks the B*K rows come in
            image-major order: row r = (image r // K, prompt r % K).
        """
        text = self.encode_text(prompts)
        yield from self.predict_text(features, text)

    def predict_text(
        self,
        features: ImageFeatures,
        text: TextFeatures,
        prompt_ids: Sequence[int] | Tensor | None = None,
        grad: bool = False,
    ) -> Iterator[ConceptOutputs]:
        """Like :meth:`predict` but with given text features (e.g. learned embeddings).

        Args:
            features: from :meth:`encode_images` (B images).
            text: K text rows; ``embeds`` (K, L, D) may require grad.
            prompt_ids: which text rows to score (default all K, in order); ``prompt_index`` in the outputs
                refers to rows of ``text``.
            grad: run with autograd enabled so a loss on the outputs backpropagates into ``text.embeds``
                (SAM 3's parameters stay frozen); otherwise under ``torch.inference_mode``.

        Yields:
            :class:`ConceptOutputs` chunks of at most ``chunk_size`` rows, image-major.
        """
        if not isinstance(features, ImageFeatures):
            raise TypeError("features must come from Sam3Engine.encode_images(images); call it first")
        if text.embeds.ndim != 3 or text.attention_mask.shape != text.embeds.shape[:2]:
            raise ValueError(
                f"text.embeds must be (K, L, D) and attention_mask (K, L); got {tuple(text.embeds.shape)} "
                f"and {tuple(text.attention_mask.shape)}"
            )
        device = self.device
        if prompt_ids is None:
            pids = torch.arange(len(text), device=device)
        else:
            pids = torch.as_tensor(prompt_ids, dtype=torch.long, device=device)
            if pids.ndim != 1 or (len(pids) and (pids.min() < 0 or pids.max() >= len(text))):
                raise ValueError(f"prompt_ids must index the {len(text)} text rows")
        num_prompts = len(pids)
        total = features.num_images * num_prompts
        for start in range(0, total, self.chunk_size):
            rows = torch.arange(start, min(start + self.chunk_size, total), device=device)
            image_index = torch.div(rows, num_prompts, rounding_mode="floor")
            prompt_index = pids[rows % num_prompts]
            # Leave the grad context before yielding so it never leaks into the caller's code.
            with torch.enable_grad() if grad else torch.inference_mode():
                chunk = self._forward_rows(features, text, image_index, prompt_index)
            yield chunk

    def _forward_rows(
        self, features: ImageFeatures, text: TextFeatures, image_index: Tensor, prompt_index: Tensor
    ) -> ConceptOutputs:
        """One decoder forward for R rows: expand vision features to R rows and pick text rows."""
        vision = _select_rows(features.vision, image_index, features.num_images)
        embeds = text.embeds.to(device=self.device, dtype=self.dtype).index_select(0, prompt_index)
        mask = text.attention_mask.to(self.device).index_select(0, prompt_index)
        out = self.model(
            vision_embeds=vision,
            text_embeds=TextFeatures(embeds, mask).as_model_input(),
            attention_mask=mask,
        )
        presence_logits = out.presence_logits.float()  # (R, 1)
        return ConceptOutputs(
            image_index=image_index,
            prompt_index=prompt_index,
            mask_logits=out.pred_masks.float(),
            scores=out.pred_logits.float().sigmoid() * presence_logits.sigmoid(),
            boxes=out.pred_boxes.float(),
            presence=presence_logits.sigmoid()[:, 0],
            semantic_logits=out.semantic_seg.float()[:, 0],
        )
