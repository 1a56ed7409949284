"""User ids of an index's items: checks, and the map from live ids to the
positions where the items are stored.

Items live at positions 0 .. N-1 of the index's arrays; each has a user id
(int64 >= 0). Removing an item leaves a tombstone at its position until
`Index.compact`; the map holds live items only, so a removed id can be added
again. Lookups are binary searches on a sorted copy of the live ids (no
Python dict, so 10 million ids cost 160 MB, not gigabytes).
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidInputError


def as_ids(ids, n: int | None = None, name: str = "ids") -> np.ndarray:
    """`ids` as int64 (n,), checked: integers, 1-D, length `n` when given,
    >= 0 (-1 marks a missing result)."""
    a = np.asarray(ids)
    if a.ndim == 0:
        a = a.reshape(1)
    if a.ndim != 1:
        raise InvalidInputError(f"{name} must be a 1-D array, got shape {a.shape}")
    if a.size and a.dtype.kind not in "iu":
        if a.dtype.kind != "f" or not np.isfinite(a).all() or (a != np.round(a)).any():
            bad = f"dtype {a.dtype}" if a.dtype.kind != "f" else f"{float(a[~(np.isfinite(a) & (a == np.round(a)))][0])!r}"
            raise InvalidInputError(f"{name} must be integers, got {bad}")
        if np.abs(a).max() >= 2.0 ** 63:
            raise InvalidInputError(f"{name} must fit in int64, got {a[np.argmax(np.abs(a))]:g}")
        a = a.astype(np.int64)
    if a.dtype.kind == "u" and a.size and a.max() > np.iinfo(np.int64).max:
        raise InvalidInputError(f"{name} must fit in int64")
    a = a.astype(np.int64, copy=False)
    if n is not None and a.shape[0] != n:
        raise InvalidInputError(f"{name} has {a.shape[0]} entries for {n} vectors")
    if a.size and a.min() < 0:
        raise InvalidInputError(f"{name} must be >= 0 (-1 marks a missing result), got {int(a.min())}")
    return a


def first_duplicate(ids: np.ndarray) -> int | None:
    """An id that occurs twice in `ids` int64 (n,), or None."""
    if ids.size < 2:
        return None
    s = np.sort(ids)
    dup = np.flatnonzero(s[1:] == s[:-1])
    return int(s[dup[0]]) if dup.size else None


class IdMap:
    """Live user ids <-> storage positions, never changed once made (a
    change makes a new map), so a search may hold one while ids change.

    keys: int64 (n_live,) sorted live ids; pos: int64 (n_live,) their positions.
    """

    def __init__(self, ids: np.ndarray, positions: np.ndarray) -> None:
        order = np.argsort(ids, kind="stable")
        self.keys = np.ascontiguousarray(ids[order], dtype=np.int64)
        self.pos = np.ascontiguousarray(positions[order], dtype=np.int64)

    def __len__(self) -> int:
        return int(self.keys.shape[0])

    def find(self, ids: np.ndarray) -> np.ndarray:
        """Positions of `ids` int64 (m,), -1 where an id is not live. int64 (m,)."""
        if self.keys.size == 0:
            return np.full(ids.shape, -1, dtype=np.int64)
        at = np.minimum(np.searchsorted(self.keys, ids), self.keys.size - 1)
        return np.where(self.keys[at] == ids, self.pos[at], -1)

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """bool (m,): which of `ids` are live."""
        return self.find(ids) >= 0

    @classmethod
    def _sorted(cls, keys: np.ndarray, pos: np.ndarray) -> "IdMap":
        self = cls.__new__(cls)
        self.keys, self.pos = keys, pos
        return self

    def inserted(self, ids: np.ndarray, positions: np.ndarray) -> "IdMap":
        """A new map with `ids` (not live yet, no repeats) stored at
        `positions`; this one is left as it was (a search may hold it)."""
        order = np.argsort(ids, kind="stable")
        at = np.searchsorted(self.keys, ids[order])  # non-decreasing: np.insert keeps keys sorted
        return IdMap._sorted(np.insert(self.keys, at, ids[order]), np.insert(self.pos, at, positions[order]))

    def without(self, ids: np.ndarray) -> tuple["IdMap", np.ndarray]:
        """(a new map without the live ids among `ids`, their positions
        int64 ascending); this one is left as it was."""
        found = self.find(ids)
        hit = found >= 0
        if not hit.any():
            return self, np.zeros(0, dtype=np.int64)
        gone = np.isin(self.keys, ids[hit])
        return IdMap._sorted(self.keys[~gone], self.pos[~gone]), np.unique(found[hit])
