"""Every registered architecture takes the paper's input shapes, forward and backward."""
import pytest
import torch
import torch.nn.functional as F

from bench.errors import BenchInputError
from bench.models import build_model, list_archs

SHAPES = [(1, 28), (3, 32)]  # MNIST-like and CIFAR-like inputs
# ConvNeXt-L takes ~10 s to build and run here; ConvNeXt-T goes through the same adapter
# (bench.models._convnext), so the default run covers the code path with it.
SLOW_ARCHS = {"convnext_large"}


def arch_params() -> list:
    return [pytest.param(a, marks=pytest.mark.slow) if a in SLOW_ARCHS else a
            for a in list_archs()]


def test_the_slow_architectures_have_a_fast_sibling_on_the_same_adapter():
    assert SLOW_ARCHS <= set(list_archs())
    assert "convnext_tiny" in list_archs()


@pytest.mark.parametrize("arch", arch_params())
@pytest.mark.parametrize("channels,size", SHAPES)
def test_architecture_trains_on_small_inputs(arch, channels, size):
    torch.manual_seed(0)
    model = build_model(arch, num_classes=7, in_channels=channels, image_size=size)
    x = torch.randn(2, channels, size, size)
    logits = model(x)
    assert logits.shape == (2, 7)
    F.cross_entropy(logits, torch.tensor([0, 6])).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_unknown_architecture_names_the_choices():
    with pytest.raises(BenchInputError, match="unknown architecture 'vgg'.*smallcnn"):
        build_model("vgg", num_classes=10, in_channels=1, image_size=28)
