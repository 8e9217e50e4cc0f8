"""Every valid image is read as an image viewer shows it (issue 8, items 6 and 14), or refused in one line.

Files are built in tmp_path with PIL or OpenCV; expected pixels are computed by hand from the values written.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image, ImageOps, PngImagePlugin

from dataset import DatasetError, Record, load_dataset
from dataset.images import displayed_size, read_image, read_mask, read_mask_values, to_rgb
from utils.evaluation.exports import save_tiff_maps
from utils.evaluation.native import image_size


def scaled(values: np.ndarray, full_scale: int) -> np.ndarray:
    """The uint8 value a viewer shows for `values` out of `full_scale`, rounded to nearest."""
    return np.rint(values.astype(np.float64) * 255.0 / full_scale).astype(np.uint8)


def gray3(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=2)


RAMP12 = np.array([[0, 1000, 2048], [3000, 4000, 4095]], dtype=np.uint16)  # 12-bit samples, unscaled


def save_png16(path: Path, gray: np.ndarray, sbit: int | None = None) -> Path:
    info = PngImagePlugin.PngInfo()
    if sbit is not None:
        info.add(b"sBIT", bytes([sbit]))
    Image.fromarray(gray).save(path, pnginfo=info)
    return path


# --- high bit depth --------------------------------------------------------------------------------------


def test_12_bit_gray_png_is_not_almost_black(tmp_path: Path) -> None:
    image = read_image(save_png16(tmp_path / "g.png", RAMP12))
    # the old `>> 8` gave max 15; the full scale of 12 bits is 4095
    np.testing.assert_array_equal(image, gray3(scaled(RAMP12, 4095)))
    assert image.max() == 255


def test_png_sbit_gives_the_true_depth(tmp_path: Path) -> None:
    dark = np.array([[0, 500], [700, 1000]], dtype=np.uint16)  # a dark 12-bit image: max < 1023
    # without sBIT the rule takes the smallest depth holding the max (10 bits); sBIT = 12 says 12 bits
    np.testing.assert_array_equal(read_image(save_png16(tmp_path / "a.png", dark)), gray3(scaled(dark, 1023)))
    np.testing.assert_array_equal(
        read_image(save_png16(tmp_path / "b.png", dark, sbit=12)), gray3(scaled(dark, 4095))
    )
    # samples already scaled to 16 bits as the PNG spec asks (12-bit value << 4): full scale 65535
    spec = RAMP12 << 4
    np.testing.assert_array_equal(
        read_image(save_png16(tmp_path / "c.png", spec, sbit=12)), gray3(scaled(spec, 65535))
    )


def test_full_16_bit_gray_uses_the_whole_range(tmp_path: Path) -> None:
    full = np.array([[0, 30000], [50000, 65535]], dtype=np.uint16)
    np.testing.assert_array_equal(
        read_image(save_png16(tmp_path / "g.png", full)), gray3(scaled(full, 65535))
    )


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_colour_keeps_its_low_bits_and_channel_order(tmp_path: Path, suffix: str) -> None:
    rgb = np.array([[[4095, 0, 100], [2000, 3000, 4000]]], dtype=np.uint16)  # 12-bit RGB
    path = tmp_path / f"c{suffix}"
    assert cv2.imwrite(str(path), rgb[..., ::-1])  # OpenCV writes BGR
    with Image.open(path) as raw:  # what PIL alone gives: the high byte (max 15)
        assert np.asarray(raw.convert("RGB")).max() <= 16
    np.testing.assert_array_equal(read_image(path), scaled(rgb, 4095))


def test_16_bit_rgba_png_scales_colour_and_alpha_separately(tmp_path: Path) -> None:
    rgb = np.array([[[4095, 2048, 0], [1000, 1000, 1000]]], dtype=np.uint16)
    alpha = np.array([[65535, 0]], dtype=np.uint16)  # opaque, transparent
    path = tmp_path / "c.png"
    assert cv2.imwrite(str(path), np.dstack([rgb[..., ::-1], alpha]))
    expected = np.array([[[255, 128, 0], [255, 255, 255]]], dtype=np.uint8)
    np.testing.assert_array_equal(read_image(path), expected)


# --- transparency, palette, CMYK -------------------------------------------------------------------------


def on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """round(a * c + (1 - a) * 255), a = alpha / 255: the blend of transformers' convert_to_rgb."""
    a = alpha[..., None].astype(np.float64) / 255.0
    return np.rint(a * rgb + (1.0 - a) * 255.0).astype(np.uint8)


def test_rgba_is_composited_onto_white_like_the_sam3_processor(tmp_path: Path) -> None:
    from transformers.image_transforms import convert_to_rgb

    rgba = np.array([[[200, 100, 50, 255], [200, 100, 50, 128], [10, 20, 30, 0]]], dtype=np.uint8)
    path = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(path)
    image = read_image(path)
    np.testing.assert_array_equal(image[0, 0], [200, 100, 50])  # opaque: unchanged
    np.testing.assert_array_equal(image[0, 2], [255, 255, 255])  # transparent: white, not the hidden colour
    np.testing.assert_array_equal(image, on_white(rgba[..., :3], rgba[..., 3]))
    np.testing.assert_array_equal(
        image, convert_to_rgb(rgba, return_numpy=True, input_data_format="channels_last")
    )


def test_gray_alpha_and_palette_transparency_become_white(tmp_path: Path) -> None:
    la = np.array([[[0, 255], [0, 0], [100, 51]]], dtype=np.uint8).reshape(1, 3, 2)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(
        read_image(tmp_path / "la.png"), gray3(on_white(la[..., 0:1], la[..., 1])[..., 0])
    )

    pal = Image.fromarray(np.array([[0, 1, 2]], dtype=np.uint8), "P")
    pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    pal.save(tmp_path / "p.png", transparency=1)  # palette entry 1 (green) is transparent
    np.testing.assert_array_equal(
        read_image(tmp_path / "p.png"), [[[255, 0, 0], [255, 255, 255], [0, 0, 255]]]
    )


def test_cmyk_jpeg_reads_as_rgb(tmp_path: Path) -> None:
    cmyk = np.zeros((16, 32, 4), dtype=np.uint8)
    cmyk[:, :16] = (0, 255, 255, 0)  # red
    cmyk[:, 16:] = (255, 255, 0, 0)  # blue
    Image.fromarray(cmyk, "CMYK").save(tmp_path / "c.jpg", quality=95)
    image = read_image(tmp_path / "c.jpg")
    assert image.shape == (16, 32, 3)
    np.testing.assert_allclose(image[8, 4], [255, 0, 0], atol=8)
    np.testing.assert_allclose(image[8, 28], [0, 0, 255], atol=8)


def test_one_bit_image_is_black_and_white(tmp_path: Path) -> None:
    Image.fromarray(np.array([[True, False]])).convert("1").save(tmp_path / "b.png")
    np.testing.assert_array_equal(read_image(tmp_path / "b.png"), [[[255] * 3, [0] * 3]])


# --- float TIFF --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([[0.0, 0.25], [0.5, 1.0]], [[0, 64], [128, 255]]),  # [0, 1]: times 255 (old code: all 0 or 1)
        ([[0.0, 17.4], [100.0, 255.0]], [[0, 17], [100, 255]]),  # [0, 255]: as is
        ([[-1.0, 0.0], [1.0, 3.0]], [[0, 64], [128, 255]]),  # other ranges: min-max
    ],
)
def test_float_tiff(tmp_path: Path, values: list[list[float]], expected: list[list[int]]) -> None:
    Image.fromarray(np.array(values, dtype=np.float32), "F").save(tmp_path / "f.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "f.tif"), gray3(np.array(expected, dtype=np.uint8)))


def test_float_tiff_with_nan_is_a_one_line_error(tmp_path: Path) -> None:
    Image.fromarray(np.array([[0.5, np.nan]], dtype=np.float32), "F").save(tmp_path / "f.tif")
    with pytest.raises(DatasetError, match=r"f\.tif holds NaN or infinite") as info:
        read_image(tmp_path / "f.tif")
    assert "\n" not in str(info.value)


def test_unsupported_image_is_a_one_line_error(tmp_path: Path) -> None:
    assert cv2.imwrite(str(tmp_path / "f3.tif"), np.zeros((4, 4, 3), dtype=np.float32))  # PIL cannot read it
    with pytest.raises(DatasetError, match=r"cannot decode image .*f3\.tif") as info:
        read_image(tmp_path / "f3.tif")
    assert "\n" not in str(info.value)


# --- EXIF orientation --------------------------------------------------------------------------------------

QUADRANTS = {(0, 0): (255, 0, 0), (0, 1): (0, 255, 0), (1, 0): (0, 0, 255), (1, 1): (255, 255, 0)}


def quadrant_image(height: int = 32, width: int = 48) -> np.ndarray:
    """Four flat colour quadrants: red top-left, green top-right, blue bottom-left, yellow bottom-right."""
    image = np.zeros((height, width, 3), dtype=np.uint8)
    for (row, col), colour in QUADRANTS.items():
        image[row * height // 2 : (row + 1) * height // 2, col * width // 2 : (col + 1) * width // 2] = colour
    return image


def save_with_orientation(path: Path, image: np.ndarray, orientation: int) -> Path:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(image).save(path, exif=exif, **({"quality": 95} if path.suffix == ".jpg" else {}))
    return path


def test_exif_rotated_jpeg_is_shown_upright(tmp_path: Path) -> None:
    # orientation 6: the camera was turned, a viewer rotates the stored pixels 90 degrees clockwise
    image = read_image(save_with_orientation(tmp_path / "r.jpg", quadrant_image(), 6))
    assert image.shape == (48, 32, 3)  # stored 48 wide x 32 high, shown 32 wide x 48 high
    # clockwise: stored bottom-left (blue) goes to the top-left, stored top-left (red) to the top-right
    corners = {"tl": image[4, 4], "tr": image[4, 27], "bl": image[43, 4], "br": image[43, 27]}
    for name, colour in zip(corners, [(0, 0, 255), (255, 0, 0), (255, 255, 0), (0, 255, 0)], strict=True):
        np.testing.assert_allclose(corners[name], colour, atol=10, err_msg=name)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pil_exif_transpose(tmp_path: Path, orientation: int) -> None:
    path = save_with_orientation(tmp_path / "o.png", quadrant_image(6, 10), orientation)
    with Image.open(path) as raw:
        expected = np.asarray(ImageOps.exif_transpose(raw).convert("RGB"))
    np.testing.assert_array_equal(read_image(path), expected)


def test_mask_with_exif_orientation_is_turned_like_its_image(tmp_path: Path) -> None:
    mask = np.zeros((4, 6), dtype=np.uint8)
    mask[0, 0] = 255
    path = save_with_orientation(tmp_path / "m.png", mask, 8)  # 90 degrees counter-clockwise
    turned = read_mask(path)
    assert turned.shape == (6, 4)
    assert turned[5, 0] and turned.sum() == 1


def test_exif_rotated_jpeg_pairs_with_a_mask_drawn_on_the_upright_photo(tmp_path: Path) -> None:
    """Own data: a photo stored landscape with EXIF 6, its mask drawn (portrait) on what a viewer shows."""
    category = tmp_path / "widget"
    (category / "good").mkdir(parents=True)
    (category / "crack").mkdir()
    (category / "masks" / "crack").mkdir(parents=True)
    Image.fromarray(np.full((48, 32, 3), 128, dtype=np.uint8)).save(category / "good" / "ok.png")
    stored = np.full((32, 48, 3), 128, dtype=np.uint8)
    stored[24:32, 0:8] = 250  # a bright defect in the stored bottom-left corner -> shown top-left
    save_with_orientation(category / "crack" / "p.jpg", stored, 6)
    drawn = np.zeros((48, 32), dtype=np.uint8)
    drawn[0:8, 0:8] = 255  # drawn where the viewer shows the defect
    Image.fromarray(drawn).save(category / "masks" / "crack" / "p.png")

    sample = next(s for s in load_dataset("folder", tmp_path, "widget", "test") if s.label == 1)
    assert sample.image.shape == (48, 32, 3) and sample.mask.shape == (48, 32)
    assert (sample.image[sample.mask] > 200).all()  # the mask lies on the defect
    assert (sample.image[~sample.mask] < 160).all()


def test_mask_of_the_stored_size_names_the_exif_rotation(tmp_path: Path) -> None:
    category = tmp_path / "widget"
    (category / "crack").mkdir(parents=True)
    (category / "good").mkdir()
    (category / "masks" / "crack").mkdir(parents=True)
    save_with_orientation(category / "crack" / "p.jpg", np.full((32, 48, 3), 128, dtype=np.uint8), 6)
    Image.fromarray(np.zeros((32, 48), dtype=np.uint8)).save(category / "masks" / "crack" / "p.png")
    dataset = load_dataset("folder", tmp_path, "widget", "test")
    with pytest.raises(DatasetError, match="mask .*p.png is 48x32 but image .*p.jpg is 32x48.*EXIF rotation"):
        dataset[0]


# --- hostile inputs: odd chunks, alpha in masks, in-memory images whose file changed ---------------------


@pytest.mark.parametrize("chunk", [b"", b"\x00", b"\x20"])
def test_empty_or_impossible_sbit_is_ignored(tmp_path: Path, chunk: bytes) -> None:
    info = PngImagePlugin.PngInfo()
    info.add(b"sBIT", chunk)
    Image.fromarray(RAMP12).save(tmp_path / "odd.png", pnginfo=info)
    np.testing.assert_array_equal(
        read_image(tmp_path / "odd.png"), read_image(save_png16(tmp_path / "n.png", RAMP12))
    )


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_mask_alpha_channel_is_not_a_class(tmp_path: Path, mode: str) -> None:
    """An editor's mask: opaque black background, a drawn square, and a transparent white corner."""
    rgba = np.zeros((6, 6, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[1:3, 1:3] = (255, 255, 255, 255)
    rgba[5, 5] = (255, 255, 255, 0)
    Image.fromarray(rgba).convert(mode).save(tmp_path / "m.png")
    expected = np.zeros((6, 6), bool)
    expected[1:3, 1:3] = True
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), expected)
    assert read_mask_values(tmp_path / "m.png")[5, 5] == 0 and read_mask_values(tmp_path / "m.png")[0, 0] == 0


def test_displayed_size_is_the_upright_shape_read_image_gives(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # 90 degrees clockwise: the viewer shows 30 wide, 40 high
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "r.jpg", exif=exif)
    assert displayed_size(tmp_path / "r.jpg") == read_image(tmp_path / "r.jpg").shape[:2] == (40, 30)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="cannot decode image"):
        displayed_size(tmp_path / "bad.png")


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_array_subclasses_and_premultiplied_pil_modes(tmp_path: Path) -> None:
    gray = np.array([[0, 128], [255, 64]], np.uint8)
    np.testing.assert_array_equal(to_rgb(np.asmatrix(gray)), gray3(gray))
    np.testing.assert_array_equal(to_rgb(np.ma.masked_array(gray, mask=gray > 100)), gray3(gray))
    la = Image.fromarray(np.dstack([gray, np.full_like(gray, 255)])).convert("LA")
    np.testing.assert_array_equal(
        to_rgb(la.convert("La")), to_rgb(la)
    )  # opaque: premultiplying changes nothing


def test_pil_image_whose_file_was_deleted_or_rewritten_keeps_its_own_pixels(tmp_path: Path) -> None:
    """The file is re-read only while it still holds the PIL image's pixels (16-bit colour, sBIT)."""
    first = np.random.default_rng(0).integers(0, 65536, (4, 5, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "a.png"), first[..., ::-1])
    opened = Image.open(tmp_path / "a.png")
    opened.load()
    full = to_rgb(opened)
    np.testing.assert_array_equal(full, read_image(tmp_path / "a.png"))  # the file's 16 bits
    cv2.imwrite(str(tmp_path / "a.png"), (65535 - first)[..., ::-1])  # another picture under that name
    np.testing.assert_array_equal(to_rgb(opened), np.asarray(opened))  # PIL's own (high-byte) pixels
    (tmp_path / "a.png").unlink()
    np.testing.assert_array_equal(to_rgb(opened), np.asarray(opened))
    lazy = tmp_path / "b.png"
    Image.fromarray(gray3(np.arange(6, dtype=np.uint8).reshape(2, 3))).save(lazy)
    pending = Image.open(lazy)  # not loaded yet: PIL keeps the file open
    lazy.unlink()
    np.testing.assert_array_equal(to_rgb(pending), gray3(np.arange(6, dtype=np.uint8).reshape(2, 3)))


def test_exported_maps_and_native_sizes_follow_the_exif_orientation(tmp_path: Path) -> None:
    """A map is computed on the upright image, so test.py's TIFF export and the native-size metrics size it
    upright too (a photo stored 40 wide, 30 high, shown turned: 30 wide, 40 high)."""
    exif = Image.Exif()
    exif[0x0112] = 8
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "p.jpg", exif=exif)
    record = Record(str(tmp_path / "p.jpg"), None, 0, "good", "part")
    assert image_size(record.image_path) == (40, 30)
    [written] = save_tiff_maps(tmp_path / "maps", "part", [record], np.zeros((1, 8, 8), np.float32))
    assert tifffile.imread(written).shape == (40, 30)
