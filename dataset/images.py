"""Image and mask decoding: any file or array a user may pass becomes (H, W, 3) uint8 RGB as a viewer shows it
(`read_image`, `to_rgb`), and ground-truth masks (H, W) bool (`read_mask`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from dataset.records import DatasetError


def _decode(
    path: str | os.PathLike[str], what: str, convert: Callable[[Image.Image], np.ndarray]
) -> np.ndarray:
    """Open and fully decode an image file and return `convert(image)` (run while the file is open).

    Every decoder failure becomes a one-line DatasetError naming the file.
    """
    try:
        with Image.open(path) as img:
            img.load()
            return convert(img)
    except DatasetError:
        raise
    except FileNotFoundError:
        raise DatasetError(f"{what} not found: {path} (check the path and that the file is there)") from None
    except IsADirectoryError:
        raise DatasetError(f"{what} {path} is a folder, not an image file: pass a file") from None
    except Image.DecompressionBombError:
        raise DatasetError(
            f"{what} {path} is larger than PIL's limit of {2 * (Image.MAX_IMAGE_PIXELS or 0)} pixels "
            "(a guard against decompression bombs): downscale it first"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DatasetError(
            f"cannot decode {what} {path}: {reason} (file corrupt, truncated or of an unsupported kind: "
            "re-download it or convert it to an 8- or 16-bit PNG)"
        ) from None


# EXIF orientation tag (0x0112) -> how to turn the stored pixels into what a viewer shows; the same table as
# PIL.ImageOps.exif_transpose (2: mirror, 3: 180 deg, 4: flip, 5: transpose, 6: 90 deg clockwise,
# 7: transverse, 8: 90 deg counter-clockwise). Works on (H, W) and (H, W, C) arrays.
_ORIENT: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}
EXIF_ORIENTATION_TAG = 0x0112
# Modes PIL turns into RGB the way viewers show them (CMYK JPEGs included, Adobe inversion handled).
_AS_RGB_MODES = ("CMYK", "YCbCr", "LAB", "HSV", "RGBX")


def exif_orientation(img: Image.Image) -> int:
    """The EXIF orientation of `img` (1..8); 1 (as stored) when absent or unreadable."""
    try:
        value = img.getexif().get(EXIF_ORIENTATION_TAG, 1)
    except Exception:  # a damaged EXIF block must not make a readable image unreadable
        return 1
    return value if isinstance(value, int) and value in range(1, 9) else 1


def displayed_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(H, W) of an image file as a viewer shows it (`read_image`'s shape), from its header and EXIF only.

    Raises:
        DatasetError: the file cannot be opened as an image (one line).
    """

    def size(img: Image.Image) -> tuple[int, int]:
        width, height = img.size
        return (width, height) if exif_orientation(img) >= 5 else (height, width)  # 5..8 turn by 90 degrees

    try:
        with Image.open(path) as img:
            return size(img)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return tuple(_decode(path, "image", lambda img: np.array(size(img))).tolist())  # its one-line error


def upright(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """`pixels` ((H, W) or (H, W, C)) turned as a viewer shows them for EXIF `orientation` (a copy)."""
    return np.ascontiguousarray(_ORIENT.get(orientation, lambda a: a)(pixels))


def _png_depth(path: str | os.PathLike[str]) -> tuple[int, tuple[int, ...] | None]:
    """(bit depth from IHDR, significant bits per channel from sBIT or None) of a PNG file.

    PIL does not expose sBIT, so the chunks before the image data are read here (a few bytes).
    """
    with open(path, "rb") as handle:
        head = handle.read(33)  # signature (8) + IHDR chunk (4 + 4 + 13 + 4)
        depth = head[24] if len(head) == 33 else 8
        while True:
            size_type = handle.read(8)
            if len(size_type) < 8 or size_type[4:8] in (b"IDAT", b"IEND"):
                return depth, None
            size = int.from_bytes(size_type[:4], "big")
            if size_type[4:8] == b"sBIT":  # an empty or out-of-range sBIT says nothing: ignored
                bits = tuple(handle.read(min(size, 4)))
                return depth, bits if bits and all(1 <= b <= 16 for b in bits) else None
            handle.seek(size + 4, os.SEEK_CUR)  # data + CRC


def _stored_depth(img: Image.Image, path: str | os.PathLike[str]) -> tuple[int, tuple[int, ...] | None]:
    """(bits per sample as stored in the file, PNG sBIT or None); 8 when the format does not say."""
    if img.format == "PNG":
        return _png_depth(path)
    if img.format == "TIFF":
        bits = img.tag_v2.get(258, (8,))  # BitsPerSample
        return max(bits if isinstance(bits, tuple) else (bits,)), None
    return 8, None


def _read_wide_colour(path: str | os.PathLike[str]) -> np.ndarray:
    """A 16-bit colour PNG/TIFF (which PIL cuts to its high byte) as (H, W, 3|4) uint16 RGB[A] via OpenCV."""
    import cv2  # imported here: only high-bit-depth colour files need it

    data = np.fromfile(os.fspath(path), dtype=np.uint8)
    try:
        pixels = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error:
        pixels = None
    if pixels is None or pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        raise DatasetError(
            f"cannot decode image {path}: unsupported 16-bit colour layout (convert it to a PNG)"
        )
    return pixels[..., [2, 1, 0, 3][: pixels.shape[2]]]


def _read_pixels(
    img: Image.Image, path: str | os.PathLike[str] | None
) -> tuple[np.ndarray, tuple[int, ...] | None]:
    """The stored samples of `img`: (H, W) or (H, W, C) with C = 2 (gray+alpha), 3 (RGB) or 4 (RGBA).

    dtype is bool (mode "1"), uint8 for 8-bit data, an integer type for high-bit-depth data, float32 for
    mode "F". Returns the samples and the PNG sBIT significant bits per channel (None when absent).
    `path` is the file `img` was read from (None for an image made in memory: the file cannot be re-read
    for 16-bit colour or sBIT, so PIL's own samples are used).
    """
    if path is not None and img.mode in ("RGB", "RGBA", "LA") and img.format in ("PNG", "TIFF"):
        depth, sbit = _stored_depth(img, path)
        if depth > 8:
            return _read_wide_colour(path), sbit
    if img.mode == "La":  # premultiplied gray + alpha: PIL converts it only to LA
        return np.asarray(img.convert("LA")), None
    if "transparency" in img.info or img.mode in ("PA", "RGBa"):
        # a transparent colour or palette entry becomes alpha, composited later like RGBA
        return np.asarray(img.convert("RGBA")), None
    if img.mode == "P" or img.mode in _AS_RGB_MODES:
        return np.asarray(img.convert("RGB")), None
    if img.mode.startswith("I"):
        return np.asarray(img), _png_depth(path)[1] if path is not None and img.format == "PNG" else None
    return np.asarray(img), None  # 1, L, LA, RGB, RGBA, F


# Sample depths cameras store unscaled in 16-bit files (a 12-bit sensor's 0..4095 in a 16-bit PNG).
SENSOR_DEPTHS: tuple[int, ...] = (8, 10, 12, 14, 16)


def depth_holding(peak: int) -> int:
    """The smallest of SENSOR_DEPTHS whose range 0..2**bits - 1 holds `peak` (more bits for wider values)."""
    return next((b for b in SENSOR_DEPTHS if peak < (1 << b)), max(peak.bit_length(), 1))


def _full_scale(values: np.ndarray, sbit: int | None, bit_depth: int | None = None) -> int:
    """The value that means "white" for integer samples of more than 8 bits (see `read_image`)."""
    peak = int(values.max(initial=0))
    if sbit is not None and 1 <= sbit <= 16:
        return (1 << sbit) - 1 if peak < (1 << sbit) else 65535
    return (1 << (bit_depth or depth_holding(peak))) - 1


def _float_to_uint8(values: np.ndarray, path: str | os.PathLike[str]) -> np.ndarray:
    """Float samples to 0..255: [0, 1] is scaled by 255, [0, 255] kept, anything else min-max stretched."""
    if not np.isfinite(values).all():
        raise DatasetError(
            f"{path} holds NaN or infinite values: replace them (np.nan_to_num) or fix the file"
        )
    low, high = float(values.min(initial=0.0)), float(values.max(initial=0.0))
    if low >= 0.0 and high <= 1.0:
        values = values * 255.0
    elif low < 0.0 or high > 255.0:
        values = (values - low) * (255.0 / (high - low)) if high > low else np.full_like(values, 128.0)
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _int_to_uint8(values: np.ndarray, sbit: int | None, bit_depth: int | None = None) -> np.ndarray:
    """Non-negative integer samples to uint8 by their full scale (`_full_scale`); above it is white."""
    scale = 255.0 / _full_scale(values, sbit, bit_depth)
    return np.clip(np.rint(values.astype(np.float64) * scale), 0, 255).astype(np.uint8)


def _to_uint8(
    values: np.ndarray,
    sbit: tuple[int, ...] | None,
    path: str | os.PathLike[str],
    bit_depth: int | None = None,
) -> np.ndarray:
    """Samples of any depth to uint8; colour and alpha channels each by their own full scale.

    `bit_depth` is the colour channels' depth when the file has no sBIT (None: guessed from this image).
    """
    if values.dtype == np.uint8:
        return values
    if values.dtype == bool:
        return values.astype(np.uint8) * 255
    if np.issubdtype(values.dtype, np.floating) or values.min(initial=0) < 0:
        return _float_to_uint8(values.astype(np.float64), path)
    if values.ndim == 2 or values.shape[2] == 3:
        return _int_to_uint8(values, None if sbit is None else max(sbit), bit_depth)
    colour_bits = None if sbit is None else max(sbit[:-1] or sbit)
    alpha_bits = None if sbit is None else sbit[-1]
    colour = _int_to_uint8(values[..., :-1], colour_bits, bit_depth)
    return np.concatenate([colour, _int_to_uint8(values[..., -1:], alpha_bits)], axis=-1)


def _on_white(values: np.ndarray) -> np.ndarray:
    """(H, W) / (H, W, 1|2|3|4) uint8 to (H, W, 3) uint8 RGB, transparency composited onto white.

    The blend is the one of transformers' `convert_to_rgb` (used by the SAM 3 image processor):
    round(a * c + (1 - a) * 255) with a = alpha / 255.
    """
    if values.ndim == 2:
        values = values[..., None]
    if values.shape[2] in (2, 4):
        alpha = values[..., -1:].astype(np.float64) / 255.0
        values = np.rint(alpha * values[..., :-1] + (1.0 - alpha) * 255.0).astype(np.uint8)
    if values.shape[2] != 3:
        return np.repeat(values, 3, axis=2)
    # torch wraps no negative stride: a reversed array is copied (even one numpy calls contiguous)
    return values if min(values.strides) >= 0 else values.copy()


def read_image(path: str | os.PathLike[str], bit_depth: int | None = None) -> np.ndarray:
    """Decode an image file the way an image viewer shows it, as RGB.

    Returns (H, W, 3) uint8, turned upright by its EXIF orientation (so H and W are the displayed ones).

    - Gray, palette, CMYK, YCbCr: converted to RGB as PIL does (CMYK JPEGs included).
    - Transparency (RGBA, LA, palette or gray with a transparent colour): composited onto white, the same
      blend as the SAM 3 image processor's `convert_to_rgb`.
    - More than 8 bits per sample (16-bit PNG/TIFF, gray or colour): divided by the image's full scale. A PNG
      sBIT chunk gives the true depth s: values below 2**s are raw s-bit samples (full scale 2**s - 1),
      otherwise they were scaled to 16 bits as the PNG spec asks (full scale 65535). Without sBIT, the full
      scale is 2**bit_depth - 1, and without `bit_depth` that of the smallest of 8/10/12/14/16 bits that
      holds the image's brightest sample, because cameras store 10/12/14-bit samples unscaled in 16-bit
      files; dividing those by 65535 would make them almost black. A dataset passes its category's depth
      (`category_bit_depth`), so images of one camera are scaled alike.
    - Float samples (TIFF mode "F"): [0, 1] times 255; [0, 255] as is; any other range stretched min-max.

    `bit_depth` (from `ImageDataset`, for a whole category, or a caller that knows its camera) replaces
    the per-image guess when the file has no sBIT: samples are divided by 2**bit_depth - 1, so one sample
    value is one brightness in every image read with that depth.

    Raises:
        DatasetError: a corrupt, truncated or unsupported file, or float samples with NaN/inf (one line).
    """

    def convert(img: Image.Image) -> np.ndarray:
        values, sbit = _read_pixels(img, path)
        return upright(_samples_to_rgb(values, sbit, path, bit_depth), exif_orientation(img))

    return _decode(path, "image", convert)


def unscaled_peak(path: str | os.PathLike[str]) -> int | None:
    """The brightest colour sample of a more-than-8-bit integer image without sBIT, else None.

    None also for an 8-bit file (only its header is read) and for a file that cannot be read (reading it
    for real reports that). This is what `read_image` would have to guess the depth of.
    """
    try:
        with Image.open(path) as img:
            wide_colour = img.mode in ("RGB", "RGBA", "LA") and img.format in ("PNG", "TIFF")
            if not img.mode.startswith("I") and not (wide_colour and _stored_depth(img, path)[0] > 8):
                return None
            img.load()
            values, sbit = _read_pixels(img, path)
    except (OSError, ValueError, SyntaxError, DatasetError, Image.DecompressionBombError):
        return None
    if sbit is not None or not np.issubdtype(values.dtype, np.integer) or values.min(initial=0) < 0:
        return None
    colour = values[..., :-1] if values.ndim == 3 and values.shape[2] in (2, 4) else values
    return int(colour.max(initial=0))


def category_bit_depth(paths: Sequence[str | os.PathLike[str]]) -> int | None:
    """The depth of a category's >8-bit images without sBIT: the smallest holding their brightest sample.

    None when no image needs it (8-bit files, or sBIT in every 16-bit one). Reads the pixels of those
    images once; 8-bit files cost a header read.
    """
    peaks = [p for p in map(unscaled_peak, paths) if p is not None]
    return depth_holding(max(peaks)) if peaks else None


def _samples_to_rgb(
    values: np.ndarray,
    sbit: tuple[int, ...] | None,
    where: str | os.PathLike[str],
    bit_depth: int | None = None,
) -> np.ndarray:
    """Samples (H, W) / (H, W, 1|2|3|4) of any depth to (H, W, 3) uint8 RGB (`read_image`'s rules).

    An image without pixels (a side of 0) is a DatasetError: nothing downstream can resize it.
    """
    if values.shape[0] == 0 or values.shape[1] == 0:
        raise DatasetError(f"{where} has no pixels (shape {values.shape}): pass an image of at least 1x1")
    return _on_white(_to_uint8(values, sbit, where, bit_depth))


def _pil_samples(image: Image.Image) -> tuple[np.ndarray, tuple[int, ...] | None]:
    """`_read_pixels` of an in-memory PIL image: from its file (16-bit colour, sBIT) while that file still
    holds these pixels, else from PIL's own samples (file moved, deleted or rewritten since it was opened)."""
    filename = getattr(image, "filename", "") or None
    try:
        image.load()
    except (ValueError, AssertionError) as err:  # PIL: "Operation on closed image"; after verify(): assert
        reason = str(err).splitlines()[0] if str(err) else "its file is closed"
        raise DatasetError(
            f"cannot read PIL image {filename or '(no file name)'} ({reason}): pass it before closing it "
            "(e.g. inside its `with Image.open(...)` block, not after verify()), or pass the file path"
        ) from None
    except OSError as err:  # a lazily opened file that is truncated or damaged
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DatasetError(
            f"cannot decode PIL image {filename or '(no file name)'}: {reason} (file corrupt or truncated: "
            "re-download it or convert it to PNG)"
        ) from None
    try:
        values, sbit = _read_pixels(image, filename)
        stored = (values.shape[1], values.shape[0])
        if filename is None or (stored == image.size and _same_high_bytes(values, image)):
            return values, sbit
    except (OSError, DatasetError, ValueError):
        pass  # its file cannot be read again: PIL's samples below
    try:
        return _read_pixels(image, None)
    except ValueError as err:
        raise DatasetError(f"cannot read PIL image of mode {image.mode}: {err} (convert it to RGB)") from None


def _same_high_bytes(values: np.ndarray, image: Image.Image) -> bool:
    """Whether 16-bit colour samples re-read from the file are the pixels of `image` (PIL keeps their high
    byte); always True for samples that were not re-read."""
    if values.dtype != np.uint16 or image.mode not in ("RGB", "RGBA", "LA"):
        return True
    kept = np.asarray(image)
    wide = values[..., [0, 3]] if image.mode == "LA" and values.shape[-1] == 4 else values
    return kept.shape == wide.shape and np.array_equal(kept, (wide >> 8).astype(np.uint8))


def to_rgb(image: Image.Image | np.ndarray) -> np.ndarray:
    """A PIL image or a numpy array as (H, W, 3) uint8 RGB, by the same rules as `read_image`.

    Args:
        image: a PIL image (any mode; EXIF orientation applied, and a 16-bit colour PNG/TIFF opened from a
            file is re-read at full depth as `read_image` does), or an array (H, W) gray, (H, W, 1) gray,
            (H, W, 2) gray + alpha, (H, W, 3) RGB or (H, W, 4) RGBA of dtype bool, any integer (more than
            8 bits: divided by the full scale of `read_image`), or float ([0, 1], [0, 255], else min-max).

    Returns:
        (H, W, 3) uint8 RGB; a (H, W, 3) uint8 array is returned as is (no copy) unless it has a negative
        stride.

    Raises:
        DatasetError: another shape or type, or float samples with NaN/inf (one line).
    """
    if isinstance(image, Image.Image):
        values, sbit = _pil_samples(image)
        where = getattr(image, "filename", "") or f"PIL image (mode {image.mode})"
        return upright(_samples_to_rgb(values, sbit, where), exif_orientation(image))
    if not isinstance(image, np.ndarray):
        raise DatasetError(
            f"cannot read an image from a {type(image).__name__}: pass a file path, a PIL image or an array"
        )
    image = np.asarray(image)  # a subclass (np.matrix, a masked array) as its plain samples
    ok_dtype = (
        image.dtype == bool
        or np.issubdtype(image.dtype, np.integer)
        or np.issubdtype(image.dtype, np.floating)
    )
    if not ok_dtype or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 2, 3, 4)):
        raise DatasetError(
            f"image array of shape {image.shape} and dtype {image.dtype} is not an image: pass (H, W) or "
            "(H, W, 1|2|3|4) bool, integer or float samples"
        )
    return _samples_to_rgb(image, None, "image array")


def read_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode a ground-truth mask: any nonzero value (in any colour channel) is anomalous.

    Handles 1-bit (mode "1", 0/1), 8-bit (0/255), palette and class-id masks (VisA), RGB masks; an alpha
    channel is not a class (`_mask_samples`): transparent or opaque, a black pixel is normal.
    A mask with an EXIF orientation is turned upright like its image (`read_image`). Returns (H, W) bool.
    """

    def convert(img: Image.Image) -> np.ndarray:
        return upright(_mask_samples(img) > 0, exif_orientation(img))

    return _decode(path, "mask", convert)


def _mask_samples(img: Image.Image) -> np.ndarray:
    """A mask's (H, W) stored values: the largest colour channel, 0 where the pixel is fully transparent.

    An alpha channel (LA, RGBA, PA masks from an image editor) says where the drawing is, not which class:
    an opaque black background is 0, like a transparent one. Mode "P" gives the palette indices (class ids).
    """
    arr = np.asarray(img.convert("LA") if img.mode == "La" else img)
    alpha = img.mode in ("LA", "La", "RGBA", "RGBa", "PA") and arr.ndim == 3
    values = arr[..., :-1] if alpha else arr
    if values.ndim == 3:
        values = values.max(axis=2)
    return np.where(arr[..., -1] > 0, values, 0) if alpha else values


def read_mask_values(path: str | os.PathLike[str]) -> np.ndarray:
    """A mask's stored values, (H, W) integer (the largest over channels), turned upright like `read_mask`.

    MVTec LOCO names each region's defect by its pixel value (defects_config.json).
    """

    def convert(img: Image.Image) -> np.ndarray:
        return upright(_mask_samples(img).astype(np.int64), exif_orientation(img))

    return _decode(path, "mask", convert)


def read_sized_mask(path: str, image_path: str, size: tuple[int, int]) -> np.ndarray:
    """`read_mask(path)` checked to be (H, W) = `size`, the size of `image_path`; else a DatasetError."""
    mask = read_mask(path)
    height, width = size
    if mask.shape != (height, width):
        turned = (
            " upright, as a viewer shows it after its EXIF rotation" if mask.shape == (width, height) else ""
        )
        raise DatasetError(
            f"mask {path} is {mask.shape[1]}x{mask.shape[0]} but image {image_path} "
            f"is {width}x{height} (expected a mask of the image's size, drawn on the image{turned})"
        )
    return mask
