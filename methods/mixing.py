"""Shared machinery: stream batches from several loaders in a random, seeded interleaving.

Methods that train on "forget set + part of the retain set" interleave whole batches instead of
concatenating datasets, so that lazily loaded datasets (Food-101) never sit in memory at once.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch


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


def interleave(streams: dict[str, tuple[Iterable, int]], *, seed: int
               ) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    """Yield (tag, x, y): ``count`` batches from each tagged loader, in a seeded random order."""
    order = [tag for tag, (_, count) in streams.items() for _ in range(count)]
    perm = torch.randperm(len(order), generator=torch.Generator().manual_seed(seed)).tolist()
    iterators = {tag: take_batches(loader, count) for tag, (loader, count) in streams.items()}
    for i in perm:
        tag = order[i]
        x, y = next(iterators[tag])
        yield tag, x, y
