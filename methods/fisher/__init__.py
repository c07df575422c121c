"""Diagonal Fisher information of a classifier, layer by layer from one forward pass.

Why this shape: the diagonal Fisher needs *per-sample* squared gradients, and the obvious
routes (a backward pass per sample, or vmap over the whole network) redo work that batched
autograd already does well. Here one forward pass records each known layer's input and the
autograd edge of its output; one batched backward pass per "square-root" vector of the
softmax Hessian then yields every layer's output gradient for the whole chunk, and a
per-layer formula turns (input, output gradient) into summed squared per-sample parameter
gradients without materialising per-sample gradients of the whole network.

The exact Fisher of softmax cross-entropy is a GGN: with logits z and p = softmax(z),
F = sum_n J_n^T (diag p - p p^T) J_n. That Hessian has rank C-1 (the all-ones vector is in
its null space), so C-1 backward passes of its scaled eigenvectors give it exactly; "mc"
and "empirical" need one pass per label draw.

Per layer the cheapest exact form is picked from its shape: large stride-1 convolutions get
per-sample weight gradients from the convolution library itself (samples folded into
groups); other convolutions and Linear layers multiply unfolded inputs by output gradients
block by block, or, with few output positions, use a pairwise (Gram) form whose single
matmul serves all backward vectors at once. Normalisation layers (eval BatchNorm, LayerNorm, GroupNorm) are closed-form.

Parameters whose layer type or use the fast path cannot prove correct (unknown modules,
parameters owned by a container, shared or re-used weights) go through a generic
``torch.func`` path: slower, never wrong.
"""
from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.graph import GradientEdge, get_gradient_edge
from torch.func import functional_call, vjp, vmap
from torch.utils.hooks import RemovableHandle

log = logging.getLogger(__name__)

KINDS = ("exact", "mc", "empirical")

# Samples per forward pass: big enough for efficient batched convolutions, small enough that
# recorded activations, unfolded inputs and the graph stay well under 1 GiB for ResNet-18.
_CHUNK = 32
# Models whose per-sample state is small (few, small feature maps, like the official PBU
# ResNet-18 on 28x28 inputs) get chunks of up to _MAX_CHUNK samples: wider matmuls in the
# backward passes. A chunk doubles while its estimated bytes (recorded inputs, unfolded
# columns, kept output gradients and the autograd graph) stay under _CHUNK_BYTES; the
# small-input ResNet-18 (~10 MiB a sample) stays at _CHUNK.
_MAX_CHUNK = 128
_CHUNK_BYTES = 256 << 20
# Elements per block of per-sample weight gradients: 2 MiB in float32 stays in cache between
# the matmul that writes it and the squaring that reads it back.
_BLOCK_ELEMENTS = 1 << 19
# Elements of per-sample, per-vector convolution weight gradients formed at once by the
# stacked convolution form: 16 MiB in float32 keeps its matrices wide and the block in cache.
_STACKED_ELEMENTS = 1 << 22
# Elements of one sample's weight gradient formed at once when it exceeds a block: 8 MiB in
# float32 still stays in the shared cache.
_ROW_BLOCK_ELEMENTS = 1 << 21
# Elements per matmul operand built for the pairwise form: big enough for an efficient
# matmul, small enough to stay under the allocator's size for reusing freed memory.
_OPERAND_ELEMENTS = 1 << 22
# Machine balance of the cost model that picks a layer's form: floating-point operations
# worth one byte moved through memory. A 2-core CPU does ~100 GFLOP/s in float32 matmuls and
# streams blocks of a few MiB at ~25 GB/s, so about 4. Only ratios between forms matter, and
# on ResNet-18 (small-input and PBU stems) every layer's choice holds from 2 to 8.
_FLOPS_PER_BYTE = 4.0
# Tests force a form on every layer with True (pairwise) or False (direct); None: cost model.
_FORCE_PAIRWISE: bool | None = None
# From this many output positions on, a stride-1 convolution's per-sample weight gradients
# come faster from the convolution library's own kernel than from unfold + matmul.
_CONV_FORM_POSITIONS = 196
# Per-sample Jacobian elements per vmap call of the generic path.
_GENERIC_ELEMENTS = 1 << 24


def diagonal_fisher(model: nn.Module, loader: Iterable[tuple[torch.Tensor, torch.Tensor]], *,
                    kind: str = "exact", mc_samples: int = 1,
                    device: torch.device | str | None = None,
                    generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Mean over samples of the per-sample diagonal Fisher of a logits classifier.

    ``kind``: "exact" takes the expectation over the model's own predictive distribution,
    "mc" samples ``mc_samples`` labels per input from it (drawn with ``generator``), and
    "empirical" uses the true labels. Returns {parameter name: tensor of its shape} for the
    trainable parameters. The model runs in eval mode (running BatchNorm statistics, no
    dropout); every module's train/eval flag is restored afterwards, parameters are not
    modified and no ``.grad`` is written. ``device`` (default: the model's) receives batches.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown Fisher kind {kind!r}; allowed: {', '.join(KINDS)}")
    if isinstance(mc_samples, bool) or not isinstance(mc_samples, int) or mc_samples < 1:
        raise ValueError(f"mc_samples must be a positive integer, got {mc_samples!r}")
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    device = _resolve_device(model, device)
    if kind == "mc" and generator is None:
        # A private generator whose state can be rewound if a pass has to be redone.
        generator = torch.Generator(device="cpu").manual_seed(
            int(torch.randint(2**62, (), dtype=torch.int64)))
    start_state = generator.get_state() if generator is not None else None
    modes = {module: module.training for module in model.modules()}
    model.eval()
    slow = _statically_slow(model, params)
    try:
        while True:
            try:
                return _run(model, loader, params=params, slow=slow, kind=kind,
                            mc_samples=mc_samples, device=device, generator=generator)
            except _Demote as demote:
                log.info("fast path cannot prove %s correct; using the generic path",
                         ", ".join(sorted(demote.names)))
                slow |= demote.names
                if generator is not None:
                    generator.set_state(start_state)
    finally:
        for module, training in modes.items():
            module.training = training


class _Demote(Exception):
    """Parameters the fast path turned out not to handle: the pass restarts without them."""

    def __init__(self, names: set[str]) -> None:
        super().__init__(", ".join(sorted(names)))
        self.names = names


def _resolve_device(model: nn.Module, device: torch.device | str | None) -> torch.device:
    tensors = [*model.parameters(), *model.buffers()]
    model_device = tensors[0].device if tensors else torch.device("cpu")
    if device is None:
        return model_device
    device = torch.device(device)
    if device.type != model_device.type or (
            device.index is not None and model_device.index is not None
            and device.index != model_device.index):
        raise ValueError(f"device {device} differs from the model's device {model_device}; "
                         "move the model first")
    return device


def _run(model: nn.Module, loader: Iterable, *, params: dict[str, nn.Parameter],
         slow: set[str], kind: str, mc_samples: int, device: torch.device,
         generator: torch.Generator | None) -> dict[str, torch.Tensor]:
    sums = {name: torch.zeros_like(p, memory_format=torch.contiguous_format)
            for name, p in params.items()}
    count, chunk = 0, _CHUNK
    with _Recorder(model, params, slow) as recorder:
        for xs, ys in _chunks(loader, device, lambda: chunk):
            per_sample = _accumulate_chunk(model, recorder, xs, ys, sums=sums, slow=slow,
                                           kind=kind, mc_samples=mc_samples,
                                           generator=generator)
            count += len(xs)
            chunk = _chunk_size(per_sample)
    if count == 0:
        raise ValueError("cannot compute a Fisher over an empty loader")
    return {name: total / count for name, total in sums.items()}


def _chunks(loader: Iterable, device: torch.device, size: Callable[[], int]
            ) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """The loader's samples regrouped into chunks of ``size()`` samples (the last may be short).

    Small loader batches are joined: each backward pass then runs on wider matrices, which
    matters most on small feature maps (PBU's ResNet-18 on 28x28 inputs: the backward
    passes take about 10 % less time per sample in chunks of 128 than of 64, 30 % than of 32).
    """
    pending: list[tuple[torch.Tensor, torch.Tensor]] = []
    held = 0
    for x, y in loader:
        pending.append((x.to(device, non_blocking=True), y.to(device, non_blocking=True)))
        held += len(x)
        while held >= size():
            xs = torch.cat([x for x, _ in pending]) if len(pending) > 1 else pending[0][0]
            ys = torch.cat([y for _, y in pending]) if len(pending) > 1 else pending[0][1]
            take = size()
            yield xs[:take], ys[:take]
            pending = [(xs[take:], ys[take:])] if len(xs) > take else []
            held = len(xs) - take
    if held:
        yield (torch.cat([x for x, _ in pending]), torch.cat([y for _, y in pending]))


def _chunk_size(per_sample: float) -> int:
    """Samples per forward pass from the bytes one sample held in the last chunk."""
    chunk = _CHUNK
    while chunk * 2 <= _MAX_CHUNK and chunk * 2 * per_sample <= _CHUNK_BYTES:
        chunk *= 2
    return chunk


def _accumulate_chunk(model: nn.Module, recorder: _Recorder, x: torch.Tensor, y: torch.Tensor,
                      *, sums: dict[str, torch.Tensor], slow: set[str], kind: str,
                      mc_samples: int, generator: torch.Generator | None) -> float:
    """Adds the chunk's summed squares to ``sums``; returns the bytes held per sample."""
    with torch.enable_grad():
        recorder.start()
        logits = model(x)
        recorder.stop()
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or len(logits) != len(x):
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"model must return logits of shape (batch, classes); got {got} "
                         f"for a batch of {len(x)}")
    vectors = _output_vectors(logits.detach(), y, kind=kind, mc_samples=mc_samples,
                              generator=generator)
    layers = recorder.layers(logits, rank=len(vectors))
    # Each layer's recorded input twice (its own copy or columns, and the graph's saved
    # tensors) and, where a form keeps them to the end, the r output gradients.
    per_sample = float("inf") if slow else sum(
        layer.held_bytes(len(vectors)) for layer in layers) / max(1, len(x))
    if layers and logits.requires_grad:
        edges = [layer.edge for layer in layers]
        for k, vector in enumerate(vectors):
            grads = torch.autograd.grad(logits, edges, vector, retain_graph=k < len(vectors) - 1,
                                        allow_unused=True)
            for layer, grad in zip(layers, grads):
                if grad is not None:
                    layer.accumulate(grad)
        for layer in layers:
            layer.finish(sums)
    del logits, layers
    if slow:
        _generic_chunk(model, sorted(slow), x, vectors, sums)
    return per_sample


def _output_vectors(logits: torch.Tensor, y: torch.Tensor, *, kind: str, mc_samples: int,
                    generator: torch.Generator | None) -> torch.Tensor:
    """(r, N, C) logit-gradient vectors v with per-sample Fisher = sum_k (J^T v_k)^2."""
    probs = torch.softmax(logits.double(), dim=1)
    n, classes = probs.shape
    if kind == "exact":
        hessian = torch.diag_embed(probs) - probs[:, :, None] * probs[:, None, :]
        values, vectors = torch.linalg.eigh(hessian)
        # Ascending order: column 0 is the null direction (all ones), dropped exactly.
        roots = vectors[:, :, 1:] * values[:, None, 1:].clamp(min=0).sqrt()
        return roots.permute(2, 0, 1).to(logits.dtype).contiguous()
    if kind == "mc":
        sample_from = probs if generator is None or generator.device == probs.device \
            else probs.to(generator.device)
        labels = torch.multinomial(sample_from, mc_samples, replacement=True,
                                   generator=generator).to(probs.device).T
        scale = 1.0 / math.sqrt(mc_samples)
    else:
        if y.shape != (n,) or y.dtype.is_floating_point or y.dtype == torch.bool:
            raise ValueError(f"empirical Fisher needs integer labels of shape ({n},); "
                             f"got {y.dtype} {tuple(y.shape)}")
        if n and (int(y.min()) < 0 or int(y.max()) >= classes):
            raise ValueError(f"labels must lie in [0, {classes}); got {int(y.min())}.."
                             f"{int(y.max())}")
        labels, scale = y[None, :].long(), 1.0
    one_hot = F.one_hot(labels, classes).to(probs.dtype)
    return ((one_hot - probs) * scale).to(logits.dtype)


# ---------------------------------------------------------------------------------------------
# Which parameters the fast path may handle


def _is_eval_batchnorm(module: nn.Module) -> bool:
    # Batch statistics couple the samples: no per-sample gradient exists to square.
    return (type(module) in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
            and module.running_mean is not None and module.running_var is not None)


def _fast_module(module: nn.Module) -> bool:
    """Exact type match: a subclass may override forward and break the layer formula."""
    kind = type(module)
    if kind in (nn.Conv1d, nn.Conv2d):
        return module.padding_mode == "zeros" and not isinstance(module.padding, str)
    return kind in (nn.Linear, nn.LayerNorm, nn.GroupNorm) or _is_eval_batchnorm(module)


def _statically_slow(model: nn.Module, params: dict[str, nn.Parameter]) -> set[str]:
    """Trainable parameters not directly owned by a fast-path module, or shared."""
    fast = set()
    for prefix, module in model.named_modules():
        if _fast_module(module):
            fast.update(f"{prefix}.{name}" if prefix else name
                        for name, _ in module.named_parameters(recurse=False))
    owners = Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    return {name for name, p in params.items() if name not in fast or owners[id(p)] > 1}


class _Record:
    """One fast module's forward: its input, the edge of its output, how often it ran."""

    def __init__(self) -> None:
        self.calls = 0
        self.input: torch.Tensor | None = None
        self.edge: GradientEdge | None = None
        self.output_bytes = 0


class _Recorder:
    """Forward hooks on fast modules, installed for the duration of one Fisher computation."""

    def __init__(self, model: nn.Module, params: dict[str, nn.Parameter], slow: set[str]
                 ) -> None:
        self.modules: dict[nn.Module, dict[str, str]] = {}
        for prefix, module in model.named_modules():
            owned = {attr: f"{prefix}.{attr}" if prefix else attr
                     for attr, _ in module.named_parameters(recurse=False)}
            owned = {attr: name for attr, name in owned.items()
                     if name in params and name not in slow}
            if owned and _fast_module(module):
                self.modules[module] = owned
        self.params = params
        self.records: dict[nn.Module, _Record] = {}
        self.active = False
        self.handles: list[RemovableHandle] = []

    def __enter__(self) -> _Recorder:  # noqa: PYI034 (typing.Self needs Python 3.11)
        self.handles = [module.register_forward_hook(self._hook) for module in self.modules]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()

    def start(self) -> None:
        self.records = {module: _Record() for module in self.modules}
        self.active = True

    def stop(self) -> None:
        self.active = False

    def _hook(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if not self.active:
            return
        record = self.records[module]
        record.calls += 1
        if record.calls == 1 and args and isinstance(args[0], torch.Tensor) \
                and isinstance(output, torch.Tensor) and output.requires_grad:
            record.input = args[0].detach()
            record.output_bytes = output.numel() * output.element_size()
            # Taken now, before any in-place op (ReLU(inplace=True), +=) rebases the output.
            record.edge = get_gradient_edge(output)

    def layers(self, logits: torch.Tensor, *, rank: int) -> list[_Layer]:
        """Layers for this chunk, after proving each parameter's only use is its module's call.

        Counting graph edges into each parameter catches weight tying, a module called twice
        and a weight read outside its module, none of which the per-layer formulas allow.
        """
        uses = _parameter_uses(logits)
        demote = set()
        layers = []
        for module, owned in self.modules.items():
            record = self.records[module]
            used = {attr: name for attr, name in owned.items()
                    if uses[id(self.params[name])] > 0}
            if not used:
                continue
            if record.calls != 1 or record.edge is None or not _input_fits(module, record.input) \
                    or any(uses[id(self.params[name])] != 1 for name in used.values()):
                demote.update(used.values())
                continue
            layers.append(_make_layer(module, used, record, rank))
        self.records = {}
        if demote:
            raise _Demote(demote)
        return layers


def _parameter_uses(logits: torch.Tensor) -> Counter[int]:
    """id(leaf tensor) -> number of graph edges into it, over the graph of ``logits``."""
    uses: Counter[int] = Counter()
    if logits.grad_fn is None:
        return uses
    seen = {logits.grad_fn}
    stack = [logits.grad_fn]
    while stack:
        node = stack.pop()
        for child, _ in node.next_functions:
            if child is None:
                continue
            variable = getattr(child, "variable", None)
            if variable is not None:
                uses[id(variable)] += 1
            elif child not in seen:
                seen.add(child)
                stack.append(child)
    return uses


def _input_fits(module: nn.Module, a: torch.Tensor | None) -> bool:
    if a is None:
        return False
    if isinstance(module, nn.Conv2d):
        return a.ndim == 4
    if isinstance(module, nn.Conv1d):
        return a.ndim == 3
    if isinstance(module, nn.Linear):
        return a.ndim >= 2
    if isinstance(module, nn.LayerNorm):
        return a.ndim > len(module.normalized_shape)
    return a.ndim >= 2  # BatchNorm: (N, C, *)


# ---------------------------------------------------------------------------------------------
# Per-layer accumulation of summed squared per-sample gradients


class _Layer:
    edge: GradientEdge
    input_bytes = 0     # of the recorded input
    output_bytes = 0    # of one output gradient

    def held_bytes(self, rank: int) -> int:
        """Bytes this layer holds during a chunk, its input counted twice (own copy + graph)."""
        return 2 * self.input_bytes + self.output_bytes * (rank if self.keeps_grads() else 0)

    def keeps_grads(self) -> bool:
        return False

    def accumulate(self, grad: torch.Tensor) -> None:
        """Add sum over samples of squared per-sample gradients for one backward vector."""
        raise NotImplementedError

    def finish(self, sums: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError


def _make_layer(module: nn.Module, names: dict[str, str], record: _Record, rank: int) -> _Layer:
    a = record.input
    if isinstance(module, nn.Linear):
        columns = _linear_columns(a)
        layer: _Layer = _AffineLayer(names, columns, rank=rank, to_positions=_linear_positions,
                                     valid=columns.new_ones(1, columns.shape[-1], dtype=bool),
                                     d_out=module.out_features)
    elif isinstance(module, (nn.Conv1d, nn.Conv2d)):
        if "weight" in names and _conv_form_fits(module, a):
            layer = _ConvLayer(names, module, a)
        else:
            columns = _unfold(module, a).view(len(a), module.groups, -1, _positions(module, a))
            # Which (tap, position) entries read real input rather than zero padding.
            valid = _unfold(module, a.new_ones(1, 1, *a.shape[2:]))[0] > 0
            layer = _AffineLayer(names, columns, rank=rank, to_positions=_conv_positions,
                                 valid=valid, d_out=module.out_channels // module.groups)
    elif isinstance(module, nn.LayerNorm):
        layer = _NormLayer(names, _layer_norm_hat(module, a),
                           layout=_features_last(math.prod(module.normalized_shape)))
    elif isinstance(module, nn.GroupNorm):
        # Per-sample statistics: x_hat is the affine-free GroupNorm of the recorded input.
        layer = _NormLayer(names, F.group_norm(a, module.num_groups, eps=module.eps),
                           layout=_channels_first)
    else:
        layer = _NormLayer(names, _batch_norm_hat(module, a), layout=_channels_first)
    layer.edge = record.edge
    layer.input_bytes = max(a.numel() * a.element_size(), sum(
        t.numel() * t.element_size() for t in (getattr(layer, "features", None),) if t is not None))
    layer.output_bytes = record.output_bytes
    return layer


def _linear_columns(a: torch.Tensor) -> torch.Tensor:
    """(N, 1, D_in, positions): the input as a one-group layer, tokens as positions."""
    return a.reshape(a.shape[0], -1, a.shape[-1]).transpose(1, 2).unsqueeze(1)


def _unfold(conv: nn.Conv1d | nn.Conv2d, a: torch.Tensor) -> torch.Tensor:
    """(N, C_in * taps, positions), channel-major like the weight: one receptive field a column.

    Built from strided views and one copy: F.unfold's im2col kernel is several times slower.
    """
    if isinstance(conv, nn.Conv1d):
        a = a.unsqueeze(2)
        kernel, dilation = (1, *conv.kernel_size), (1, *conv.dilation)
        padding, stride = (0, *conv.padding), (1, *conv.stride)
    else:
        kernel, dilation, padding, stride = (conv.kernel_size, conv.dilation, conv.padding,
                                             conv.stride)
    a = F.pad(a, (padding[1], padding[1], padding[0], padding[0]))
    spans = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    # (N, C, H_out, W_out, span_h, span_w), then keep every dilation-th tap.
    windows = a.unfold(2, spans[0], stride[0]).unfold(3, spans[1], stride[1])
    windows = windows[..., ::dilation[0], ::dilation[1]]
    n, channels, h_out, w_out = windows.shape[:4]
    return windows.permute(0, 1, 4, 5, 2, 3).reshape(n, channels * kernel[0] * kernel[1],
                                                      h_out * w_out)


def _positions(conv: nn.Conv1d | nn.Conv2d, a: torch.Tensor) -> int:
    """Output positions per sample, from the standard convolution size formula."""
    sizes = [(size + 2 * p - d * (k - 1) - 1) // s + 1 for size, p, d, k, s in zip(
        a.shape[2:], conv.padding, conv.dilation, conv.kernel_size, conv.stride)]
    return math.prod(sizes)


def _linear_positions(grad: torch.Tensor, groups: int) -> torch.Tensor:
    n = grad.shape[0]
    return grad.reshape(n, -1, grad.shape[-1]).transpose(1, 2).unsqueeze(1)


def _conv_positions(grad: torch.Tensor, groups: int) -> torch.Tensor:
    n, channels = grad.shape[:2]
    return grad.reshape(n, groups, channels // groups, -1)


def _conv_form_fits(conv: nn.Conv1d | nn.Conv2d, a: torch.Tensor) -> bool:
    """Large stride-1 feature maps: there the convolution library beats unfold + matmul."""
    positions = math.prod(a.shape[2:])
    return all(s == 1 for s in conv.stride) and positions >= _CONV_FORM_POSITIONS


def _bias_squares(g: torch.Tensor) -> torch.Tensor:
    """Summed squared per-sample bias gradients of (N, channels, *positions) gradients."""
    return g.reshape(g.shape[0], g.shape[1], -1).sum(-1).square().sum(0)


class _ConvLayer(_Layer):
    """Per-sample convolution weight gradients as one grouped convolution weight gradient.

    Folding the samples into the channel axis (groups = samples x groups) makes the library's
    weight-gradient kernel return every sample's gradient at once, without unfolded inputs.
    The backward vectors' output gradients are kept until ``finish`` and stacked as extra
    output channels of each sample's group: one call then serves all vectors with r times
    wider matrices, which runs 1.1-1.5x faster than a call per vector on ResNet-18's maps.
    """

    def __init__(self, names: dict[str, str], conv: nn.Conv1d | nn.Conv2d, a: torch.Tensor
                 ) -> None:
        self.weight, self.bias = names.get("weight"), names.get("bias")
        self.conv, self.input = conv, a.contiguous()
        self.grads: list[torch.Tensor] = []
        self.bias_sum: torch.Tensor | None = None

    def keeps_grads(self) -> bool:
        return self.weight is not None

    def accumulate(self, grad: torch.Tensor) -> None:
        if self.bias is not None:
            self.bias_sum = _add(self.bias_sum, _bias_squares(grad))
        self.grads.append(grad)

    def _weight_sum(self) -> torch.Tensor:
        conv = self.conv
        weight_grad = (torch.nn.grad.conv2d_weight if isinstance(conv, nn.Conv2d)
                       else torch.nn.grad.conv1d_weight)
        out_channels, in_per_group = conv.weight.shape[:2]
        rank = len(self.grads)
        # (N, G, r, C_out / G, *positions): each sample's group holds all vectors' channels.
        stacked = torch.stack([g.unflatten(1, (conv.groups, -1)) for g in self.grads], dim=2)
        self.grads = []
        block = max(1, _STACKED_ELEMENTS // (rank * conv.weight.numel()))
        total = None
        for s in range(0, len(stacked), block):
            a, g = self.input[s:s + block], stacked[s:s + block]
            n = len(a)
            per_sample = weight_grad(
                a.reshape(1, -1, *a.shape[2:]), (n * rank * out_channels, in_per_group,
                                                 *conv.kernel_size),
                g.reshape(1, -1, *g.shape[4:]), stride=conv.stride, padding=conv.padding,
                dilation=conv.dilation, groups=n * conv.groups)
            # Rows are (sample, group, vector, channel): regroup to (vector-major) weight order.
            per_sample = per_sample.view(n, conv.groups, rank, out_channels // conv.groups, -1)
            total = _add(total, per_sample.square_().sum((0, 2)))
        return total

    def finish(self, sums: dict[str, torch.Tensor]) -> None:
        if self.weight is not None and self.grads:
            sums[self.weight] += self._weight_sum().view(sums[self.weight].shape)
        if self.bias is not None and self.bias_sum is not None:
            sums[self.bias] += self.bias_sum.view(sums[self.bias].shape)


class _AffineLayer(_Layer):
    """Linear and unfolded convolution: per-sample weight gradient G_n U_n^T over positions.

    Direct form: each vector's per-sample gradients are formed in blocks small enough to stay
    in cache while they are squared and summed. Gram form, for few output positions P:
    sum_k (G_k U^T)_ij^2 = sum_{p<=q} c_pq (sum_k G_kip G_kiq) (U_jp U_jq), whose left factor
    sums over the backward vectors first, so one matmul per chunk serves them all and nothing
    of weight size is squared. P = 1 (a Linear layer) is the familiar (g^2)^T (a^2).
    """

    def __init__(self, names: dict[str, str], features: torch.Tensor, *, rank: int,
                 to_positions: Callable[[torch.Tensor, int], torch.Tensor],
                 valid: torch.Tensor, d_out: int) -> None:
        self.weight, self.bias = names.get("weight"), names.get("bias")
        self.features = features                      # (N, G, D_in, P)
        self.groups = features.shape[1]
        self.to_positions = to_positions
        self.valid = valid                            # (taps, P): not zero padding
        self.gram = _pairwise_is_cheaper(features, valid, d_out=d_out, rank=rank) \
            if _FORCE_PAIRWISE is None else _FORCE_PAIRWISE
        self.weight_sum: torch.Tensor | None = None  # direct form: (G, D_out, D_in)
        self.grads: list[torch.Tensor] = []          # Gram form: each (N, G, D_out, P)
        self.bias_sum: torch.Tensor | None = None

    def keeps_grads(self) -> bool:
        return self.gram and self.weight is not None

    def accumulate(self, grad: torch.Tensor) -> None:
        g = self.to_positions(grad, self.groups)     # (N, G, D_out, P)
        if self.bias is not None:
            self.bias_sum = _add(self.bias_sum, g.sum(-1).square().sum(0))
        if self.weight is None:
            return
        if self.gram:
            self.grads.append(g)
            return
        n, groups, d_out, _ = g.shape
        d_in = self.features.shape[2]
        if self.weight_sum is None:
            self.weight_sum = g.new_zeros(groups, d_out, d_in)
        if groups == 1 and d_out * d_in > _BLOCK_ELEMENTS:
            # A sample at a time; a gradient too big even for the shared cache goes by rows.
            parts = -(-d_out * d_in // _ROW_BLOCK_ELEMENTS)
            rows = -(-d_out // parts)
            for i in range(n):
                u = self.features[i, 0].T
                for r in range(0, d_out, rows):
                    part = torch.mm(g[i, 0, r:r + rows], u)
                    self.weight_sum[0, r:r + rows].addcmul_(part, part)
            return
        block = max(1, _BLOCK_ELEMENTS // (groups * d_out * d_in))
        for s in range(0, n, block):
            part = torch.matmul(g[s:s + block], self.features[s:s + block].transpose(-1, -2))
            self.weight_sum += part.square_().sum(0)

    def finish(self, sums: dict[str, torch.Tensor]) -> None:
        if self.bias is not None and self.bias_sum is not None:
            sums[self.bias] += self.bias_sum.reshape(sums[self.bias].shape)
        if self.weight is None:
            return
        total = self._gram_total() if self.gram and self.grads else self.weight_sum
        if total is not None:
            sums[self.weight] += total.reshape(sums[self.weight].shape)

    def _gram_total(self) -> torch.Tensor:
        """sum_{n, p<=q} c_pq K_n[i, p, q] U_n[j, p] U_n[j, q], skipping zero-padding pairs.

        Taps reading padding at some positions (every border tap of a small feature map)
        only need pairs of their real positions: on a 4x4 map with a 3x3 kernel that halves
        the work. Pairs are taken by offset d along a tap group's real positions, (i, i + d),
        so the input products are slices multiplied straight into the operand (one pass;
        gathering both factors costs three). Both operands are laid out (group, row, pair,
        sample) so that the contraction over (pair, sample) reads contiguous memory, and K's
        pairs are gathered as whole rows of samples (a gather along an inner axis is slower).
        """
        n, groups, d_in, positions = self.features.shape
        taps = self.valid.shape[0]
        channels = d_in // taps
        stacked = torch.stack(self.grads, dim=-1)                         # (N, G, D_out, P, r)
        self.grads = []
        d_out = stacked.shape[2]
        plans = [(tap_ids, real, *_pairs_by_offset(real))
                 for tap_ids, real in _tap_groups(self.valid)]
        widest = max((len(t) * channels, len(first)) for t, _, first, _ in plans)
        block = max(1, _OPERAND_ELEMENTS // (groups * max(widest[0], d_out) * widest[1]))
        rows = torch.arange(groups * d_out, device=stacked.device)[:, None] * positions ** 2
        total = stacked.new_zeros(groups, d_out, channels, taps)
        for s in range(0, n, block):
            # K[g, i, p, q, n] = sum_k g_kp g_kq: one batched matmul over the stacked vectors,
            # then samples moved innermost by a 2-D transpose (much faster than a 5-D permute).
            part = stacked[s:s + block]
            width_n = len(part)
            outer = torch.matmul(part, part.transpose(-1, -2)).view(width_n, -1).t().contiguous()
            # U[g, c, tap, p, n]: the weight's (c, tap) column order, samples innermost.
            columns = self.features[s:s + block].reshape(width_n, -1).t().contiguous() \
                .view(groups, channels, taps, positions, width_n)
            for tap_ids, real, first, second in plans:
                length, pairs = len(real), len(first)
                selected = columns[:, :, tap_ids[0]:tap_ids[0] + 1] if len(tap_ids) == 1 \
                    else columns.index_select(2, tap_ids)              # (G, C, t, P, n)
                if length < positions:
                    selected = selected.index_select(3, real)
                width = len(tap_ids) * channels
                u = selected.reshape(groups, width, length, width_n)
                right = u.new_empty(groups, width, pairs, width_n)
                start = 0
                for offset in range(length):
                    torch.mul(u[:, :, :length - offset], u[:, :, offset:],
                              out=right[:, :, start:start + length - offset])
                    start += length - offset
                left = outer.index_select(0, (rows + first * positions + second).flatten())
                left = left.view(groups, d_out, pairs, width_n)
                # Pairs at offset 0 (p = q) count once, the others for (p, q) and (q, p).
                left[:, :, length:] *= 2
                product = _contract(left.view(groups, d_out, -1), right.view(groups, width, -1))
                total.index_add_(3, tap_ids, product.view(groups, d_out, channels, len(tap_ids)))
        return total


def _pairs_by_offset(real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(p, q) over ``real`` positions, p <= q, ordered by offset d: (real[i], real[i + d])."""
    length = len(real)
    ids = [(i, i + d) for d in range(length) for i in range(length - d)]
    index = torch.tensor(ids, device=real.device).T
    return real[index[0]], real[index[1]]


def _form_costs(d_out: int, d_in: int, positions: int, pairs: float, rank: int,
                itemsize: int) -> tuple[float, float]:
    """(direct, pairwise) cost per sample and group, in FLOPs plus bytes x _FLOPS_PER_BYTE.

    Direct: r matmuls (D_out x P) @ (P x D_in), then the r weight-sized products are written,
    read and written by the squaring, and read by the sum over samples: four passes.
    Pairwise: K = sum_k g_k g_k^T (r products of P x P per output row), then one contraction
    over the real position pairs of (D_out x pairs) and (pairs x D_in); its operands are
    gathered from K and from products of input pairs: about four passes over each.
    """
    weight = d_out * d_in
    direct = 2 * rank * weight * positions + _FLOPS_PER_BYTE * 4 * itemsize * rank * weight
    gram = (2 * rank * d_out * positions ** 2 + 2 * weight * pairs
            + _FLOPS_PER_BYTE * itemsize * (d_out * positions ** 2
                                            + 4 * pairs * (d_in + d_out)))
    return direct, gram


def _pairwise_is_cheaper(features: torch.Tensor, valid: torch.Tensor, *, d_out: int,
                         rank: int) -> bool:
    """Pick the form from the layer's shape (never by timing, so results never depend on it).

    ``pairs``: mean over kernel taps of the (p, q) position pairs, p <= q, both reading real
    input rather than zero padding: what the pairwise contraction actually multiplies.
    """
    _, _, d_in, positions = features.shape
    counts = valid.sum(1, dtype=torch.float64)
    pairs = float((counts * (counts + 1) / 2).mean())
    direct, gram = _form_costs(d_out, d_in, positions, pairs, rank, features.element_size())
    return gram <= direct


def _tap_groups(valid: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(tap indices, real positions) for each distinct set of real positions."""
    groups: dict[bytes, list[int]] = {}
    for tap, row in enumerate(valid.cpu()):
        groups.setdefault(row.numpy().tobytes(), []).append(tap)
    # A tap that only ever reads padding has a zero gradient: it needs no group.
    return [(torch.tensor(taps, device=valid.device), valid[taps[0]].nonzero().flatten())
            for taps in groups.values() if valid[taps[0]].any()]


def _contract(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """(G, M, K), (G, N, K) -> (G, M, N) = left @ right^T for long K.

    On the CPU this runs as the weight gradient of a 1x1 convolution: oneDNN's kernel for it
    is about twice as fast as the BLAS matmul on CPUs where BLAS takes a narrower vector path.
    """
    groups, m, k = left.shape
    if left.device.type != "cpu":
        return torch.bmm(left, right.transpose(1, 2))
    n = right.shape[1]
    weight = torch.nn.grad.conv2d_weight(right.reshape(1, groups * n, k, 1), (groups * m, n, 1, 1),
                                         left.reshape(1, groups * m, k, 1), groups=groups)
    return weight.view(groups, m, n)


def _add(total: torch.Tensor | None, part: torch.Tensor) -> torch.Tensor:
    return part if total is None else total.add_(part)


def _channels_first(t: torch.Tensor) -> torch.Tensor:
    """BatchNorm layout (N, C, *) -> (N, C, positions)."""
    return t.reshape(t.shape[0], t.shape[1], -1)


def _features_last(size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """LayerNorm layout (N, *, features) -> (N, features, positions)."""
    return lambda t: t.reshape(t.shape[0], -1, size).transpose(1, 2)


def _batch_norm_hat(bn: nn.Module, a: torch.Tensor) -> torch.Tensor:
    shape = (1, -1) + (1,) * (a.ndim - 2)
    scale = torch.rsqrt(bn.running_var + bn.eps).to(a.dtype).view(shape)
    return (a - bn.running_mean.to(a.dtype).view(shape)) * scale


def _layer_norm_hat(ln: nn.LayerNorm, a: torch.Tensor) -> torch.Tensor:
    dims = tuple(range(-len(ln.normalized_shape), 0))
    var, mean = torch.var_mean(a, dim=dims, unbiased=False, keepdim=True)
    return (a - mean) * torch.rsqrt(var + ln.eps)


class _NormLayer(_Layer):
    """Affine normalisation y = x_hat * w + b: weight gradient sum_p g x_hat, bias sum_p g."""

    def __init__(self, names: dict[str, str], x_hat: torch.Tensor, *,
                 layout: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.weight, self.bias = names.get("weight"), names.get("bias")
        self.layout = layout
        self.x_hat = layout(x_hat)                    # (N, features, positions)
        self.sums: dict[str, torch.Tensor] = {}

    def accumulate(self, grad: torch.Tensor) -> None:
        g = self.layout(grad)
        if self.weight is not None:
            self.sums[self.weight] = _add(self.sums.get(self.weight),
                                          torch.linalg.vecdot(g, self.x_hat).square().sum(0))
        if self.bias is not None:
            self.sums[self.bias] = _add(self.sums.get(self.bias), g.sum(-1).square().sum(0))

    def finish(self, sums: dict[str, torch.Tensor]) -> None:
        for name, total in self.sums.items():
            sums[name] += total.reshape(sums[name].shape)


# ---------------------------------------------------------------------------------------------
# Generic path


def _generic_chunk(model: nn.Module, names: list[str], x: torch.Tensor, vectors: torch.Tensor,
                   sums: dict[str, torch.Tensor]) -> None:
    """Per-sample vector-Jacobian products of the whole model, only for ``names``.

    vmap over samples of vjp, itself vmapped over the r backward vectors: correct for any
    module or parameter use that torch.func can trace.
    """
    params = dict(model.named_parameters())
    wanted = {name: params[name].detach() for name in names}
    size = sum(p.numel() for p in wanted.values())
    rank = len(vectors)
    if rank == 0:
        return

    def squared(weights: dict[str, torch.Tensor], sample: torch.Tensor,
                cotangents: torch.Tensor) -> dict[str, torch.Tensor]:
        def logits(w: dict[str, torch.Tensor]) -> torch.Tensor:
            return functional_call(model, w, (sample.unsqueeze(0),), strict=False).squeeze(0)

        _, pullback = vjp(logits, weights)
        (grads,) = vmap(pullback)(cotangents)
        return {name: g.square().sum(0) for name, g in grads.items()}

    # Bounded both by the per-sample gradients held and by the vmapped backward's batch.
    block = max(1, min(_GENERIC_ELEMENTS // max(1, size * rank), 2 * _CHUNK // rank))
    # Outside the transforms only the fast-path parameters would record a graph: skip it.
    with torch.no_grad():
        for s in range(0, len(x), block):
            per_sample = vmap(squared, in_dims=(None, 0, 1))(wanted, x[s:s + block],
                                                             vectors[:, s:s + block])
            for name, value in per_sample.items():
                sums[name] += value.sum(0)
