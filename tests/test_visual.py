"""model/visual.py: patch-level visual scores on constructed features whose answers are known."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from model.fusion import fuse
from model.visual import (
    aggregate_neighbourhood,
    calibrate,
    fewshot_scores,
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


def expected_calibration(z: float) -> float:
    """The documented formula, written out with math: x = softplus(4 z) / 4, v = x^2 / (1 + x^2)."""
    x = math.log1p(math.exp(4 * z)) / 4
    return x * x / (1 + x * x)


def test_calibration_known_values_and_fusion():
    centre, spread = normal_scale(torch.arange(101, dtype=torch.float32), quantile=0.9)
    assert centre == 50.0 and math.isclose(spread, 40.0, rel_tol=1e-6)
    raw = [0.0, 50.0, 90.0, 130.0, 500.0]
    cal = calibrate(torch.tensor(raw), centre, spread)
    assert cal.tolist() == pytest.approx([expected_calibration((r - 50) / 40) for r in raw], rel=1e-5)
    assert cal[2] == pytest.approx(0.502, abs=1e-3)  # the normal quantile lands at ~0.5
    fused = fuse(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), 0.25)
    assert fused.tolist() == [0.75, 0.25]
    assert fuse(torch.tensor([0.3]), torch.tensor([0.9]), 0.0).tolist() == pytest.approx([0.3])
    with pytest.raises(ValueError, match="visual_weight"):
        fuse(torch.tensor([0.3]), torch.tensor([0.9]), 1.5)


def test_calibration_keeps_every_order_strong_defects_and_normal_patches_alike():
    """Old clip(0.5 (s - m) / spread, 0, 1): z = 3 and z = 8 both became 1, every z < 0 became 0."""
    z = torch.cat([torch.linspace(-2, 0, 50), torch.tensor([1.0, 3.0, 8.0, 30.0, 300.0])])
    cal = calibrate(z, 0.0, 1.0)
    assert bool((cal[1:] > cal[:-1]).all())  # strictly increasing: no two patches tie
    assert float(cal.max()) < 1.0 and float(cal.min()) > 0.0
    assert len(set(cal[:50].tolist())) == 50  # below the median: ranked, not all one value


def test_fusion_strong_visual_beats_weak_text_and_the_reverse():
    """Default weight 0.5. Patches: (text, visual z): a weak text peak, a strong visual defect, a stronger
    one with the same text, a strong text peak, a weak visual defect."""
    text = torch.tensor([0.3, 0.0, 0.0, 0.95, 0.0])
    visual = calibrate(torch.tensor([0.0, 5.0, 12.0, 0.0, 1.0]), 0.0, 1.0)
    fused = fuse(text, visual, 0.5)
    weak_text, strong_visual, stronger_visual, strong_text, weak_visual = fused.tolist()
    assert strong_visual > weak_text  # a strong visual defect outranks a weak text peak
    assert strong_text > weak_visual  # and a strong text peak a weak visual defect
    assert stronger_visual > strong_visual  # among defects the stronger stays stronger


def test_half_precision_winners_are_compared_in_float32():
    """A near duplicate at distance 0.02: fp16 similarities alone are off by up to ~1e-2 there."""
    gen = torch.Generator().manual_seed(0)
    bank = F.normalize(torch.randn(300, 64, generator=gen), dim=-1)
    query = F.normalize(bank[:40] + 0.0025 * torch.randn(40, 64, generator=gen), dim=-1)
    exact = brute_nearest(query, bank)
    half = nearest_distance(query.half(), bank.half(), dtype=torch.float16)
    assert float(exact.min()) > 0.005
    assert torch.allclose(half, exact, rtol=2e-3, atol=2e-4)
    plain = (2 - 2 * (query.half() @ bank.half().T).amax(dim=1).float()).clamp(min=0).sqrt()
    assert float((plain - exact).abs().max()) > 5 * float((half - exact).abs().max())


def test_normal_quantile_samples_uniformly_beyond_the_limit(monkeypatch: pytest.MonkeyPatch):
    """Sorted input: the first 2^k values alone would all be 0; a uniform sample sees the 1s."""
    import model.visual as visual

    monkeypatch.setattr(visual, "QUANTILE_SAMPLE", 1000)
    values = torch.cat([torch.zeros(2000), torch.ones(8000)])
    centre, spread = visual.normal_scale(values, quantile=0.1)
    assert centre == 1.0 and spread == 1e-6  # the 10 % quantile of the whole set is 0 ... or 1
    lo, _ = visual.normal_scale(values[torch.randperm(10000)], quantile=0.5)
    assert lo == 1.0
    assert visual.normal_scale(values, quantile=0.1) == (centre, spread)  # seeded: repeatable


def test_image_rescoring_hand_case():
    """Three images: 0 and 1 alike (cos 0.8), 2 apart (cos 0 with both). k = 2: 0 <- (1 s0 + .8 s1) / 1.8."""
    from model.mutual import rescore_images

    desc = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.0, 0.0, 1.0]])
    scores = torch.tensor([0.9, 0.0, 0.5])
    assert rescore_images(scores, desc, [1]).tolist() == pytest.approx([0.9, 0.0, 0.5])
    two = rescore_images(scores, desc, [2])
    assert two.tolist() == pytest.approx([0.9 / 1.8, 0.72 / 1.8, 0.5], abs=1e-6)  # 2's neighbour has weight 0
    both = rescore_images(scores, desc, [1, 2])
    assert both.tolist() == pytest.approx(((torch.tensor([0.9, 0.0, 0.5]) + two) / 2).tolist(), abs=1e-6)


def test_mutual_partners_and_shares():
    from model.visual import mutual_partners

    images = plant(normal_images(7, seed=2), index=4, y=5, x=0)
    full = mutual_scores(images, fraction=0.5, degrees=(1, 3))
    share = mutual_scores(images, fraction=0.5, degrees=(1, 3), images=[5, 1])
    assert torch.equal(share, full[[5, 1]])  # a process's share equals those rows of the whole
    assert torch.equal(mutual_scores(images, 0.5, (1, 3), partners=6), full)  # 6 = all others
    some = mutual_partners(7, 4, 3)
    assert len(some) == 3 and 4 not in some and some == mutual_partners(7, 4, 3)
    few = mutual_scores(images, fraction=0.5, degrees=(1,), partners=3)
    assert int(few.flatten(1).amax(dim=1).argmax()) == 4


def test_patch_features_normalise_before_the_half_precision_cast_and_pool():
    from model.vit_layers import patch_features

    big = torch.full((1, 4, 4, 8), 1.0e6)  # a residual stream beyond fp16's range (65504)
    assert big.half().isinf().all()
    unit = patch_features(big, pool=2, dtype=torch.float16)
    assert unit.shape == (1, 2, 2, 8) and bool(torch.isfinite(unit).all())
    assert torch.allclose(unit.float().norm(dim=-1), torch.ones(1, 2, 2), atol=1e-3)
    x = torch.zeros(1, 2, 2, 2)
    x[0, 0, 0, 0] = x[0, 0, 1, 0] = x[0, 1, 0, 0] = 5.0  # three patches point along e0
    x[0, 1, 1, 1] = 0.1  # one along e1, short: it counts as much once normalised
    pooled = patch_features(x, pool=2)
    assert torch.allclose(pooled[0, 0, 0], F.normalize(torch.tensor([0.75, 0.25]), dim=0), atol=1e-6)


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
    # the last block = the ViT output, as unit vectors
    assert torch.allclose(captured[last].flatten(1, 2), F.normalize(vision.last_hidden_state, dim=-1))
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
    assert torch.allclose(last.flatten(1, 2), F.normalize(with_layers.vision.last_hidden_state, dim=-1))
    for a, b in zip(plain.vision.fpn_hidden_states, with_layers.vision.fpn_hidden_states, strict=True):
        assert torch.equal(a, b)  # capturing changes nothing the text path reads


def test_reference_bank_calibrates_on_its_own_normal_images():
    from model.visual import ReferenceBank

    refs = {0: normal_images(3, seed=0), 5: normal_images(3, seed=1)}
    bank = ReferenceBank(refs, degrees=(1,))
    assert bank.num_references == 3 and 0 < bank.spread < 0.2  # leave-one-out distances of normal noise
    test = plant(normal_images(2, seed=7), index=0, y=3, x=3)
    cal = bank.calibrated({0: test, 5: test})
    assert cal.shape == (2, 6, 6) and float(cal.min()) >= 0 and float(cal.max()) < 1
    assert float(cal[0, 3, 3]) > 0.95 and int(cal.flatten().argmax()) == 3 * 6 + 3  # far beyond normal
    assert float((cal[1] > 0.5).float().mean()) < 0.1  # a normal image stays mostly below the normal quantile
    with pytest.raises(ValueError, match="lack the reference layers"):
        bank.score({0: test})


def test_reference_bank_with_one_shot_uses_half_against_half():
    from model.visual import ReferenceBank

    bank = ReferenceBank({0: normal_images(1, seed=0)}, degrees=(1,))
    assert bank.num_references == 1 and bank.spread > 0
    test = plant(normal_images(1, seed=3), index=0, y=1, x=2)
    assert int(bank.score({0: test}).flatten().argmax()) == 1 * 6 + 2


def test_mutual_scores_calibrated_on_the_test_set():
    from model.visual import calibrate, mutual_raw, normal_scale

    images = plant(normal_images(6, seed=2), index=4, y=5, x=0)
    raw = mutual_raw({1: images, 3: images}, fraction=0.3, degrees=(1,))
    cal = calibrate(raw, *normal_scale(raw))
    assert cal.shape == (6, 6, 6)
    assert float(cal[4, 5, 0]) > 0.95 and int(cal.flatten().argmax()) == 4 * 36 + 5 * 6
    assert float((cal > 0.5).float().mean()) < 0.05


def test_non_finite_patch_features_are_a_precision_error(tiny_sam3_dir):
    """A ViT block giving inf (as fp16 compute can) stops with the one-line PrecisionError, any dtype."""
    import numpy as np

    from model import Sam3Engine
    from model.engine import PrecisionError
    from model.vit_layers import vit_layers

    engine = Sam3Engine.from_pretrained(tiny_sam3_dir, device="cpu", dtype="fp32")
    block = vit_layers(engine.model)[0]
    handle = block.register_forward_hook(lambda _m, _i, out: out * float("inf"))
    try:
        with pytest.raises(PrecisionError, match="the ViT patch features gave inf/NaN"):
            engine.encode_images([np.zeros((32, 32, 3), np.uint8)], patch_layers=[0])
    finally:
        handle.remove()


def test_rotated_copies_of_a_reference_stay_out_of_its_leave_one_out():
    """Bank A, B, A', B' (A' a copy standing for A turned): A is calibrated against B and B' only."""
    from model.visual import ReferenceBank

    a, b = normal_images(1, seed=0), normal_images(1, seed=1)
    plain = ReferenceBank({0: torch.cat([a, b])}, degrees=(1,))
    grouped = ReferenceBank({0: torch.cat([a, b, a, b])}, degrees=(1,), sources=[0, 1, 0, 1])
    assert grouped.num_references == 2 and grouped.spread == pytest.approx(plain.spread, rel=1e-5)
    ungrouped = ReferenceBank({0: torch.cat([a, b, a, b])}, degrees=(1,))  # each copy meets its twin
    assert ungrouped.spread < 0.1 * plain.spread  # float rounding of distance 0 only
    with pytest.raises(ValueError, match="3 reference sources for 4 bank images"):
        ReferenceBank({0: torch.cat([a, b, a, b])}, sources=[0, 1, 0])


def test_mutual_raw_reports_progress_in_images_without_changing_the_scores():
    """Two layers x two degrees = 4 passes over the 3 scored images: one report per image's worth."""
    from model.visual import mutual_raw

    features = {layer: normal_images(5, seed=layer) for layer in (1, 2)}
    reports: list[tuple[int, int]] = []
    scores = mutual_raw(features, 0.5, (1, 3), images=[0, 2, 4], progress=lambda *r: reports.append(r))
    assert reports == [(1, 3), (2, 3), (3, 3)]
    assert torch.equal(scores, mutual_raw(features, 0.5, (1, 3), images=[0, 2, 4]))
