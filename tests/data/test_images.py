"""rnncap.data.images: bad files give one-line errors naming the file; every mode becomes RGB."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from rnncap.data.images import (
    ImageError,
    decode_image_bytes,
    decoded_pixels,
    find_images,
    open_image,
    to_rgb,
)
from support.inference import crafted_images


def _png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _assert_one_line_error(path, match: str) -> str:
    with pytest.raises(ImageError, match=match) as info:
        open_image(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    return message


def test_good_file_opens_as_rgb(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = tmp_path / "a.png"
    Image.fromarray(pixels).save(path)
    image = open_image(path)
    assert image.mode == "RGB" and image.size == (7, 5)
    np.testing.assert_array_equal(np.asarray(image), pixels)


def test_missing_empty_folder_and_not_an_image(tmp_path):
    _assert_one_line_error(tmp_path / "nope.jpg", "no such file")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    _assert_one_line_error(empty, "empty file")
    _assert_one_line_error(tmp_path, "not a file")
    text = tmp_path / "notes.jpg"
    text.write_text("these are not pixels\n")
    _assert_one_line_error(text, "not an image")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file(tmp_path, fmt):
    rng = np.random.default_rng(1)
    data = _png_bytes(Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)), fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) // 2])
    _assert_one_line_error(path, "cannot read image")


# 400 pixels: above twice the limit (PIL raises), between 1x and 2x (PIL only warns)
@pytest.mark.parametrize("limit", [100, 300])
def test_decompression_bomb_is_an_error(tmp_path, monkeypatch, limit):
    path = tmp_path / "big.png"
    Image.new("RGB", (20, 20), (1, 2, 3)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    _assert_one_line_error(path, "decompression bomb")


@pytest.mark.parametrize("name", sorted(crafted_images()))
def test_crafted_files_that_trip_the_decoders_are_image_errors(tmp_path, name):
    data = crafted_images()[name]
    path = tmp_path / name
    path.write_bytes(data)
    message = _assert_one_line_error(path, "unsupported image variant|cannot read image")
    for read in (decode_image_bytes, decoded_pixels):
        try:
            read(data, name, 224)
        except ImageError as error:
            assert str(error).startswith(f"{name}: ") and "\n" not in str(error)
    with pytest.raises(ImageError):
        decode_image_bytes(data, name)
    assert message.startswith(f"{path}: ")


def test_grey_and_palette_modes(tmp_path):
    grey = np.arange(0, 240, 10, dtype=np.uint8).reshape(4, 6)
    path = tmp_path / "grey.png"
    Image.fromarray(grey, mode="L").save(path)
    rgb = np.asarray(open_image(path))
    np.testing.assert_array_equal(rgb, np.stack([grey] * 3, axis=-1))

    palette_image = Image.new("P", (3, 1))
    palette_image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    palette_image.putdata([2, 0, 1])
    path = tmp_path / "palette.png"
    palette_image.save(path)
    np.testing.assert_array_equal(
        np.asarray(open_image(path))[0], [[0, 0, 255], [255, 0, 0], [0, 255, 0]]
    )


def test_alpha_is_composited_on_white(tmp_path):
    rgba = np.array([[[200, 100, 50, 0], [200, 100, 50, 255], [200, 100, 50, 128]]], np.uint8)
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    rgb = np.asarray(open_image(path)).astype(int)
    alpha = 128 / 255
    expected_blend = np.array([200, 100, 50]) * alpha + 255 * (1 - alpha)
    np.testing.assert_array_equal(rgb[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(rgb[0, 1], [200, 100, 50])
    np.testing.assert_allclose(rgb[0, 2], expected_blend, atol=1)

    palette_image = Image.new("P", (2, 1))
    palette_image.putpalette([0, 0, 0, 10, 20, 30] + [0] * (254 * 3))
    palette_image.putdata([0, 1])
    palette_image.info["transparency"] = 0
    np.testing.assert_array_equal(np.asarray(to_rgb(palette_image))[0], [[255] * 3, [10, 20, 30]])

    # RGBA -> P keeps the alpha in an RGBA palette (no "transparency" key): still composited
    rgba_palette = Image.fromarray(rgba, mode="RGBA").convert("P")
    np.testing.assert_array_equal(np.asarray(to_rgb(rgba_palette))[0, 0], [255, 255, 255])


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    levels = np.array([[0, 257 * 100, 65535, 257 * 200]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(levels).save(path)  # a 16-bit grey PNG (mode I;16 or I when read back)
    assert Image.open(path).mode in ("I;16", "I")
    rgb = np.asarray(open_image(path))
    np.testing.assert_array_equal(rgb[0, :, 0], [0, 100, 255, 200])
    assert (rgb == rgb[..., :1]).all()
    big_endian = Image.frombytes("I;16B", (4, 1), levels.astype(">u2").tobytes())
    np.testing.assert_array_equal(np.asarray(to_rgb(big_endian))[0, :, 1], [0, 100, 255, 200])


def test_cmyk(tmp_path):
    cmyk = np.array([[[0, 0, 0, 0], [255, 0, 0, 0], [0, 0, 0, 255], [0, 128, 0, 0]]], np.uint8)
    path = tmp_path / "print.tif"
    Image.fromarray(cmyk, mode="CMYK").save(path)
    rgb = np.asarray(open_image(path)).astype(int)
    # reference: subtractive colour, R = (255 - C) * (255 - K) / 255 and so on
    c, m, y, k = (cmyk[0, :, i].astype(int) for i in range(4))
    expected = np.stack([(255 - c) * (255 - k), (255 - m) * (255 - k), (255 - y) * (255 - k)], -1)
    np.testing.assert_allclose(rgb[0], expected / 255, atol=1)


def test_find_images(tmp_path):
    root = tmp_path / "photos"
    (root / "b" / "deeper").mkdir(parents=True)
    (root / ".hidden").mkdir()
    for name in ["z.jpg", "a.PNG", "b/deeper/c.jpeg", "b/x.webp", ".hidden/h.jpg", "._mac.jpg"]:
        (root / name).write_bytes(b"x")
    (root / "notes.txt").write_text("no")
    (tmp_path / "empty").mkdir()
    explicit = tmp_path / "picture.dat"
    explicit.write_bytes(b"x")

    found, errors = find_images(
        [explicit, root, root / "z.jpg", tmp_path / "missing.jpg", tmp_path / "empty"]
    )
    assert found == [
        explicit,
        root / "a.PNG",
        root / "b" / "deeper" / "c.jpeg",
        root / "b" / "x.webp",
        root / "z.jpg",
    ]
    assert len(errors) == 2
    assert "missing.jpg" in errors[0] and "no such file" in errors[0]
    assert "empty" in errors[1] and "no image" in errors[1]


def test_large_images_decode_at_reduced_size_but_never_below_min_side():
    from rnncap.data.images import decode_image_bytes, decoded_pixels

    gradient = np.linspace(0, 255, 2400, dtype=np.uint8)
    pixels = np.stack(np.broadcast_arrays(gradient[None, :], gradient[:1800, None], 128), -1)
    big = Image.fromarray(pixels.astype(np.uint8), mode="RGB")  # 2400 x 1800
    for fmt in ("JPEG", "PNG"):
        data = _png_bytes(big, fmt)
        image = decode_image_bytes(data, "big", min_side=448)
        assert image.mode == "RGB" and min(image.size) >= 448
        assert image.size in {(600, 450), (800, 600)}  # JPEG: 1/4 DCT scale; PNG: reduce(4)
        assert decoded_pixels(data, "big", 448) == (600 * 450 if fmt == "JPEG" else 2400 * 1800)
        full = decode_image_bytes(data, "big")
        assert full.size == (2400, 1800)
        small = np.asarray(full.resize(image.size, Image.BOX), dtype=float)
        assert np.abs(np.asarray(image, dtype=float) - small).mean() < 3  # the same picture


def test_reduced_decoding_keeps_the_exif_rotation():
    from rnncap.data.images import decode_image_bytes

    tall = Image.new("RGB", (2000, 1000), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    buffer = io.BytesIO()
    tall.save(buffer, format="PNG", exif=exif)
    image = decode_image_bytes(buffer.getvalue(), "rotated", min_side=400)
    assert image.size == (500, 1000)  # reduced by 2, then turned upright


def test_decoded_pixels_refuses_like_decoding():
    from rnncap.data.images import decoded_pixels

    with pytest.raises(ImageError, match="notes: not an image") as info:
        decoded_pixels(b"hello", "notes")
    assert info.value.kind == "not_image"
    with pytest.raises(ImageError, match="empty"):
        decoded_pixels(b"", "nothing")
