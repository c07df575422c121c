"""Correctness of methods.fisher against a slow per-sample reference and, when installed, BackPACK.

The reference is deliberately naive (one sample, one class, one autograd call at a time) so
that it shares nothing with the engine under test.
"""
from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from methods import fisher
from methods.fisher import diagonal_fisher

CLASSES = 5


def reference_fisher(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, kind: str
                     ) -> dict[str, torch.Tensor]:
    """Mean over samples of sum_c w_c (d log p_c / d theta)^2, one autograd call per term."""
    model.eval()
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    sums = {name: torch.zeros_like(p) for name, p in params.items()}
    for i in range(len(x)):
        log_probs = torch.log_softmax(model(x[i:i + 1]), dim=1)[0]
        probs = log_probs.detach().exp()
        terms = ([(c, probs[c]) for c in range(len(probs))] if kind == "exact"
                 else [(int(y[i]), 1.0)])
        for c, weight in terms:
            grads = torch.autograd.grad(log_probs[c], list(params.values()), retain_graph=True,
                                        allow_unused=True)
            for name, grad in zip(params, grads):
                if grad is not None:
                    sums[name] += weight * grad.square()
    return {name: total / len(x) for name, total in sums.items()}


def relative_error(ours: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> float:
    """Max absolute difference over all parameters / max absolute reference value."""
    assert sorted(ours) == sorted(ref)
    diff = max(float((ours[n].double() - ref[n].double()).abs().max()) for n in ref)
    scale = max(float(ref[n].abs().max()) for n in ref)
    return diff / scale


def batches(x: torch.Tensor, y: torch.Tensor, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x[i:i + size], y[i:i + size]) for i in range(0, len(x), size)]


def randomise_batchnorm(model: nn.Module) -> nn.Module:
    """Non-trivial running statistics and affine parameters, as after training."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return model


class Scale(nn.Module):
    """A module the fast path does not know, owning its own parameter."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.rand(shape) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gain


class Tokens(nn.Module):
    """Conv1d features as a sequence: Linear and LayerNorm over a token dimension."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(3, 6, 3, stride=2, padding=2, dilation=2)
        self.norm = nn.LayerNorm(6)
        self.mix = nn.Linear(6, 6)
        self.head = nn.Linear(6, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x).transpose(1, 2)                 # (N, tokens, 6)
        return self.head(torch.tanh(self.mix(self.norm(h))).mean(1))


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(48, 16), nn.Tanh(), nn.Linear(16, 12),
                         nn.ReLU(inplace=True), nn.Linear(12, CLASSES))


def cnn_bn() -> nn.Module:
    """Both conv forms: 8x8 outputs (direct per-sample products) and 2x2 (pairwise form)."""
    return randomise_batchnorm(nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2, bias=False), nn.BatchNorm2d(8),
        nn.ReLU(), nn.Conv2d(8, 6, 3, stride=2, dilation=1, padding=1),
        nn.Flatten(), nn.BatchNorm1d(24), nn.Linear(24, CLASSES)))


def convs() -> nn.Module:
    """Dilation, groups, asymmetric kernels and strides, 1x1, with and without bias."""
    return randomise_batchnorm(nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=2, dilation=2), nn.BatchNorm2d(6), nn.ReLU(inplace=True),
        nn.Conv2d(6, 6, 3, padding=1, groups=3, bias=False), nn.Tanh(),
        nn.Conv2d(6, 4, (3, 2), stride=(2, 1), padding=(1, 0)), nn.ReLU(),
        nn.Conv2d(4, 4, 1), nn.Flatten(), nn.Linear(4 * 15, CLASSES)))


def unknown_layers() -> nn.Module:
    """A custom parameter goes through the generic path next to fast layers (and GroupNorm)."""
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.ReLU(),
                         Scale((4, 1, 1)), nn.Flatten(), nn.Linear(4 * 16, CLASSES))


def tokens() -> nn.Module:
    return Tokens()


SMALL_MODELS = {
    "mlp": (mlp, (48,)),
    "cnn_bn": (cnn_bn, (3, 8, 8)),
    "convs": (convs, (3, 6, 6)),
    "unknown_layers": (unknown_layers, (3, 4, 4)),
    "tokens": (tokens, (3, 11)),
}


def small_case(name: str, n: int = 12, dtype: torch.dtype = torch.float64
               ) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    build, shape = SMALL_MODELS[name]
    torch.manual_seed(0)
    model = build().to(dtype).eval()
    x = torch.randn(n, *shape, dtype=dtype)
    y = torch.randint(0, CLASSES, (n,))
    return model, x, y


@pytest.mark.parametrize("kind", ["exact", "empirical"])
@pytest.mark.parametrize("name", sorted(SMALL_MODELS))
def test_small_models_match_reference(name: str, kind: str) -> None:
    model, x, y = small_case(name)
    ours = diagonal_fisher(model, batches(x, y, 5), kind=kind)
    assert relative_error(ours, reference_fisher(model, x, y, kind=kind)) < 1e-10


# Settings that force each per-layer form (and the smallest blocks) onto small layers, so
# that every code path is checked against the reference, not only those ResNet-18 picks.
FORMS = {
    "convolution": {"_CONV_FORM_POSITIONS": 1},
    "direct": {"_CONV_FORM_POSITIONS": 10**9, "_FORCE_PAIRWISE": False},
    "pairwise": {"_CONV_FORM_POSITIONS": 10**9, "_FORCE_PAIRWISE": True},
    "tiny_blocks": {"_BLOCK_ELEMENTS": 16, "_ROW_BLOCK_ELEMENTS": 16, "_OPERAND_ELEMENTS": 16,
                    "_STACKED_ELEMENTS": 16, "_CHUNK": 3, "_MAX_CHUNK": 3},
    "growing_chunks": {"_CHUNK": 1, "_MAX_CHUNK": 4},
}


@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize("name", ["convs", "tokens", "mlp"])
def test_every_layer_form_matches_reference(name: str, form: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    for constant, value in FORMS[form].items():
        monkeypatch.setattr(fisher, constant, value)
    model, x, y = small_case(name, n=7)
    for kind in ("exact", "empirical"):
        ours = diagonal_fisher(model, batches(x, y, 4), kind=kind)
        assert relative_error(ours, reference_fisher(model, x, y, kind=kind)) < 1e-10


def pbu_like() -> nn.Module:
    """The official PBU ResNet's layer shapes in small: 1-channel 7x7 stride-2 stem, max-pooling,
    then maps of 3x3 (L = 9), 2x2 (L = 4) and 1x1 (L = 1) with strides, padding, groups, a 1x1
    stride-2 shortcut, GroupNorm next to BatchNorm, and a Linear head."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 6, 7, 2, 3, bias=False), nn.BatchNorm2d(6),
                                      nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
            self.a = nn.Conv2d(6, 8, 3, 1, 1, bias=False)                  # 3x3 -> 3x3
            self.gn = nn.GroupNorm(2, 8)
            self.b = nn.Conv2d(8, 8, 3, 2, 1, groups=2)                     # 3x3 -> 2x2
            self.bn = nn.BatchNorm2d(8)
            self.short = nn.Conv2d(6, 8, 1, 2, bias=False)                  # 3x3 -> 2x2
            self.c = nn.Conv2d(8, 12, 3, 2, 1)                              # 2x2 -> 1x1
            self.d = nn.Conv2d(12, 12, 3, 1, 1, groups=3, bias=False)       # 1x1 -> 1x1
            self.head = nn.Linear(12, CLASSES)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.stem(x)
            r = self.bn(self.b(torch.relu(self.gn(self.a(h))))) + self.short(h)
            h = torch.relu(self.d(torch.relu(self.c(torch.relu(r)))))
            return self.head(h.flatten(1))

    return randomise_batchnorm(Net())


SMALL_MODELS["pbu_like"] = (pbu_like, (1, 11, 11))


@pytest.mark.parametrize("form", ["auto", "direct", "pairwise"])
def test_pbu_like_layers_match_reference_in_every_form(form: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The pairwise form at L = 9, 4 and 1 (with padding, strides and groups) against brute force.

    "auto" is the cost model's own choice per layer; the others force one form everywhere.
    """
    if form != "auto":
        monkeypatch.setattr(fisher, "_FORCE_PAIRWISE", form == "pairwise")
    chosen = {}
    make = fisher._AffineLayer.__init__

    def spy(self: fisher._AffineLayer, names: dict[str, str], *args: object, **kw: object
            ) -> None:
        make(self, names, *args, **kw)
        chosen[names.get("weight")] = (self.features.shape[-1], self.gram)

    monkeypatch.setattr(fisher._AffineLayer, "__init__", spy)
    model, x, y = small_case("pbu_like", n=9)
    for kind in ("exact", "empirical"):
        ours = diagonal_fisher(model, batches(x, y, 4), kind=kind)
        assert relative_error(ours, reference_fisher(model, x, y, kind=kind)) < 1e-10
    positions = {name.split(".")[0]: p for name, (p, _) in chosen.items() if name}
    assert positions == {"stem": 36, "a": 9, "b": 4, "short": 4, "c": 1, "d": 1, "head": 1}
    if form != "auto":
        assert all(gram == (form == "pairwise") for _, gram in chosen.values())


def group_norms() -> nn.Module:
    """GroupNorm on 2-d maps, on Conv1d sequences and on flat (N, C) features."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, 2, 1), nn.GroupNorm(4, 8), nn.ReLU(), nn.Conv2d(8, 6, 3, 2, 1),
        nn.GroupNorm(1, 6, eps=1e-3), nn.Tanh(), nn.Flatten(2), nn.Conv1d(6, 6, 2, groups=3),
        nn.GroupNorm(3, 6), nn.Flatten(), nn.Linear(6 * 3, 8), nn.GroupNorm(2, 8), nn.Tanh(),
        nn.Linear(8, CLASSES))


SMALL_MODELS["group_norms"] = (group_norms, (3, 8, 8))


def test_group_norm_is_on_the_fast_path_and_exact(caplog: pytest.LogCaptureFixture) -> None:
    model, x, y = small_case("group_norms", n=7)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.GroupNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    assert not fisher._statically_slow(model, dict(model.named_parameters()))
    with caplog.at_level("INFO", logger=fisher.__name__):
        for kind in ("exact", "empirical"):
            ours = diagonal_fisher(model, batches(x, y, 4), kind=kind)
            assert relative_error(ours, reference_fisher(model, x, y, kind=kind)) < 1e-10
    assert "generic path" not in caplog.text


def test_pbu_like_in_float32_matches_float64() -> None:
    """The pairwise form's float32 sums stay within 1e-5 of the float64 result."""
    model, x, y = small_case("pbu_like", n=16)
    exact64 = diagonal_fisher(model, batches(x, y, 8))
    ours32 = diagonal_fisher(model.float(), batches(x.float(), y, 8))
    assert relative_error(ours32, exact64) < 1e-5


@pytest.mark.parametrize(("d_in", "d_out", "positions", "pairs", "pairwise"), [
    (512, 10, 1, 1.0, True),          # a Linear head
    (4608, 512, 1, 1 / 9, True),      # 3x3 conv on a 1x1 map: only the centre tap is real
    (2304, 256, 4, 26 / 9, True),     # 3x3 conv on 2x2 maps
    (1152, 128, 16, 69.8, True),      # 3x3 conv on 4x4 maps
    (576, 64, 49, 833.4, False),      # 3x3 conv on 7x7 maps: per-sample products win
    (49, 64, 196, 15075.6, False),    # PBU's 7x7 stride-2 stem on 28x28 inputs
])
def test_cost_model_picks_pairwise_on_few_positions(d_in: int, d_out: int, positions: int,
                                                    pairs: float, pairwise: bool) -> None:
    direct, gram = fisher._form_costs(d_out, d_in, positions, pairs, rank=9, itemsize=4)
    assert (gram <= direct) == pairwise


def test_cost_model_counts_only_real_pairs() -> None:
    """Zero-padding taps drop out: a 3x3 conv on a 1x1 map has one real tap, one pair."""
    conv = nn.Conv2d(4, 4, 3, padding=1)
    a = torch.randn(2, 4, 1, 1)
    valid = fisher._unfold(conv, a.new_ones(1, 1, 1, 1))[0] > 0
    assert valid.tolist() == [[False]] * 4 + [[True]] + [[False]] * 4
    features = fisher._unfold(conv, a).view(2, 1, -1, 1)
    assert fisher._pairwise_is_cheaper(features, valid, d_out=4, rank=9)


class Reused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Linear(6, 6)
        self.head = nn.Linear(6, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.shared(torch.tanh(self.shared(x)))))


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(6, 6)
        self.b = nn.Linear(6, 6)
        self.b.weight = self.a.weight
        self.head = nn.Linear(6, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.b(torch.tanh(self.a(x)))))


class ReadOutside(nn.Module):
    """A Linear whose weight is also read outside its own forward."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(6, 6)
        self.head = nn.Linear(6, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.a(x)) + x @ self.a.weight)


class InPlaceAfter(nn.Module):
    """In-place ops on a layer's output must not change the gradient its formula sees."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(6, 6)
        self.unused = nn.Linear(6, 6)
        self.head = nn.Linear(6, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.unused(x)
        h = self.a(x)
        h.mul_(2.0)
        h += 1.0
        return self.head(h.tanh_())


class DeadFirstCall(nn.Module):
    """A layer called twice whose first output is discarded: one graph use, two calls."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(6, 6)
        self.head = nn.Linear(6, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.a(x)
        return self.head(torch.tanh(self.a(2.0 * x)))


@pytest.mark.parametrize("build", [Reused, Tied, ReadOutside, InPlaceAfter, DeadFirstCall])
def test_parameter_reuse_falls_back_correctly(build: type[nn.Module]) -> None:
    torch.manual_seed(0)
    model = build().double()
    x, y = torch.randn(7, 6, dtype=torch.float64), torch.randint(0, CLASSES, (7,))
    ours = diagonal_fisher(model, [(x, y)])
    assert relative_error(ours, reference_fisher(model, x, y, kind="exact")) < 1e-10


def test_chunks_larger_than_a_forward_pass() -> None:
    """One 70-sample batch is split internally; the mean must still be over all samples."""
    model, x, y = small_case("mlp", n=70)
    ours = diagonal_fisher(model, [(x, y)])
    assert relative_error(ours, reference_fisher(model, x, y, kind="exact")) < 1e-10


def test_small_loader_batches_are_joined_into_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of 3 are joined into forward passes of the chunk size, every sample counted once."""
    model, x, y = small_case("mlp", n=70)
    seen: list[int] = []
    run_chunk = fisher._accumulate_chunk

    def counting(model: nn.Module, recorder: object, xs: torch.Tensor, *args: object,
                 **kwargs: object) -> float:
        seen.append(len(xs))
        return run_chunk(model, recorder, xs, *args, **kwargs)

    monkeypatch.setattr(fisher, "_accumulate_chunk", counting)
    ours = diagonal_fisher(model, batches(x, y, 3))
    assert sum(seen) == 70 and max(seen) > 3 and all(size > 3 for size in seen[:-1])
    assert relative_error(ours, reference_fisher(model, x, y, kind="exact")) < 1e-10


@pytest.mark.parametrize("form", ["convolution", "direct", "pairwise"])
def test_channels_last_models_give_the_same_fisher(form: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner hands PBU channels-last models; every layer form must read them right."""
    for constant, value in FORMS[form].items():
        monkeypatch.setattr(fisher, constant, value)
    model, x, y = small_case("convs", n=9)
    reference = reference_fisher(model, x, y, kind="exact")
    model = model.to(memory_format=torch.channels_last)
    ours = diagonal_fisher(model, batches(x.contiguous(memory_format=torch.channels_last), y, 4))
    assert relative_error(ours, reference) < 1e-10


def resnet18_1ch() -> nn.Module:
    from torchvision.models import resnet18

    model = resnet18(num_classes=10)
    model.conv1 = nn.Conv2d(1, 64, 3, 1, 1, bias=False)
    model.maxpool = nn.Identity()
    return randomise_batchnorm(model).eval()


def test_resnet18_matches_reference() -> None:
    torch.manual_seed(0)
    model = resnet18_1ch()
    x, y = torch.randn(2, 1, 28, 28), torch.randint(0, 10, (2,))
    ours = diagonal_fisher(model, [(x, y)])
    assert relative_error(ours, reference_fisher(model, x, y, kind="exact")) < 1e-4


def test_densenet121_matches_reference() -> None:
    """BackPACK cannot convert DenseNet (torch.cat), so the per-sample reference judges."""
    from torchvision.models import densenet121

    torch.manual_seed(0)
    model = randomise_batchnorm(densenet121(num_classes=10)).eval()
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 10, (2,))
    ours = diagonal_fisher(model, [(x, y)])
    assert relative_error(ours, reference_fisher(model, x, y, kind="exact")) < 1e-4


def backpack_diag_ggn_exact(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                            converter: bool = False) -> dict[str, torch.Tensor]:
    """BackPACK's DiagGGNExact of summed cross-entropy, divided by N."""
    backpack = pytest.importorskip("backpack")
    from backpack.extensions import DiagGGNExact

    model = copy.deepcopy(model).eval()
    for module in model.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False  # BackPACK's module hooks reject in-place outputs
    model = backpack.extend(model, use_converter=converter)
    loss = backpack.extend(nn.CrossEntropyLoss(reduction="sum"))(model(x), y)
    with backpack.backpack(DiagGGNExact()), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its full-backward-hook notice, not ours to fix
        loss.backward()
    return {name: p.diag_ggn_exact / len(x) for name, p in model.named_parameters()}


@pytest.mark.parametrize("name", ["mlp", "cnn_bn"])
def test_small_models_match_backpack(name: str) -> None:
    model, x, y = small_case(name)
    ref = backpack_diag_ggn_exact(model, x, y)
    assert relative_error(diagonal_fisher(model, [(x, y)]), ref) < 1e-10


def resnet18_pbu() -> nn.Module:
    """The official PBU code's model: 1-channel 7x7 stride-2 stem, max-pooling kept."""
    from torchvision.models import resnet18

    model = resnet18(num_classes=10)
    model.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    return randomise_batchnorm(model).eval()


def test_pbu_resnet18_matches_backpack() -> None:
    torch.manual_seed(0)
    model = resnet18_pbu()
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    ref = backpack_diag_ggn_exact(model, x, y, converter=True)
    assert relative_error(diagonal_fisher(model, batches(x, y, 4)), ref) < 1e-5


def test_resnet18_matches_backpack() -> None:
    torch.manual_seed(0)
    model = resnet18_1ch()
    x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
    ref = backpack_diag_ggn_exact(model, x, y, converter=True)
    # The converter renames nothing that owns parameters, so names line up.
    assert relative_error(diagonal_fisher(model, [(x, y)]), ref) < 1e-4


def test_small_cnn_matches_nngeometry() -> None:
    """nngeometry's FIM with PMatDiag and classif_logits is the same exact Fisher (float32)."""
    pytest.importorskip("nngeometry")
    from nngeometry.layercollection import LayerCollection
    from nngeometry.metrics import FIM
    from nngeometry.object import PMatDiag
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    # No grouped convolution: nngeometry's layer collection ignores groups.
    model = randomise_batchnorm(nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 4, 3, stride=2), nn.Flatten(), nn.Linear(4 * 9, CLASSES))).eval()
    x, y = torch.randn(12, 3, 8, 8), torch.randint(0, CLASSES, (12,))
    layers = LayerCollection.from_model(model)
    diag = FIM(model=model, loader=DataLoader(TensorDataset(x, y), batch_size=5),
               representation=PMatDiag, variant="classif_logits",
               layer_collection=layers).get_diag()
    ours = diagonal_fisher(model, [(x, y)])
    # nngeometry's flat diagonal runs layer by layer, weight before bias.
    flat = torch.cat([ours[f"{layer}.{attr}"].flatten() for layer in layers.layers
                      for attr in ("weight", "bias") if f"{layer}.{attr}" in ours])
    assert float((flat - diag).abs().max() / diag.abs().max()) < 1e-4


def mc_error(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             exact: dict[str, torch.Tensor], draws: int) -> float:
    generator = torch.Generator().manual_seed(1234)
    mc = diagonal_fisher(model, batches(x, y, 16), kind="mc", mc_samples=draws,
                         generator=generator)
    return relative_error(mc, exact)


def test_mc_converges_to_exact() -> None:
    model, x, y = small_case("cnn_bn", n=32)
    exact = diagonal_fisher(model, [(x, y)])
    one, many = mc_error(model, x, y, exact, 1), mc_error(model, x, y, exact, 400)
    # The error of an average of 400 draws should shrink like 1/20; allow a wide margin.
    assert many < 0.25 * one
    assert many < 0.1


def test_mc_is_reproducible_with_a_generator() -> None:
    model, x, y = small_case("unknown_layers")

    def run() -> dict[str, torch.Tensor]:
        return diagonal_fisher(model, [(x, y)], kind="mc", mc_samples=3,
                               generator=torch.Generator().manual_seed(7))

    first, second = run(), run()
    assert all(torch.equal(first[n], second[n]) for n in first)


def test_output_names_shapes_and_side_effects() -> None:
    model, x, y = small_case("cnn_bn")
    model[0].bias.requires_grad_(False)
    model.train()
    model[1].eval()                      # a mixed mode must come back exactly as it was
    modes = {m: m.training for m in model.modules()}
    state = copy.deepcopy(model.state_dict())
    fisher = diagonal_fisher(model, batches(x, y, 4), kind="empirical")
    trainable = {n: p.shape for n, p in model.named_parameters() if p.requires_grad}
    assert {n: t.shape for n, t in fisher.items()} == trainable
    assert "0.bias" not in fisher
    assert {m: m.training for m in model.modules()} == modes
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert all(bool((t >= 0).all()) for t in fisher.values())


def test_bad_kind_names_the_value_and_the_choices() -> None:
    model, x, y = small_case("mlp")
    with pytest.raises(ValueError, match=r"'fim'.*exact, mc, empirical"):
        diagonal_fisher(model, [(x, y)], kind="fim")


def test_device_must_be_the_models() -> None:
    model, x, y = small_case("mlp")
    fisher_on_cpu = diagonal_fisher(model, [(x, y)], device="cpu")
    assert set(fisher_on_cpu) == {name for name, _ in model.named_parameters()}
    with pytest.raises(ValueError, match="device"):
        diagonal_fisher(model, [(x, y)], device="meta")


def test_empty_loader_is_an_error() -> None:
    model, _, _ = small_case("mlp")
    with pytest.raises(ValueError, match="empty"):
        diagonal_fisher(model, [])


def test_empirical_needs_valid_labels() -> None:
    model, x, _ = small_case("mlp")
    with pytest.raises(ValueError, match="labels"):
        diagonal_fisher(model, [(x, torch.full((len(x),), CLASSES))], kind="empirical")


def test_exact_is_the_label_expectation_of_empirical() -> None:
    """Exact Fisher = sum over labels c of p_c(x) times the empirical Fisher at label c."""
    model, x, y = small_case("cnn_bn", n=4)
    with torch.no_grad():
        probs = F.softmax(model(x), dim=1)
    expected = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for i in range(len(x)):
        for c in range(CLASSES):
            single = diagonal_fisher(model, [(x[i:i + 1], torch.tensor([c]))], kind="empirical")
            for n in expected:
                expected[n] += probs[i, c] * single[n] / len(x)
    assert relative_error(diagonal_fisher(model, [(x, y)]), expected) < 1e-10
