"""Small numpy-in/numpy-out image operations on anomaly maps and masks (OpenCV underneath).

Conventions: maps are (H, W) real arrays, masks (H, W) bool, sizes are (height, width) like numpy shapes
(OpenCV itself takes (width, height); the swap happens only here).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

# Kernel radius in standard deviations, the same default as scipy.ndimage.gaussian_filter (truncate=4.0).
GAUSSIAN_TRUNCATE = 4.0


# The largest map `map_size` accepts: PIL's decompression-bomb limit (2 x Image.MAX_IMAGE_PIXELS), above which
# no image is read either; a map that size is 716 MB of float32.
MAX_MAP_PIXELS = 178_956_970


def map_size(size: object) -> tuple[int, int]:
    """A requested (height, width) of maps (`detect`'s out_size) as two ints, checked.

    Raises:
        TypeError: not a pair of integers (a number, a string, None inside, bools).
        ValueError: a side below 1, or more than MAX_MAP_PIXELS pixels.
    """
    pair = tuple(size) if isinstance(size, (tuple, list)) else None
    if pair is None or len(pair) != 2 or not all(_integral(v) for v in pair):
        raise TypeError(
            f"out_size must be (height, width), two positive integers such as (256, 256), got {size!r}"
        )
    height, width = int(pair[0]), int(pair[1])
    if height < 1 or width < 1 or height * width > MAX_MAP_PIXELS:
        raise ValueError(
            f"out_size {size!r} must have sides >= 1 and at most {MAX_MAP_PIXELS} pixels: pass e.g. "
            "(256, 256), or None for each image's own size"
        )
    return height, width


def _integral(value: object) -> bool:
    """An int (numpy ints included) or a float with an integer value; never a bool."""
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, (int, np.integer)):
        return True
    return isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer()


def _check_2d(array: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (H, W) array, got shape {array.shape}")
    return array


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    if len(size) != 2 or any(int(s) != s or s <= 0 for s in size):
        raise ValueError(f"size must be (height, width) with two positive integers, got {size!r}")
    return int(size[0]), int(size[1])


def resize_map(anomaly_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an anomaly map.

    Pixel centres are aligned (half-pixel convention, as PIL / torch ``align_corners=False``); no
    anti-aliasing when shrinking.

    Args:
        anomaly_map: (H, W) real array (float16 is computed in float32).
        size: (height, width) of the output.
    Returns:
        (height, width) float32.
    """
    anomaly_map = _check_2d(anomaly_map, "anomaly_map").astype(np.float32, copy=False)
    height, width = _check_size(size)
    if anomaly_map.shape == (height, width):
        return anomaly_map.copy()
    return cv2.resize(anomaly_map, (width, height), interpolation=cv2.INTER_LINEAR)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a binary mask (any nonzero pixel counts as True).

    Each output pixel takes the input pixel under its centre (``cv2.INTER_NEAREST_EXACT``), so the result
    does not shift by half a pixel when shrinking.

    Args:
        mask: (H, W) bool or integer array.
        size: (height, width) of the output.
    Returns:
        (height, width) bool.
    """
    mask = _check_2d(mask, "mask")
    height, width = _check_size(size)
    as_u8 = (mask != 0).astype(np.uint8)
    if as_u8.shape == (height, width):
        return as_u8.astype(bool)
    return cv2.resize(as_u8, (width, height), interpolation=cv2.INTER_NEAREST_EXACT).astype(bool)


def gaussian_smooth(anomaly_map: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of an anomaly map, borders handled by reflection (``d c b a | a b c d``).

    The kernel is the sampled, normalised Gaussian truncated at ``GAUSSIAN_TRUNCATE`` (4.0) standard
    deviations, radius ``int(4 * sigma + 0.5)`` pixels: the same kernel and border rule as
    ``scipy.ndimage.gaussian_filter(x, sigma, mode="reflect")``, computed with OpenCV in float32.

    Args:
        anomaly_map: (H, W) real array.
        sigma: standard deviation in pixels of this map; ``sigma <= 0`` returns an unchanged copy.
    Returns:
        (H, W) float32.
    """
    anomaly_map = _check_2d(anomaly_map, "anomaly_map").astype(np.float32)  # always a copy
    if not math.isfinite(sigma):
        raise ValueError(f"sigma must be a finite number of pixels, got {sigma}")
    if sigma <= 0:
        return anomaly_map
    radius = int(GAUSSIAN_TRUNCATE * sigma + 0.5)
    ksize = 2 * radius + 1
    return cv2.GaussianBlur(
        anomaly_map, (ksize, ksize), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT
    )


def rotate_image(image: np.ndarray, degrees: float) -> np.ndarray:
    """An image turned counter-clockwise by `degrees` about its centre.

    Multiples of 90 degrees are exact (``np.rot90``: no resampling; a (H, W) image becomes (W, H) for 90
    and 270). Other angles keep the (H, W) canvas, resample bilinearly and fill the corners the turn
    uncovers by mirroring the image at its border (``BORDER_REFLECT_101``): the corners then continue the
    background instead of showing black wedges that no test image has.

    Args:
        image: (H, W) or (H, W, C) array (uint8 RGB for references).
        degrees: angle; positive turns counter-clockwise.
    Returns:
        The turned image, same dtype, C-contiguous.
    """
    if not math.isfinite(degrees):
        raise ValueError(f"rotation angle must be a finite number of degrees, got {degrees}")
    image = np.asarray(image)
    if degrees % 90 == 0:
        return np.rot90(
            image, int(degrees // 90) % 4
        ).copy()  # a copy: no negative strides, even on 1-pixel sides
    height, width = image.shape[:2]
    turn = cv2.getRotationMatrix2D(((width - 1) / 2.0, (height - 1) / 2.0), float(degrees), 1.0)
    return cv2.warpAffine(
        image, turn, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
    )
