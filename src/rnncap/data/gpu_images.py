"""Decoding and preprocessing JPEG files on the GPU in batches (nvJPEG through torchvision), for
the caption pipeline and the feature cache when they run on CUDA.

Reader threads only read files: a plain JPEG travels as its bytes, anything else (PNG, CMYK,
EXIF-rotated, suspect or broken files) goes through the PIL path of `rnncap.data.images`, which
also words every error. The calling thread decodes the batch's JPEGs on the device with
`torchvision.io.decode_jpeg`, resizes each whole picture to S x S the way PIL does (antialiased
bicubic, rows then columns, 8-bit levels after each pass) and normalises the batch.
`device_batches` yields what a DataLoader over `ImageFiles` with `collate_images` yields.
(`EncodedImages` is the per-file step; it also works as a DataLoader data set.)
"""

from __future__ import annotations

import os
from collections import defaultdict, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import Image

from rnncap.data.images import ImageFiles

EXIF_ORIENTATION = 0x0112


def plain_jpeg_bytes(path: str | os.PathLike) -> torch.Tensor | None:
    """The file's bytes (uint8, 1-D) when it is a JPEG that decodes the same on every decoder:
    complete (ends with the end-of-image marker), 8-bit Huffman-coded RGB or grey, no EXIF
    rotation, within PIL's pixel limit. None for anything else, which then takes the PIL path.
    Only the header's segments are read (no PIL object): this runs for every file of a job."""
    try:
        data = Path(path).read_bytes()
        if not (data.rstrip(b"\0\r\n").endswith(b"\xff\xd9") and plain_jpeg_header(data)):
            return None
    except Exception:  # noqa: BLE001 - the PIL path reports it properly
        return None
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


SOF_PLAIN = (0xC0, 0xC1, 0xC2)  # frames of baseline, extended and progressive Huffman JPEGs
SOF_ANY = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # every start-of-frame marker


def plain_jpeg_header(data: bytes) -> bool:
    """True when the segments before the first scan describe one 8-bit Huffman-coded frame of 1
    or 3 components (PIL mode L or RGB) within Image.MAX_IMAGE_PIXELS, with no EXIF or XMP
    orientation, no Adobe colour transform and no multi-picture segment."""
    if not data.startswith(b"\xff\xd8"):
        return False
    position, frame = 2, False
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return False
        marker = data[position + 1]
        if marker == 0xFF:  # a fill byte
            position += 1
            continue
        if marker == 0xDA:  # start of scan: the header is over
            return frame
        if 0xD0 <= marker <= 0xD9 or marker == 0x01:  # stray markers without a length
            return False
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        segment = data[position + 4 : position + 2 + length]
        if marker in SOF_ANY:
            if marker not in SOF_PLAIN or frame or not _plain_frame(segment):
                return False
            frame = True
        elif marker == 0xE1 and (b"Orientation" in segment or segment.startswith(b"Exif\0\0")):
            if not segment.startswith(b"Exif\0\0") or _exif_orientation(segment[6:]) != 1:
                return False  # XMP may rotate too: PIL decides
        elif marker == 0xEE or (marker == 0xE2 and segment.startswith(b"MPF\0")):
            return False  # Adobe colour transform; multi-picture (PIL opens it as MPO)
        position += 2 + length
    return False


def _plain_frame(segment: bytes) -> bool:
    precision, components = segment[0], segment[5]
    height, width = int.from_bytes(segment[1:3], "big"), int.from_bytes(segment[3:5], "big")
    limit = Image.MAX_IMAGE_PIXELS
    within = limit is None or width * height <= limit
    return precision == 8 and components in (1, 3) and width > 0 and height > 0 and within


def _exif_orientation(tiff: bytes) -> int | None:
    """The orientation tag of an Exif block's first directory (1 when absent); None when the
    block cannot be read."""
    orders = {b"II*\0": "little", b"MM\0*": "big"}
    order = orders.get(tiff[:4])
    if order is None:
        return None
    offset = int.from_bytes(tiff[4:8], order)
    count = int.from_bytes(tiff[offset : offset + 2], order)
    for k in range(count):
        entry = tiff[offset + 2 + 12 * k : offset + 14 + 12 * k]
        if len(entry) < 12:
            return None
        if int.from_bytes(entry[:2], order) == EXIF_ORIENTATION:
            return int.from_bytes(entry[8:10], order)  # a SHORT, first in the value field
    return 1


class EncodedImages(ImageFiles):
    """index -> (JPEG bytes (L,) | preprocessed image (3, S, S) | a one-line error, index).
    Runs in reader threads (or DataLoader workers) and never raises for a bad file."""

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
                    x = (
                        torch.nn.functional.interpolate(
                            x, size=size, mode="bicubic", antialias=True, align_corners=False
                        )
                        .round_()
                        .clamp_(0, 255)
                    )
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
    ahead: int = 4,
) -> Iterator[tuple[torch.Tensor | None, list[int], list[tuple[str, int]]]]:
    """Batches of `paths` preprocessed for `encoder`, JPEGs decoded on `device`.

    Yields (images (B, 3, S, S) on device | None, their indices into paths, [(message, index)]
    for the files that could not be read), like a DataLoader over `ImageFiles` with
    `collate_images`. `workers` threads read the files `ahead` batches in advance (0: read here)
    and run the PIL path for what is not a plain JPEG; a JPEG that the device cannot decode goes
    through PIL too. Threads, not processes: a file is read with the GIL released, the header
    check is cheap, and nothing is pickled or started per job.
    """
    device = torch.device(device)
    prepare = DevicePreprocess.for_encoder(encoder, device)
    files = EncodedImages(paths, encoder.preprocess)
    for batch in read_ahead(files, batch_size, workers, ahead):
        jpegs, ready, bad = collate_encoded(batch)
        decoded, failed = prepare([data for data, _ in jpegs])
        indices = [i for k, (_, i) in enumerate(jpegs) if k not in set(failed)]
        parts = [decoded] if decoded is not None else []
        for k in failed:  # the device's decoder refused it: PIL decides, and words any error
            result, index = ImageFiles.__getitem__(files, jpegs[k][1])
            if isinstance(result, str):
                bad.append((result, index))
            else:
                ready.append((result, index))
        if ready:
            parts.append(torch.stack([x for x, _ in ready]).to(device, non_blocking=True))
            indices += [i for _, i in ready]
        yield (torch.cat(parts) if parts else None), indices, bad


def read_ahead(items, batch_size: int, workers: int, ahead: int = 4) -> Iterator[list]:
    """[items[i] for i in a batch], batch after batch, computed by `workers` threads at most
    `ahead` batches in advance (workers 0: here, when asked for)."""
    starts = range(0, len(items), batch_size)
    if workers <= 0:
        for start in starts:
            yield [items[i] for i in range(start, min(start + batch_size, len(items)))]
        return
    pool = ThreadPoolExecutor(workers, thread_name_prefix="rnncap-read")
    pending: deque = deque()
    try:
        for start in starts:
            stop = min(start + batch_size, len(items))
            pending.append([pool.submit(items.__getitem__, i) for i in range(start, stop)])
            if len(pending) > ahead:
                yield [future.result() for future in pending.popleft()]
        while pending:
            yield [future.result() for future in pending.popleft()]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
