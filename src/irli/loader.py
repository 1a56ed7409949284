"""`irli.load`: open any saved index directory as the right kind of index."""

from __future__ import annotations

import os

from .index import Index
from .labels import LabelIndex
from .storage import read_manifest


def load(path: str | os.PathLike, mmap: bool = True, verify: bool = True) -> Index | LabelIndex:
    """Load an index directory: an `Index`, or a `LabelIndex` for a label
    index (task "xml" in its manifest); see their `load` methods."""
    if read_manifest(path).get("task", "ann") == "xml":
        return LabelIndex.load(path, mmap=mmap, verify=verify)
    return Index.load(path, mmap=mmap, verify=verify)
