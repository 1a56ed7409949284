"""Compiled routing: every repetition's router, as stacked affine layers
(one or two, see irli.model.routers.Routing), applied to a block of
queries, and the top-m buckets of each (with their softmax probabilities or
raw scores)."""

from __future__ import annotations

import numba
import numpy as np

from .scoring import FAST, affine, affine_t, dot
from .simd import half_to_float
from .topk import top_row

_GROUP = 4  # queries that share each pass over a layer's weights (scoring.affine_t takes at most 4)


# Rounding slack of a float32 dot product of length d, per unit of |q| (|a_b| + |b_b|): the
# standard bound (d + 2) 2^-24 for each of the two orders summed (approximate and exact), doubled.
_ROUNDING = 4.0 * 2.0 ** -24


@numba.njit(inline="always")
def _one_half(qv, half, b, row):
    """Approximate scores of one query against one repetition's
    half-precision rows half uint16 (B, d): row[c] = b[c] + qv . half[c]."""
    for c in range(half.shape[0]):
        s = np.float32(0.0)
        for j in range(half.shape[1]):
            s += qv[j] * half_to_float(half[c, j])
        row[c] = s + b[c]


@numba.njit(inline="always")
def _fix_top(qv, row, m, slack_q, rows, b, bv, bi, cv, ci, out_idx, out_val):
    """The exact top m of a one-layer router, from approximate scores row
    (B,) that are within slack_q of the exact ones: every bucket that could
    be among the m best is re-scored exactly against rows float32 (B, d),
    in one fixed way, so the buckets and scores (into out_idx / out_val,
    best first, ties to the lower bucket) are the same whichever way `row`
    was computed."""
    top_row(row, m, bv, bi, out_idx, out_val)
    floor = out_val[m - 1] - 2 * slack_q
    cnt = 0
    for c in range(row.shape[0]):
        if row[c] >= floor:
            cv[cnt] = dot(qv, rows[c]) + b[c]
            ci[cnt] = c
            cnt += 1
    top_row(cv[:cnt], m, bv, bi, out_idx, out_val)
    for j in range(m):
        out_idx[j] = ci[out_idx[j]]


@numba.njit(inline="always")
def route_rows(q, lo, hi, a1, b1, a2, b2, rows, half, slack, probed, probs, plo, raw):
    """Route rows lo .. hi - 1 of q into rows plo .. of probed / probs
    (probs: softmax probabilities of the probed buckets, or with `raw` their
    router scores; not written when probs has no columns).

    One-layer routers carry rows float32 (R, B, d) (a1 transposed), half
    uint16 (R, B, d) (the same in half precision, or (R, 0, 0)) and slack
    float32 (R, 2) (the largest |row - half| and |a_b| + |b_b| over the
    buckets): their scores are computed in bulk (BLAS-like over a group of
    queries, or for one query alone over the half-precision rows, half the
    bytes), then the buckets that could be among the best m are re-scored
    exactly (`_fix_top`), so a query is routed the same alone and in a
    batch. Two-layer routers pass rows (R, 0, 0)."""
    two = a2.shape[1] > 0
    width = a2.shape[1] if two else a1.shape[2]
    fix = rows.shape[1] > 0
    n_rows = min(_GROUP, hi - lo)
    hidden = np.empty((n_rows, a1.shape[2]), dtype=np.float32)
    logits = np.empty((n_rows, width), dtype=np.float32) if two else hidden
    _route_into(q, lo, hi, a1, b1, a2, b2, rows, half, slack, probed, probs, plo, raw, hidden, logits,
                np.empty(probed.shape[2], dtype=np.float32), np.empty(width, dtype=np.float32),
                np.empty(width, dtype=np.int32), np.empty(width if fix else 0, dtype=np.float32),
                np.empty(width if fix else 0, dtype=np.int32))


@numba.njit(nogil=True, fastmath=FAST, cache=True, _nrt=False)  # allocates nothing: no reference counts
def _route_into(q, lo, hi, a1, b1, a2, b2, rows, half, slack, probed, probs, plo, raw, hidden, logits, val, buf_v,
                buf_i, cv, ci):
    """route_rows with its scratch: hidden (G, H) and logits (G, width)
    (the same array for one-layer routers), val (m,), buf_v / buf_i
    (width,), cv / ci (width,) or (0,) without the exact re-score."""
    reps = a1.shape[0]
    two = a2.shape[1] > 0
    width = a2.shape[1] if two else a1.shape[2]
    d = q.shape[1]
    m = probed.shape[2]
    fix = rows.shape[1] > 0
    with_probs = probs.shape[1] > 0
    alone = fix and hi - lo == 1 and half.shape[1] > 0 and not (with_probs and not raw)
    for r in range(reps):
        for g in range(lo, hi, _GROUP):
            n = min(_GROUP, hi - g)
            if alone:
                _one_half(q[g], half[r], b1[r], hidden[0])
            else:
                affine(q, g, n, a1[r], b1[r], hidden, two)
                if two:
                    affine_t(hidden, 0, n, a2[r], b2[r], logits)
            for t in range(n):
                row = logits[t, :width]
                at = plo + g - lo + t
                if fix:
                    qv = q[g + t]
                    qn = np.sqrt(dot(qv, qv))
                    slack_q = np.float32(_ROUNDING * (d + 2)) * max(qn, np.float32(1.0)) * slack[r, 1]
                    if alone:
                        slack_q += qn * slack[r, 0]
                    _fix_top(qv, row, m, slack_q, rows[r], b1[r], buf_v, buf_i, cv, ci, probed[r, at], val)
                else:
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
def route_kernel(q, lo, hi, a1, b1, a2, b2, rows, half, slack, probed, probs, raw):
    route_rows(q, lo, hi, a1, b1, a2, b2, rows, half, slack, probed, probs, lo, raw)
