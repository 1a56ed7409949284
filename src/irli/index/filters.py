"""Allow-lists for filtered search: what a user may pass as `allow`, turned
into the storage positions a search may return.

Forms of `allow` (ids that are unknown or removed are simply never returned):
  * one filter for every query: a 1-D integer array (or list, set, range) of
    ids, or a 1-D boolean mask indexed by id (ids past its end are excluded);
  * one filter per query: a list of n id arrays, or a 2-D boolean mask (n, M)
    indexed by query and id.
Everything is vectorised: no Python code runs per candidate or per id.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InvalidInputError
from ..validation import as_ids
from .idmap import IdMap


@dataclass
class Allowed:
    """Allowed storage positions. Per call: `keep` uint8 (N,) (1 = may be
    returned) and `positions` int64 sorted. Per query: CSR `ptr` int64
    (n+1,) and `pos` int64, query i's positions pos[ptr[i]:ptr[i+1]] sorted."""

    keep: np.ndarray | None = None
    positions: np.ndarray | None = None
    ptr: np.ndarray | None = None
    pos: np.ndarray | None = None

    @property
    def per_query(self) -> bool:
        return self.ptr is not None

    def counts(self, n: int) -> np.ndarray:
        """Allowed items for each of the n queries, int64 (n,)."""
        if self.per_query:
            return np.diff(self.ptr)
        return np.full(n, self.positions.shape[0], dtype=np.int64)

    def rows(self, rows: np.ndarray) -> "Allowed":
        """The filters of queries `rows` only (int (m,)), in that order."""
        if not self.per_query:
            return self
        starts, ends = self.ptr[rows], self.ptr[rows + 1]
        lens = ends - starts
        ptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        take = np.repeat(starts - ptr[:-1], lens) + np.arange(ptr[-1])
        return Allowed(ptr=ptr, pos=self.pos[take])


def _is_sequence_of_arrays(allow) -> bool:
    if isinstance(allow, np.ndarray):
        return allow.dtype == object
    if isinstance(allow, (list, tuple)) and len(allow) > 0:
        return np.ndim(allow[0]) >= 1 or isinstance(allow[0], (set, frozenset, range))
    return False


def _ids_array(v, name: str) -> np.ndarray:
    if isinstance(v, (set, frozenset)):
        v = np.fromiter(v, dtype=np.int64, count=len(v))
    elif isinstance(v, range):
        v = np.arange(v.start, v.stop, v.step, dtype=np.int64)
    return as_ids(v, name=name)


def allow_form(allow, n_queries: int) -> tuple[str, object]:
    """`allow` checked and in one of four forms: ("ids", int64 (m,)) one
    filter for all queries; ("mask", bool (M,)) a mask by id for all;
    ("lists", [int64 array] * n) one id list per query; ("masks", bool
    (n, M)) a mask by id per query. InvalidInputError otherwise."""
    if _is_sequence_of_arrays(allow):  # one list of ids per query
        if len(allow) != n_queries:
            raise InvalidInputError(f"allow has {len(allow)} id lists for {n_queries} queries")
        return "lists", [_ids_array(a, f"allow[{i}]") for i, a in enumerate(allow)]
    if isinstance(allow, (set, frozenset, range)):
        return "ids", _ids_array(allow, "allow")
    try:
        a = np.asarray(allow)
    except (ValueError, TypeError):
        raise InvalidInputError("allow mixes ids and id lists; give one id list per query, "
                                "or one id list for all") from None
    if a.dtype == bool:
        if a.ndim == 1:
            return "mask", a
        if a.ndim == 2:
            if a.shape[0] != n_queries:
                raise InvalidInputError(f"allow mask has {a.shape[0]} rows for {n_queries} queries")
            return "masks", a
        raise InvalidInputError(f"an allow mask must be 1-D (by id) or 2-D (query, id), got shape {a.shape}")
    if a.ndim == 2:
        raise InvalidInputError("allow as a 2-D array must be a boolean mask (query, id); "
                                "give per-query id lists as a list of arrays")
    return "ids", _ids_array(a, "allow")


def parse_allow(allow, n_queries: int, idmap: IdMap, ids: np.ndarray, live: np.ndarray) -> Allowed:
    """Turn the user's `allow` into an `Allowed` for an index whose positions
    hold user ids `ids` int64 (N,) and are alive where `live` (bool (N,))."""
    form, a = allow_form(allow, n_queries)
    if form == "lists":
        lens = np.array([p.shape[0] for p in a], dtype=np.int64)
        flat = np.concatenate(a) if a else np.zeros(0, np.int64)
        return _per_query(np.repeat(np.arange(n_queries), lens), idmap.find(flat), n_queries)
    if form == "mask":  # a mask by id, shared by all queries
        keep = np.zeros(ids.shape[0], dtype=bool)
        inside = ids < a.shape[0]
        keep[inside] = a[ids[inside]]
        keep &= live
        return Allowed(keep=keep.view(np.uint8), positions=np.flatnonzero(keep).astype(np.int64))
    if form == "masks":  # a mask per query, indexed by id
        rows, cols = np.nonzero(a)
        return _per_query(rows, idmap.find(cols.astype(np.int64)), n_queries)
    found = idmap.find(a)
    pos = np.unique(found[found >= 0])
    keep = np.zeros(ids.shape[0], dtype=np.uint8)
    keep[pos] = 1
    return Allowed(keep=keep, positions=pos)


def _per_query(rows: np.ndarray, pos: np.ndarray, n: int) -> Allowed:
    """CSR from (query, position) pairs; drops unknown (-1) and repeats."""
    ok = pos >= 0
    rows, pos = rows[ok].astype(np.int64), pos[ok]
    order = np.lexsort((pos, rows))
    rows, pos = rows[order], pos[order]
    first = np.ones(rows.shape[0], dtype=bool)
    first[1:] = (rows[1:] != rows[:-1]) | (pos[1:] != pos[:-1])
    rows, pos = rows[first], pos[first]
    ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=ptr[1:])
    return Allowed(ptr=ptr, pos=np.ascontiguousarray(pos, dtype=np.int64))
