"""model/engine.py: preprocessing, feature reuse equals full forwards, chunking, text cache, gradients."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch

from model import ConceptOutputs, ImageFeatures, Sam3Engine, TextFeatures
from model.engine import IMAGE_MEAN, IMAGE_STD, _select_rows
from tests.fixtures_data import SHARED_DATA
from tests.tolerances import assert_close

PROMPTS = ["crack", "a scratch on the metal surface", "hole"]


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [
        rng.integers(0, 256, (90, 130, 3), dtype=np.uint8),
        rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
    ]


@pytest.fixture(scope="module")
def features(tiny_engine: Sam3Engine, images: list[np.ndarray]) -> ImageFeatures:
    return tiny_engine.encode_images(images)


def _all(engine: Sam3Engine, features: ImageFeatures, prompts: list[str]) -> ConceptOutputs:
    return ConceptOutputs.cat(list(engine.predict(features, prompts)))


def test_preprocess_constant_image(tiny_engine: Sam3Engine) -> None:
    img = np.full((50, 70, 3), (0, 255, 51), dtype=np.uint8)
    x = tiny_engine.preprocess([img])
    assert x.shape == (1, 3, 224, 224) and x.dtype == torch.float32
    # (v / 255 - 0.5) / 0.5: 0 -> -1, 255 -> 1, 51 -> -0.6
    expected = torch.tensor([-1.0, 1.0, -0.6]).view(1, 3, 1, 1).expand_as(x)
    torch.testing.assert_close(x, expected, atol=1e-6, rtol=0)


def test_preprocess_matches_antialiased_downscale(tiny_engine: Sam3Engine) -> None:
    """448 -> 224 with antialiased bilinear (PIL-style triangle filter stretched 2x): every output pixel is
    the separable [1, 3, 3, 1] / 8 average of source pixels 2i-1..2i+2 (checked on interior pixels)."""
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (448, 448, 3), dtype=np.uint8).astype(np.float64)
    w = np.array([1, 3, 3, 1]) / 8
    rows = sum(w[t] * img[2 * np.arange(1, 223) - 1 + t] for t in range(4))  # (222, 448, 3)
    both = sum(w[t] * rows[:, 2 * np.arange(1, 223) - 1 + t] for t in range(4))  # (222, 222, 3)
    expected = torch.from_numpy((both / 255 - 0.5) / 0.5).permute(2, 0, 1).float()
    x = tiny_engine.preprocess([img.astype(np.uint8)])[0, :, 1:223, 1:223]
    assert (x - expected).abs().max().item() <= 1 / 255 + 1e-6  # rounding to a grey level: <= 0.5 level


def test_preprocess_rejects_bad_images(tiny_engine: Sam3Engine) -> None:
    with pytest.raises(ValueError, match=r"expected \(H, W, 3\) uint8 RGB"):
        tiny_engine.preprocess([np.zeros((10, 10), dtype=np.uint8)])
    with pytest.raises(ValueError, match="uint8"):
        tiny_engine.preprocess([np.zeros((10, 10, 3), dtype=np.float32)])


def test_preprocess_vs_transformers_processor(tiny_engine: Sam3Engine) -> None:
    pytest.importorskip("torchvision", reason="Sam3ImageProcessor needs torchvision (not installed here)")
    from transformers import Sam3ImageProcessor

    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)
    proc = Sam3ImageProcessor(size={"height": 224, "width": 224})
    ref = proc(images=img, return_tensors="pt")["pixel_values"]
    assert (tiny_engine.preprocess([img]) - ref).abs().max().item() <= 2 / 255 + 1e-5


def test_preprocessing_is_facebook_sam3s_processor_config() -> None:
    """What `preprocess` does is what facebook/sam3's processor_config.json asks for: a 1008 x 1008 bilinear
    resize of the whole image (no aspect ratio kept, no padding, no crop), x / 255, mean = std = 0.5; the
    input side comes from config.json (1008 = 72 patches of 14 px), which `Sam3Engine.image_size` reads."""
    meta = SHARED_DATA / "sam3_hf_meta"
    if not (meta / "processor_config.json").is_file():
        pytest.skip(f"no facebook/sam3 processor_config.json in {meta}")
    processor = json.loads((meta / "processor_config.json").read_text())["image_processor"]
    assert processor["size"] == {"height": 1008, "width": 1008} and processor["resample"] == 2  # BILINEAR
    assert processor["do_resize"] and not (processor["do_pad"] or processor["do_center_crop"])
    assert processor["rescale_factor"] == pytest.approx(1 / 255)
    assert processor["image_mean"] == [IMAGE_MEAN] * 3 and processor["image_std"] == [IMAGE_STD] * 3
    backbone = json.loads((meta / "config.json").read_text())["detector_config"]["vision_config"]
    backbone = backbone["backbone_config"]
    assert backbone["image_size"] == 1008 and backbone["image_size"] // backbone["patch_size"] == 72


def test_image_features_metadata(features: ImageFeatures) -> None:
    assert features.num_images == 2
    assert features.sizes == [(90, 130), (224, 224)]
    assert features.vision.fpn_hidden_states[0].shape[0] == 2


def test_reuse_equals_full_forward(
    tiny_engine: Sam3Engine, features: ImageFeatures, images: list[np.ndarray]
) -> None:
    """Encoded-once features give the outputs of one full model forward per (image, prompt) pair."""
    out = _all(tiny_engine, features, PROMPTS)
    model, tok = tiny_engine.model, tiny_engine.tokenizer
    pixels = tiny_engine.preprocess(images)
    tokens = tok(PROMPTS, truncation=True, max_length=32, padding="max_length", return_tensors="pt")
    for r in range(len(images) * len(PROMPTS)):
        i, k = divmod(r, len(PROMPTS))
        with torch.no_grad():
            ref = model(
                pixel_values=pixels[i : i + 1],
                input_ids=tokens["input_ids"][k : k + 1],
                attention_mask=tokens["attention_mask"][k : k + 1],
            )
        expected = {
            "mask_logits": ref.pred_masks[0],
            "scores": ref.pred_logits[0].sigmoid() * ref.presence_logits[0].sigmoid(),
            "boxes": ref.pred_boxes[0],
            "presence": ref.presence_logits[0, 0].sigmoid(),
            "semantic_logits": ref.semantic_seg[0, 0],
        }
        for name, value in expected.items():
            assert_close(getattr(out, name)[r], value, f"{name} row {r}")  # batch of 2 vs batch of 1


def test_output_shapes_and_order(tiny_engine: Sam3Engine, features: ImageFeatures) -> None:
    out = _all(tiny_engine, features, PROMPTS)
    rows, q = 2 * len(PROMPTS), 20
    assert out.image_index.tolist() == [0, 0, 0, 1, 1, 1]
    assert out.prompt_index.tolist() == [0, 1, 2, 0, 1, 2]
    assert out.mask_logits.shape == (rows, q, 64, 64)
    assert out.scores.shape == (rows, q) and out.boxes.shape == (rows, q, 4)
    assert out.presence.shape == (rows,) and out.semantic_logits.shape == (rows, 64, 64)
    for f in fields(ConceptOutputs):
        value = getattr(out, f.name)
        assert value.dtype == (torch.int64 if f.name.endswith("_index") else torch.float32), f.name
    assert ((out.scores >= 0) & (out.scores <= out.presence[:, None] + 1e-6)).all()
    assert ((out.boxes >= 0) & (out.boxes <= 1)).all()


def test_chunking_invariance(tiny_sam3_dir: Path, features: ImageFeatures) -> None:
    one = Sam3Engine.from_pretrained(tiny_sam3_dir, device="cpu", dtype="fp32", chunk_size=1)
    seven = Sam3Engine.from_pretrained(tiny_sam3_dir, device="cpu", dtype="fp32", chunk_size=7)
    prompts = PROMPTS + ["stain"]  # 8 rows: chunks of 7 + 1
    chunks1, chunks7 = list(one.predict(features, prompts)), list(seven.predict(features, prompts))
    assert [len(c) for c in chunks1] == [1] * 8 and [len(c) for c in chunks7] == [7, 1]
    a, b = ConceptOutputs.cat(chunks1), ConceptOutputs.cat(chunks7)
    for f in fields(ConceptOutputs):
        assert_close(getattr(a, f.name), getattr(b, f.name), f.name)


def test_vision_encoded_once_text_cached(tiny_sam3_dir: Path, images: list[np.ndarray]) -> None:
    engine = Sam3Engine.from_pretrained(tiny_sam3_dir, device="cpu", dtype="fp32", chunk_size=2)
    calls = {"vision": 0, "text": 0}
    real_vision, real_text = engine.model.get_vision_features, engine.model.get_text_features

    def vision(*args, **kwargs):
        calls["vision"] += 1
        return real_vision(*args, **kwargs)

    def text(*args, **kwargs):
        calls["text"] += 1
        return real_text(*args, **kwargs)

    engine.model.get_vision_features, engine.model.get_text_features = vision, text
    features = engine.encode_images(images)
    list(engine.predict(features, ["crack", "hole", "crack"]))  # duplicate prompt: encoded once
    assert engine.text_calls == 2 and calls["text"] == 1  # one batched encoder call for 2 distinct prompts
    list(engine.predict(features, ["hole", "crack"]))
    assert engine.text_calls == 2 and calls["text"] == 1  # all cached
    list(engine.predict(features, ["crack", "dent"]))
    assert engine.text_calls == 3 and calls["text"] == 2  # only the new prompt
    assert engine.vision_calls == 2 and calls["vision"] == 1  # never recomputed by predict


def test_encode_text_rows(tiny_engine: Sam3Engine) -> None:
    text = tiny_engine.encode_text(["crack", "hole", "crack"])
    assert text.prompts == ("crack", "hole", "crack")
    assert text.embeds.shape == (3, 32, 32) and text.attention_mask.shape == (3, 32)
    torch.testing.assert_close(text.embeds[0], text.embeds[2])
    assert text.attention_mask[:, 0].all() and not text.attention_mask[:, -1].any()


def test_long_prompt_truncated_with_warning(tiny_engine: Sam3Engine, features: ImageFeatures) -> None:
    long_prompt = " ".join(["scratch"] * 40)
    with pytest.warns(UserWarning, match="scratch scratch.*truncated"):
        text = tiny_engine.encode_text([long_prompt])
    assert text.attention_mask.shape == (1, 32) and text.attention_mask.all()
    assert len(list(tiny_engine.predict(features, [long_prompt]))) == 1  # runs, no error in the model


def test_gradients_reach_learned_embeddings_only(tiny_engine: Sam3Engine, features: ImageFeatures) -> None:
    base = tiny_engine.encode_text(["crack", "hole"])
    learned = TextFeatures(base.embeds.clone().requires_grad_(True), base.attention_mask)
    loss = torch.zeros(())
    for chunk in tiny_engine.predict_text(features, learned, grad=True):
        loss = loss + chunk.semantic_logits.mean() + chunk.scores.sum() + chunk.mask_logits.mean()
    loss.backward()
    assert learned.embeds.grad is not None and learned.embeds.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in tiny_engine.model.parameters())
    assert not torch.is_inference_mode_enabled() and torch.is_grad_enabled()


def test_predict_without_features_says_what_to_do(tiny_engine: Sam3Engine) -> None:
    with pytest.raises(TypeError, match="encode_images"):
        next(tiny_engine.predict(None, ["crack"]))  # type: ignore[arg-type]


def _copy_rows(vision, index: torch.Tensor):
    """What the engine used to pass: every FPN level and position encoding copied per row."""
    return type(vision)(
        fpn_hidden_states=tuple(t.index_select(0, index) for t in vision.fpn_hidden_states),
        fpn_position_encoding=tuple(t.index_select(0, index) for t in vision.fpn_position_encoding),
    )


def test_per_row_features_are_bit_identical_to_full_copies(
    tiny_sam3_dir: Path, images: list[np.ndarray]
) -> None:
    """Chunks of 3 rows over 2 images x 2 prompts: one chunk mixes images (copied), one holds one (views)."""
    engine = Sam3Engine.from_pretrained(tiny_sam3_dir, device="cpu", dtype="fp32", chunk_size=3)
    features = engine.encode_images(images)
    text = engine.encode_text(["crack", "hole"])
    with torch.inference_mode():
        direct = engine.model.get_vision_features(pixel_values=engine.preprocess(images))
    for chunk in engine.predict_text(features, text):
        with torch.inference_mode():
            ref = engine.model(
                vision_embeds=_copy_rows(direct, chunk.image_index),
                text_embeds=TextFeatures(text.embeds[chunk.prompt_index], None).as_model_input(),
                attention_mask=text.attention_mask[chunk.prompt_index],
            )
        assert torch.equal(chunk.mask_logits, ref.pred_masks) and torch.equal(chunk.boxes, ref.pred_boxes)
        assert torch.equal(chunk.semantic_logits, ref.semantic_seg[:, 0])
        assert torch.equal(chunk.scores, ref.pred_logits.sigmoid() * ref.presence_logits.sigmoid())


def test_rows_copy_only_what_the_forward_reads(features: ImageFeatures) -> None:
    """Issue 8.7: position encodings and the unread last FPN level are views (stride 0), never per-row copies;
    the levels read are copied only when a chunk mixes images."""
    vision = features.vision
    one = _select_rows(vision, torch.tensor([1, 1, 1]), 2)
    mixed = _select_rows(vision, torch.tensor([0, 1, 1]), 2)
    for rows in (one, mixed):
        assert rows.last_hidden_state is None
        for pos in (*rows.fpn_position_encoding, rows.fpn_hidden_states[-1]):
            assert pos.shape[0] == 3 and pos.stride(0) == 0
        for got, pos in zip(rows.fpn_position_encoding, vision.fpn_position_encoding, strict=True):
            assert torch.equal(got[2], pos[0])
    read = zip(
        vision.fpn_hidden_states[:-1], one.fpn_hidden_states[:-1], mixed.fpn_hidden_states[:-1], strict=True
    )
    for level, got_one, got_mixed in read:
        assert got_one.stride(0) == 0 and torch.equal(got_one[0], level[1])
        assert got_mixed.stride(0) > 0 and torch.equal(got_mixed, level[[0, 1, 1]])


def test_last_fpn_level_is_not_read(tiny_engine: Sam3Engine, features: ImageFeatures) -> None:
    """Sam3Model.forward drops fpn_hidden_states[-1]; if a transformers update reads it, this fails."""
    vision = features.vision
    poisoned = type(vision)(
        fpn_hidden_states=(
            *vision.fpn_hidden_states[:-1],
            torch.full_like(vision.fpn_hidden_states[-1], float("nan")),
        ),
        fpn_position_encoding=vision.fpn_position_encoding,
    )
    nan_features = ImageFeatures(vision=poisoned, num_images=features.num_images, sizes=features.sizes)
    a, b = _all(tiny_engine, features, PROMPTS), _all(tiny_engine, nan_features, PROMPTS)
    for f in fields(ConceptOutputs):
        assert torch.equal(getattr(a, f.name), getattr(b, f.name)), f.name
