"""The exact search path: prepare -> route -> probe -> gather -> filter ->
exact score -> top-k, as compiled kernels over blocks of queries (the pieces
live in irli.kernels.scoring, irli.model.routers.Routing, irli.kernels.gather and irli.kernels.topk).

`exact_block` is the whole
search of a block of queries over float32 vectors in one compiled call: it
checks and normalises the queries, routes them, gathers the items of the
probed buckets, counts in how many repetitions each was seen, keeps those
seen at least `min_votes` times (and, optionally, only the `top_c` with the
highest summed router probability), scores them exactly, keeps the top k and
maps positions to ids. The PQ path (`irli.kernels.pq_scan.pq_block`) has the same
shape. One query and a batch run the very same code per query, so a single
query gets exactly the answer it gets inside a batch, whatever the block
size or thread count.

Kernels release the GIL; `irli.threads` runs blocks in parallel. There is no
Python per query or per candidate, and no scratch that grows with the
collection is cleared per call: marks live in per-thread arrays stamped per
query (`irli.threads.Stamps`).
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from ..threads import run_blocks, stamps
from .gather import gather_votes
from .route import route_rows
from .scoring import FAST, dot, prepare_rows, score
from .topk import emit, emit_ids, push


def outputs(n: int, k: int):
    """Result arrays for n queries: positions -1, scores -inf, candidate
    counts 0."""
    return (np.full((n, k), -1, dtype=np.int64), np.full((n, k), -np.inf, dtype=np.float32),
            np.zeros(n, dtype=np.int64))



# -- the exact scan --------------------------------------------------------------------
@numba.njit(cache=True, nogil=True, fastmath=FAST, _nrt=False)  # allocates nothing: no atomic reference counts
def _probe_all(qv, qn, pr, stamp, x, sqn, offsets, lists, probed, k, min_votes, l2, dedup, allowed, has_keep, amark,
               has_allow, mark, cnt, hs, hid):
    """Score exactly every item of query row pr's probed buckets that passes
    the filters (keep, allow-list, min_votes) into the heap hs / hid of k,
    which starts empty. Returns (heap size, items scored)."""
    size = 0
    scored = 0
    for r in range(probed.shape[0]):
        for j in range(probed.shape[2]):
            b = probed[r, pr, j]
            for t in range(offsets[r, b], offsets[r, b + 1]):
                i = lists[r, t]
                if has_keep:
                    if allowed[i] == 0:
                        continue
                if has_allow:
                    if amark[i] != stamp:
                        continue
                if dedup:
                    if mark[i] != stamp:
                        mark[i] = stamp
                        cnt[i] = 1
                    else:
                        cnt[i] += 1
                    if cnt[i] != min_votes:
                        continue
                scored += 1
                size = push(hs, hid, size, k, score(qv, qn, x, sqn, i, l2), i)
    return size, scored


@numba.njit(inline="always")
def _scan_rows(q, lo, hi, plo, x, sqn, offsets, lists, probed, probs, k, min_votes, top_c, l2, dedup, allowed,
               aptr, apos, amark, mark, cnt, stamp0, hs, hid, out_pos, out_score, out_ncand, out_scanned,
               ids, out_ids):
    """Rows lo .. hi - 1 of q, probed at rows plo .. of `probed`. Writes
    positions into out_pos, or ids into out_ids when `ids` is not empty
    (then scores are the user's: distances for l2). Marks hold query stamps
    (stamp0 + qi - lo), so they never need clearing."""
    reps = probed.shape[0]
    m = probed.shape[2]
    has_keep = allowed.shape[0] > 0
    has_allow = aptr.shape[0] > 0
    for qi in range(lo, hi):
        pr = plo + qi - lo
        stamp = stamp0 + qi - lo
        qv = q[qi]
        qn = dot(qv, qv) if l2 else np.float32(0.0)
        size = 0
        scored = 0
        entries = 0
        for r in range(reps):
            for j in range(m):
                b = probed[r, pr, j]
                entries += offsets[r, b + 1] - offsets[r, b]
        if has_allow:  # this query's allow-list, marked with its stamp
            for t in range(aptr[qi], aptr[qi + 1]):
                amark[apos[t]] = stamp
        if top_c == 0:
            size, scored = _probe_all(qv, qn, pr, stamp, x, sqn, offsets, lists, probed, k, min_votes, l2, dedup,
                                      allowed, has_keep, amark, has_allow, mark, cnt, hs, hid)
        else:
            cid = np.empty(entries, dtype=np.int64)
            cp = np.empty(entries, dtype=np.float32)
            cv = np.empty(entries, dtype=np.int32)
            nc = gather_votes(offsets, lists, probed, pr, probs, allowed, amark, has_allow, stamp, mark, cnt, cid, cp,
                              cv)
            keep = 0
            for s in range(nc):  # compact the survivors of the vote filter
                if cv[s] >= min_votes:
                    cid[keep] = cid[s]
                    cp[keep] = cp[s]
                    keep += 1
            order = np.argsort(-cp[:keep], kind="mergesort")
            for s in range(min(top_c, keep)):
                i = cid[order[s]]
                scored += 1
                size = push(hs, hid, size, k, score(qv, qn, x, sqn, i, l2), i)
        out_ncand[qi] = scored
        out_scanned[qi] = entries
        if ids.shape[0] > 0:
            emit_ids(hs, hid, size, ids, l2, out_ids, out_score, qi)
        else:
            emit(hs, hid, size, out_pos, out_score, qi)


@numba.njit(cache=True, nogil=True, fastmath=FAST)
def _scan(q, lo, hi, x, sqn, offsets, lists, probed, probs, k, min_votes, top_c, l2, dedup, allowed, aptr, apos,
          amark, mark, cnt, stamp0, out_pos, out_score, out_ncand, out_scanned):
    hs = np.empty(k, dtype=np.float32)
    hid = np.empty(k, dtype=np.int64)
    none = np.zeros(0, dtype=np.int64)
    _scan_rows(q, lo, hi, lo, x, sqn, offsets, lists, probed, probs, k, min_votes, top_c, l2, dedup, allowed,
               aptr, apos, amark, mark, cnt, stamp0, hs, hid, out_pos, out_score, out_ncand, out_scanned,
               none, out_pos)


def marks(dedup: bool, allow: bool, size: int, n: int):
    """(amark, mark, count, first stamp) for n queries from this thread's
    stamped scratch; empty arrays for what the call does not use."""
    names = (("mark", "count") if dedup else ()) + (("allow",) if allow else ())
    arrays, stamp0 = stamps().take(names, size, n)
    empty = np.zeros(0, dtype=np.int32)
    mark, cnt = (arrays[0], arrays[1]) if dedup else (empty, empty)
    return (arrays[-1] if allow else empty), mark, cnt, stamp0


def scan(
    q: np.ndarray, x: np.ndarray, sqnorms: np.ndarray, offsets: np.ndarray, lists: np.ndarray,
    probed: np.ndarray, probs: np.ndarray, k: int, min_votes: int = 1, top_c: int = 0,
    l2: bool = False, copies: int = 1, keep: np.ndarray | None = None,
    allow: tuple[np.ndarray, np.ndarray] | None = None, threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact top-k among the items of the probed buckets.

    q float32 (n, d) prepared queries; x float32 (N, d) item vectors by
    position; sqnorms float32 (N,) squared norms (used for l2 only); offsets
    int64 (R, B+1); lists int (R, N); probed int32 (R, n, m) from `route`,
    with probs (R, n, m) when `top_c` > 0 (0 means no cut); `copies` > 1
    when items are spilled to more than one bucket per repetition. Only
    positions with `keep` (uint8 (N,)) non-zero count, and with `allow` =
    (ptr int64 (n+1,), pos int64) only the positions pos[ptr[i]:ptr[i+1]]
    for query i. Returns (positions int64 (n, k), -1 where fewer than k;
    scores float32 (n, k), higher is better (for l2 the negative squared
    distance), -inf where padded; candidates int64 (n,), items scored
    exactly per query). Runs on `threads` (irli.threads).
    """
    n = q.shape[0]
    outs = outputs(n, k)
    read = np.zeros(n, dtype=np.int64)
    dedup = probed.shape[0] > 1 or top_c > 0 or copies > 1
    none = np.zeros(0, dtype=np.int64)
    keep = np.zeros(0, dtype=np.uint8) if keep is None else keep
    aptr, apos = (none, none) if allow is None else allow

    def block(lo, hi):
        amark, mark, cnt, stamp0 = marks(dedup, allow is not None, x.shape[0], hi - lo)
        _scan(q, lo, hi, x, sqnorms, offsets, lists, probed, probs, k, min_votes, top_c, l2, dedup, keep,
              aptr, apos, amark, mark, cnt, stamp0, *outs, read)

    run_blocks(block, n, threads)
    return outs


class ExactIndexArgs(NamedTuple):
    """The index's arguments of `exact_block`, in its order (the one place
    it is written; tests/test_kernel_args.py checks it against the
    kernel's signature). Built by keyword (Index's published state) and
    passed as `*args`; see exact_block for shapes and dtypes."""

    cosine: bool
    l2: bool
    a1: np.ndarray
    b1: np.ndarray
    tiles: np.ndarray
    b2: np.ndarray
    rows: np.ndarray
    half: np.ndarray
    slack: np.ndarray
    tiles8: np.ndarray
    scale8: np.ndarray
    x: np.ndarray
    sqn: np.ndarray
    offsets: np.ndarray
    lists: np.ndarray
    keep: np.ndarray
    ids: np.ndarray


@numba.njit(cache=True, nogil=True, fastmath=FAST)
def exact_block(q, lo, hi, m, k, min_votes, top_c, dedup, mark, cnt, stamp0, cosine, l2, a1, b1, tiles, b2, rows, half,
                slack, tiles8, scale8, x, sqn, offsets, lists, keep, ids, out_ids, out_scores, out_ncand, out_scanned):
    """The whole exact search of queries lo .. hi - 1 of raw q float32 (n,
    d): check and prepare (normalise for cosine), route to m buckets per
    repetition, scan, keep the top k and map positions to `ids`, into rows
    lo .. hi - 1 of out_ids int64 (n, k), out_scores float32 (n, k) (the
    user's scores: distances for l2), out_ncand and out_scanned int64 (n,).
    The arguments from cosine to ids are the index's. Returns -1, or the
    first row holding NaN or inf (nothing is searched)."""
    with_probs = top_c > 0
    n = hi - lo
    qb = np.empty((n, q.shape[1]), dtype=np.float32)
    bad = prepare_rows(q, lo, hi, cosine, qb)
    if bad >= 0:
        return bad
    reps = a1.shape[0]
    probed = np.empty((reps, n, m), dtype=np.int32)
    probs = np.empty((reps, n, m) if with_probs else (reps, 0, 0), dtype=np.float32)
    route_rows(qb, 0, n, a1, b1, tiles, b2, rows, half, slack, tiles8, scale8, probed, probs, 0, False)
    hs = np.empty(k, dtype=np.float32)
    hid = np.empty(k, dtype=np.int64)
    none = np.zeros(0, dtype=np.int64)
    pos = np.empty((0, 0), dtype=np.int64)
    _scan_rows(qb, 0, n, 0, x, sqn, offsets, lists, probed, probs, k, min_votes, top_c, l2, dedup, keep, none,
               none, mark, mark, cnt, stamp0, hs, hid, pos, out_scores[lo:hi], out_ncand[lo:hi],
               out_scanned[lo:hi], ids, out_ids[lo:hi])
    return -1


# -- exact search over given positions -------------------------------------------------
@numba.njit(cache=True, nogil=True, fastmath=FAST)
def _subset(q, lo, hi, x, sqn, aptr, apos, k, l2, out_pos, out_score, out_ncand):
    hs = np.empty(k, dtype=np.float32)
    hid = np.empty(k, dtype=np.int64)
    for qi in range(lo, hi):
        qv = q[qi]
        qn = dot(qv, qv) if l2 else np.float32(0.0)
        size = 0
        for t in range(aptr[qi], aptr[qi + 1]):
            i = apos[t]
            size = push(hs, hid, size, k, score(qv, qn, x, sqn, i, l2), i)
        out_ncand[qi] = aptr[qi + 1] - aptr[qi]
        emit(hs, hid, size, out_pos, out_score, qi)


def subset(q: np.ndarray, x: np.ndarray, sqnorms: np.ndarray, ptr: np.ndarray, pos: np.ndarray, k: int,
           l2: bool = False, threads: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact top-k of query i among the positions pos[ptr[i]:ptr[i+1]] (int64,
    no repeats): a brute-force search over each query's own allow-list.
    Returns what `scan` returns."""
    n = q.shape[0]
    outs = outputs(n, k)
    run_blocks(lambda lo, hi: _subset(q, lo, hi, x, sqnorms, ptr, pos, k, l2, *outs), n, threads)
    return outs


def scanned(offsets: np.ndarray, probed: np.ndarray) -> np.ndarray:
    """Entries read from the inverted lists per query: the summed sizes of the
    probed buckets over repetitions, int64 (n,)."""
    sizes = np.diff(offsets, axis=1)
    return sum(sizes[r][probed[r]].sum(axis=1) for r in range(probed.shape[0]))
