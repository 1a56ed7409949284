"""SearchResult: what every irli index answers with (Index.search,
ShardedIndex.search, LabelIndex.predict), and Searchable: the protocol
every vector index a user can open implements."""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np


class _Pair(NamedTuple):
    ids: np.ndarray
    scores: np.ndarray


class SearchResult(_Pair):
    """(ids, scores), each (n, k), best first; unpacks as a pair.

    ids: int64 item ids, -1 where fewer than k items were found.
    scores: float32. For "cosine" and "ip", the similarity (higher is better,
    -inf where padded); for "l2", the squared Euclidean distance (lower is
    better, +inf where padded).
    candidates: int64 (n,), items scored exactly per query (for a label
    index, candidate labels scored); scanned: int64 (n,), entries read from
    the probed buckets (vectors for scan="exact", 4-bit codes for
    scan="pq4"), or None where an index does not count them (LabelIndex).
    Both are attributes, not part of the pair. For a label index the ids are
    label ids and the scores are probabilities (higher is better).
    """

    candidates: np.ndarray
    scanned: np.ndarray

    def __new__(cls, ids: np.ndarray, scores: np.ndarray, candidates: np.ndarray,
                scanned: np.ndarray | None = None) -> "SearchResult":
        self = tuple.__new__(cls, (ids, scores))
        self.candidates = candidates  # plain attribute stores: the dict update took 0.3 us more a query
        self.scanned = scanned
        return self


@runtime_checkable
class Searchable(Protocol):
    """What every vector index a user can open answers to: irli.Index,
    irli.ShardedIndex and irli.Client (a live service) alike, so code
    written against one runs against the others.

    search(queries float32 (n, d) or (d,), k, probes, allow, refine) ->
    SearchResult; `dim` the vector dimension; len() the items searchable
    now; `config` the irli.IndexConfig the index was built with.
    (irli.LabelIndex answers the same search call on label ids, with
    sparse feature rows as queries.)
    """

    @property
    def config(self) -> Any: ...

    @property
    def dim(self) -> int: ...

    def __len__(self) -> int: ...

    def search(self, queries, k: int = 10, probes: int | None = None, allow=None,
               refine: int | None = None) -> SearchResult: ...
