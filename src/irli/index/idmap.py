"""The map from an index's live user ids to the positions where the items
are stored (id checks: irli.validation.as_ids).

Items live at positions 0 .. N-1 of the index's arrays; each has a user id
(int64 >= 0). Removing an item leaves a tombstone at its position until
`Index.compact`; the map holds live items only, so a removed id can be added
again. Lookups are binary searches on a sorted copy of the live ids (no
Python dict, so 10 million ids cost 160 MB, not gigabytes).
"""

from __future__ import annotations

import numpy as np


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
