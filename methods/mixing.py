"""Shared machinery for methods that train on "forget set + part of the retain set": rows are
streamed from the loaders into seeded shuffled batches instead of concatenating datasets, so
that lazily loaded datasets (Food-101) never sit in memory at once.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import torch

from methods.base import BatchLoader


def take_batches(loader: Iterable, count: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``count`` batches of ``loader``, starting a new pass if it is shorter.

    Holds only the current batch (``itertools.cycle`` would keep a copy of every batch of
    the first pass alive: tens of GB for a pass over Food-101).
    """
    taken = 0
    while taken < count:
        empty = True
        for batch in loader:
            empty = False
            yield batch
            taken += 1
            if taken == count:
                return
        if empty:
            return


def loader_rows(loader: BatchLoader) -> int:
    """A loader's sample count: exact for a torch ``DataLoader`` (``dataset``) or the bench's
    in-memory batches (``y``) that keep their last batch; otherwise an upper bound, its length
    times its first batch's size (``shuffled_batches`` tolerates a source that runs short)."""
    if not getattr(loader, "drop_last", False):
        for attr in ("dataset", "y"):
            try:
                return len(getattr(loader, attr))
            except (AttributeError, TypeError):
                continue
    if len(loader) == 0:
        return 0
    return len(loader) * len(next(iter(loader))[1])


class Rows:
    """Rows drawn in order from a stream of (x, y) batches; ``take(n)`` gives up to ``n``."""

    def __init__(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                 device: torch.device) -> None:
        self._batches = iter(batches)
        self._device = device
        self._x: torch.Tensor | None = None
        self._y: torch.Tensor | None = None

    def take(self, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        pieces, have = [], 0
        while have < n:
            if self._x is None or len(self._x) == 0:
                batch = next(self._batches, None)
                if batch is None:
                    break
                self._x = batch[0].to(self._device, non_blocking=True)
                self._y = batch[1].to(self._device, non_blocking=True)
                continue
            k = min(n - have, len(self._x))
            pieces.append((self._x[:k], self._y[:k]))
            self._x, self._y = self._x[k:], self._y[k:]
            have += k
        return pieces


def shuffled_batches(sources: Sequence[Rows], counts: Sequence[int], *, batch_size: int,
                     seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """What a shuffled DataLoader over the concatenation of the sources gives, streamed.

    Each source contributes ``counts[i]`` rows (fewer if it runs out); which batch a row lands
    in is a seeded uniform permutation of all rows, as long as each source's own rows come in
    random order (a shuffled loader). Yields (x, y, source index per row); every batch holds
    exactly ``batch_size`` rows except the last. Holds at most two batches of rows at a time.
    """
    slots = torch.cat([torch.full((c,), i, dtype=torch.int64) for i, c in enumerate(counts)])
    slots = slots[torch.randperm(len(slots), generator=torch.Generator().manual_seed(seed))]
    pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    have = 0
    for start in range(0, len(slots), batch_size):
        per_source = torch.bincount(slots[start:start + batch_size], minlength=len(sources))
        for i, k in enumerate(per_source.tolist()):
            for x, y in sources[i].take(k) if k else ():
                pending.append((x, y, torch.full((len(x),), i, dtype=torch.int64)))
                have += len(x)
        if have >= batch_size:
            x, y, s = (torch.cat(parts) for parts in zip(*pending))
            yield x[:batch_size], y[:batch_size], s[:batch_size]
            pending = [(x[batch_size:], y[batch_size:], s[batch_size:])]
            have -= batch_size
    if have:
        x, y, s = (torch.cat(parts) for parts in zip(*pending))
        yield x, y, s


def balanced_rows(loader: BatchLoader, per_class: int, num_classes: int
                  ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One pass over ``loader`` keeping at most ``per_class`` samples of each class (the first
    ones of a shuffled pass: a random class-balanced subset); stops once every class present
    is full or the pass ends."""
    taken = torch.zeros(num_classes, dtype=torch.int64)
    for x, y in loader:
        labels = y.cpu()
        keep = torch.zeros(len(labels), dtype=torch.bool)
        for c in labels.unique().tolist():
            rows = (labels == c).nonzero().flatten()
            room = per_class - int(taken[c])
            if room > 0:
                keep[rows[:room]] = True
                taken[c] += min(room, len(rows))
        if keep.all():
            yield x, y
        elif keep.any():
            index = keep.nonzero().flatten().to(x.device)
            yield x[index], y[index]
