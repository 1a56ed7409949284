"""Compiled routing: every repetition's router, as stacked affine layers
(one or two, see irli.model.routers.Routing), applied to a block of
queries, and the top-m buckets of each (with their softmax probabilities or
raw scores).

At high dimension a one-layer router also has an int16 copy (c16, one
scale per bucket, cscale) and its weights bucket-major (a1t): each query,
quantised the same way, scores every bucket with integer products (half
the bytes of float32, and routing one query at d = 768 is bound by reading
the weights), the best 2m (at least m + 8) are scored again exactly in
float32 and the best m of those are kept. Every query takes the same steps
in a batch as alone, so a single query's buckets equal its row's.
(benchmarks/routing_cost.py; BENCHMARKS.md, issue 23.)"""

from __future__ import annotations

import numba
import numpy as np

from .scoring import FAST, affine, dot
from .topk import top_row

_GROUP = 4  # queries that share each pass over a layer's weights


@numba.njit(cache=True)
def quant_limit(d):
    """The largest |value| of an int16 router weight or query element at
    dimension d: 1,023, less past d = 2,048, so that a sum of d products
    stays within int32."""
    return min(1023, int(np.floor(np.sqrt((2**31 - 1) / max(d, 1)))))


@numba.njit(nogil=True, cache=True, fastmath=True)
def _int_dots(qi, c16, out):
    """out int32 (B,) = c16 int16 (B, d) . qi int16 (d,): sums of products
    in a loop of its own, which LLVM vectorises (with the float scaling in
    the same loop it ran 3.5x slower)."""
    for c in range(c16.shape[0]):
        s = np.int32(0)
        for j in range(c16.shape[1]):
            s += np.int32(qi[j]) * np.int32(c16[c, j])
        out[c] = s


@numba.njit(inline="always")
def _route_quantised(q, t, r, b1, c16, cscale, a1t, m, qi, acc, approx, buf_v, buf_i, short_i, short_v, exact,
                     out_idx, out_val):
    """The best m buckets of prepared query q[t] in repetition r by the
    int16 scores and an exact fix-up of the shortlist (see the module
    docstring), best first, ties to the lower bucket, into out_idx /
    out_val (their exact scores)."""
    d = q.shape[1]
    width = c16.shape[1]
    lim = np.float32(quant_limit(d))
    mx = np.float32(0.0)
    for j in range(d):
        mx = max(mx, abs(q[t, j]))
    sq = mx / lim if mx > 0 else np.float32(1.0)
    inv = np.float32(1.0) / sq
    for j in range(d):
        qi[j] = np.int16(np.floor(q[t, j] * inv + np.float32(0.5)))
    _int_dots(qi, c16[r], acc)
    for c in range(width):
        approx[c] = b1[r, c] + sq * cscale[r, c] * np.float32(acc[c])
    short = short_i.shape[0]
    top_row(approx, short, buf_v, buf_i, short_i, short_v)
    for u in range(short):
        exact[u] = b1[r, short_i[u]] + dot(q[t], a1t[r, short_i[u]])
    for j in range(m):  # selection: best exact score, ties to the lower bucket
        best = -1
        for u in range(short):
            if short_i[u] < 0:
                continue
            if best < 0 or exact[u] > exact[best] or (exact[u] == exact[best] and short_i[u] < short_i[best]):
                best = u
        out_idx[j] = short_i[best]
        out_val[j] = exact[best]
        short_i[best] = -1


@numba.njit(inline="always")
def route_rows(q, lo, hi, a1, b1, a2, b2, c16, cscale, a1t, probed, probs, plo, raw):
    """Route rows lo .. hi - 1 of q into rows plo .. of probed / probs
    (probs: softmax probabilities of the probed buckets, or with `raw` their
    router scores; not written when probs has no columns). c16 int16 (R, B,
    d), cscale float32 (R, B) and a1t float32 (R, B, d): a one-layer
    router's int16 copy and bucket-major weights, or empty (R, 0, 0)."""
    reps = a1.shape[0]
    two = a2.shape[1] > 0
    width = a2.shape[2] if two else a1.shape[2]
    m = probed.shape[2]
    with_probs = probs.shape[1] > 0
    if c16.shape[1] > 0 and not two and (raw or not with_probs):
        short = min(width, m + max(8, m))
        qi = np.empty(q.shape[1], dtype=np.int16)
        acc = np.empty(width, dtype=np.int32)
        approx = np.empty(width, dtype=np.float32)
        buf_v = np.empty(width, dtype=np.float32)
        buf_i = np.empty(width, dtype=np.int32)
        short_i = np.empty(short, dtype=np.int32)
        short_v = np.empty(short, dtype=np.float32)
        exact = np.empty(short, dtype=np.float32)
        val = np.empty(m, dtype=np.float32)
        for r in range(reps):
            for t in range(lo, hi):
                at = plo + t - lo
                _route_quantised(q, t, r, b1, c16, cscale, a1t, m, qi, acc, approx, buf_v, buf_i, short_i,
                                 short_v, exact, probed[r, at], val)
                if with_probs:
                    for j in range(m):
                        probs[r, at, j] = val[j]
        return
    rows = min(_GROUP, hi - lo)
    hidden = np.empty((rows, a1.shape[2]), dtype=np.float32)
    logits = np.empty((rows, width), dtype=np.float32) if two else hidden
    val = np.empty(m, dtype=np.float32)
    buf_v = np.empty(width, dtype=np.float32)
    buf_i = np.empty(width, dtype=np.int32)
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
def route_kernel(q, lo, hi, a1, b1, a2, b2, c16, cscale, a1t, probed, probs, raw):
    route_rows(q, lo, hi, a1, b1, a2, b2, c16, cscale, a1t, probed, probs, lo, raw)
