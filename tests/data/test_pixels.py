"""NumPy preprocessing against torchvision's to_tensor + normalize: the same float32 values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from rnncap.data.images import preprocess_pixels


@pytest.mark.parametrize("size", [(37, 53), (400, 300)])
@pytest.mark.parametrize(
    "mean, std",
    [([127 / 255] * 3, [128 / 255] * 3), ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])],
)
def test_identical_to_torchvision(size, mean, std):
    rng = np.random.default_rng(size[0])
    image = Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8), mode="RGB")
    rgb = image.resize((224, 224), Image.BICUBIC)
    reference = TF.normalize(TF.to_tensor(rgb), mean, std)
    pixels = preprocess_pixels(image, 224, mean, std)
    assert pixels.dtype == np.float32 and pixels.shape == (3, 224, 224)
    torch.testing.assert_close(torch.from_numpy(pixels), reference, rtol=0, atol=0)


def test_every_byte_value_and_a_batch_row():
    """Each channel's 256 values, as the per-pixel float32 arithmetic gives them; written into
    a row of a batch when given one."""
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    codes = np.arange(256, dtype=np.uint8).reshape(16, 16)
    image = Image.fromarray(np.stack([codes, codes[::-1], codes.T], axis=-1), mode="RGB")
    scaled = np.asarray(image, dtype=np.float32) / np.float32(255)
    want = ((scaled - np.float32(mean)) / np.float32(std)).transpose(2, 0, 1)
    batch = np.zeros((2, 3, 16, 16), np.float32)
    got = preprocess_pixels(image, 16, mean, std, out=batch[1])
    assert np.shares_memory(got, batch[1])
    assert np.array_equal(batch[1].view(np.uint32), want.view(np.uint32))
    assert not batch[0].any()
