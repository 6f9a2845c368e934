"""rnncap.data.gpu_images against the PIL path of rnncap.data.images.

The same code runs with device="cpu" (torchvision's libjpeg decoder) here, and with nvJPEG in the
`gpu` tests. Differences are in 8-bit levels (one level = 1/255 before normalising). On CPU the
decoded pixels are identical and the resize follows PIL's passes, but in float32 instead of PIL's
22-bit fixed point, so a value now and then rounds to the neighbouring level (measured: 0.01% to
0.07% of the values, one level; through both passes at most two). nvJPEG's colour upsampling and
IDCT are not libjpeg's, so on the GPU only the mean difference is held to a level.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from rnncap.data.gpu_images import DevicePreprocess, device_batches, plain_jpeg_bytes
from rnncap.data.images import ImageFiles, open_image
from rnncap.models.encoders import Encoder

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.jpg"))
STD = 128 / 255


def _encoder(size: int = 224) -> Encoder:
    return Encoder("fake", nn.Identity(), 3, True, size, mean=[127 / 255] * 3, std=[STD] * 3)


def _levels(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|a - b| of normalised images, in 8-bit levels."""
    return (a.cpu() - b.cpu()).abs() * STD * 255


def _pil_path(paths, encoder) -> torch.Tensor:
    return torch.stack([encoder.preprocess(open_image(p)) for p in paths])


def _bad_and_odd_files(folder: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    photo = photo.resize((320, 240), Image.BILINEAR)  # smooth, like a photo
    files = {}

    def save(name, image, **kw):
        buffer = io.BytesIO()
        image.save(buffer, **kw)
        files[name] = buffer.getvalue()

    # colour at full resolution (4:4:4): nvJPEG upsamples 4:2:0 chroma unlike libjpeg, which on
    # this noise-like picture alone is several levels; real photos (EXAMPLES) stay 4:2:0 below
    save("good.jpg", photo, format="JPEG", quality=90, subsampling=0)
    save("small.jpg", photo.resize((100, 75)), format="JPEG", quality=90, subsampling=0)  # enlarged
    save("grey.jpg", photo.convert("L"), format="JPEG")
    save("cmyk.jpg", photo.convert("CMYK"), format="JPEG")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when shown
    save("rotated.jpg", photo, format="JPEG", exif=exif)
    save("photo.png", photo, format="PNG")
    files["truncated.jpg"] = files["good.jpg"][: len(files["good.jpg"]) // 2]
    files["empty.jpg"] = b""
    files["text.jpg"] = b"these are not pixels\n"
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return [folder / name for name in files] + [folder / "missing.jpg"]


def test_plain_jpegs_only_take_the_device_path(tmp_path):
    paths = {p.name: p for p in _bad_and_odd_files(tmp_path)}
    plain = {name for name, p in paths.items() if plain_jpeg_bytes(p) is not None}
    assert plain == {"good.jpg", "small.jpg", "grey.jpg"}


def _check_against_pil_path(paths, device, batch_size=4) -> tuple[dict, dict]:
    """device_batches vs ImageFiles: the same files fail with the same message; the others
    return (max, mean) differences in levels."""
    encoder = _encoder()
    got_images, got_bad = {}, {}
    for images, indices, bad in device_batches(paths, encoder, device, batch_size, workers=0):
        assert images is None or (
            images.device.type == torch.device(device).type and images.shape[1:] == (3, 224, 224)
        )
        for row, index in enumerate(indices):
            got_images[index] = images[row]
        got_bad.update({index: message for message, index in bad})
    files = ImageFiles(paths, encoder.preprocess)
    want = [files[i][0] for i in range(len(paths))]
    assert got_bad == {i: w for i, w in enumerate(want) if isinstance(w, str)}
    assert set(got_images) == {i for i, w in enumerate(want) if not isinstance(w, str)}
    return {paths[i].name: _levels(x, want[i]) for i, x in got_images.items()}, got_bad


def test_device_batches_on_cpu_report_bad_files_like_the_pil_path(tmp_path):
    differences, bad = _check_against_pil_path(_bad_and_odd_files(tmp_path), "cpu")
    assert len(bad) == 4  # truncated, empty, text, missing
    for name, levels in differences.items():
        assert levels.max() <= 2.0 + 1e-4 and levels.mean() <= 0.01, (name, float(levels.max()))


@pytest.mark.skipif(not EXAMPLES, reason="no example photos")
def test_cpu_decode_and_batched_resize_match_pil():
    """torchvision's libjpeg decode + float32 batched resize vs PIL: at most one level apart."""
    encoder = _encoder()
    jpegs = [plain_jpeg_bytes(p) for p in EXAMPLES]
    assert all(j is not None for j in jpegs)
    images, failed = DevicePreprocess.for_encoder(encoder, "cpu")(jpegs)
    assert failed == []
    levels = _levels(images, _pil_path(EXAMPLES, encoder))
    print(f"cpu decode vs PIL: max {levels.max():.3f} levels, mean {levels.mean():.4f}")
    assert levels.max() <= 2.0 + 1e-4
    assert levels.mean() <= 0.01  # a flipped rounding is rare


@pytest.mark.gpu
@pytest.mark.skipif(not EXAMPLES, reason="no example photos")
def test_nvjpeg_matches_pil_on_average():
    encoder = _encoder()
    images, failed = DevicePreprocess.for_encoder(encoder, "cuda")(
        [plain_jpeg_bytes(p) for p in EXAMPLES]
    )
    assert failed == [] and images.is_cuda
    levels = _levels(images, _pil_path(EXAMPLES, encoder))
    print(f"nvJPEG vs PIL: max {levels.max():.2f} levels, mean {levels.mean():.4f}")
    assert levels.mean() <= 1.0


@pytest.mark.gpu
def test_device_batches_on_cuda_report_bad_files_like_the_pil_path(tmp_path):
    differences, bad = _check_against_pil_path(_bad_and_odd_files(tmp_path), "cuda")
    assert len(bad) == 4
    for name, levels in differences.items():
        assert levels.mean() <= 1.0, (name, float(levels.mean()), float(levels.max()))


@pytest.mark.gpu
@pytest.mark.skipif(not EXAMPLES, reason="no example photos")
def test_caption_files_decoding_on_the_gpu_matches_the_pil_path(tmp_path):
    """The bundled model on CUDA: the same files fail with the same messages either way, and the
    captions agree (nvJPEG's pixels differ slightly, so a word may change: printed, not failed)."""
    from rnncap.decode.captioner import Failed, load

    paths = [*EXAMPLES, *_bad_and_odd_files(tmp_path)]
    captioner = load("default", device="cuda")
    runs = [
        list(
            captioner.caption_files(
                paths, progress=False, batch_size=4, workers=2, device_decode=on
            )
        )
        for on in (True, False)
    ]
    gpu, pil = ({str(r.image): r for r in run} for run in runs)
    assert gpu.keys() == pil.keys() == {str(p) for p in paths}
    failed = {k for k, r in pil.items() if isinstance(r, Failed)}
    assert failed == {k for k, r in gpu.items() if isinstance(r, Failed)} and len(failed) == 4
    assert all(gpu[k].reason == pil[k].reason for k in failed)
    differ = [
        (k, gpu[k].text, pil[k].text) for k in pil.keys() - failed if gpu[k].text != pil[k].text
    ]
    print(f"{len(differ)} of {len(pil) - len(failed)} captions differ: {differ}")
