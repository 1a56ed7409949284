"""`irli.load`: open any saved index directory as the right kind of index."""

from __future__ import annotations

import os

from .distributed.layout import remote
from .distributed.sharded import ShardedIndex
from .index.index import Index
from .io.storage import read_manifest
from .labels.index import LabelIndex


def load(path: str | os.PathLike, mmap: bool = True, verify: bool = True) -> Index | LabelIndex | ShardedIndex:
    """Load an index directory: an `Index`, a `LabelIndex` for a label
    index (task "labels" in its manifest), or a sharded index (task "sharded")
    with its parts in this process (`ShardedIndex.open` puts them in Ray
    actors); see their `load` / `open` methods. A sharded index may be at
    an fsspec URL."""
    if remote(path) is not None:  # an fsspec URL: only sharded indexes are read from one
        return ShardedIndex.open(path, mmap=mmap, verify=verify)
    task = read_manifest(path)["task"]
    if task == "labels":
        return LabelIndex.load(path, mmap=mmap, verify=verify)
    if task == "sharded":
        return ShardedIndex.open(path, mmap=mmap, verify=verify)
    return Index.load(path, mmap=mmap, verify=verify)
