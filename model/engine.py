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
* Vision and text batch sizes must match: rows are (image, prompt) pairs, ``chunk_size`` rows at a time.
  ``forward`` reads ``fpn_hidden_states[:-1]`` only (levels 0-2: the mask decoder's pixel decoder and,
  level 2, the DETR encoder), and of the position encodings only level 2 (DETR encoder). So per row the
  engine copies (``index_select``) FPN levels 0-2 only, and only when a chunk mixes images; a one-image
  chunk and the unread last level are zero-copy ``expand`` views. Position encodings do not depend on the
  image: one (1, C, h, w) tensor per level is expanded to every row. The mask decoder clones levels 0-2 per
  row itself (``_embed_pixels``), ~111 MB fp32 per row at 1008 px; nothing in the forward writes into its
  inputs (pinned by tests/test_engine.py: bit-identical to full per-row copies).

Precision (as Meta's predictor: fp32 weights, ``torch.autocast`` for the compute):

* Weights are always float32 (:func:`model.loader.load_sam3`). ``compute_dtype`` (bf16/fp16) only sets the
  ``torch.autocast`` every SAM 3 call runs under (:meth:`Sam3Engine.autocast`: vision, text, decoders).
  Autocast runs matmuls/convolutions/attention in half precision but keeps LayerNorm/GroupNorm and the
  residual streams in fp32 (CUDA autocast op lists); a full cast would run them in bf16.
* The FPN sine position encodings are recomputed in fp32 (the weights' dtype) after the vision encoder:
  transformers builds them in the FPN output's dtype, i.e. bf16 under autocast, where positions above 256
  are not even exact integers; Meta's ``PositionEmbeddingSine`` computes them in fp32.
* Not done: Meta's DETR decoder also runs its FFN with autocast disabled (``decoder.py forward_ffn``);
  transformers' ``Sam3DetrDecoderLayer`` has no such switch and this engine does not patch it.
* fp16 can overflow (bf16 has fp32's range): with fp16 every output is checked finite, else
  :class:`PrecisionError` says to use bf16 or fp32.
* Outputs (:class:`ConceptOutputs`) are float32 whatever the compute dtype.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import CLIPTokenizer, Sam3Model
from transformers.modeling_outputs import BaseModelOutputWithPooling

from model.loader import ModelLoadError, load_sam3, model_image_size, resolve_device, resolve_dtype
from model.vit_layers import capture_vit_layers, vit_layers

TEXT_MAX_LENGTH = 32  # SAM 3's CLIP text encoder has 32 position embeddings
# (image, prompt) rows per decoder pass unless told otherwise: written once, here; the chunk_size setting
# (utils/config/schema.py) takes it as its declared default.
DEFAULT_CHUNK_SIZE = 8
DEFAULT_BATCH_SIZE = 4  # images per vision-encoder pass: the batch_size setting's declared default
IMAGE_MEAN = 0.5
IMAGE_STD = 0.5


@dataclass
class ImageFeatures:
    """Vision-encoder output for a batch of images, reusable for any number of prompts.

    Attributes:
        vision: the ``Sam3VisionEncoderOutput`` of ``Sam3Model.get_vision_features`` for B images:
            ``fpn_hidden_states``, a tuple of 4 (B, C, h_l, w_l) maps (4x..1/2x the patch grid; compute
            dtype), ``fpn_position_encoding``, a tuple of 4 (1, C, h_l, w_l) maps in the weights' dtype (the
            same for every image), and ``last_hidden_state`` (B, N_patches, C_vit); model device.
        num_images: B.
        sizes: original (H, W) of each image, for resizing outputs back.
        patch_layers: outputs of the ViT blocks asked for with ``encode_images(patch_layers=...)``:
            ``{layer: (B, h, w, C_vit)}`` (h = w = image_size / patch_size), float16 on CUDA, else the
            compute dtype, on the model's device; empty when none were asked for.
    """

    vision: Any
    num_images: int
    sizes: list[tuple[int, int]]
    patch_layers: dict[int, Tensor] = field(default_factory=dict)


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

    @staticmethod
    def cat(parts: Sequence[ConceptOutputs]) -> ConceptOutputs:
        """Concatenate chunks along rows (e.g. ``ConceptOutputs.cat(list(engine.predict(...)))``)."""
        if not parts:
            raise ValueError("ConceptOutputs.cat needs at least one chunk")
        names = [f.name for f in fields(ConceptOutputs)]
        return ConceptOutputs(**{n: torch.cat([getattr(p, n) for p in parts]) for n in names})


class PrecisionError(ModelLoadError):
    """fp16 compute overflowed (non-finite outputs); a ``ModelLoadError`` so scripts print it as one line."""


def _rows_of(level: Tensor, image_index: Tensor) -> Tensor:
    """(B, C, h, w) -> (R, C, h, w) for rows of images ``image_index`` (R,): a view when all are one image."""
    first = int(image_index[0])
    if bool((image_index == first).all()):
        return level.narrow(0, first, 1).expand(len(image_index), *level.shape[1:])
    return level.index_select(0, image_index.to(level.device))


def _select_rows(vision: Any, image_index: Tensor, batch: int) -> Any:
    """The vision features of R (image, prompt) rows, copying only what ``Sam3Model.forward`` reads.

    Args:
        vision: ``Sam3VisionEncoderOutput`` of B images (see :class:`ImageFeatures`).
        image_index: (R,) int64 image of each row.
        batch: B, checked against every FPN level.

    Returns:
        A ``Sam3VisionEncoderOutput`` with ``fpn_hidden_states`` levels 0..n-2 of shape (R, C, h, w) (copies
        only when the rows span several images), the unread last level as a zero-copy stand-in (``forward``
        slices it off: ``fpn_hidden_states[:-1]``), and the image-independent position encodings expanded
        from one row; ``last_hidden_state`` is not carried (unused by ``forward``).
    """
    levels = tuple(vision.fpn_hidden_states)
    for level in levels:
        if level.ndim != 4 or level.shape[0] != batch:
            raise ValueError(f"FPN feature of shape {tuple(level.shape)} is not (B={batch}, C, h, w)")
    rows = len(image_index)
    *read, unread = levels
    return type(vision)(
        fpn_hidden_states=(
            *(_rows_of(level, image_index) for level in read),
            unread[:1].expand(rows, *unread.shape[1:]),
        ),
        fpn_position_encoding=tuple(
            pos[:1].expand(rows, *pos.shape[1:]) for pos in vision.fpn_position_encoding
        ),
    )


class Sam3Engine:
    """Frozen SAM 3 detector with an encode-once, predict-many API.

    Args:
        model: a ``Sam3Model`` (eval mode; its parameters should not require grad; float32 weights, as
            :func:`model.loader.load_sam3` gives, for the precision described in the module docstring).
        tokenizer: the matching ``CLIPTokenizer``.
        chunk_size: (image, prompt) rows per decoder forward; bounds peak memory.
        compute_dtype: ``"auto"`` (bf16 on a GPU with native bf16, else fp32: `model.loader.resolve_dtype`),
            fp32, bf16 or fp16: the ``torch.autocast`` dtype of every SAM 3 call (fp32 = no autocast).

    Counters ``vision_calls`` (images through the vision encoder) and ``text_calls`` (prompts through the
    text encoder) count work done over the engine's lifetime.
    """

    def __init__(
        self,
        model: Sam3Model,
        tokenizer: CLIPTokenizer,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        compute_dtype: str | torch.dtype = "auto",
    ) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.chunk_size = int(chunk_size)
        self.compute_dtype = resolve_dtype(compute_dtype, self.device)
        self.vision_calls = 0
        self.text_calls = 0
        self._text_cache: dict[str, tuple[Tensor, Tensor]] = {}  # prompt -> ((L, D) embeds, (L,) mask)

    @classmethod
    def from_pretrained(
        cls,
        model_path: str | Path,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> Sam3Engine:
        """Load a local facebook/sam3 folder (fp32 weights, :func:`model.loader.load_sam3`) and wrap it.

        ``dtype`` is the compute dtype (see ``compute_dtype`` of the class); a bad ``device``/``dtype`` is a
        :class:`~model.loader.ModelLoadError` raised before the weights are read.
        """
        try:
            compute_dtype = resolve_dtype(dtype, resolve_device(device))
        except ValueError as exc:
            raise ModelLoadError(str(exc)) from None
        model, tokenizer = load_sam3(model_path, device=device)
        return cls(model, tokenizer, chunk_size=chunk_size, compute_dtype=compute_dtype)

    @property
    def image_size(self) -> int:
        """Square input side S from the model config (1008 real, 224 tiny)."""
        return model_image_size(self.model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """Storage dtype of the weights (float32 from ``from_pretrained``); inputs are cast to it."""
        return next(self.model.parameters()).dtype

    def autocast(self) -> AbstractContextManager:
        """The context every SAM 3 call runs in: ``torch.autocast(compute_dtype)``, or nothing for fp32.

        Reusable by callers that run SAM 3 modules themselves; gradients into fp32 tensors stay fp32.
        """
        if self.compute_dtype == torch.float32:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.compute_dtype)

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
            # np.require copies only arrays torch cannot wrap (not C-contiguous, or read-only).
            x = torch.from_numpy(np.require(arr, requirements=("C", "W"))).to(self.device)
            x = x.permute(2, 0, 1)[None].float()
            if x.shape[-2:] != (size, size):
                x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
                x = x.round_().clamp_(0, 255)
            out.append(x)
        pixels = torch.cat(out) / 255.0
        return (pixels - IMAGE_MEAN) / IMAGE_STD

    def encode_images(
        self,
        images: Sequence[np.ndarray],
        inference_mode: bool = True,
        patch_layers: Sequence[int] = (),
        patch_pool: int = 1,
    ) -> ImageFeatures:
        """Run the vision encoder once on ``images`` (B arrays (H, W, 3) uint8 RGB).

        Runs under :meth:`autocast`, and ``torch.inference_mode`` unless ``inference_mode=False`` (then the
        features are ordinary tensors that :meth:`predict_text` with ``grad=True`` can build a graph on:
        gradients flow into text embeddings only; the vision pass itself records no gradients either way,
        SAM 3's parameters being frozen). The position encodings are replaced by one float32 row per level
        (see the module docstring). ``patch_layers`` (0-based ViT block indices) are captured in the same
        pass for the visual scores (model/visual.py) into ``ImageFeatures.patch_layers``: unit vectors
        averaged over ``patch_pool x patch_pool`` windows (`model.vit_layers.patch_features`).

        Raises:
            PrecisionError: the FPN outputs (fp16 compute) or the captured patch features (any dtype) hold
                inf/NaN.
        """
        pixel_values = self.preprocess(images).to(device=self.device, dtype=self.dtype)
        ctx = torch.inference_mode() if inference_mode else nullcontext()
        store = torch.float16 if self.device.type == "cuda" else None
        with ctx, capture_vit_layers(self.model, patch_layers, dtype=store, pool=patch_pool) as captured:
            with self.autocast():
                vision = self.model.get_vision_features(pixel_values=pixel_values)
            vision.fpn_position_encoding = self._position_encodings(vision.fpn_hidden_states)
        self._check_finite("the vision encoder", vision.fpn_hidden_states)
        self._check_finite("the ViT patch features", list(captured.values()), any_dtype=True)
        self.vision_calls += len(images)
        sizes = [(int(np.asarray(im).shape[0]), int(np.asarray(im).shape[1])) for im in images]
        return ImageFeatures(vision=vision, num_images=len(images), sizes=sizes, patch_layers=captured)

    @property
    def num_vit_layers(self) -> int:
        """Depth of the ViT (32 real, 2 tiny): valid ``patch_layers`` are 0..num_vit_layers - 1."""
        return len(vit_layers(self.model))

    @property
    def vit_grid(self) -> int:
        """Side of the ViT patch grid, image_size / patch_size (72 real, 16 tiny)."""
        backbone = self.model.config.vision_config.backbone_config
        return int(backbone.image_size) // int(backbone.patch_size)

    def _position_encodings(self, levels: Sequence[Tensor]) -> tuple[Tensor, ...]:
        """One (1, C, h, w) sine position encoding per FPN level (B, C, h, w): image-independent.

        The module and formula of transformers' vision neck, in the weights' dtype (float32 as loaded):
        without autocast the neck gives the same values; under autocast it computes them in half precision.
        """
        encode = self.model.vision_encoder.neck.position_encoding
        return tuple(encode(torch.Size((1, *level.shape[1:])), level.device, self.dtype) for level in levels)

    def _check_finite(self, what: str, tensors: Sequence[Tensor], any_dtype: bool = False) -> None:
        """Raise :class:`PrecisionError` when any of ``tensors`` has inf/NaN.

        Checked with fp16 compute only (bf16 and fp32 have fp32's range), unless `any_dtype`: the patch
        features feed nearest-neighbour searches where one NaN silently poisons every map of a category.
        """
        if self.compute_dtype != torch.float16 and not any_dtype:
            return
        if all(bool(torch.isfinite(t).all()) for t in tensors):
            return
        if self.compute_dtype == torch.float16:
            raise PrecisionError(
                f"{what} gave inf/NaN in fp16 (its range is too small for SAM 3 here): "
                "use --dtype bf16 (same speed on recent GPUs) or --dtype fp32"
            )
        raise PrecisionError(
            f"{what} gave inf/NaN with {str(self.compute_dtype).removeprefix('torch.')} compute: the weights "
            "or the input are broken; check the model folder (download facebook/sam3 again)"
        )

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
            with torch.no_grad(), self.autocast():
                embeds = self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
            embeds = embeds.pooler_output.to(self.dtype)
            self._check_finite("the text encoder", [embeds])
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
        grad: bool = False,
    ) -> Iterator[ConceptOutputs]:
        """Like :meth:`predict` but with given text features (e.g. learned embeddings).

        Args:
            features: from :meth:`encode_images` (B images).
            text: K text rows; ``embeds`` (K, L, D) may require grad.
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
        num_prompts = len(text)
        total = features.num_images * num_prompts
        for start in range(0, total, self.chunk_size):
            rows = torch.arange(start, min(start + self.chunk_size, total), device=device)
            image_index = torch.div(rows, num_prompts, rounding_mode="floor")
            prompt_index = rows % num_prompts
            # Leave the grad context before yielding so it never leaks into the caller's code.
            with torch.enable_grad() if grad else torch.inference_mode(), self.autocast():
                chunk = self._forward_rows(features, text, image_index, prompt_index)
            yield chunk

    def _forward_rows(
        self, features: ImageFeatures, text: TextFeatures, image_index: Tensor, prompt_index: Tensor
    ) -> ConceptOutputs:
        """One decoder forward for R rows (caller enters :meth:`autocast`): per-row vision, picked text."""
        vision = _select_rows(features.vision, image_index, features.num_images)
        embeds = text.embeds.to(device=self.device, dtype=self.dtype).index_select(0, prompt_index)
        mask = text.attention_mask.to(self.device).index_select(0, prompt_index)
        out = self.model(
            vision_embeds=vision,
            text_embeds=TextFeatures(embeds, mask).as_model_input(),
            attention_mask=mask,
        )
        self._check_finite(
            "the decoders",
            [out.pred_masks, out.pred_logits, out.presence_logits, out.pred_boxes, out.semantic_seg],
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
