"""How close two results must be when only float rounding may separate them (the one place that says so).

Batch size and thread count change the order in which matmuls, convolutions and attention add up their
terms, so an image scored in a batch of three and the same image scored alone agree only up to float32
rounding (torch 2.14 on CPU: 3e-8 on an anomaly map in [0, 1]). Tests that compare results computed with
different batch layouts use `assert_close`; results of the very same computation (a resumed run, K = 1 vs
K = 2 processes scoring the same batches) are still compared bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest

# Maps, scores and presences are float32 values in [0, 1]: allow a few float32 ulps of 1 (1.2e-7) per
# reduction, still far below what a changed setting or a misplaced image does to a map.
# Values that are not in [0, 1] (logits, boxes in pixels) get the same few ulps relative to their size.
ROUNDING_ATOL = 1e-6
ROUNDING_RTOL = 1e-6


def assert_close(actual: object, expected: object, what: str = "") -> None:
    """`actual` equals `expected` up to float rounding (arrays, CPU tensors, floats or dicts of floats)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and actual.keys() == expected.keys(), what
        assert actual == pytest.approx(expected, abs=ROUNDING_ATOL, rel=ROUNDING_RTOL), what
        return
    np.testing.assert_allclose(
        np.asarray(actual, dtype=np.float64),
        np.asarray(expected, dtype=np.float64),
        rtol=ROUNDING_RTOL,
        atol=ROUNDING_ATOL,
        err_msg=what,
    )
