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
