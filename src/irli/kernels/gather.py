"""Gathering candidates from inverted lists, with votes.

An item found in the probed buckets of several repetitions (or, when
spilled, in several probed buckets of one) is one candidate with that many
votes. Vector search and label prediction both gather this way; the marks
are per-thread scratch stamped per query (irli.threads.Stamps), so nothing
is cleared between queries.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(inline="always")
def gather_votes(offsets, lists, probed, row, probs, keep, amark, has_allow, stamp, mark, slot, cid, cp, cv):
    """The distinct items of the buckets probed[r, row, :] of every
    repetition r, in the order first seen: items into cid[:nc], their votes
    into cv and, when probs float32 (R, n, m) is not empty, their summed
    router probabilities into cp. Returns nc.

    offsets int64 (R, B+1) and lists (R, entries) are the inverted lists;
    probed int32 (R, n, m). An item i is skipped when keep uint8 (N,) is not
    empty and keep[i] == 0, or, with has_allow, when amark[i] != stamp (an
    allow-list marked for this query). mark / slot int32 (N,) are
    stamped scratch: mark[i] == stamp says i was seen, at slot[i].
    """
    reps, _, m = probed.shape
    has_keep = keep.shape[0] > 0
    with_probs = probs.shape[1] > 0
    nc = 0
    for r in range(reps):
        for j in range(m):
            b = probed[r, row, j]
            p = probs[r, row, j] if with_probs else np.float32(0.0)
            for t in range(offsets[r, b], offsets[r, b + 1]):
                i = lists[r, t]
                if has_keep:
                    if keep[i] == 0:
                        continue
                if has_allow:
                    if amark[i] != stamp:
                        continue
                if mark[i] != stamp:
                    mark[i] = stamp
                    slot[i] = nc
                    cid[nc] = i
                    if with_probs:
                        cp[nc] = p
                    cv[nc] = 1
                    nc += 1
                else:
                    s = slot[i]
                    if with_probs:
                        cp[s] += p
                    cv[s] += 1
    return nc
