"""Compiled routing: every repetition's router, as stacked affine layers
(one or two, see irli.model.routers.Routing), applied to a block of
queries, and the top-m buckets of each (with their softmax probabilities or
raw scores)."""

from __future__ import annotations

import numba
import numpy as np

from .scoring import FAST, affine
from .topk import top_row

_GROUP = 4  # queries that share each pass over a layer's weights


@numba.njit(inline="always")
def route_rows(q, lo, hi, a1, b1, a2, b2, probed, probs, plo, raw):
    """Route rows lo .. hi - 1 of q into rows plo .. of probed / probs
    (probs: softmax probabilities of the probed buckets, or with `raw` their
    router scores; not written when probs has no columns)."""
    reps = a1.shape[0]
    two = a2.shape[1] > 0
    width = a2.shape[2] if two else a1.shape[2]
    m = probed.shape[2]
    rows = min(_GROUP, hi - lo)
    hidden = np.empty((rows, a1.shape[2]), dtype=np.float32)
    logits = np.empty((rows, width), dtype=np.float32) if two else hidden
    val = np.empty(m, dtype=np.float32)
    buf_v = np.empty(width, dtype=np.float32)
    buf_i = np.empty(width, dtype=np.int32)
    with_probs = probs.shape[1] > 0
    for r in range(reps):
        for g in range(lo, hi, _GROUP):
            n = min(_GROUP, hi - g)
            affine(q, g, n, a1[r], b1[r], hidden, two)
            if two:
                affine(hidden, 0, n, a2[r], b2[r], logits, False)
            for t in range(n):
                row = logits[t, :width]
                at = plo + g - lo + t
                top_row(row, m, buf_v, buf_i, probed[r, at], val)
                if with_probs and raw:
                    for j in range(m):
                        probs[r, at, j] = val[j]
                elif with_probs:
                    mx = val[0]
                    z = np.float32(0.0)
                    for c in range(width):
                        z += np.exp(row[c] - mx)
                    for j in range(m):
                        probs[r, at, j] = np.exp(val[j] - mx) / z


@numba.njit(nogil=True, fastmath=FAST, cache=True)
def route_kernel(q, lo, hi, a1, b1, a2, b2, probed, probs, raw):
    route_rows(q, lo, hi, a1, b1, a2, b2, probed, probs, lo, raw)
