"""Tests for model/map_ops.py on hand-built arrays and against scipy.ndimage."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from model.map_ops import gaussian_smooth, resize_map, resize_mask


def test_resize_mask_checker_gives_blocks():
    checker = np.array([[1, 0], [0, 1]], dtype=bool)
    out = resize_mask(checker, (4, 6))
    assert out.dtype == bool and out.shape == (4, 6)
    expected = np.zeros((4, 6), dtype=bool)
    expected[:2, :3] = expected[2:, 3:] = True
    np.testing.assert_array_equal(out, expected)


def test_resize_mask_shrinks_by_pixel_centres_and_binarises():
    mask = np.zeros((4, 4), dtype=np.uint8)
    mask[1, 1] = mask[3, 3] = 255  # the centres of the 2x2 output cells fall on pixels 1 and 3
    np.testing.assert_array_equal(resize_mask(mask, (2, 2)), np.array([[True, False], [False, True]]))
    assert resize_mask(mask, (4, 4)).dtype == bool


def test_resize_map_bilinear_keeps_a_ramp_linear():
    ramp = np.tile(np.arange(8, dtype=np.float32), (3, 1))  # value = column index
    out = resize_map(ramp, (5, 16))
    assert out.dtype == np.float32 and out.shape == (5, 16)
    # Half-pixel centres: output column j samples input column (j + 0.5) / 2 - 0.5.
    interior = np.arange(1, 15)
    np.testing.assert_allclose(out[:, interior], np.tile((interior + 0.5) / 2 - 0.5, (5, 1)), atol=1e-5)
    np.testing.assert_allclose(out[:, 0], 0.0, atol=1e-6)  # clamped at the border
    assert np.all(np.diff(out[2]) >= 0)


def test_resize_map_identity_constant_and_float16():
    a = np.random.default_rng(0).random((6, 7)).astype(np.float16)
    same = resize_map(a, (6, 7))
    assert same.dtype == np.float32 and np.array_equal(same, a.astype(np.float32))
    np.testing.assert_allclose(resize_map(np.full((5, 9), 0.25), (13, 4)), 0.25, atol=1e-7)


@pytest.mark.parametrize("bad", [(0, 4), (3,), (2.5, 4), (-1, 3)])
def test_resize_rejects_bad_sizes(bad):
    with pytest.raises(ValueError, match="height, width"):
        resize_map(np.zeros((3, 3)), bad)
    with pytest.raises(ValueError, match="2-D"):
        resize_mask(np.zeros((1, 3, 3), bool), (2, 2))


@pytest.mark.parametrize("shape,sigma", [((32, 40), 1.0), ((64, 64), 4.0), ((7, 5), 3.0), ((3, 3), 10.0)])
def test_gaussian_matches_scipy_reflect(shape, sigma):
    # Same kernel (truncate 4.0) and reflect border, even when the kernel is wider than the image.
    a = np.random.default_rng(1).random(shape).astype(np.float32)
    expected = ndimage.gaussian_filter(a.astype(np.float64), sigma, mode="reflect", truncate=4.0)
    out = gaussian_smooth(a, sigma)
    assert out.dtype == np.float32 and out.shape == shape
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_gaussian_known_answers():
    np.testing.assert_allclose(gaussian_smooth(np.full((20, 30), 0.7), 2.5), 0.7, atol=1e-6)
    delta = np.zeros((41, 41), dtype=np.float32)
    delta[20, 20] = 1.0
    out = gaussian_smooth(delta, 3.0)
    assert out.sum() == pytest.approx(1.0, abs=1e-5)  # interior delta: mass preserved
    assert out[20, 20] == out.max()
    assert out[20, 17] == pytest.approx(out[17, 20]) == pytest.approx(out[23, 20])  # isotropic


def test_gaussian_sigma_zero_is_an_unchanged_copy():
    a = np.random.default_rng(2).random((4, 4)).astype(np.float32)
    out = gaussian_smooth(a, 0)
    assert np.array_equal(out, a) and out is not a and not np.shares_memory(out, a)
    assert np.array_equal(gaussian_smooth(a, -1.0), a)
