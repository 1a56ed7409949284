"""The compressed search kernel: probed buckets of 4-bit PQ codes -> the best
refine x k distinct items by approximate score -> exact re-rank -> top-k.

One compiled call per block of queries, with no Python per query and no
scratch that grows with the collection. Per query and repetition it builds
the query's lookup tables (float, then 8-bit with one scale), scans the
probed buckets' code blocks 32 items at a time with `simd.lut16`, keeps a
min-heap of the best `kk` distinct items (an item spilled to two probed
buckets takes one slot, with its better score), then scores the heap's items
exactly on their float32 vectors and keeps the top k. A running threshold from
the heap lets a block be dismissed with one vector compare.

Approximate scores are higher-is-better: the inner product with the
reconstructed vector for ip / cosine, the negative squared distance for l2.
Residual codes encode x - c_b for the item's bucket b (the bucket's term q.c_b
is added exactly; for l2 the tables are built per bucket from q - c_b).
"""

from __future__ import annotations

import numba
import numpy as np

from .search import FAST, _dot, _emit_ids, _prepare_rows, _push, _route_rows, _score, _sift
from .simd import ctz32, lut16, prefetch


_SEEN = 1 << 10


@numba.njit(inline="always")
def _tables(v, book, n_sub, l2, lutf, lut, maxv):
    """Tables of vector v (float32 (d,)) against one repetition's codebook
    (float32 (M, 16, dsub)): float scores into lutf (M2, 16), 8-bit into lut
    (32 M2 / 2,) in the block order of simd.lut16. Returns (the summed row
    minima, the scale): approx = minima + sum(lut) / scale."""
    dsub = book.shape[2]
    m2 = lutf.shape[0]
    lo_sum = np.float32(0.0)
    span = np.float32(0.0)
    for j in range(m2):
        lo = np.float32(np.inf)
        hi = np.float32(-np.inf)
        for c in range(16):
            s = np.float32(0.0)
            if j < n_sub:
                for t in range(dsub):
                    w = book[j, c, t]
                    a = v[j * dsub + t]
                    if l2:
                        s -= (a - w) * (a - w)
                    else:
                        s += a * w
            lutf[j, c] = s
            lo = min(lo, s)
            hi = max(hi, s)
        for c in range(16):
            lutf[j, c] -= lo
        lo_sum += lo
        span = max(span, hi - lo)
    scale = np.float32(maxv) / span if span > 0 else np.float32(1.0)
    for p in range(m2 // 2):
        for c in range(16):
            lut[32 * p + c] = np.uint8(lutf[2 * p, c] * scale + np.float32(0.5))
            lut[32 * p + 16 + c] = np.uint8(lutf[2 * p + 1, c] * scale + np.float32(0.5))
    return lo_sum, scale


@numba.njit(nogil=True, fastmath=FAST, cache=True)
def pq_block(q, lo, hi, m, kk, k, cosine, l2, residual, n_sub, a1, b1, a2, b2, centres, books, blocks, block_pos,
             bstart, bsizes, x, sqn, keep, ids, out_ids, out_score, out_ncand, out_scanned):
    """The whole compressed search of queries lo .. hi - 1 of raw q float32
    (n, d): check and prepare them (normalised for cosine), route them with
    the layers a1, b1, a2, b2 (irli.search.Routing) to m buckets per
    repetition, scan, re-rank the best kk distinct items, keep k and map
    positions to `ids` int64 (N,). The arguments from cosine to ids are the
    index's (PQ4Codes.kernel_args). Returns -1, or the first row holding NaN
    or inf (nothing is searched).
    """
    n = hi - lo
    qb = np.empty((n, q.shape[1]), dtype=np.float32)
    bad = _prepare_rows(q, lo, hi, cosine, qb)
    if bad >= 0:
        return bad
    probed = np.empty((a1.shape[0], n, m), dtype=np.int32)
    _route_rows(qb, 0, n, a1, b1, a2, b2, probed, np.empty((a1.shape[0], 0, 0), dtype=np.float32), 0)
    _pq_rows(qb, probed, centres, books, n_sub, blocks, block_pos, bstart, bsizes, x, sqn, keep, ids, kk, k,
             l2, residual, out_ids[lo:hi], out_score[lo:hi], out_ncand[lo:hi], out_scanned[lo:hi])
    return -1


@numba.njit(inline="always")
def _pq_rows(q, probed, centres, books, n_sub, blocks, block_pos, bstart, bsizes, x, sqn, keep, ids, kk, k,
             l2, residual, out_ids, out_score, out_ncand, out_scanned):
    """All rows of prepared queries q (float32 (n, d)).

    probed int32 (R, n, m) buckets per repetition; centres float32 (R, B, d);
    books float32 (R, M, 16, dsub) codebooks, n_sub = M; blocks uint8
    (nblocks * stride,) flat code blocks and block_pos int32 (nblocks, stride
    / 4), whose columns from 8 * M2 / 2 hold the 32 item positions of each block
    (-1 padding); bstart int64 (R, B + 1) each bucket's first block; bsizes
    int64 (R, B) entries per bucket; x float32 (N, d), sqn float32 (N,) for
    l2; keep uint8 (N,) or empty: only positions with keep != 0 count. kk
    items are re-ranked exactly, k returned. Writes out_ids int64 (n, k),
    out_score float32 (n, k) (similarity, or squared distance for l2; the
    caller fills the padding), out_ncand (items re-ranked) and out_scanned
    (entries in the probed buckets), int64 (n,).
    """
    d = q.shape[1]
    reps, _, m = probed.shape
    m2 = n_sub + (n_sub & 1)
    npairs = m2 // 2
    stride = block_pos.shape[1] * 4
    pos_col = 8 * npairs  # int32 column of the first position (after 32 npairs code bytes)
    maxv = min(255, 65535 // m2)
    lutf = np.empty((m2, 16), dtype=np.float32)
    lut = np.empty(npairs * 32, dtype=np.uint8)
    sums = np.empty(32, dtype=np.uint16)
    hs = np.empty(kk, dtype=np.float32)
    hid = np.empty(kk, dtype=np.int64)
    ks = np.empty(k, dtype=np.float32)
    ki = np.empty(k, dtype=np.int64)
    rq = np.empty(d, dtype=np.float32)
    has_keep = keep.shape[0] > 0
    per_bucket = l2 and residual
    seen = np.zeros(_SEEN, dtype=np.uint8)  # a hint: positions that may be in the heap, by low bits
    for qi in range(q.shape[0]):
        qv = q[qi]
        size = 0
        seen[:] = 0
        scanned = 0
        for r in range(reps):
            book = books[r]
            base0 = np.float32(0.0)
            scale = np.float32(1.0)
            if not per_bucket:
                base0, scale = _tables(qv, book, n_sub, l2, lutf, lut, maxv)
            for j in range(m):
                b = probed[r, qi, j]
                scanned += bsizes[r, b]
                if bstart[r, b] == bstart[r, b + 1]:
                    continue
                base = base0
                if per_bucket:
                    for t in range(d):
                        rq[t] = qv[t] - centres[r, b, t]
                    base, scale = _tables(rq, book, n_sub, True, lutf, lut, maxv)
                elif residual:
                    base += _dot(qv, centres[r, b])
                inv = np.float32(1.0) / scale
                for blk in range(bstart[r, b], bstart[r, b + 1]):
                    thr = -1  # 8-bit sums must beat it: the heap's floor, once the heap is full
                    if size == kk:
                        t = (hs[0] - base) * scale
                        if t >= np.float32(65535.0):
                            break  # nothing left in this bucket can enter the heap
                        if t >= 0:
                            thr = int(t)
                    mask = lut16(blocks, blk * stride, npairs, lut, sums, max(thr, 0))
                    if thr < 0:
                        mask = np.uint32(0xFFFFFFFF)
                    while mask != 0:
                        s = ctz32(mask)
                        mask &= mask - np.uint32(1)
                        i = np.int64(block_pos[blk, pos_col + s])
                        if i < 0:
                            continue
                        if has_keep:
                            if keep[i] == 0:
                                continue
                        sc = base + np.float32(sums[s]) * inv
                        if size == kk and sc <= hs[0]:
                            continue
                        if seen[i & (_SEEN - 1)]:  # perhaps a spilled copy already taken
                            found = -1
                            for h in range(size):
                                if hid[h] == i:
                                    found = h
                            if found >= 0:
                                if sc > hs[found]:
                                    hs[found] = sc
                                    _sift(hs, hid, size, found)
                                continue
                        seen[i & (_SEEN - 1)] = 1
                        size = _push(hs, hid, size, kk, sc, i)
        for h in range(size):
            prefetch(x, hid[h] * d)
        qn = _dot(qv, qv) if l2 else np.float32(0.0)
        ksize = 0
        for h in range(size):
            i = hid[h]
            ksize = _push(ks, ki, ksize, k, _score(qv, qn, x, sqn, i, l2), i)
        out_ncand[qi] = size
        out_scanned[qi] = scanned
        _emit_ids(ks, ki, ksize, ids, l2, out_ids, out_score, qi)
