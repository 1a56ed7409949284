"""The search path: prepare -> route -> probe -> gather -> filter -> exact
score -> top-k, as compiled kernels over blocks of queries.

`Routing` holds every repetition's router as affine layers; routing scores
and picks each query's top `probes` buckets. `exact_block` is the whole
search of a block of queries over float32 vectors in one compiled call: it
checks and normalises the queries, routes them, gathers the items of the
probed buckets, counts in how many repetitions each was seen, keeps those
seen at least `min_votes` times (and, optionally, only the `top_c` with the
highest summed router probability), scores them exactly, keeps the top k and
maps positions to ids. The PQ path (`irli.pqscan.pq_block`) has the same
shape. One query and a batch run the very same code per query, so a single
query gets exactly the answer it gets inside a batch, whatever the block
size or thread count.

Kernels release the GIL; `irli.threads` runs blocks in parallel. There is no
Python per query or per candidate, and no scratch that grows with the
collection is cleared per call: marks live in per-thread arrays stamped per
query (`irli.threads.Stamps`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from .errors import InvalidInputError
from .routers import Router
from .threads import run_blocks, stamps
from .validation import MAX_NORM

# fast-math for the search kernels, without "ninf": top-m and the heaps use
# infinities as sentinels. Inputs are checked finite before any of it runs.
FAST = {"nnan", "nsz", "reassoc", "contract", "arcp"}


# -- queries -------------------------------------------------------------------------
@numba.njit(nogil=True, cache=True)
def _prepare_rows(q, lo, hi, cosine, out):
    """Copy rows lo .. hi - 1 of q float32 (n, d) into out (hi - lo, d),
    scaled to unit length for cosine (norms summed in float64, so huge
    values do not overflow). Returns -1, or the first row holding NaN or inf
    (checked on the bits, which no fast-math can fold away) or, for l2 and
    ip, a norm above MAX_NORM (see query_error)."""
    d = q.shape[1]
    for r in range(lo, hi):
        bits = q[r].view(np.int32)
        bad = False
        for j in range(d):
            bad |= (bits[j] & 0x7F800000) == 0x7F800000
        if bad:
            return r
        s = 0.0
        for j in range(d):
            v = np.float64(q[r, j])
            s += v * v
        if cosine:
            norm = np.sqrt(s) if s > 0 else 1.0
            for j in range(d):
                out[r - lo, j] = np.float32(q[r, j] / norm)
        elif s > MAX_NORM * MAX_NORM:
            return r
        else:
            out[r - lo] = q[r]
    return -1


def query_error(q: np.ndarray, row: int) -> InvalidInputError:
    """The error for row `row` of the raw queries q, which a kernel refused."""
    v = np.asarray(q[row], dtype=np.float64)
    if not np.isfinite(v).all():
        return InvalidInputError(f"queries hold NaN or inf (first in row {row})")
    return InvalidInputError(f"queries row {row} has norm {np.sqrt(v @ v):.3g}, too large: "
                             f"l2 and ip distances need norms <= {MAX_NORM:g}")


def prepare(q: np.ndarray, cosine: bool) -> tuple[np.ndarray, int]:
    """(q checked and, for cosine, normalised as every search does it; the
    first row holding NaN or inf, or -1). q float32 (n, d) C-contiguous."""
    out = np.empty_like(q)
    bad = _prepare_rows(q, 0, q.shape[0], cosine, out)
    return out, bad


# -- routing -------------------------------------------------------------------------
@dataclass
class Routing:
    """The R routers as stacked affine layers (see Router.layers): a1
    float32 (R, d, H), b1 (R, H), a2 (R, H, B) and b2 (R, B) for two-layer
    (MLP) routers, else empty (R, 0, 0) / (R, 0)."""

    a1: np.ndarray
    b1: np.ndarray
    a2: np.ndarray
    b2: np.ndarray

    @classmethod
    def from_routers(cls, routers: list[Router]) -> "Routing":
        layers = [rt.layers() for rt in routers]
        a1 = np.ascontiguousarray(np.stack([lay[0] for lay in layers]), dtype=np.float32)
        b1 = np.ascontiguousarray(np.stack([lay[1] for lay in layers]), dtype=np.float32)
        reps = len(layers)
        if layers[0][2] is None:
            a2, b2 = np.zeros((reps, 0, 0), np.float32), np.zeros((reps, 0), np.float32)
        else:
            a2 = np.ascontiguousarray(np.stack([lay[2] for lay in layers]), dtype=np.float32)
            b2 = np.ascontiguousarray(np.stack([lay[3] for lay in layers]), dtype=np.float32)
        return cls(a1, b1, a2, b2)

    @property
    def n_reps(self) -> int:
        return self.a1.shape[0]

    @property
    def n_buckets(self) -> int:
        return self.a2.shape[2] if self.a2.shape[1] else self.a1.shape[2]

    def block(self, q: np.ndarray, lo: int, hi: int, probed: np.ndarray, probs: np.ndarray) -> None:
        """Route prepared queries lo .. hi - 1 of q (float32 (n, d)) into
        rows lo .. hi - 1 of probed int32 (R, n, m) and, when probs is (R, n,
        m) rather than (R, 0, 0), their softmax probabilities."""
        _route_kernel(q, lo, hi, self.a1, self.b1, self.a2, self.b2, probed, probs)


def route(routers: list[Router] | Routing, q: np.ndarray, probes: int, with_probs: bool = False,
          threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-`probes` buckets of every repetition for prepared queries `q`
    (float32 (n, d), normalised for cosine).

    Returns (buckets int32 (R, n, m), probs float32 (R, n, m)), buckets best
    first (ties to the lower bucket); probs are the router's softmax
    probabilities of those buckets when `with_probs`, else an empty (R, 0, 0)
    array. `probes` must be <= B.
    """
    routing = routers if isinstance(routers, Routing) else Routing.from_routers(routers)
    n = q.shape[0]
    reps = routing.n_reps
    buckets = np.empty((reps, n, probes), dtype=np.int32)
    probs = np.empty((reps, n, probes) if with_probs else (reps, 0, 0), dtype=np.float32)
    run_blocks(lambda lo, hi: routing.block(q, lo, hi, buckets, probs), n, threads)
    return buckets, probs


_GROUP = 4  # queries that share each pass over a layer's weights


@numba.njit(inline="always")
def _affine(x, lo, n, a, b, out, relu):
    """out[t] = b + x[lo + t] a for t < n (x (·, i), a (i, o)), optionally relu."""
    width = a.shape[1]
    for t in range(n):
        for c in range(width):
            out[t, c] = b[c]
    for j in range(a.shape[0]):
        for t in range(n):
            v = x[lo + t, j]
            for c in range(width):
                out[t, c] += v * a[j, c]
    if relu:
        for t in range(n):
            for c in range(width):
                out[t, c] = max(out[t, c], np.float32(0.0))


@numba.njit(inline="always")
def _top_row(row, m, bv, bi, out_idx, out_val):
    """The m largest of row float32 (B,), best first, ties to the lower
    bucket, into out_idx / out_val: group maxima give a threshold that at
    least m scores reach; the few that do are insertion-sorted."""
    width = row.shape[0]
    if m > 64:  # insertion costs O(m^2)
        order = np.argsort(-row, kind="mergesort")
        for j in range(m):
            out_idx[j] = order[j]
            out_val[j] = row[order[j]]
        return
    thr = np.inf
    for g in range(m):
        mx = -np.inf
        for b in range(g * width // m, (g + 1) * width // m):
            mx = max(mx, row[b])
        thr = min(thr, mx)
    cnt = 0
    for b in range(width):
        if row[b] >= thr:
            bv[cnt] = row[b]
            bi[cnt] = b
            cnt += 1
    size = 0
    for t in range(cnt):  # a strict > keeps ties in bucket order
        v = bv[t]
        if size == m and v <= out_val[m - 1]:
            continue
        j = size if size < m else m - 1
        while j > 0 and out_val[j - 1] < v:
            out_val[j] = out_val[j - 1]
            out_idx[j] = out_idx[j - 1]
            j -= 1
        out_val[j] = v
        out_idx[j] = bi[t]
        if size < m:
            size += 1


@numba.njit(inline="always")
def _route_rows(q, lo, hi, a1, b1, a2, b2, probed, probs, plo):
    """Route rows lo .. hi - 1 of q into rows plo .. of probed / probs."""
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
            _affine(q, g, n, a1[r], b1[r], hidden, two)
            if two:
                _affine(hidden, 0, n, a2[r], b2[r], logits, False)
            for t in range(n):
                row = logits[t, :width]
                at = plo + g - lo + t
                _top_row(row, m, buf_v, buf_i, probed[r, at], val)
                if with_probs:
                    mx = val[0]
                    z = np.float32(0.0)
                    for c in range(width):
                        z += np.exp(row[c] - mx)
                    for j in range(m):
                        probs[r, at, j] = np.exp(val[j] - mx) / z


@numba.njit(nogil=True, fastmath=FAST, cache=True)
def _route_kernel(q, lo, hi, a1, b1, a2, b2, probed, probs):
    _route_rows(q, lo, hi, a1, b1, a2, b2, probed, probs, lo)


@numba.njit(cache=True, nogil=True, fastmath=FAST)
def _top_m_rows(s, out_idx, out_val):
    width = s.shape[1]
    bv = np.empty(width, np.float32)
    bi = np.empty(width, np.int32)
    for i in range(s.shape[0]):
        _top_row(s[i], out_idx.shape[1], bv, bi, out_idx[i], out_val[i])


def top_m(s: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The m largest of each row of s float32 (n, B), best first, ties to the
    lower column: (columns int32 (n, m), values float32 (n, m)). The
    selection routing uses."""
    s = np.ascontiguousarray(s, dtype=np.float32)
    idx = np.empty((s.shape[0], m), dtype=np.int32)
    val = np.empty((s.shape[0], m), dtype=np.float32)
    _top_m_rows(s, idx, val)
    return idx, val


# -- top-k heaps ---------------------------------------------------------------------
@numba.njit(inline="always")
def _dot(a, b):
    s = np.float32(0.0)
    for j in range(a.shape[0]):
        s += a[j] * b[j]
    return s


@numba.njit(inline="always")
def _push(hs, hi, size, k, s, i):
    """Offer (score s, id i) to a min-heap of the best k; returns the new size."""
    if size < k:
        j = size
        hs[j] = s
        hi[j] = i
        while j > 0:
            p = (j - 1) // 2
            if hs[p] <= hs[j]:
                break
            hs[p], hs[j] = hs[j], hs[p]
            hi[p], hi[j] = hi[j], hi[p]
            j = p
        return size + 1
    if s <= hs[0]:
        return size
    hs[0] = s
    hi[0] = i
    _sift_down(hs, hi, size)
    return size


@numba.njit(inline="always")
def _sift_down(hs, hi, size):
    """Restore the min-heap of `size` entries after its root changed."""
    _sift(hs, hi, size, 0)


@numba.njit(inline="always")
def _sift(hs, hi, size, j):
    """Restore the min-heap of `size` entries after entry j grew."""
    while True:
        a = 2 * j + 1
        if a >= size:
            break
        b = a + 1
        c = b if b < size and hs[b] < hs[a] else a
        if hs[j] <= hs[c]:
            break
        hs[c], hs[j] = hs[j], hs[c]
        hi[c], hi[j] = hi[j], hi[c]
        j = c


@numba.njit(inline="always")
def _emit(hs, hid, size, out_pos, out_score, qi):
    """Write a query's heap of `size` (scores hs, positions hid) into row qi
    of the outputs, best first (ties keep heap order)."""
    order = np.argsort(-hs[:size], kind="mergesort")
    for s in range(size):
        out_pos[qi, s] = hid[order[s]]
        out_score[qi, s] = hs[order[s]]


@numba.njit(inline="always")
def _emit_ids(hs, hid, size, ids, l2, out_ids, out_score, qi):
    """Like _emit, with positions mapped to ids and, for l2, scores turned
    back into squared distances (lower is better); fills the padding too
    (ids -1, scores -inf, or +inf for l2)."""
    order = np.argsort(-hs[:size], kind="mergesort")
    for s in range(size):
        out_ids[qi, s] = ids[hid[order[s]]]
        out_score[qi, s] = -hs[order[s]] if l2 else hs[order[s]]
    for s in range(size, out_ids.shape[1]):
        out_ids[qi, s] = -1
        out_score[qi, s] = np.inf if l2 else -np.inf


def _outputs(n: int, k: int):
    """Result arrays for n queries: positions -1, scores -inf, candidate
    counts 0."""
    return (np.full((n, k), -1, dtype=np.int64), np.full((n, k), -np.inf, dtype=np.float32),
            np.zeros(n, dtype=np.int64))


@numba.njit(inline="always")
def _score(q, qn, x, sqn, i, l2):
    s = _dot(q, x[i])
    if l2:
        return -(qn - 2 * s + sqn[i])
    return s


# -- the exact scan --------------------------------------------------------------------
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
        qn = _dot(qv, qv) if l2 else np.float32(0.0)
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
            for r in range(reps):
                for j in range(m):
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
                        size = _push(hs, hid, size, k, _score(qv, qn, x, sqn, i, l2), i)
        else:
            cid = np.empty(entries, dtype=np.int64)
            cp = np.empty(entries, dtype=np.float32)
            cv = np.empty(entries, dtype=np.int32)
            nc = 0
            for r in range(reps):
                for j in range(m):
                    b = probed[r, pr, j]
                    p = probs[r, pr, j]
                    for t in range(offsets[r, b], offsets[r, b + 1]):
                        i = lists[r, t]
                        if has_keep:
                            if allowed[i] == 0:
                                continue
                        if has_allow:
                            if amark[i] != stamp:
                                continue
                        if mark[i] != stamp:
                            mark[i] = stamp
                            cnt[i] = nc
                            cid[nc] = i
                            cp[nc] = p
                            cv[nc] = 1
                            nc += 1
                        else:
                            s = cnt[i]
                            cp[s] += p
                            cv[s] += 1
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
                size = _push(hs, hid, size, k, _score(qv, qn, x, sqn, i, l2), i)
        out_ncand[qi] = scored
        out_scanned[qi] = entries
        if ids.shape[0] > 0:
            _emit_ids(hs, hid, size, ids, l2, out_ids, out_score, qi)
        else:
            _emit(hs, hid, size, out_pos, out_score, qi)


@numba.njit(cache=True, nogil=True, fastmath=FAST)
def _scan(q, lo, hi, x, sqn, offsets, lists, probed, probs, k, min_votes, top_c, l2, dedup, allowed, aptr, apos,
          amark, mark, cnt, stamp0, out_pos, out_score, out_ncand, out_scanned):
    hs = np.empty(k, dtype=np.float32)
    hid = np.empty(k, dtype=np.int64)
    none = np.zeros(0, dtype=np.int64)
    _scan_rows(q, lo, hi, lo, x, sqn, offsets, lists, probed, probs, k, min_votes, top_c, l2, dedup, allowed,
               aptr, apos, amark, mark, cnt, stamp0, hs, hid, out_pos, out_score, out_ncand, out_scanned,
               none, out_pos)


def _marks(dedup: bool, allow: bool, size: int, n: int):
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
    outs = _outputs(n, k)
    read = np.zeros(n, dtype=np.int64)
    dedup = probed.shape[0] > 1 or top_c > 0 or copies > 1
    none = np.zeros(0, dtype=np.int64)
    keep = np.zeros(0, dtype=np.uint8) if keep is None else keep
    aptr, apos = (none, none) if allow is None else allow

    def block(lo, hi):
        amark, mark, cnt, stamp0 = _marks(dedup, allow is not None, x.shape[0], hi - lo)
        _scan(q, lo, hi, x, sqnorms, offsets, lists, probed, probs, k, min_votes, top_c, l2, dedup, keep,
              aptr, apos, amark, mark, cnt, stamp0, *outs, read)

    run_blocks(block, n, threads)
    return outs


@numba.njit(cache=True, nogil=True, fastmath=FAST)
def exact_block(q, lo, hi, m, k, min_votes, top_c, dedup, mark, cnt, stamp0, cosine, l2, a1, b1, a2, b2, x, sqn,
                offsets, lists, keep, ids, out_ids, out_scores, out_ncand, out_scanned):
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
    bad = _prepare_rows(q, lo, hi, cosine, qb)
    if bad >= 0:
        return bad
    reps = a1.shape[0]
    probed = np.empty((reps, n, m), dtype=np.int32)
    probs = np.empty((reps, n, m) if with_probs else (reps, 0, 0), dtype=np.float32)
    _route_rows(qb, 0, n, a1, b1, a2, b2, probed, probs, 0)
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
        qn = _dot(qv, qv) if l2 else np.float32(0.0)
        size = 0
        for t in range(aptr[qi], aptr[qi + 1]):
            i = apos[t]
            size = _push(hs, hid, size, k, _score(qv, qn, x, sqn, i, l2), i)
        out_ncand[qi] = aptr[qi + 1] - aptr[qi]
        _emit(hs, hid, size, out_pos, out_score, qi)


def subset(q: np.ndarray, x: np.ndarray, sqnorms: np.ndarray, ptr: np.ndarray, pos: np.ndarray, k: int,
           l2: bool = False, threads: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact top-k of query i among the positions pos[ptr[i]:ptr[i+1]] (int64,
    no repeats): a brute-force search over each query's own allow-list.
    Returns what `scan` returns."""
    n = q.shape[0]
    outs = _outputs(n, k)
    run_blocks(lambda lo, hi: _subset(q, lo, hi, x, sqnorms, ptr, pos, k, l2, *outs), n, threads)
    return outs


def scanned(offsets: np.ndarray, probed: np.ndarray) -> np.ndarray:
    """Entries read from the inverted lists per query: the summed sizes of the
    probed buckets over repetitions, int64 (n,)."""
    sizes = np.diff(offsets, axis=1)
    return sum(sizes[r][probed[r]].sum(axis=1) for r in range(probed.shape[0]))
