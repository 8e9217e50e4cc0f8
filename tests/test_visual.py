"""model/visual.py: patch-level visual scores on constructed features whose answers are known."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from model.visual import (
    aggregate_neighbourhood,
    calibrate,
    fewshot_scores,
    fuse,
    mutual_scores,
    nearest_distance,
    normal_scale,
    select_layers,
)


def normal_images(n: int, h: int = 6, w: int = 6, c: int = 16, seed: int = 0) -> torch.Tensor:
    """(n, h, w, c) 'normal' images: one fixed texture of 4 prototype vectors plus noise drawn with `seed`."""
    protos = F.normalize(torch.randn(4, c, generator=torch.Generator().manual_seed(123)), dim=-1)
    gen = torch.Generator().manual_seed(seed)
    layout = torch.arange(h * w).remainder(4).view(h, w)
    base = protos[layout]  # (h, w, c)
    return base[None].repeat(n, 1, 1, 1) + 0.01 * torch.randn(n, h, w, c, generator=gen)


def plant(images: torch.Tensor, index: int, y: int, x: int, seed: int = 1) -> torch.Tensor:
    """A copy of `images` with one patch of image `index` replaced by a vector unlike any normal one."""
    out = images.clone()
    gen = torch.Generator().manual_seed(seed)
    out[index, y, x] = F.normalize(torch.randn(images.shape[-1], generator=gen), dim=-1) * 3
    return out


def brute_nearest(query: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    q, b = F.normalize(query, dim=-1), F.normalize(bank, dim=-1)
    return torch.cdist(q.double(), b.double()).amin(dim=1).float()


def test_select_layers_even_depths():
    assert select_layers(32) == [7, 15, 23, 31]
    assert select_layers(2) == [0, 1]
    assert select_layers(32, (1.0,)) == [31]
    with pytest.raises(ValueError, match="fractions"):
        select_layers(32, (0.0,))


def test_nearest_distance_matches_cdist_with_tiny_chunks():
    gen = torch.Generator().manual_seed(3)
    query, bank = torch.randn(37, 8, generator=gen), torch.randn(53, 8, generator=gen)
    expected = brute_nearest(query, bank)
    got = nearest_distance(F.normalize(query, dim=-1), F.normalize(bank, dim=-1), chunk_elements=7)
    assert torch.allclose(got, expected, atol=1e-5)


def test_identical_images_give_zero_distance():
    images = normal_images(3)
    scores = fewshot_scores(images[:1], images[:1], degrees=(1,))
    assert float(scores.abs().max()) < 1e-3  # only float rounding of sqrt(2 - 2 cos 0)
    mutual = mutual_scores(images[[0, 0, 0]], degrees=(1,))
    assert float(mutual.max()) < 1e-3


def test_planted_outlier_patch_gets_the_top_fewshot_score():
    refs = normal_images(2, seed=0)
    test = plant(normal_images(2, seed=5), index=1, y=2, x=4)
    scores = fewshot_scores(test, refs, degrees=(1, 3))
    flat_argmax = int(scores.flatten().argmax())
    assert divmod(flat_argmax, 36) == (1, 2 * 6 + 4)
    assert float(scores[0].max()) < 0.2 < float(scores[1, 2, 4])


def test_mutual_scoring_finds_a_defect_repeated_in_two_of_eight_images():
    images = normal_images(8, seed=2)
    images = plant(plant(images, index=3, y=1, x=1, seed=9), index=6, y=4, x=2, seed=9)  # the same defect
    scores = mutual_scores(images, fraction=0.3, degrees=(1,))
    # keep = int(0.3 * 7) = 2 smallest of 7 distances: the twin's copy is only one of them
    assert float(scores[3, 1, 1]) > 0.4 and float(scores[6, 4, 2]) > 0.4  # (0 + ~0.97) / 2
    normal = scores.clone()
    normal[3, 1, 1] = normal[6, 4, 2] = 0
    assert float(normal.max()) < 0.2
    # with the plain minimum (fraction so small that keep = 1) the twin hides the defect
    hidden = mutual_scores(images, fraction=0.01, degrees=(1,))
    assert float(hidden[3, 1, 1]) < 0.2


def test_mutual_scoring_equals_a_brute_force_reference():
    gen = torch.Generator().manual_seed(4)
    feats = torch.randn(5, 3, 4, 6, generator=gen)
    got = mutual_scores(feats, fraction=0.5, degrees=(1,))
    x = F.normalize(feats, dim=-1).flatten(1, 2)
    expected = torch.empty(5, 12)
    for i in range(5):
        d = torch.stack([brute_nearest(x[i], x[j]) for j in range(5) if j != i])  # (4, P)
        expected[i] = d.sort(dim=0).values[:2].mean(dim=0)
    assert torch.allclose(got.flatten(1), expected, atol=1e-5)


def test_mutual_scoring_needs_two_images():
    with pytest.raises(ValueError, match="at least two images"):
        mutual_scores(normal_images(1))


def test_neighbourhood_average_of_a_constant_field_is_unchanged():
    vec = F.normalize(torch.randn(5), dim=0)
    field = vec.expand(1, 4, 4, 5).clone()
    out = aggregate_neighbourhood(field, 3)
    assert torch.allclose(out, field, atol=1e-6)
    with pytest.raises(ValueError, match="odd"):
        aggregate_neighbourhood(field, 2)


def test_neighbourhood_average_corner_uses_only_inside_patches():
    field = torch.zeros(1, 3, 3, 2)
    field[..., 0] = 1.0
    field[0, 1, 1] = torch.tensor([0.0, 1.0])  # the centre points elsewhere
    out = aggregate_neighbourhood(field, 3)
    # corner (0, 0) window: 3 patches (1, 0) and the centre (0, 1) -> mean (0.75, 0.25), renormalised
    expected = F.normalize(torch.tensor([0.75, 0.25]), dim=0)
    assert torch.allclose(out[0, 0, 0], expected, atol=1e-6)


def test_calibration_and_fusion_known_values():
    centre, spread = normal_scale(torch.arange(101, dtype=torch.float32), quantile=0.9)
    assert centre == 50.0 and math.isclose(spread, 40.0, rel_tol=1e-6)
    cal = calibrate(torch.tensor([0.0, 50.0, 90.0, 130.0, 500.0]), centre, spread)
    assert cal.tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]
    fused = fuse(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), 0.25)
    assert fused.tolist() == [0.75, 0.25]
    assert fuse(torch.tensor([0.3]), torch.tensor([0.9]), 0.0).tolist() == pytest.approx([0.3])
    with pytest.raises(ValueError, match="visual_weight"):
        fuse(torch.tensor([0.3]), torch.tensor([0.9]), 1.5)


def test_capture_vit_layers_in_the_single_vision_pass(tiny_engine):
    from model.vit_layers import capture_vit_layers, vit_layers

    model = tiny_engine.model
    pixels = torch.zeros(2, 3, tiny_engine.image_size, tiny_engine.image_size)
    last = len(vit_layers(model)) - 1
    with capture_vit_layers(model, [0, last]) as captured, torch.inference_mode():
        vision = model.get_vision_features(pixel_values=pixels)
    assert sorted(captured) == [0, last]
    grid = tiny_engine.image_size // model.config.vision_config.backbone_config.patch_size
    assert captured[0].shape == (2, grid, grid, vision.last_hidden_state.shape[-1])
    assert torch.equal(captured[last].flatten(1, 2), vision.last_hidden_state)  # the last block = ViT output
    assert not any(layer._forward_hooks for layer in vit_layers(model))  # hooks removed on exit
    with pytest.raises(ValueError, match="out of range"), capture_vit_layers(model, [99]):
        pass


def test_engine_captures_patch_layers_without_a_second_vision_pass(tiny_sam3_dir):
    import numpy as np

    from model import Sam3Engine

    engine = Sam3Engine.from_pretrained(tiny_sam3_dir, device="cpu", dtype="fp32")
    images = [np.full((40, 50, 3), v, dtype=np.uint8) for v in (10, 200)]
    plain = engine.encode_images(images)
    with_layers = engine.encode_images(images, patch_layers=[0, engine.num_vit_layers - 1])
    assert engine.vision_calls == 4  # two batches of two images: one pass each, layers or not
    assert plain.patch_layers == {}
    last = with_layers.patch_layers[engine.num_vit_layers - 1]
    assert torch.equal(last.flatten(1, 2), with_layers.vision.last_hidden_state)
    for a, b in zip(plain.vision.fpn_hidden_states, with_layers.vision.fpn_hidden_states, strict=True):
        assert torch.equal(a, b)  # capturing changes nothing the text path reads


def test_reference_bank_calibrates_on_its_own_normal_images():
    from model.visual import ReferenceBank

    refs = {0: normal_images(3, seed=0), 5: normal_images(3, seed=1)}
    bank = ReferenceBank(refs, degrees=(1,))
    assert bank.num_references == 3 and 0 < bank.spread < 0.2  # leave-one-out distances of normal noise
    test = plant(normal_images(2, seed=7), index=0, y=3, x=3)
    cal = bank.calibrated({0: test, 5: test})
    assert cal.shape == (2, 6, 6) and float(cal.min()) >= 0 and float(cal.max()) <= 1
    assert float(cal[0, 3, 3]) == 1.0  # far beyond anything normal
    assert float((cal[1] > 0.5).float().mean()) < 0.1  # a normal image stays mostly below the normal quantile
    with pytest.raises(ValueError, match="lack the reference layers"):
        bank.score({0: test})


def test_reference_bank_with_one_shot_uses_half_against_half():
    from model.visual import ReferenceBank

    bank = ReferenceBank({0: normal_images(1, seed=0)}, degrees=(1,))
    assert bank.num_references == 1 and bank.spread > 0
    test = plant(normal_images(1, seed=3), index=0, y=1, x=2)
    assert int(bank.score({0: test}).flatten().argmax()) == 1 * 6 + 2


def test_mutual_map_is_calibrated_on_the_test_set():
    from model.visual import mutual_map

    images = plant(normal_images(6, seed=2), index=4, y=5, x=0)
    cal = mutual_map({1: images, 3: images}, fraction=0.3, degrees=(1,))
    assert cal.shape == (6, 6, 6)
    assert float(cal[4, 5, 0]) == 1.0
    assert float((cal > 0.5).float().mean()) < 0.05
