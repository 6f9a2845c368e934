"""Opening user images safely: one clear error per bad file, every PIL mode converted to RGB.

Shared by the encoders, the feature cache, the `caption` command and the web server.
"""

from __future__ import annotations

import functools
import io
import os
import warnings
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from rnncap.utils.errors import DataError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)


class ImageError(DataError, ValueError):
    """A file that cannot be used as an image; the message is one line naming the file.

    `kind` says why: "missing", "empty", "not_image", "bomb" (too many pixels) or "broken".
    """

    def __init__(self, message: str, kind: str = "broken") -> None:
        super().__init__(message)
        self.kind = kind


def open_image(path: str | os.PathLike) -> Image.Image:
    """Open, fully decode and convert an image file to an RGB PIL image.

    Raises ImageError for a missing, empty, truncated or unreadable file, for a file that is not
    an image, and for a decompression bomb (more pixels than `PIL.Image.MAX_IMAGE_PIXELS`).
    """
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such file", "missing")
    if not path.is_file():
        raise ImageError(f"{path}: not a file", "missing")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: empty file (0 bytes)", "empty")
    return _decode(path, str(path))


def decode_image_bytes(
    data: bytes, name: str = "image", min_side: int | None = None
) -> Image.Image:
    """`open_image` for the bytes of an image file (an upload); `name` appears in errors.

    min_side: decode a large image at reduced size, never below `min_side` pixels on either
    side (JPEG: DCT scaling while decoding; other formats: an integer `reduce` before the RGB
    conversion), which bounds the memory a huge photo costs when it is only to be shrunk.
    """
    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)", "empty")
    return _decode(io.BytesIO(data), name, min_side)


def decoded_pixels(data: bytes, name: str = "image", min_side: int | None = None) -> int:
    """The pixels `decode_image_bytes(data, name, min_side)` will hold, from the header alone;
    ImageError as that call would raise it for an empty file, a non-image or a bomb."""
    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)", "empty")
    with _image_errors(name), Image.open(io.BytesIO(data)) as image:
        _check_pixels(image)
        _draft(image, min_side)
        return image.width * image.height


def _decode(source: Path | io.BytesIO, name: str, min_side: int | None = None) -> Image.Image:
    """Decode fully (with the decompression-bomb guard), undo EXIF rotation, convert to RGB."""
    with _image_errors(name), Image.open(source) as image:
        _check_pixels(image)
        _draft(image, min_side)
        image.load()  # decode now so that truncated data fails here, not later
        if min_side is not None:
            image = _reduce(image, min_side)
        image = ImageOps.exif_transpose(image)
        return to_rgb(image)


def _draft(image: Image.Image, min_side: int | None) -> None:
    """JPEG only: decode at 1/2, 1/4 or 1/8 scale while both sides stay >= min_side."""
    if min_side is not None and image.format == "JPEG":
        image.draft("RGB", (min_side, min_side))


def _reduce(image: Image.Image, min_side: int) -> Image.Image:
    """Shrink by the largest integer factor that keeps both sides >= min_side (box filter)."""
    factor = min(image.width, image.height) // min_side
    if factor < 2:
        return image
    info = image.info  # the EXIF orientation, applied after the reduction
    if image.mode in ("1", "P"):  # modes reduce() does not take
        image = image.convert("L") if image.mode == "1" else to_rgb(image)
    reduced = image.reduce(factor)
    reduced.info = dict(info)
    return reduced


@contextmanager
def _image_errors(name: str):
    """PIL's exceptions (and its bomb warning) -> ImageError naming the file, with a kind."""
    try:
        # PIL only warns between MAX_IMAGE_PIXELS and twice that; refuse the whole range.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(
            f"{name}: too many pixels, refused as a decompression bomb ({error})", "bomb"
        ) from None
    except UnidentifiedImageError:
        raise ImageError(
            f"{name}: not an image (unknown or unsupported format)", "not_image"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        if "truncated" in reason or isinstance(error, EOFError):
            reason = f"truncated or corrupt image data ({reason})"
        raise ImageError(f"{name}: cannot read image: {reason}") from None
    except NotImplementedError as error:  # a variant Pillow does not decode (DDS, BLP formats)
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ImageError(f"{name}: unsupported image variant ({reason})", "not_image") from None
    except Exception as error:  # noqa: BLE001 - a decoder tripping on crafted data (Overflow-,
        # AttributeError...): still one bad file, never a crash of the caller
        reason = str(error).splitlines()[0] if str(error) else ""
        raise ImageError(
            f"{name}: cannot read image: corrupt data ({type(error).__name__}: {reason})"
        ) from None


def _check_pixels(image: Image.Image) -> None:
    """Refuse images above MAX_IMAGE_PIXELS before decoding them (PIL itself only warns)."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and image.width * image.height > limit:
        raise Image.DecompressionBombError(
            f"{image.width}x{image.height} = {image.width * image.height} pixels, limit {limit}"
        )


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB.

    Transparent images are composited on white; 16- and 32-bit grey levels are scaled to 8 bits
    (PIL's own conversion would clip them at 255); float images are taken as 0..1 when they fit
    that range, as 0..255 otherwise.
    """
    if image.mode == "RGB" and not image.has_transparency_data:
        return image
    if image.has_transparency_data and not image.mode.startswith("I"):
        # RGBA, LA, PA, P with an RGBA palette or a transparent index, RGB/L with a colour key
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode.startswith("I;16") or image.mode == "I":
        grey = np.asarray(image, dtype=np.float64)  # (H, W)
        grey = np.clip(grey, 0, 65535) / 65535.0 * 255.0
        return _grey_to_rgb(grey)
    if image.mode == "F":
        grey = np.asarray(image, dtype=np.float64)
        grey = np.nan_to_num(grey, nan=0.0, posinf=0.0, neginf=0.0)
        if grey.size and grey.min() >= 0.0 and grey.max() <= 1.0:
            grey = grey * 255.0
        return _grey_to_rgb(np.clip(grey, 0, 255))
    return image.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def _grey_to_rgb(grey: np.ndarray) -> Image.Image:
    """(H, W) grey levels in 0..255 (float) -> RGB image."""
    grey8 = np.round(grey).astype(np.uint8)
    return Image.fromarray(np.stack([grey8] * 3, axis=-1), mode="RGB")


def find_images(paths: Iterable[str | os.PathLike]) -> tuple[list[Path], list[str]]:
    """Expand files and folders into a list of image files, plus one message per problem.

    A file named explicitly is kept whatever its extension (`open_image` judges it later); a
    folder is searched recursively for files with an image extension (hidden entries skipped),
    sorted by path. Missing paths and folders without images become error messages; duplicates
    are dropped.
    """
    found: list[Path] = []
    errors: list[str] = []
    seen: set[Path] = set()

    def add(path: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            found.append(path)

    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            images, unreadable = _walk_images(path)
            errors += [f"{folder}: cannot read folder ({reason})" for folder, reason in unreadable]
            if not images and not unreadable:
                errors.append(f"{path}: folder holds no image files")
            for image in images:
                add(image)
        elif path.is_file():
            add(path)
        elif path.exists():
            errors.append(f"{path}: not a file or folder")
        else:
            errors.append(f"{path}: no such file or folder")
    return found, errors


def _walk_images(root: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Image files under `root` (hidden entries skipped), sorted, and the folders that could not
    be listed with the reason (rglob would skip those silently)."""
    images: list[Path] = []
    unreadable: list[tuple[Path, str]] = []

    def failed(error: OSError) -> None:
        unreadable.append((Path(error.filename or root), error.strerror or str(error)))

    for folder, subfolders, files in os.walk(root, onerror=failed):
        subfolders[:] = [d for d in subfolders if not d.startswith(".")]
        for name in files:
            path = Path(folder) / name
            if not name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS:
                if path.is_file():
                    images.append(path)
    return sorted(images), sorted(unreadable)


class ImageFiles:
    """A DataLoader data set: index -> (preprocessed image (3, S, S) or a one-line error, index).

    Runs in DataLoader workers: a broken file becomes a message naming it, never an exception,
    so one bad image does not stop a batch job.
    """

    def __init__(self, paths: Iterable[str | os.PathLike], preprocess):
        self.paths = [Path(p) for p in paths]
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        path = self.paths[index]
        try:
            return self.preprocess(open_image(path)), index
        except ImageError as error:
            return str(error), index
        except Exception as error:  # noqa: BLE001 - one bad file must not stop the others
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            return f"{path}: cannot read image: {reason}", index


def collate_images(batch):
    """[(image | message, index)] -> (images (B, 3, S, S) | None, indices, [(message, index)])."""
    import torch

    return _collate(batch, torch.stack)


def collate_arrays(batch):
    """`collate_images` of NumPy images: (images (B, 3, S, S) | None, indices, [(message,
    index)])."""
    return _collate(batch, np.stack)


def _collate(batch, stack):
    good = [(x, i) for x, i in batch if not isinstance(x, str)]
    bad = [(x, i) for x, i in batch if isinstance(x, str)]
    images = stack([x for x, _ in good]) if good else None
    return images, [i for _, i in good], bad


def preprocess_pixels(
    image: Image.Image, image_size: int, mean, std, out: np.ndarray | None = None
) -> np.ndarray:
    """PIL image of any mode and size -> normalised float32 array (3, S, S), S = image_size,
    written into `out` (3, S, S) float32 when given (a batch's row: no copy to stack them).

    The whole picture is resized to S x S (no crop, so nothing a caption might mention is cut
    away) with antialiased bicubic filtering, scaled to [0, 1] and normalised per channel. Every
    encoder backend (torch, ONNX Runtime with or without torch) preprocesses here.
    """
    rgb = to_rgb(image).resize((image_size, image_size), Image.BICUBIC)
    codes = np.asarray(rgb).transpose(2, 0, 1)  # (3, S, S) uint8
    table = _pixel_table(tuple(map(float, mean)), tuple(map(float, std)))  # (3, 256)
    out = np.empty(codes.shape, np.float32) if out is None else out
    for channel in range(3):
        np.take(table[channel], codes[channel], out=out[channel])
    return out


@functools.lru_cache(maxsize=8)
def _pixel_table(mean: tuple, std: tuple) -> np.ndarray:
    """(3, 256) float32: each channel's normalised value of every byte, (v / 255 - mean) / std
    in float32, so a lookup gives the very values of computing it pixel by pixel."""
    scaled = np.arange(256, dtype=np.float32)[None, :] / np.float32(255)  # (1, 256)
    mean_ = np.asarray(mean, dtype=np.float32)[:, None]  # (3, 1)
    std_ = np.asarray(std, dtype=np.float32)[:, None]
    table = (scaled - mean_) / std_
    table.flags.writeable = False
    return table
