"""Reading a user's YAML grid file safely: size-capped, libyaml when present, no alias bombs."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

MAX_BYTES = 1 << 20          # a grid is a few hundred lines; anything near this is a mistake
MAX_EXPANDED_NODES = 100_000  # nodes after expanding aliases: a "billion laughs" file has ~1e9

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """Nodes in ``node``'s tree with every alias expanded, counted without expanding them."""
    key = id(node)
    if key not in memo:
        memo[key] = 1  # a cyclic alias counts once instead of recursing forever
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        memo[key] = 1 + sum(_expanded_size(child, memo) for child in children)
    return memo[key]


def read_yaml(path: str | Path, *, kind: str = "grid file") -> Any:
    """The document in ``path``; every problem is a one-line ``BenchInputError`` that names
    the file as ``kind``."""
    from bench.errors import BenchInputError

    path = Path(path)
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise BenchInputError(f"cannot read {kind} {str(path)!r}: "
                              f"{exc.strerror or exc}") from None
    if len(data) > MAX_BYTES:
        raise BenchInputError(f"{kind} {str(path)!r} is larger than {MAX_BYTES} bytes; "
                              "it needs a few kB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BenchInputError(f"{kind} {str(path)!r} is not UTF-8 text: {exc.reason} "
                              f"at byte {exc.start}") from None
    loader = _LOADER(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node, {})
        if size > MAX_EXPANDED_NODES:
            raise BenchInputError(f"{kind} {str(path)!r} expands to {size:,} YAML nodes "
                                  f"through its aliases; at most {MAX_EXPANDED_NODES:,} allowed")
        return loader.construct_document(node)
    except (yaml.YAMLError, RecursionError) as exc:
        detail = " ".join(str(exc).split())[:300]
        raise BenchInputError(f"{kind} {str(path)!r} is not valid YAML: {detail}") from None
    finally:
        loader.dispose()
