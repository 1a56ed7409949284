"""The compressed search kernel: probed buckets of 4-bit PQ codes -> the best
refine x k distinct items by approximate score -> exact re-rank -> top-k.

One compiled call per block of queries (`pq_block`), or per query
(`pq_one`: the same search, its scratch carved from one buffer the caller
allocates), with no Python per query and no scratch that grows with the
collection. Per query and repetition it builds
the query's lookup tables (float, then 8-bit with one scale), scans the
probed buckets' code blocks 32 items at a time with `simd.lut16`, keeps a
min-heap of the best `n_rerank` distinct items (an item spilled to two probed
buckets takes one slot, with its better score), then scores the heap's items
exactly on their float32 vectors and keeps the top k. A running threshold from
the heap lets a block be dismissed with one vector compare.

One query is scanned bucket by bucket, best bucket first. A batch is scanned
bucket-major, in chunks of queries: each probed bucket is read once for all
the chunk's queries that probe it, which saves memory traffic (what limits
the scan. Both prefetch the code blocks ahead of the scan; one query also
the next bucket's first blocks. The two orders give the same answers,
because the heaps order entries by (score, position), so the best n_rerank
are the same set whatever the order they arrive in, and ties in the final
top k also break by position.

Approximate scores are higher-is-better: the inner product with the
reconstructed vector for ip / cosine, the negative squared distance for l2.
Residual codes encode x - c_b for the item's bucket b (the bucket's term q.c_b
is added exactly; for l2 the tables are built per bucket from q - c_b).
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from .route import route_into, route_kinds, route_rows
from .scoring import FAST, dot, prepare_rows, score
from .simd import ROWS_AHEAD, ctz32, fma16x1, ge16, lut16, max16, min16, prefetch, prefetch_row
from .topk import beats, count_at_least, mth_by_counts, pop_best_first, push_lex, sift_lex

_SEEN = 1 << 10
_AHEAD = 2  # code blocks prefetched ahead of the scan


def table_books(books: np.ndarray, l2: bool) -> np.ndarray:
    """Codebooks books float32 (R, M, 16, dsub) as `_tables` reads them:
    float32 (R, M, dsub + 1, 16), per sub-quantiser its dsub input rows
    of 16 centroid coordinates (doubled for l2) and a last row of biases
    (-|w_c|^2 for l2, zeros otherwise): a table row is then bias + v . rows,
    16 codes at once (for l2, -|v - w_c|^2 = 2 v.w_c - |w_c|^2 - |v|^2,
    the last term the same for every code)."""
    reps, m, _, dsub = books.shape
    out = np.zeros((reps, m, dsub + 1, 16), dtype=np.float32)
    out[:, :, :dsub, :] = books.transpose(0, 1, 3, 2) * (2.0 if l2 else 1.0)
    if l2:
        out[:, :, dsub, :] = -np.square(books.astype(np.float64)).sum(axis=3)
    return out


@numba.njit(inline="always")
def _tables(v, book, n_sub, l2, lutf, lut, maxv):
    """Tables of vector v (float32 (d,)) against one repetition's codebook
    (float32 (M, dsub + 1, 16), `table_books`): float scores into lutf (M2,
    16), 8-bit into lut (32 M2 / 2,) in the block order of simd.lut16.
    Returns (the summed row minima, the scale): approx = minima + sum(lut)
    / scale."""
    dsub = book.shape[1] - 1
    m2 = lutf.shape[0]
    per = (dsub + 1) * 16
    lo_sum = np.float32(0.0)
    span = np.float32(0.0)
    for j in range(m2):
        if j < n_sub:  # 16 sums of dsub fused multiply-adds, in registers
            fma16x1(v, j * dsub, 0, dsub, book, j * per, 16, book, j * per + dsub * 16, lutf, j * 16, 16, 1)
        else:
            for c in range(16):
                lutf[j, c] = np.float32(0.0)
        lo = min16(lutf, j * 16, 1)
        span = max(span, max16(lutf, j * 16, 1) - lo)
        for c in range(16):
            lutf[j, c] -= lo
        if l2 and j < n_sub:
            for t in range(dsub):
                lo -= v[j * dsub + t] * v[j * dsub + t]
        lo_sum += lo
    scale = np.float32(maxv) / span if span > 0 else np.float32(1.0)
    for p in range(m2 // 2):
        for c in range(16):
            lut[32 * p + c] = np.uint8(lutf[2 * p, c] * scale + np.float32(0.5))
        for c in range(16):
            lut[32 * p + 16 + c] = np.uint8(lutf[2 * p + 1, c] * scale + np.float32(0.5))
    return lo_sum, scale


# Queries scanned together, bucket-major, in a batch: each probed bucket's blocks are read once for
# all the chunk's queries that probe it. 512 rather than 256 (issue 24, batched on one thread, in
# alternating processes): `irli` on GloVe +8-11 %, `fast` +2-3 % on GloVe and +3-6 % on MiniLM-384;
# 1,024 gave `irli` what 512 does.
_CHUNK = 512
# With a learned probe budget a chunk is scanned in two passes (every query's first m0 buckets, then the
# rest of its budget), each reading the chunk's buckets once: four times the queries keep the reuse a pass
# gets. MiniLM-384, 8 rounds in alternating processes: 4 % faster batched and on all cores (the median of
# the per-round ratios, 0.96 each, fixed probes 0.99 / 1.01 in the same rounds); GloVe within the noise.
_CHUNK_LEARNED = 2048


# A query's first bucket (its heap not yet full) is read twice: its 8-bit sums first, from which a floor
# that at least n_rerank of its entries reach, then only the entries at that floor are offered to the heap.
# Offered in arrival order, a first bucket's entries rose through the heap about n (1 + ln(N / n)) times
# (GloVe, 856 entries: 104 pushes at n = 20, 141 at n = 30, about 30 ns each); from the floor, n and a few.
_FILL = 64  # blocks of a first bucket read that way (2,048 entries); the rest of a larger one as before


@numba.njit(inline="always")
def _offer(mask, blk, block_pos, pos_col, vals, at, base, inv, keep, has_keep, hs, hid, size, n_rerank, seen):
    """Offer the entries of block blk whose bits are set in mask, their
    8-bit sums in vals[at : at + 32], to one query's heap (hs, hid, size
    of n_rerank; seen: a hint of which positions may be in it). Returns the
    heap's new size."""
    while mask != 0:
        s = ctz32(mask)
        mask &= mask - np.uint32(1)
        i = np.int64(block_pos[blk, pos_col + s])
        if i < 0:
            continue
        if has_keep:
            if keep[i] == 0:
                continue
        sc = base + np.float32(vals[at + s]) * inv
        if size == n_rerank and not beats(sc, i, hs[0], hid[0]):
            continue
        if seen[i & (_SEEN - 1)]:  # perhaps a spilled copy already taken
            found = -1
            for h in range(size):
                if hid[h] == i:
                    found = h
            if found >= 0:
                if sc > hs[found]:
                    hs[found] = sc
                    sift_lex(hs, hid, size, found)
                continue
        seen[i & (_SEEN - 1)] = 1
        size = push_lex(hs, hid, size, n_rerank, sc, i)
    return size


@numba.njit(inline="always")
def _first_floor(blocks, block_pos, pos_col, stride, npairs, b0, nblk, b1, lut, sums, keep, has_keep, n_rerank,
                 fill):
    """The 8-bit sums of blocks b0 .. b0 + nblk - 1 (of a bucket ending at
    b1) into fill float32 (32 nblk,), -1 where no item counts (padding, or
    keep == 0), and an integer floor that at least n_rerank of them reach,
    found by halving with counts, 16 compares at a time (the highest such
    floor, or one that a few more than n_rerank reach); -1 when fewer than
    n_rerank items count."""
    top = np.float32(-1.0)
    for u in range(nblk):
        blk = b0 + u
        if blk + _AHEAD < b1:
            ahead = (blk + _AHEAD) * stride
            for off in range(0, stride, 64):
                prefetch(blocks, ahead + off)
        lut16(blocks, blk * stride, npairs, lut, sums, 0)
        o = 32 * u
        for s in range(32):
            fill[o + s] = np.float32(sums[s]) if block_pos[blk, pos_col + s] >= 0 else np.float32(-1.0)
        if has_keep:
            for s in range(32):
                i = block_pos[blk, pos_col + s]
                if i >= 0 and keep[i] == 0:
                    fill[o + s] = np.float32(-1.0)
        top = max(top, max16(fill, o, 2))
    n = 32 * nblk
    lo, c_lo = 0, count_at_least(fill, n, np.float32(0.0))
    if c_lo < n_rerank:
        return -1
    hi = int(top) + 1  # nothing reaches it
    enough = n_rerank + max(4, n_rerank // 4)
    while hi - lo > 1 and c_lo > enough:
        mid = (lo + hi) // 2
        c = count_at_least(fill, n, np.float32(mid))
        if c >= n_rerank:
            lo, c_lo = mid, c
        else:
            hi = mid
    return lo


@numba.njit(inline="always")
def _scan_bucket(blocks, block_pos, pos_col, stride, npairs, b0, b1, lut, sums, base, scale, keep, has_keep,
                 hs, hid, size, n_rerank, seen, fill):
    """Offer the entries of blocks b0 .. b1 - 1 to one query's heap (hs,
    hid, size of n_rerank; seen: a hint of which positions may be in it;
    fill: scratch float32 (32 _FILL,)). Returns the heap's new size."""
    inv = np.float32(1.0) / scale
    start = b0
    if size < n_rerank and b1 > b0:  # a first bucket: only the entries at its floor (one step under) count
        nblk = min(b1 - b0, fill.shape[0] // 32)
        floor = np.float32(_first_floor(blocks, block_pos, pos_col, stride, npairs, b0, nblk, b1, lut, sums, keep,
                                        has_keep, n_rerank, fill) - 1)
        for u in range(nblk):
            o = 32 * u
            mask = ge16(fill, o, floor) | (ge16(fill, o + 16, floor) << np.uint32(16))
            size = _offer(mask, b0 + u, block_pos, pos_col, fill, o, base, inv, keep, has_keep, hs, hid, size,
                          n_rerank, seen)
        start = b0 + nblk
    for blk in range(start, b1):
        thr = -1  # 8-bit sums must beat it: one step under the heap's floor, once the heap is full
        if size == n_rerank:
            t = (hs[0] - base) * scale - np.float32(1.0)
            if t >= np.float32(65535.0):
                break  # nothing left in this bucket can enter the heap
            if t >= 0:
                thr = int(t)
        ahead = (blk + _AHEAD) * stride
        if blk + _AHEAD < b1:
            for off in range(0, stride, 64):
                prefetch(blocks, ahead + off)
        mask = lut16(blocks, blk * stride, npairs, lut, sums, max(thr, 0))
        if thr < 0:
            mask = np.uint32(0xFFFFFFFF)
        size = _offer(mask, blk, block_pos, pos_col, sums, 0, base, inv, keep, has_keep, hs, hid, size, n_rerank,
                      seen)
    return size


@numba.njit(inline="always")
def _bucket_base(qv, r, b, base0, scale0, book, n_sub, centroids, residual, per_bucket, rq, lutf, lut, maxv,
                 route_base, routed):
    """(base, scale) of bucket b for query qv: the shared tables' with the
    bucket's exact term q.c_b for residual codes (its routing score `routed`
    when route_base: the router's rows are the centroids, without bias), or
    (l2, residual) the bucket's own tables, built into lutf / lut."""
    if per_bucket:
        for t in range(qv.shape[0]):
            rq[t] = qv[t] - centroids[r, b, t]
        return _tables(rq, book, n_sub, True, lutf, lut, maxv)
    if route_base:
        return base0 + routed, scale0
    if residual:
        return base0 + dot(qv, centroids[r, b]), scale0
    return base0, scale0


@numba.njit(inline="always")
def _finish(qv, hs, hid, size, x, sqn, ids, l2, ks, ki, k, out_ids, out_score, qi):
    """Score the heap's items exactly, keep the best k by (score, position)
    and write row qi: ids (-1 padding), scores (distances for l2). Each
    row is prefetched ROWS_AHEAD rows before it is scored."""
    for h in range(min(ROWS_AHEAD, size)):
        prefetch_row(x, hid[h])
    qn = dot(qv, qv) if l2 else np.float32(0.0)
    ksize = 0
    for h in range(size):
        if h + ROWS_AHEAD < size:
            prefetch_row(x, hid[h + ROWS_AHEAD])
        i = hid[h]
        ksize = push_lex(ks, ki, ksize, k, score(qv, qn, x, sqn, i, l2), i)
    pop_best_first(ks, ki, ksize, True, ids, l2, out_ids, out_score, qi)
    for t in range(size if size < k else k, k):
        out_ids[qi, t] = -1
        out_score[qi, t] = np.inf if l2 else -np.inf


_FEATURE_K = 10  # the learned budget's result feature: the 10th best score after the first probes


@numba.njit(inline="always")
def _budget(hs, size, top, m, m0, stop_w, budget, ex):
    """A query's probe count from the learned model stop_w float32 (S + 3,)
    (irli.learn.budget): its best S router scores `top`, the best and 10th
    best scores in its heap hs (size entries) after m0 probes, and a bias
    give log(probes needed); the count is ceil(budget x exp(that)), clipped
    to [m0, m]. The heap's scores are the scan's approximate ones (the
    model is fitted on exact scores; re-scoring exactly cost more than it
    gained, BENCHMARKS.md). ex float32 (n_rerank + 16,): scratch."""
    best = top[0]
    kth = top[0]
    if size > 0:
        best = hs[0]
        for h in range(size):
            ex[h] = hs[h]
            best = max(best, hs[h])
        kth = mth_by_counts(ex, size, min(_FEATURE_K, size))  # the 10th best, counted 16 at a time
    ns = stop_w.shape[0] - 3
    pred = stop_w[ns + 2] + stop_w[ns] * kth + stop_w[ns + 1] * best
    for j in range(ns):
        pred += stop_w[j] * top[min(j, m - 1)]
    want = budget * np.exp(min(pred, np.float32(30.0)))
    if not want < m:
        return m
    mq = int(np.ceil(want))
    return max(m0, min(m, mq))


# The scan runs without reference counting (_nrt=False): numba otherwise increments and decrements,
# with atomic instructions, the count of every array argument each time an inlined helper binds it,
# which cost a fifth of a batch's time and made two threads contend for the same cache lines.
# These functions allocate nothing; their callers own the arrays.
@numba.njit(nogil=True, fastmath=FAST, cache=True, _nrt=False)
def _scan_major(r, c0, cn, jlo, jhi, probed, top, route_base, count, who, nb, qb, book, n_sub, centroids, residual,
                per_bucket, rq, lutf, luts, maxv, base0, scale0, blocks, block_pos, pos_col, stride, npairs, bstart,
                keep, has_keep, hs, hid, size, n_rerank, seen, sums, fill):
    """Probes jlo .. jhi[t] - 1 of the chunk's queries t, bucket-major: the
    queries of each probed bucket together (a counting sort by bucket; who
    holds t x width + j)."""
    width = probed.shape[2]
    count[:] = 0
    for t in range(cn):
        for j in range(jlo, jhi[t]):
            count[probed[r, c0 + t, j] + 1] += 1
    for b in range(nb):
        count[b + 1] += count[b]
    for t in range(cn):
        for j in range(jlo, jhi[t]):
            b = probed[r, c0 + t, j]
            who[count[b]] = t * width + j
            count[b] += 1
    start = 0
    for b in range(nb):  # count[b] is now the end of bucket b's queries
        end = count[b]
        for w in range(start, end):
            t = who[w] // width
            qv = qb[c0 + t]
            routed = top[r, c0 + t, who[w] - t * width] if route_base else np.float32(0.0)
            base, scale = _bucket_base(qv, r, b, base0[t], scale0[t], book, n_sub, centroids, residual,
                                       per_bucket, rq, lutf, luts[t], maxv, route_base, routed)
            size[t] = _scan_bucket(blocks, block_pos, pos_col, stride, npairs, bstart[r, b],
                                   bstart[r, b + 1], luts[t], sums, base, scale, keep, has_keep, hs[t],
                                   hid[t], size[t], n_rerank, seen[t], fill)
        start = end


@numba.njit(nogil=True, fastmath=FAST, cache=True, _nrt=False)
def _scan_chunks(lo, n, chunk, m, first, learned, stop_w, budget, qb, probed, top, route_base, reps, books, n_sub, l2,
                 per_bucket, lutf, luts, maxv, base0, scale0, centroids, residual, rq, blocks, block_pos, pos_col,
                 stride, npairs, bstart, bsizes, keep, has_keep, hs, hid, size, n_rerank, seen, sums, count, who, nb,
                 mq, ex, x, sqn, ids, ks, ki, k, out_ids, out_score, out_ncand, out_scanned, fill):
    """pq_block's scan, re-rank and output of its prepared, routed queries
    qb (n, d) in chunks of `chunk`, with the scratch pq_block allocates."""
    for c0 in range(0, n, chunk):
        cn = min(chunk, n - c0)
        size[:cn] = 0
        seen[:cn] = 0
        for t in range(cn):
            out_scanned[lo + c0 + t] = 0
        for r in range(reps):
            book = books[min(r, books.shape[0] - 1)]
            for t in range(cn):
                if not per_bucket and r < books.shape[0]:  # a shared codebook's tables serve every repetition
                    base0[t], scale0[t] = _tables(qb[c0 + t], book, n_sub, l2, lutf, luts[t], maxv)
                mq[t] = first
            if cn == 1:  # one query: its buckets best first, so its floor rises fast
                qv = qb[c0]
                j = 0
                while j < mq[0]:
                    b = probed[r, c0, j]
                    # the next bucket's first blocks, while this one is scanned (before the budget is known
                    # too: it gives all but the easiest queries more than m0 buckets)
                    if j + 1 < mq[0] or (learned and j + 1 < m):
                        nxt = bstart[r, probed[r, c0, j + 1]] * stride
                        for off in range(0, min(_AHEAD * stride, blocks.shape[0] - nxt), 64):
                            prefetch(blocks, nxt + off)
                    routed = top[r, c0, j] if route_base else np.float32(0.0)
                    base, scale = _bucket_base(qv, r, b, base0[0], scale0[0], book, n_sub, centroids, residual,
                                               per_bucket, rq, lutf, luts[0], maxv, route_base, routed)
                    size[0] = _scan_bucket(blocks, block_pos, pos_col, stride, npairs, bstart[r, b],
                                           bstart[r, b + 1], luts[0], sums, base, scale, keep, has_keep, hs[0],
                                           hid[0], size[0], n_rerank, seen[0], fill)
                    j += 1
                    if learned and j == first:
                        mq[0] = _budget(hs[0], size[0], top[r, c0], m, first, stop_w, budget, ex)
            else:
                _scan_major(r, c0, cn, 0, mq, probed, top, route_base, count, who, nb, qb, book, n_sub, centroids,
                            residual, per_bucket, rq, lutf, luts, maxv, base0, scale0, blocks, block_pos, pos_col,
                            stride, npairs, bstart, keep, has_keep, hs, hid, size, n_rerank, seen, sums, fill)
                if learned:
                    for t in range(cn):
                        mq[t] = _budget(hs[t], size[t], top[r, c0 + t], m, first, stop_w, budget, ex)
                    _scan_major(r, c0, cn, first, mq, probed, top, route_base, count, who, nb, qb, book, n_sub,
                                centroids, residual, per_bucket, rq, lutf, luts, maxv, base0, scale0, blocks,
                                block_pos, pos_col, stride, npairs, bstart, keep, has_keep, hs, hid, size, n_rerank,
                                seen, sums, fill)
            for t in range(cn):
                for j in range(mq[t]):
                    out_scanned[lo + c0 + t] += bsizes[r, probed[r, c0 + t, j]]
        for t in range(cn):
            qi = lo + c0 + t
            out_ncand[qi] = size[t]
            _finish(qb[c0 + t], hs[t], hid[t], size[t], x, sqn, ids, l2, ks, ki, k, out_ids, out_score, qi)


class PQIndexArgs(NamedTuple):
    """The index's arguments of `pq_block`, in its order (the one place it
    is written; tests/test_kernel_args.py checks it against the kernel's
    signature). Built by keyword (PQ4Codes.kernel_args) and passed as
    `*args`; see pq_block for shapes and dtypes."""

    cosine: bool
    l2: bool
    residual: bool
    route_base: bool
    n_sub: int
    a1: np.ndarray
    b1: np.ndarray
    tiles: np.ndarray
    b2: np.ndarray
    rows: np.ndarray
    half: np.ndarray
    slack: np.ndarray
    tiles8: np.ndarray
    scale8: np.ndarray
    centroids: np.ndarray
    books: np.ndarray
    blocks: np.ndarray
    block_pos: np.ndarray
    bstart: np.ndarray
    bsizes: np.ndarray
    x: np.ndarray
    sqn: np.ndarray
    keep: np.ndarray
    ids: np.ndarray


@numba.njit(nogil=True, fastmath=FAST, cache=True)
def pq_block(q, lo, hi, m, n_rerank, k, stop_w, m0, budget, cosine, l2, residual, route_base, n_sub, a1, b1, tiles, b2,
             rows, half, slack, tiles8, scale8, centroids, books, blocks, block_pos, bstart, bsizes, x, sqn, keep, ids,
             out_ids, out_score, out_ncand, out_scanned):
    """The whole compressed search of queries lo .. hi - 1 of raw q float32
    (n, d): check and prepare them (normalised for cosine), route them with
    the layers a1, b1, tiles, b2, the one-layer tables rows, half, slack
    and the 8-bit last layer tiles8, scale8 (irli.model.routers.Routing)
    to m buckets per repetition, scan, re-rank the best n_rerank distinct items, keep k and map positions to `ids`
    int64 (N,), into rows lo .. hi - 1 of out_ids int64 (n, k), out_score
    float32 (n, k) (similarity, or squared distance for l2; padding -1 /
    -inf, +inf for l2), out_ncand (items re-ranked) and
    out_scanned (entries in the probed buckets), int64 (n,).

    stop_w float32 (S + 3,) or empty: with a learned probe budget
    (irli.learn.budget), each query scans its first m0 buckets, then as many as
    `_budget` gives it (at most m, the routing width); empty: m buckets.

    centroids float32 (R, B, d), whose residual term q.c_b is the bucket's
    routing score when route_base (one-layer routers whose rows are the
    centroids, without bias: no second dot product a bucket); books
    float32 (R, M, dsub + 1, 16) the codebooks as table_books lays them
    out (R, or 1 when every repetition shares one codebook: its tables are
    then built once a query), n_sub = M; blocks uint8 (nblocks * stride,) flat code blocks and
    block_pos int32 (nblocks, stride / 4), whose columns from 4 * M2 hold the
    32 item positions of each block (-1 padding); bstart int64 (R, B + 1)
    each bucket's first block; bsizes int64 (R, B) entries per bucket; x
    float32 (N, d), sqn float32 (N,) for l2; keep uint8 (N,) or empty: only
    positions with keep != 0 count. The arguments from cosine to ids are the
    index's (PQ4Codes.kernel_args). Returns -1, or the first row holding NaN
    or inf (nothing is searched).
    """
    n = hi - lo
    d = q.shape[1]
    qb = np.empty((n, d), dtype=np.float32)
    bad = prepare_rows(q, lo, hi, cosine, qb)
    if bad >= 0:
        return bad
    reps = a1.shape[0]
    learned = stop_w.shape[0] > 0
    probed = np.empty((reps, n, m), dtype=np.int32)
    top = np.empty((reps, n, m) if learned or route_base else (reps, 0, 0), dtype=np.float32)
    route_rows(qb, 0, n, a1, b1, tiles, b2, rows, half, slack, tiles8, scale8, probed, top, 0, True)
    first = min(m0, m) if learned else m
    m2 = n_sub + (n_sub & 1)
    npairs = m2 // 2
    stride = block_pos.shape[1] * 4
    pos_col = 8 * npairs  # int32 column of the first position (after 32 npairs code bytes)
    maxv = min(255, 65535 // m2)
    per_bucket = l2 and residual
    has_keep = keep.shape[0] > 0
    chunk = min(n, _CHUNK_LEARNED if learned else _CHUNK)
    lutf = np.empty((m2, 16), dtype=np.float32)
    luts = np.empty((chunk, npairs * 32), dtype=np.uint8)
    base0 = np.empty(chunk, dtype=np.float32)
    scale0 = np.empty(chunk, dtype=np.float32)
    sums = np.empty(32, dtype=np.uint16)
    hs = np.empty((chunk, n_rerank), dtype=np.float32)
    hid = np.empty((chunk, n_rerank), dtype=np.int64)
    size = np.zeros(chunk, dtype=np.int64)
    seen = np.zeros((chunk, _SEEN), dtype=np.uint8)
    ks = np.empty(k, dtype=np.float32)
    ki = np.empty(k, dtype=np.int64)
    rq = np.empty(d, dtype=np.float32)
    ex = np.empty(n_rerank + 16, dtype=np.float32)
    mq = np.empty(chunk, dtype=np.int64)
    nb = bstart.shape[1] - 1
    count = np.zeros(nb + 1 if n > 1 else 0, dtype=np.int64)  # one query needs no bucket-major order
    who = np.empty(chunk * m if n > 1 else 0, dtype=np.int64)
    _scan_chunks(lo, n, chunk, m, first, learned, stop_w, budget, qb, probed, top, route_base, reps, books, n_sub, l2,
                 per_bucket, lutf, luts, maxv, base0, scale0, centroids, residual, rq, blocks, block_pos, pos_col,
                 stride, npairs, bstart, bsizes, keep, has_keep, hs, hid, size, n_rerank, seen, sums, count, who, nb,
                 mq, ex, x, sqn, ids, ks, ki, k, out_ids, out_score, out_ncand, out_scanned,
                 np.empty(32 * _FILL, dtype=np.float32))
    return -1


@numba.njit(inline="always")
def _one_sizes(d, m, n_rerank, k, reps, m2, npairs, with_top, hidden, width, two, q8, rows8, fix, t8, s8):
    """Bytes of each scratch array of one query's search (pq_one), in the
    order it carves them: 0 qb, 1 probed, 2 top, 3 lutf, 4 luts, 5 base0,
    6 scale0, 7 sums, 8 hs, 9 hid, 10 size, 11 seen, 12 ks, 13 ki, 14 rq,
    15 ex, 16 mq, 17 fill (pq_block's arrays for a chunk of one query), then
    the routing's 18 hidden, 19 logits, 20 hq, 21 hsc, 22 val, 23 buf_v,
    24 buf_i, 25 cv, 26 ci, 27 bq, 28 one8 (route_rows' for one row)."""
    top = 4 * reps * m if with_top else 0
    logits = 0
    if two:
        logits = 4 * s8 if q8 else 4 * width
    hq = 4 * t8 if q8 else 0
    fixed = 4 * width if fix else 0
    one8 = 4 * s8 if rows8 else 0
    return (4 * d, 4 * reps * m, top, 64 * m2, 32 * npairs, 4, 4, 64, 4 * n_rerank, 8 * n_rerank, 8, _SEEN, 4 * k,
            8 * k, 4 * d, 4 * (n_rerank + 16), 8, 128 * _FILL, 4 * hidden, logits, hq, 4, 4 * m, 4 * width, 4 * width,
            fixed, fixed, one8, one8)


@numba.njit(inline="always")
def _part_at(sizes, i):
    """Where scratch array i starts: the sizes before it, each rounded up
    to 64 bytes."""
    at = 0
    for j in range(i):
        at += (sizes[j] + 63) // 64 * 64
    return at


@numba.njit(inline="always")
def _part(scratch, sizes, i):
    """Scratch array i's bytes."""
    at = _part_at(sizes, i)
    return scratch[at:at + sizes[i]]


@numba.njit(nogil=True, fastmath=FAST, cache=True, _nrt=False)
def pq_one(q, m, n_rerank, k, stop_w, m0, budget, cosine, l2, residual, route_base, n_sub, a1, b1, tiles, b2, rows,
           half, slack, tiles8, scale8, centroids, books, blocks, block_pos, bstart, bsizes, x, sqn, keep, ids,
           out_ids, out_score, out_ncand, out_scanned, scratch):
    """pq_block for one query q float32 (1, d), its scratch carved from
    scratch uint8 (at least the bytes it asks for) rather than allocated:
    compiled without reference counts, its array arguments are unboxed
    without one allocation each for their counts (about 40 ns an array, 25
    of them) and it allocates nothing (about 30 arrays). Returns -1, 0 (q
    holds NaN or inf), or -2 - the bytes of scratch it needs when given
    fewer (nothing is searched)."""
    d = q.shape[1]
    reps = a1.shape[0]
    learned = stop_w.shape[0] > 0
    with_top = learned or route_base
    m2 = n_sub + (n_sub & 1)
    npairs = m2 // 2
    two, width, q8, rows8, fix = route_kinds(b1, b2, half, tiles8)
    t8 = tiles8.shape[2]
    s8 = scale8.shape[2]
    sizes = _one_sizes(d, m, n_rerank, k, reps, m2, npairs, with_top, b1.shape[1], width, two, q8, rows8, fix, t8,
                       s8)
    need = _part_at(sizes, len(sizes))
    if scratch.shape[0] < need:
        return -2 - need
    qb = _part(scratch, sizes, 0).view(np.float32).reshape((1, d))
    bad = prepare_rows(q, 0, 1, cosine, qb)
    if bad >= 0:
        return bad
    probed = _part(scratch, sizes, 1).view(np.int32).reshape((reps, 1, m))
    tw = m if with_top else 0
    top = _part(scratch, sizes, 2).view(np.float32).reshape((reps, min(tw, 1), tw))
    hidden = _part(scratch, sizes, 18).view(np.float32).reshape((1, b1.shape[1]))
    logits = hidden
    if two:
        logits = _part(scratch, sizes, 19).view(np.float32).reshape((1, sizes[19] // 4))
    route_into(qb, 0, 1, a1, b1, tiles, b2, rows, half, slack, tiles8, scale8, probed, top, 0, True, hidden, logits,
                _part(scratch, sizes, 20).reshape((min(sizes[20], 1), 4 * t8)),
                _part(scratch, sizes, 21).view(np.float32),
                _part(scratch, sizes, 22).view(np.float32),
                _part(scratch, sizes, 23).view(np.float32),
                _part(scratch, sizes, 24).view(np.int32),
                _part(scratch, sizes, 25).view(np.float32),
                _part(scratch, sizes, 26).view(np.int32),
                _part(scratch, sizes, 27).view(np.float32),
                _part(scratch, sizes, 28).view(np.float32).reshape((min(sizes[28], 1), s8)))
    first = min(m0, m) if learned else m
    nb = bstart.shape[1] - 1
    per_bucket = l2 and residual
    maxv = min(255, 65535 // m2)
    has_keep = keep.shape[0] > 0
    _scan_chunks(0, 1, 1, m, first, learned, stop_w, budget, qb, probed, top, route_base, reps, books, n_sub, l2,
                 per_bucket, _part(scratch, sizes, 3).view(np.float32).reshape((m2, 16)),
                 _part(scratch, sizes, 4).reshape((1, 32 * npairs)), maxv,
                 _part(scratch, sizes, 5).view(np.float32), _part(scratch, sizes, 6).view(np.float32),
                 centroids, residual, _part(scratch, sizes, 14).view(np.float32), blocks, block_pos,
                 8 * npairs, block_pos.shape[1] * 4, npairs, bstart, bsizes, keep, has_keep,
                 _part(scratch, sizes, 8).view(np.float32).reshape((1, n_rerank)),
                 _part(scratch, sizes, 9).view(np.int64).reshape((1, n_rerank)),
                 _part(scratch, sizes, 10).view(np.int64), n_rerank,
                 _part(scratch, sizes, 11).reshape((1, _SEEN)),
                 _part(scratch, sizes, 7).view(np.uint16), scratch[0:0].view(np.int64),
                 scratch[0:0].view(np.int64), nb, _part(scratch, sizes, 16).view(np.int64),
                 _part(scratch, sizes, 15).view(np.float32), x, sqn, ids,
                 _part(scratch, sizes, 12).view(np.float32),
                 _part(scratch, sizes, 13).view(np.int64), k, out_ids, out_score, out_ncand, out_scanned,
                 _part(scratch, sizes, 17).view(np.float32))
    return -1
