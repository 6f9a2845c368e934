"""Decoding and preprocessing JPEG files on the GPU in batches (nvJPEG through torchvision), for
the caption pipeline and the feature cache when they run on CUDA.

DataLoader workers only read files: a plain JPEG travels as its bytes, anything else (PNG, CMYK,
EXIF-rotated, suspect or broken files) goes through the PIL path of `rnncap.data.images`, which
also words every error. The main process decodes the batch's JPEGs on the device with
`torchvision.io.decode_jpeg`, resizes each whole picture to S x S the way PIL does (antialiased
bicubic, rows then columns, 8-bit levels after each pass) and normalises the batch.
`device_batches` yields what a DataLoader over `ImageFiles` with `collate_images` yields.
"""

from __future__ import annotations

import io
import os
import warnings
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from PIL import Image

from rnncap.data.images import ImageFiles, _check_pixels

EXIF_ORIENTATION = 0x0112


def plain_jpeg_bytes(path: str | os.PathLike) -> torch.Tensor | None:
    """The file's bytes (uint8, 1-D) when it is a JPEG that decodes the same on every decoder:
    complete (ends with the end-of-image marker), RGB or grey, no EXIF rotation, within PIL's
    pixel limit. None for anything else, which then takes the PIL path."""
    try:
        data = Path(path).read_bytes()
        if not (data.startswith(b"\xff\xd8\xff") and data.rstrip(b"\0\r\n").endswith(b"\xff\xd9")):
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:  # reads the header only
                _check_pixels(image)
                if image.format != "JPEG" or image.mode not in ("RGB", "L"):
                    return None
                if image.getexif().get(EXIF_ORIENTATION, 1) != 1:
                    return None
    except Exception:  # noqa: BLE001 - the PIL path reports it properly
        return None
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


class EncodedImages(ImageFiles):
    """A DataLoader data set: index -> (JPEG bytes (L,) | preprocessed image (3, S, S) | a
    one-line error, index). Runs in DataLoader workers and never raises for a bad file."""

    def __getitem__(self, index: int):
        data = plain_jpeg_bytes(self.paths[index])
        return (data, index) if data is not None else super().__getitem__(index)


def collate_encoded(batch):
    """[(bytes | image | message, index)] -> the three kinds apart, each [(item, index)]."""
    jpegs = [(x, i) for x, i in batch if isinstance(x, torch.Tensor) and x.dim() == 1]
    images = [(x, i) for x, i in batch if isinstance(x, torch.Tensor) and x.dim() == 3]
    bad = [(x, i) for x, i in batch if isinstance(x, str)]
    return jpegs, images, bad


class DevicePreprocess:
    """JPEG bytes -> normalised images (B, 3, S, S) on `device`, as `Encoder.preprocess` makes them
    from PIL images: whole picture resized to S x S (antialiased bicubic), 8-bit levels, then
    (x / 255 - mean) / std."""

    def __init__(self, image_size: int, mean: Sequence[float], std: Sequence[float], device):
        self.image_size = image_size
        self.device = torch.device(device)
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)

    @classmethod
    def for_encoder(cls, encoder, device) -> DevicePreprocess:
        return cls(encoder.image_size, encoder.mean, encoder.std, device)

    def decode(self, jpegs: list[torch.Tensor]) -> list[torch.Tensor | None]:
        """Decode on the device, in one batch; per image (3, h, w) uint8, or None if it failed."""
        from torchvision.io import ImageReadMode, decode_jpeg

        if not jpegs:
            return []
        try:
            return list(decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=self.device))
        except RuntimeError:  # one bad image fails the whole batch: find it
            decoded: list[torch.Tensor | None] = []
            for data in jpegs:
                try:
                    decoded.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device))
                except RuntimeError:
                    decoded.append(None)
            return decoded

    def resize(self, pixels: list[torch.Tensor]) -> torch.Tensor:
        """(3, h, w) uint8 images -> (B, 3, S, S) float 8-bit levels, whole pictures resized as
        PIL resizes them: antialiased bicubic, first along rows then along columns, rounded to
        8-bit levels after each pass. Images of the same size are resized in one call."""
        S = self.image_size
        out = torch.empty(len(pixels), 3, S, S, device=self.device)
        by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
        for k, image in enumerate(pixels):
            by_size[tuple(image.shape[1:])].append(k)
        for (h, w), positions in by_size.items():
            x = torch.stack([pixels[k] for k in positions]).float()  # (n, 3, h, w)
            for size, needed in (((h, S), w != S), ((S, S), h != S)):
                if needed:
                    x = torch.nn.functional.interpolate(
                        x, size=size, mode="bicubic", antialias=True, align_corners=False
                    ).round_().clamp_(0, 255)
            out[positions] = x
        return out

    def normalise(self, levels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) 0..255 -> (levels / 255 - mean) / std, in place."""
        return levels.div_(255).sub_(self.mean).div_(self.std)

    def __call__(self, jpegs: list[torch.Tensor]) -> tuple[torch.Tensor | None, list[int]]:
        """JPEG bytes -> (images (B, 3, S, S) of those that decoded | None, the positions of
        those that did not)."""
        decoded = self.decode(jpegs)
        failed = [k for k, image in enumerate(decoded) if image is None]
        good = [image for image in decoded if image is not None]
        return (self.normalise(self.resize(good)) if good else None), failed


def device_batches(
    paths: Sequence[str | os.PathLike],
    encoder,
    device,
    batch_size: int = 32,
    workers: int = 2,
) -> Iterator[tuple[torch.Tensor | None, list[int], list[tuple[str, int]]]]:
    """Batches of `paths` preprocessed for `encoder`, JPEGs decoded on `device`.

    Yields (images (B, 3, S, S) on device | None, their indices into paths, [(message, index)]
    for the files that could not be read), like a DataLoader over `ImageFiles` with
    `collate_images`. `workers` DataLoader processes read the files (and run the PIL path for
    what is not a plain JPEG); a JPEG that the device cannot decode goes through PIL too.
    """
    from torch.utils.data import DataLoader

    device = torch.device(device)
    prepare = DevicePreprocess.for_encoder(encoder, device)
    files = ImageFiles(paths, encoder.preprocess)  # the PIL path, for fallbacks
    loader = DataLoader(
        EncodedImages(paths, encoder.preprocess),
        batch_size=batch_size,
        num_workers=min(workers, -(-len(paths) // batch_size)),  # no idle workers
        collate_fn=collate_encoded,
        pin_memory=device.type == "cuda",
    )
    for jpegs, ready, bad in loader:
        decoded, failed = prepare([data for data, _ in jpegs])
        indices = [i for k, (_, i) in enumerate(jpegs) if k not in set(failed)]
        parts = [decoded] if decoded is not None else []
        for k in failed:  # the device's decoder refused it: PIL decides, and words any error
            result, index = files[jpegs[k][1]]
            if isinstance(result, str):
                bad.append((result, index))
            else:
                ready.append((result, index))
        if ready:
            parts.append(torch.stack([x for x, _ in ready]).to(device, non_blocking=True))
            indices += [i for _, i in ready]
        yield (torch.cat(parts) if parts else None), indices, bad
