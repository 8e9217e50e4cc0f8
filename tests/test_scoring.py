"""Tests for model/scoring.py on hand-built SAM 3-shaped outputs (known masks and scores)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.scoring import (
    aggregate_prompts,
    box_nms,
    combine_sources,
    dilate_mask,
    image_score,
    instance_map,
    object_keep,
    object_mask,
    outside_weights,
    semantic_map,
)

BIG = 20.0  # a mask logit whose sigmoid is 1 within 3e-9


def box_logits(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
    """(h, w) logits: +BIG inside rows y0:y1, cols x0:x1, -BIG elsewhere."""
    logits = torch.full((h, w), -BIG)
    logits[y0:y1, x0:x1] = BIG
    return logits


def test_instance_map_is_max_of_score_times_mask():
    masks = torch.stack([box_logits(4, 4, 0, 2, 0, 2), box_logits(4, 4, 1, 3, 1, 3)])[None]  # (1, 2, 4, 4)
    scores = torch.tensor([[0.6, 0.9]])
    out = instance_map(masks, scores)
    expected = torch.zeros(1, 4, 4)
    expected[0, 0:2, 0:2] = 0.6
    expected[0, 1:3, 1:3] = 0.9  # overlap pixel (1, 1) takes the max
    assert out.shape == (1, 4, 4)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_instance_map_keep():
    masks = torch.stack([box_logits(4, 4, 0, 2, 0, 2), box_logits(4, 4, 1, 3, 1, 3)])[None]
    scores = torch.tensor([[0.6, 0.9]])
    only_first = instance_map(masks, scores, keep=torch.tensor([[True, False]]))
    assert only_first[0, 2, 2] < 1e-6 and abs(float(only_first[0, 0, 0]) - 0.6) < 1e-6
    only_second = instance_map(masks, scores, keep=torch.tensor([[False, True]]))
    assert only_second[0, 0, 0] < 1e-6 and abs(float(only_second[0, 2, 2]) - 0.9) < 1e-6
    none_left = instance_map(masks, scores, keep=torch.tensor([[False, False]]))
    assert torch.count_nonzero(none_left) == 0


def test_instance_map_of_nothing_found_is_zero():
    masks = torch.randn(2, 5, 8, 8)
    assert torch.count_nonzero(instance_map(masks, torch.zeros(2, 5))) == 0
    empty = instance_map(torch.zeros(3, 0, 8, 8), torch.zeros(3, 0))
    assert empty.shape == (3, 8, 8) and torch.count_nonzero(empty) == 0


def test_semantic_map_is_presence_weighted():
    logits = torch.zeros(2, 3, 3)  # sigmoid = 0.5
    out = semantic_map(logits, torch.tensor([1.0, 0.2]))
    torch.testing.assert_close(out, torch.stack([torch.full((3, 3), 0.5), torch.full((3, 3), 0.1)]))


def test_semantic_map_keep_zeroes_dropped_rows_only():
    logits = torch.zeros(2, 2, 2)  # sigmoid 0.5 everywhere
    out = semantic_map(logits, torch.tensor([1.0, 0.8]), keep=torch.tensor([False, True]))
    torch.testing.assert_close(out, torch.stack([torch.zeros(2, 2), torch.full((2, 2), 0.4)]))


def test_object_keep_on_semantic_logits_drops_whole_object_rows():
    """The detector treats each semantic map as one instance: coverage of logit > 0 over the object."""
    obj = torch.zeros(4, 4, dtype=torch.bool)
    obj[:2] = True  # 8 object pixels
    whole, part = torch.full((4, 4), 5.0), torch.full((4, 4), -5.0)
    part[0, :2] = 5.0  # 2 of 8 object pixels = 0.25
    keep = object_keep(torch.stack([whole, part])[:, None], obj, max_object_fraction=0.7)
    assert keep.tolist() == [[False], [True]]


def test_combine_sources():
    inst = torch.tensor([[0.2, 0.8]])
    sem = torch.tensor([[0.5, 0.1]])
    assert torch.equal(combine_sources(inst, sem, "instance"), inst)
    assert torch.equal(combine_sources(inst, sem, "semantic"), sem)
    assert torch.equal(combine_sources(inst, sem, "both"), torch.tensor([[0.5, 0.8]]))
    with pytest.raises(ValueError, match="instance, semantic, both"):
        combine_sources(inst, sem, "all")


def test_aggregate_prompts():
    maps = torch.tensor([[[0.0, 1.0]], [[0.5, 0.0]]])  # (P=2, 1, 2)
    torch.testing.assert_close(aggregate_prompts(maps, "max"), torch.tensor([[0.5, 1.0]]))
    torch.testing.assert_close(aggregate_prompts(maps, "mean"), torch.tensor([[0.25, 0.5]]))
    with pytest.raises(ValueError):
        aggregate_prompts(maps, "median")
    with pytest.raises(ValueError):
        aggregate_prompts(torch.zeros(0, 2, 2))


def test_object_mask_threshold():
    prob = torch.tensor([[0.49, 0.5, 0.9]])
    assert object_mask(prob, 0.5).tolist() == [[False, True, True]]


def test_large_instance_covering_the_object_is_dropped():
    obj = torch.zeros(10, 10, dtype=torch.bool)
    obj[2:8, 2:8] = True  # 36 pixels
    whole = box_logits(10, 10, 1, 9, 1, 9)  # covers the whole object: coverage 1.0
    small = box_logits(10, 10, 3, 5, 3, 5)  # 4 / 36 of the object
    masks = torch.stack([whole, small])[None]
    keep = object_keep(masks, obj[None], max_object_fraction=0.7)
    assert keep.tolist() == [[False, True]]
    out = instance_map(masks, torch.tensor([[0.95, 0.5]]), keep=keep)
    assert abs(float(out.max()) - 0.5) < 1e-6  # the object-sized "defect" no longer dominates
    assert float(out[0, 1, 1]) < 1e-6


def test_coverage_at_exactly_the_fraction_is_kept():
    obj = torch.zeros(1, 4, 5, dtype=torch.bool)
    obj[0, :, :] = True  # 20 pixels
    half = box_logits(4, 5, 0, 2, 0, 5)[None, None]  # 10 / 20 = 0.5
    assert object_keep(half, obj, max_object_fraction=0.5).tolist() == [[True]]
    assert object_keep(half, obj, max_object_fraction=0.49).tolist() == [[False]]


def test_empty_object_keeps_everything():
    masks = torch.stack([box_logits(6, 6, 0, 6, 0, 6)])[None]
    keep = object_keep(masks, torch.zeros(1, 6, 6, dtype=torch.bool), max_object_fraction=0.1)
    assert keep.tolist() == [[True]]


def test_dilate_mask():
    mask = torch.zeros(20, 20, dtype=torch.bool)
    mask[10, 10] = True
    grown = dilate_mask(mask, 0.1)  # 2 pixels each side
    assert grown.sum() == 25 and grown[8:13, 8:13].all()
    assert torch.equal(dilate_mask(mask, 0.0), mask)


def test_outside_response_is_down_weighted_by_exactly_outside_weight():
    obj = torch.zeros(20, 20, dtype=torch.bool)
    obj[5:10, 5:10] = True
    weights = outside_weights(obj, dilation=0.1, outside_weight=0.2)
    amap = torch.full((20, 20), 0.8)
    out = amap * weights
    assert float(out[4, 4]) == pytest.approx(0.8)  # inside the dilated mask (2 px)
    assert float(out[3, 3]) == pytest.approx(0.8)
    assert float(out[2, 2]) == pytest.approx(0.8 * 0.2)  # just outside
    assert float(out[19, 19]) == pytest.approx(0.16)
    assert float(out[7, 7]) == pytest.approx(0.8)


def test_empty_object_leaves_the_map_unchanged():
    weights = outside_weights(torch.zeros(8, 8, dtype=torch.bool), dilation=0.1, outside_weight=0.2)
    assert torch.equal(weights, torch.ones(8, 8))


def test_image_score_variants():
    amap = np.zeros((10, 10), dtype=np.float32)
    amap[0, :4] = [1.0, 0.8, 0.6, 0.4]
    assert image_score(amap) == pytest.approx(1.0)
    assert image_score(amap, "topk_mean", topk=2) == pytest.approx(0.9)
    assert image_score(amap, "topk_mean", topk=4) == pytest.approx(0.7)
    assert image_score(amap, "topk_mean", topk=1000) == pytest.approx(2.8 / 100)
    assert image_score(torch.from_numpy(amap), "topk_mean", topk=3) == pytest.approx(0.8)
    assert image_score(amap, "instance", best_instance_score=0.42) == pytest.approx(0.42)
    with pytest.raises(ValueError, match="best_instance_score"):
        image_score(amap, "instance")
    with pytest.raises(ValueError, match="max, topk_mean, instance"):
        image_score(amap, "mean")


def test_bfloat16_inputs_give_float32_maps():
    masks = torch.zeros(1, 2, 4, 4, dtype=torch.bfloat16)
    out = instance_map(masks, torch.ones(1, 2, dtype=torch.bfloat16))
    assert out.dtype == torch.float32
    sem = semantic_map(torch.zeros(1, 4, 4, dtype=torch.bfloat16), torch.ones(1, dtype=torch.bfloat16))
    assert sem.dtype == torch.float32


def test_box_nms_keeps_the_best_of_overlapping_boxes():
    boxes = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # A
            [1.0, 0.0, 11.0, 10.0],  # overlaps A: IoU = 90 / 110 = 0.818
            [20.0, 20.0, 30.0, 30.0],  # far away
            [0.0, 0.0, 10.0, 5.0],  # inside A: IoU = 50 / 100 = 0.5 (not > 0.5: kept)
        ]
    )
    scores = torch.tensor([0.6, 0.9, 0.5, 0.7])
    assert box_nms(boxes, scores, 0.5) == [1, 3, 2]  # A suppressed by the better overlapping box
    assert box_nms(boxes, scores, 0.4) == [1, 2]  # half box vs box 1: IoU = 45 / 105 = 0.43 > 0.4
    assert box_nms(boxes, scores, 1.0) == [1, 3, 0, 2]  # 1.0 keeps everything, by score
    assert box_nms(torch.zeros(0, 4), torch.zeros(0), 0.5) == []
