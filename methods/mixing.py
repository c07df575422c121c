"""Shared machinery: stream batches from several loaders in a random, seeded interleaving.

Methods that train on "forget set + part of the retain set" interleave whole batches instead of
concatenating datasets, so that lazily loaded datasets (Food-101) never sit in memory at once.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

import torch


def take_batches(loader: Iterable, count: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``count`` batches of ``loader``, cycling through it again if it is shorter."""
    return itertools.islice(itertools.cycle(loader) if count > 0 else iter(()), count)


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
