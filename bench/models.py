"""Architecture registry. Adaptation to 1-channel and small inputs lives here, once per arch."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
import torch.nn.functional as F

from bench.errors import BenchInputError

Builder = Callable[..., nn.Module]
_ARCHS: dict[str, Builder] = {}

# Below this input size the ImageNet stems (stride-2 conv + pooling) throw away most pixels.
SMALL_INPUT = 64


def register_arch(name: str) -> Callable[[Builder], Builder]:
    """Register ``build(*, num_classes, in_channels, image_size) -> nn.Module``."""

    def decorate(build: Builder) -> Builder:
        _ARCHS[name] = build
        return build

    return decorate


def list_archs() -> list[str]:
    return sorted(_ARCHS)


def check_arch(name: str) -> None:
    if name not in _ARCHS:
        raise BenchInputError(f"unknown architecture {name!r}; available: {', '.join(list_archs())}")


def build_model(name: str, *, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    check_arch(name)
    return _ARCHS[name](num_classes=num_classes, in_channels=in_channels, image_size=image_size)


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


@register_arch("smallcnn")
def small_cnn(*, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """Three conv-BN-ReLU blocks and a linear head; works for any input of 8 pixels or more."""
    del image_size
    return nn.Sequential(
        _conv_bn(in_channels, 32), _conv_bn(32, 64), nn.MaxPool2d(2),
        _conv_bn(64, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, num_classes),
    )


@register_arch("allcnn")
def all_cnn(*, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """All-CNN-C (Springenberg et al., 2015) with BatchNorm, as used by Bad Teaching's code."""
    del image_size
    return nn.Sequential(
        _conv_bn(in_channels, 96), _conv_bn(96, 96), _conv_bn(96, 96, stride=2),
        _conv_bn(96, 192), _conv_bn(192, 192), _conv_bn(192, 192, stride=2),
        _conv_bn(192, 192), nn.Conv2d(192, num_classes, 1), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


def _replace_first_conv(conv: nn.Conv2d, in_channels: int, small: bool) -> nn.Conv2d:
    kernel, stride, padding = ((3, 1, 1) if small else
                               (conv.kernel_size, conv.stride, conv.padding))
    return nn.Conv2d(in_channels, conv.out_channels, kernel, stride, padding,
                     bias=conv.bias is not None)


def _resnet(factory: Callable[..., nn.Module]) -> Builder:
    def build(*, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
        model = factory(num_classes=num_classes)
        small = image_size < SMALL_INPUT
        if small or in_channels != 3:
            model.conv1 = _replace_first_conv(model.conv1, in_channels, small)
        if small:
            model.maxpool = nn.Identity()
        return model

    return build


def _densenet(factory: Callable[..., nn.Module]) -> Builder:
    def build(*, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
        model = factory(num_classes=num_classes)
        small = image_size < SMALL_INPUT
        if small or in_channels != 3:
            model.features.conv0 = _replace_first_conv(model.features.conv0, in_channels, small)
        if small:
            model.features.pool0 = nn.Identity()
        return model

    return build


class ResizeTo(nn.Module):
    """Upsample inputs smaller than ``size``: ConvNeXt's stride-32 trunk needs 32 pixels or more."""

    def __init__(self, size: int, body: nn.Module) -> None:
        super().__init__()
        self.size = size
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] < self.size or x.shape[-2] < self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear",
                              align_corners=False)
        return self.body(x)


def _convnext(factory: Callable[..., nn.Module]) -> Builder:
    def build(*, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
        model = factory(num_classes=num_classes)
        if in_channels != 3:
            stem = model.features[0][0]
            model.features[0][0] = nn.Conv2d(in_channels, stem.out_channels, stem.kernel_size,
                                             stem.stride, stem.padding)
        return ResizeTo(32, model) if image_size < 32 else model

    return build


def _register_torchvision() -> None:
    from torchvision import models as tv

    for name in ("resnet18", "resnet34", "resnet50"):
        register_arch(name)(_resnet(getattr(tv, name)))
    register_arch("densenet121")(_densenet(tv.densenet121))
    for name in ("convnext_tiny", "convnext_large"):
        register_arch(name)(_convnext(getattr(tv, name)))


_register_torchvision()
