"""Architecture registry. Adaptation to 1-channel and small inputs lives here, once per arch."""
from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import BenchInputError
from methods.lookup import Registry

log = logging.getLogger(__name__)

Builder = Callable[..., nn.Module]
ARCHITECTURES: Registry[Builder] = Registry("architecture", error=BenchInputError)
_TORCHVISION: list[str] = []
_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")

# Below this input size the ImageNet stems (stride-2 conv + pooling) throw away most pixels.
SMALL_INPUT = 64


def register_arch(name: str, *, label: str | None = None) -> Callable[[Builder], Builder]:
    """Register ``build(*, num_classes, in_channels, image_size, state) -> nn.Module``;
    ``state`` is an ImageNet state dict for torchvision architectures, else None."""
    return ARCHITECTURES.decorator(name, label=label)


def list_archs(pattern: str = "*") -> list[str]:
    return ARCHITECTURES.names(pattern)


def check_arch(name: str) -> None:
    ARCHITECTURES.get(name)


PRETRAINED = ("imagenet",)


def build_model(name: str, *, num_classes: int, in_channels: int, image_size: int,
                pretrained: str | None = None, download: bool = False) -> nn.Module:
    """A fresh model; ``pretrained="imagenet"`` starts from torchvision's ImageNet weights."""
    check_arch(name)
    check_pretrained(name, pretrained)
    state = imagenet_state(name, download=download) if pretrained else None
    return ARCHITECTURES.get(name)(num_classes=num_classes, in_channels=in_channels,
                        image_size=image_size, state=state)


def check_pretrained(name: str, pretrained: str | None) -> None:
    if pretrained is None:
        return
    if pretrained not in PRETRAINED:
        raise BenchInputError(f"pretrained {pretrained!r}; allowed: {', '.join(PRETRAINED)} "
                              "or absent")
    if name not in _TORCHVISION:
        raise BenchInputError(f"architecture {name!r} has no ImageNet weights; pretrained "
                              f"works with {', '.join(_TORCHVISION)}")


def imagenet_state(name: str, *, download: bool) -> dict[str, torch.Tensor]:
    """torchvision's default ImageNet weights for ``name`` from the local torch hub cache
    (``$TORCH_HOME/hub/checkpoints``), fetched there first only when ``download`` is set."""
    from torchvision.models import get_model_weights

    weights = get_model_weights(name).DEFAULT
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name
    if not path.is_file():
        if not download:
            raise BenchInputError(f"ImageNet weights for {name} not found at {path}; "
                                  "put torchvision's file there or pass --download")
        weights.get_state_dict(progress=False)  # torchvision saves it to ``path``
    return torch.load(path, map_location="cpu", weights_only=True)


def _load_matching(model: nn.Module, state: dict[str, torch.Tensor] | None) -> nn.Module:
    """Copy every tensor whose name and shape match; the rest (a new classifier head, a stem
    rebuilt for 1-channel or small inputs) keeps its fresh initialisation."""
    if state is None:
        return model
    own = model.state_dict()
    # DenseNet files predate torchvision's module names: "norm.1" is now "norm1".
    state = {_DENSENET_OLD_KEY.sub(r"\1\2", k): v for k, v in state.items()}
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if len(matched) < len(own) // 2:
        raise BenchInputError(f"the ImageNet weights fit only {len(matched)} of "
                              f"{type(model).__name__}'s {len(own)} tensors: wrong file?")
    model.load_state_dict(matched, strict=False)
    skipped = sorted(set(own) - set(matched))
    log.info("ImageNet weights: %d tensors loaded, fresh: %s", len(matched),
             ", ".join(skipped[:6]) + (" ..." if len(skipped) > 6 else ""))
    return model


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


@register_arch("smallcnn", label="SmallCNN")
def small_cnn(*, num_classes: int, in_channels: int, image_size: int,
              state: None = None) -> nn.Module:
    """Three conv-BN-ReLU blocks and a linear head; works for any input of 8 pixels or more."""
    del image_size, state
    return nn.Sequential(
        _conv_bn(in_channels, 32), _conv_bn(32, 64), nn.MaxPool2d(2),
        _conv_bn(64, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, num_classes),
    )


@register_arch("allcnn", label="All-CNN")
def all_cnn(*, num_classes: int, in_channels: int, image_size: int,
            state: None = None) -> nn.Module:
    """All-CNN-C (Springenberg et al., 2015) with BatchNorm, as used by Bad Teaching's code."""
    del image_size, state
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


def _stem_adapted(factory: Callable[..., nn.Module], *, stem: str, pool: str) -> Builder:
    """ResNet/DenseNet builder: the stem convolution (dotted path ``stem``) is rebuilt for other
    channel counts, and for small inputs it becomes 3x3 stride 1 and ``pool`` is dropped."""

    def build(*, num_classes: int, in_channels: int, image_size: int,
              state: dict[str, torch.Tensor] | None = None) -> nn.Module:
        model = _load_matching(factory(num_classes=num_classes), state)
        small = image_size < SMALL_INPUT
        if small or in_channels != 3:
            model.set_submodule(stem, _replace_first_conv(model.get_submodule(stem),
                                                          in_channels, small))
        if small:
            model.set_submodule(pool, nn.Identity())
        return model

    return build


def _resnet(factory: Callable[..., nn.Module]) -> Builder:
    return _stem_adapted(factory, stem="conv1", pool="maxpool")


def _densenet(factory: Callable[..., nn.Module]) -> Builder:
    return _stem_adapted(factory, stem="features.conv0", pool="features.pool0")


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


@register_arch("pbu_resnet18", label="ResNet-18 (PBU official)")
def pbu_resnet18(*, num_classes: int, in_channels: int, image_size: int,
                 state: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """The official PBU code's model: torchvision ResNet-18 whose stem is a 7x7 stride-2
    convolution for ``in_channels`` inputs, max-pooling kept, whatever the input size."""
    from torchvision.models import resnet18

    del image_size
    model = _load_matching(resnet18(num_classes=num_classes), state)
    model.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    return model


def _convnext(factory: Callable[..., nn.Module]) -> Builder:
    def build(*, num_classes: int, in_channels: int, image_size: int,
              state: dict[str, torch.Tensor] | None = None) -> nn.Module:
        model = _load_matching(factory(num_classes=num_classes), state)
        if in_channels != 3:
            stem = model.features[0][0]
            model.features[0][0] = nn.Conv2d(in_channels, stem.out_channels, stem.kernel_size,
                                             stem.stride, stem.padding)
        return ResizeTo(32, model) if image_size < 32 else model

    return build


def _register_torchvision() -> None:
    from torchvision import models as tv

    adapters = {"resnet18": (_resnet, "ResNet-18"), "resnet34": (_resnet, "ResNet-34"),
                "resnet50": (_resnet, "ResNet-50"), "densenet121": (_densenet, "DenseNet-121"),
                "convnext_tiny": (_convnext, "ConvNeXt-T"),
                "convnext_large": (_convnext, "ConvNeXt-L")}
    for name, (adapt, label) in adapters.items():
        register_arch(name, label=label)(adapt(getattr(tv, name)))
        _TORCHVISION.append(name)


_register_torchvision()
